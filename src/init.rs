//! Initialisation of the parameters, from a seeded generator.
//!
//! The default is PyTorch's: every recurrent weight and bias ~ U(−1/√H, 1/√H), and the head
//! (`nn.Linear`) weight and bias ~ U(−1/√H, 1/√H) (kaiming-uniform with a = √5 reduces to
//! that bound). Options replace W_hh by an orthogonal matrix (per gate block) or a scaled
//! identity, draw W_ih from a narrow Gaussian, zero the recurrent biases ([`Init::irnn`], the
//! recipe of Le, Jaitly & Hinton 2015), and set the LSTM's forget-gate bias (PyTorch's
//! reference does it as `bias_ih[H:2H] = value`, `bias_hh[H:2H] = 0`; we do the same). The
//! options overwrite the default draws afterwards, so they never change the other tensors'
//! values. Every draw comes from the generator passed in, so one init seed gives the same
//! model on every machine.

use crate::params::{CellKind, Params};
use crate::real::Real;
use ndarray::{Array2, s};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How the recurrent matrix W_hh is initialised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum RecurrentInit {
    /// PyTorch's default U(−1/√H, 1/√H).
    Uniform,
    /// A random orthogonal matrix (per gate block) times `gain`.
    Orthogonal { gain: f64 },
    /// `scale` · identity (per gate block).
    Identity { scale: f64 },
}

/// How the input weights W_ih are initialised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum InputInit {
    /// PyTorch's default U(−1/√H, 1/√H).
    #[default]
    Uniform,
    /// N(0, std²) (Le et al. 2015 use std = 0.001 for the IRNN).
    Gaussian { std: f64 },
}

/// Initialisation settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Init {
    pub recurrent: RecurrentInit,
    #[serde(default)]
    pub input: InputInit,
    /// Set the recurrent layer's biases b_ih and b_hh to 0 (before the forget-gate bias).
    #[serde(default)]
    pub zero_bias: bool,
    /// LSTM forget-gate bias (ignored by other cells). Default 1.
    pub forget_bias: f64,
}

impl Default for Init {
    fn default() -> Self {
        Init {
            recurrent: RecurrentInit::Uniform,
            input: InputInit::Uniform,
            zero_bias: false,
            forget_bias: 1.0,
        }
    }
}

/// The standard deviation of the IRNN's input weights (Le, Jaitly & Hinton 2015).
pub const IRNN_INPUT_STD: f64 = 0.001;

impl Init {
    /// W_hh initialised as `recurrent`, everything else PyTorch's default.
    pub fn with_recurrent(recurrent: RecurrentInit) -> Init {
        Init {
            recurrent,
            ..Init::default()
        }
    }

    /// The IRNN of Le, Jaitly & Hinton (2015), for the ReLU RNN: W_hh = `scale`·I (1 in the
    /// paper), W_ih ~ N(0, 0.001²), biases 0; the head keeps PyTorch's default.
    pub fn irnn(scale: f64) -> Init {
        Init {
            recurrent: RecurrentInit::Identity { scale },
            input: InputInit::Gaussian {
                std: IRNN_INPUT_STD,
            },
            zero_bias: true,
            forget_bias: 1.0,
        }
    }
}

/// Draws new parameters for `cell` with sizes I, H, O.
pub fn init_params<F: Real>(
    cell: CellKind,
    input: usize,
    hidden: usize,
    output: usize,
    init: &Init,
    rng: &mut ChaCha8Rng,
) -> Params<F> {
    let mut p = Params::<F>::zeros(cell, input, hidden, output);
    let k = 1.0 / (hidden as f64).sqrt();
    for (_, mut t) in p.tensors_mut() {
        t.mapv_inplace(|_| F::of(rng.random_range(-k..k)));
    }
    let blocks = cell.gates();
    match init.recurrent {
        RecurrentInit::Uniform => {}
        RecurrentInit::Orthogonal { gain } => {
            for g in 0..blocks {
                let q = orthogonal(hidden, rng);
                let mut block = p
                    .layer
                    .weight_hh
                    .slice_mut(s![g * hidden..(g + 1) * hidden, ..]);
                block.zip_mut_with(&q, |w, &v| *w = F::of(gain * v));
            }
        }
        RecurrentInit::Identity { scale } => {
            for g in 0..blocks {
                let mut block = p
                    .layer
                    .weight_hh
                    .slice_mut(s![g * hidden..(g + 1) * hidden, ..]);
                block
                    .indexed_iter_mut()
                    .for_each(|((r, c), w)| *w = F::of(if r == c { scale } else { 0.0 }));
            }
        }
    }
    if let InputInit::Gaussian { std } = init.input {
        p.layer
            .weight_ih
            .mapv_inplace(|_| F::of(std * gaussian(rng)));
    }
    if init.zero_bias {
        p.layer.bias_ih.fill(F::zero());
        p.layer.bias_hh.fill(F::zero());
    }
    if cell == CellKind::Lstm {
        p.layer
            .bias_ih
            .slice_mut(s![hidden..2 * hidden])
            .fill(F::of(init.forget_bias));
        p.layer
            .bias_hh
            .slice_mut(s![hidden..2 * hidden])
            .fill(F::zero());
    }
    p
}

/// A random n×n orthogonal matrix: modified Gram–Schmidt on a Gaussian matrix, with the sign
/// convention of a QR decomposition with positive diagonal R (so the result is Haar-distributed).
pub fn orthogonal(n: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
    let mut a = Array2::from_shape_fn((n, n), |_| gaussian(rng));
    for j in 0..n {
        for k in 0..j {
            let proj = a.column(j).dot(&a.column(k));
            let ck = a.column(k).to_owned();
            a.column_mut(j).scaled_add(-proj, &ck);
        }
        let norm = a.column(j).dot(&a.column(j)).sqrt();
        a.column_mut(j).mapv_inplace(|v| v / norm);
    }
    a
}

/// One standard normal draw (Box–Muller).
pub fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Largest singular value of a square matrix (power iteration on AᵀA, in f64).
pub fn spectral_norm<F: Real>(a: ndarray::ArrayView2<F>) -> f64 {
    let a = a.mapv(|v| v.f64());
    let mut v = ndarray::Array1::from_elem(a.ncols(), 1.0 / (a.ncols() as f64).sqrt());
    let mut sigma = 0.0;
    for _ in 0..500 {
        let w = a.t().dot(&a.dot(&v));
        let n = w.dot(&w).sqrt();
        if n == 0.0 {
            return 0.0;
        }
        let next = n.sqrt();
        v = w / n;
        if (next - sigma).abs() <= 1e-12 * next {
            return next;
        }
        sigma = next;
    }
    sigma
}

/// Spectral radius ρ(A) = max |λ| of a square matrix, by Gelfand's formula ρ = lim ‖Aᵏv‖^(1/k)
/// (robust to complex eigenvalue pairs, unlike plain power iteration on A). In f64.
pub fn spectral_radius<F: Real>(a: ndarray::ArrayView2<F>) -> f64 {
    let a = a.mapv(|v| v.f64());
    let n = a.ncols();
    // A fixed, generic starting vector (not an eigenvector of any structured matrix).
    let mut v = ndarray::Array1::from_shape_fn(n, |i| 1.0 + (i as f64 * 0.618_033_988_75).fract());
    v /= v.dot(&v).sqrt();
    let (warmup, iters) = (200, 400);
    let mut log_growth = 0.0;
    for k in 0..warmup + iters {
        let w = a.dot(&v);
        let norm = w.dot(&w).sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        if k >= warmup {
            log_growth += norm.ln();
        }
        v = w / norm;
    }
    (log_growth / iters as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn same_seed_same_params_and_pytorch_bounds() {
        let init = Init::default();
        let a: Params<f32> = init_params(
            CellKind::Lstm,
            2,
            16,
            1,
            &init,
            &mut ChaCha8Rng::seed_from_u64(7),
        );
        let b: Params<f32> = init_params(
            CellKind::Lstm,
            2,
            16,
            1,
            &init,
            &mut ChaCha8Rng::seed_from_u64(7),
        );
        assert_eq!(a, b);
        let k = 0.25;
        assert!(a.layer.weight_hh.iter().all(|v| v.abs() <= k));
        assert!(a.layer.bias_ih.slice(s![16..32]).iter().all(|&v| v == 1.0));
        assert!(a.layer.bias_hh.slice(s![16..32]).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn orthogonal_is_orthogonal_and_identity_is_scaled() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let q = orthogonal(12, &mut rng);
        let qtq = q.t().dot(&q);
        for ((r, c), v) in qtq.indexed_iter() {
            assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-12);
        }
        let init = Init::with_recurrent(RecurrentInit::Orthogonal { gain: 1.5 });
        let p: Params<f64> = init_params(CellKind::Rnn, 2, 12, 1, &init, &mut rng);
        assert!((spectral_norm(p.layer.weight_hh.view()) - 1.5).abs() < 1e-9);
        // an orthogonal matrix has all |λ| = gain
        assert!((spectral_radius(p.layer.weight_hh.view()) - 1.5).abs() < 1e-6);
        let init = Init::with_recurrent(RecurrentInit::Identity { scale: 0.9 });
        let p: Params<f64> = init_params(CellKind::Rnn, 2, 3, 1, &init, &mut rng);
        assert_eq!(p.layer.weight_hh, Array2::<f64>::eye(3) * 0.9);
        // a rotation by 90° scaled by 0.5: complex eigenvalues ±0.5i, ρ = 0.5, σ_max = 0.5
        let r = ndarray::arr2(&[[0.0, -0.5], [0.5, 0.0]]);
        assert!((spectral_radius(r.view()) - 0.5).abs() < 1e-9);
        // a nilpotent-plus-diagonal matrix: ρ = 0.3 while σ_max ≈ 2
        let j = ndarray::arr2(&[[0.3, 2.0], [0.0, 0.3]]);
        assert!(
            (spectral_radius(j.view()) - 0.3).abs() < 2e-2,
            "{}",
            spectral_radius(j.view())
        );
        assert!(spectral_norm(j.view()) > 2.0);
    }

    /// The IRNN recipe: identity W_hh, zero biases, W_ih with standard deviation 0.001; the
    /// head as by default (the same draws as without the recipe).
    #[test]
    fn irnn_init_follows_le_et_al() {
        let draw = |init: &Init| -> Params<f64> {
            init_params(
                CellKind::RnnRelu,
                2,
                64,
                1,
                init,
                &mut ChaCha8Rng::seed_from_u64(5),
            )
        };
        let (p, plain) = (draw(&Init::irnn(1.0)), draw(&Init::default()));
        assert_eq!(p.layer.weight_hh, Array2::<f64>::eye(64));
        assert!(
            p.layer
                .bias_ih
                .iter()
                .chain(&p.layer.bias_hh)
                .all(|&b| b == 0.0)
        );
        let w = &p.layer.weight_ih;
        let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std - 0.001).abs() < 2e-4, "std {std}");
        assert_eq!(p.head, plain.head);
    }
}
