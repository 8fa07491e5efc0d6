//! The vanilla (Elman) RNN, forward and backward through time, with tanh or ReLU.
//!
//! Forward, per step (PyTorch's `nn.RNN` with `nonlinearity='tanh'` or `'relu'`):
//! ```text
//! a_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh      (B, H)
//! h_t = φ(a_t),  φ = tanh or relu                     (B, H)
//! ```
//! Backward, walking t from T−1 down to 0 and carrying `dh_next` = the part of ∂L/∂h_t that
//! comes from step t+1:
//! ```text
//! dh_t  = dh_out_t + dh_next                          (the probe: ‖dh_t‖)
//! da_t  = dh_t ⊙ φ'(a_t)                              (from the cached output:
//!         tanh' = 1 − h_t²;  relu' = 1 where h_t > 0, else 0)
//! dh_next ← da_t W_hh                                 (into step t−1)
//! ```
//! and after the loop, over all steps at once: dW_hh = Σ_t da_tᵀ h_{t−1}, dW_ih = Σ_t da_tᵀ x_t,
//! db_ih = db_hh = Σ_t Σ_b da_t, dx_t = da_t W_ih (see `weight_grads` in the cell module).
//!
//! Each step is one product (written straight into h_t's rows; for small inputs with
//! x_t W_ihᵀ + b computed inside its tiles: `cell::preactivation`) and one elementwise pass,
//! forward and backward side by side below; the batch splits into independent row blocks
//! across threads (see the module docs of [`super`]).
//!
//! A one-step case by hand (I = H = B = 1, W_ih = 0.5, W_hh = −1, b_ih = 0.1, b_hh = 0,
//! x = 2, h₀ = 0.3, loss L = h₁):
//! a = 0.5·2 + 0.1 − 1·0.3 = 0.8, h₁ = tanh 0.8 = 0.66403677, 1 − h₁² = 0.55905517;
//! ∂L/∂W_ih = 0.55905517·2 = 1.11811034, ∂L/∂W_hh = 0.55905517·0.3 = 0.16771655,
//! ∂L/∂b = 0.55905517, ∂L/∂x = 0.27952759, ∂L/∂h₀ = −0.55905517. With relu instead:
//! h₁ = 0.8 and relu' = 1, so ∂L/∂W_ih = 2, ∂L/∂W_hh = 0.3, ∂L/∂b = 1, ∂L/∂x = 0.5,
//! ∂L/∂h₀ = −1; with W_ih = −0.5 (a = −1.2) h₁ = 0 and every gradient is 0.
//! (Asserted in tests below.)

use super::simd::{multiversion, sum_sq_f64};
use super::slices;
use super::{Backward, LayerGrads, Probes, State, gemm, mean_norms, pool};
use crate::params::LayerParams;
use crate::real::Real;
use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis};
use std::ops::Range;

/// The RNN's nonlinearity φ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// φ = tanh (`nn.RNN`'s default).
    Tanh,
    /// φ = relu(a) = max(a, 0) (`nonlinearity='relu'`; NaN stays NaN).
    Relu,
}

/// What the RNN's backward pass needs from its forward pass.
#[derive(Clone, Debug)]
pub struct RnnCache<F> {
    /// x: (T, B, I)
    pub x: Array3<F>,
    /// hs: (T+1, B, H), `hs[0]` = h₀
    pub hs: Array3<F>,
    /// The nonlinearity the states were computed with.
    pub activation: Activation,
    /// mask: (T, B), 0 = a skipped step (see [`super::mask`]); None = no step skipped
    pub mask: Option<Array2<F>>,
}

/// Forward over all T steps. `x`: (T, B, I), `h0`: (B, H).
pub fn forward<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    h0: ArrayView2<F>,
    activation: Activation,
    threads: usize,
) -> RnnCache<F> {
    forward_masked(p, x, None, h0, activation, threads)
}

/// [`forward`] skipping the steps where `mask` (T, B) is 0 (see [`super::mask`]).
pub fn forward_masked<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    mask: Option<ArrayView2<F>>,
    h0: ArrayView2<F>,
    activation: Activation,
    threads: usize,
) -> RnnCache<F> {
    let (t_len, b, _) = x.dim();
    let mask = super::own_mask(mask, t_len, b);
    let h = p.weight_hh.ncols();
    let mut x_own: Array3<F> = pool::take(x.dim());
    x_own.assign(&x);
    let x = x_own;
    let w = StepWeights {
        w_ih_t: p.weight_ih.t().as_standard_layout().into_owned(),
        w_hh_t: gemm::PackedB::new(p.weight_hh.t(), threads),
        bias: &p.bias_ih + &p.bias_hh,
        activation,
    };
    let mut hs = pool::take((t_len + 1, b, h));
    hs.index_axis_mut(Axis(0), 0).assign(&h0);

    let rows = slices::chunk_rows(b, threads);
    let chunks: Vec<_> = x
        .axis_chunks_iter(Axis(1), rows)
        .zip(hs.axis_chunks_iter_mut(Axis(1), rows))
        .zip(super::mask_blocks(mask.as_ref(), rows))
        .collect();
    slices::run(chunks, t_len, threads, |((x, hs), m), steps| {
        forward_rows(&w, x, hs, m, steps)
    });
    w.w_hh_t.recycle();
    RnnCache {
        x,
        hs,
        activation,
        mask,
    }
}

/// The weights and bias as the per-step products read them, and φ.
struct StepWeights<F> {
    /// W_ihᵀ: (I, H)
    w_ih_t: Array2<F>,
    /// W_hhᵀ: (H, H), packed for the per-step product
    w_hh_t: gemm::PackedB<F>,
    /// b_ih + b_hh: (H)
    bias: Array1<F>,
    activation: Activation,
}

/// Steps `steps` of the time loop over one chunk of rows: x (T, b, I), hs (T+1, b, H),
/// mask (T, b).
fn forward_rows<F: Real>(
    w: &StepWeights<F>,
    x: &ArrayView3<F>,
    hs: &mut ArrayViewMut3<F>,
    mask: &Option<ArrayView2<F>>,
    steps: Range<usize>,
) {
    for t in steps {
        let (prev, mut next) = hs.view_mut().split_at(Axis(0), t + 1);
        let mut a = next.index_axis_mut(Axis(0), 0); // a_t, then h_t in place: (b, H)
        // a_t = (x_t W_ihᵀ + (b_ih + b_hh)) + h_{t−1} W_hhᵀ
        let (x_t, h_prev) = (x.index_axis(Axis(0), t), prev.index_axis(Axis(0), t));
        super::preactivation(x_t, &w.w_ih_t, &w.bias, h_prev, &w.w_hh_t, &mut a);
        // h_t = φ(a_t)
        let a = a.as_slice_mut().expect("row block is contiguous");
        match w.activation {
            Activation::Tanh => tanh_in_place::<F>(a),
            Activation::Relu => relu_in_place::<F>(a),
        }
        // masked rows: h_t = h_{t−1}
        if let Some(m) = &mask {
            super::mask::hold(m.row(t), hs.view_mut(), t);
        }
    }
}

multiversion!(fn tanh_in_place<F: Real>(a: &mut [F]) => tanh_in_place_body);

#[inline(always)]
fn tanh_in_place_body<F: Real>(a: &mut [F]) {
    for v in a {
        *v = v.tanh_act();
    }
}

multiversion!(fn relu_in_place<F: Real>(a: &mut [F]) => relu_in_place_body);

#[inline(always)]
fn relu_in_place_body<F: Real>(a: &mut [F]) {
    for v in a {
        // relu(a) = max(a, 0), written so that NaN stays NaN (as in PyTorch)
        *v = if *v < F::zero() { F::zero() } else { *v };
    }
}

/// Backward through time. `dh_out`: (T_out, B, H) gradient arriving at the last T_out
/// states h_t from above (see [`super::backward`]).
pub fn backward<F: Real>(
    p: &LayerParams<F>,
    cache: RnnCache<F>,
    dh_out: ArrayView3<F>,
    how: Backward,
) -> LayerGrads<F> {
    let RnnCache {
        x,
        hs,
        activation,
        mask,
    } = cache;
    let (t_len, b, _) = x.dim();
    let h = p.weight_hh.ncols();

    let mut da: Array3<F> = pool::take((t_len, b, h)); // da_t for every step
    let mut dh_sq = Array2::<f64>::zeros((t_len, b)); // ‖∂L/∂h_t‖² per row
    // Running recurrent part of ∂L/∂h from step t+1; after the loop, ∂L/∂h₀.
    let mut dh_next = Array2::<F>::zeros((b, h));

    let rows = slices::chunk_rows(b, how.threads);
    let chunks: Vec<_> = da
        .axis_chunks_iter_mut(Axis(1), rows)
        .zip(hs.axis_chunks_iter(Axis(1), rows))
        .zip(super::dh_out_blocks(dh_out, t_len, rows))
        .zip(dh_sq.axis_chunks_iter_mut(Axis(1), rows))
        .zip(dh_next.axis_chunks_iter_mut(Axis(0), rows))
        .zip(super::mask_blocks(mask.as_ref(), rows))
        .map(|(((((da, hs), dh_out), dh_sq), dh_next), mask)| Rows {
            da,
            hs,
            dh_out,
            dh_sq,
            carry: mask.map(|_| Array2::zeros(dh_next.dim())),
            dh_next,
            mask,
        })
        .collect();
    let w_hh = gemm::PackedB::new(p.weight_hh.view(), how.threads); // (H, H)
    slices::run_backward(chunks, t_len, how.threads, |rows, steps| {
        backward_rows(&w_hh, activation, rows, steps)
    });
    w_hh.recycle();

    let da = da
        .into_shape_with_order((t_len * b, h))
        .expect("contiguous");
    let (params, dx) = super::weight_grads(p, da.view(), hs, x.view(), how);
    pool::recycle(da);
    pool::recycle(x);
    LayerGrads {
        params,
        dx,
        dstate0: State {
            h: dh_next,
            c: None,
        },
        probes: Probes {
            dh_norm: mean_norms(dh_sq.as_slice().expect("contiguous"), b),
            dc_norm: None,
        },
    }
}

/// One thread's share of the backward pass: a block of b rows (sequences) of every array.
struct Rows<'a, F> {
    /// (T, b, H): da_t out
    da: ArrayViewMut3<'a, F>,
    /// (T+1, b, H)
    hs: ArrayView3<'a, F>,
    /// (T, b, H)
    /// ∂L/∂h_t from above
    dh_out: super::DhOut<'a, F>,
    /// (T, b): ‖dh_t‖² per row
    dh_sq: ArrayViewMut2<'a, f64>,
    /// (b, H): running recurrent part of ∂L/∂h from step t+1; ∂L/∂h₀ at the end
    dh_next: ArrayViewMut2<'a, F>,
    /// (T, b): 0 = a skipped step
    mask: Option<ArrayView2<'a, F>>,
    /// (b, H): masked rows' ∂L/∂h_t, passed on to step t−1 unchanged
    carry: Option<Array2<F>>,
}

/// Steps `steps` (walked downwards) of the backward time loop over one chunk of rows.
fn backward_rows<F: Real>(
    w_hh: &gemm::PackedB<F>,
    activation: Activation,
    r: &mut Rows<'_, F>,
    steps: Range<usize>,
) {
    let h = r.hs.dim().2;
    let relu = activation == Activation::Relu;
    for t in steps.rev() {
        if let (Some(m), Some(carry)) = (&r.mask, &mut r.carry) {
            let dh_out_t = r.dh_out.at(t);
            super::mask::save(m.row(t), dh_out_t, Some(r.dh_next.view()), carry.view_mut());
        }
        let mut da_t = r.da.index_axis_mut(Axis(0), t);
        act_backward::<F>(
            da_t.as_slice_mut().expect("row block is contiguous"),
            r.hs.index_axis(Axis(0), t + 1)
                .as_slice()
                .expect("contiguous"),
            r.dh_out.at(t).as_slice().expect("contiguous"),
            r.dh_next.as_slice().expect("contiguous"),
            r.dh_sq
                .index_axis_mut(Axis(0), t)
                .into_slice()
                .expect("contiguous"),
            h,
            relu,
        );
        // masked rows: h_t = h_{t−1}, so da_t = 0 and ∂L/∂h_{t−1} = ∂L/∂h_t
        if let Some(m) = &r.mask {
            super::mask::restore(m.row(t), None, da_t.view_mut());
        }
        // forward was a_t += h_{t−1} W_hhᵀ, so dh_{t−1} (recurrent part) = da_t W_hh
        gemm::mat_mul_packed(&da_t.view(), w_hh, false, &mut r.dh_next);
        if let (Some(m), Some(carry)) = (&r.mask, &r.carry) {
            super::mask::restore(m.row(t), Some(carry.view()), r.dh_next.view_mut());
        }
    }
}

multiversion!(fn act_backward<F: Real>(da: &mut [F], h: &[F], dh_out: &[F], dh_next: &[F], dh_sq: &mut [f64], hidden: usize, relu: bool) => act_backward_body);

/// One step backward, row by row (the forward is `h_t = φ(a_t)` in [`forward_rows`]):
/// writes da_t (b, H) and each row's ‖dh_t‖² to dh_sq (b).
#[inline(always)]
fn act_backward_body<F: Real>(
    da: &mut [F],
    h: &[F],
    dh_out: &[F],
    dh_next: &[F],
    dh_sq: &mut [f64],
    hidden: usize,
    relu: bool,
) {
    let rows = da
        .chunks_exact_mut(hidden)
        .zip(h.chunks_exact(hidden))
        .zip(dh_out.chunks_exact(hidden))
        .zip(dh_next.chunks_exact(hidden))
        .zip(dh_sq.iter_mut());
    for ((((da, h), dh_out), dh_next), sq) in rows {
        // dh_t = dh_out_t + dh_next (the probe), kept in da for the moment
        for j in 0..hidden {
            da[j] = dh_out[j] + dh_next[j];
        }
        *sq = sum_sq_f64(da);
        if relu {
            // forward was h_t = relu(a_t), so da_t = dh_t where h_t > 0, else 0 (as PyTorch's
            // threshold_backward: zero where h_t ≤ 0)
            for j in 0..hidden {
                if h[j] <= F::zero() {
                    da[j] = F::zero();
                }
            }
        } else {
            // forward was h_t = tanh(a_t), so da_t = dh_t ⊙ (1 − h_t²)
            for j in 0..hidden {
                da[j] *= F::one() - h[j] * h[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, arr2, arr3};

    /// The one-step case derived by hand in the module docs.
    #[test]
    fn one_step_by_hand() {
        let p = LayerParams {
            weight_ih: arr2(&[[0.5f64]]),
            weight_hh: arr2(&[[-1.0]]),
            bias_ih: Array1::from_elem(1, 0.1),
            bias_hh: Array1::zeros(1),
        };
        let x = arr3(&[[[2.0f64]]]);
        let h0 = arr2(&[[0.3f64]]);
        let cache = forward(&p, x.view(), h0.view(), Activation::Tanh, 1);
        assert!((cache.hs[[1, 0, 0]] - 0.664_036_770_267_849).abs() < 1e-12);
        let g = backward(&p, cache, arr3(&[[[1.0]]]).view(), Backward::default());
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        close(g.params.weight_ih[[0, 0]], 1.118_110_34);
        close(g.params.weight_hh[[0, 0]], 0.167_716_55);
        close(g.params.bias_ih[0], 0.559_055_17);
        close(g.params.bias_hh[0], 0.559_055_17);
        close(g.dx.unwrap()[[0, 0, 0]], 0.279_527_59);
        close(g.dstate0.h[[0, 0]], -0.559_055_17);
        assert_eq!(g.probes.dh_norm, vec![1.0]);
    }

    /// The relu variants of the one-step case in the module docs: active and inactive.
    #[test]
    fn one_step_relu_by_hand() {
        let mut p = LayerParams {
            weight_ih: arr2(&[[0.5f64]]),
            weight_hh: arr2(&[[-1.0]]),
            bias_ih: Array1::from_elem(1, 0.1),
            bias_hh: Array1::zeros(1),
        };
        let (x, h0, dh) = (arr3(&[[[2.0f64]]]), arr2(&[[0.3f64]]), arr3(&[[[1.0]]]));
        let cache = forward(&p, x.view(), h0.view(), Activation::Relu, 1);
        assert!((cache.hs[[1, 0, 0]] - 0.8).abs() < 1e-15);
        let g = backward(&p, cache, dh.view(), Backward::default());
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(g.params.weight_ih[[0, 0]], 2.0);
        close(g.params.weight_hh[[0, 0]], 0.3);
        close(g.params.bias_hh[0], 1.0);
        close(g.dx.unwrap()[[0, 0, 0]], 0.5);
        close(g.dstate0.h[[0, 0]], -1.0);
        p.weight_ih[[0, 0]] = -0.5; // a = −1.2: the unit is off, nothing flows back
        let cache = forward(&p, x.view(), h0.view(), Activation::Relu, 1);
        assert_eq!(cache.hs[[1, 0, 0]], 0.0);
        let g = backward(&p, cache, dh.view(), Backward::default());
        let gp = &g.params;
        let all = [
            gp.weight_ih[[0, 0]],
            gp.weight_hh[[0, 0]],
            gp.bias_ih[0],
            gp.bias_hh[0],
        ];
        assert_eq!(all, [0.0; 4]);
        assert_eq!((g.dx.unwrap()[[0, 0, 0]], g.dstate0.h[[0, 0]]), (0.0, 0.0));
    }
}
