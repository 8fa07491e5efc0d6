//! The vanilla (Elman) tanh RNN, forward and backward through time.
//!
//! Forward, per step (PyTorch's `nn.RNN` with `nonlinearity='tanh'`):
//! ```text
//! a_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh      (B, H)
//! h_t = tanh(a_t)                                     (B, H)
//! ```
//! Backward, walking t from T−1 down to 0 and carrying `dh_next` = the part of ∂L/∂h_t that
//! comes from step t+1:
//! ```text
//! dh_t  = dh_out_t + dh_next                          (the probe: ‖dh_t‖)
//! da_t  = dh_t ⊙ (1 − h_t²)                           (tanh' from the cached output)
//! dh_next ← da_t W_hh                                 (into step t−1)
//! ```
//! and after the loop, over all steps at once: dW_hh = Σ_t da_tᵀ h_{t−1}, dW_ih = Σ_t da_tᵀ x_t,
//! db_ih = db_hh = Σ_t Σ_b da_t, dx_t = da_t W_ih.
//!
//! A one-step case by hand (I = H = B = 1, W_ih = 0.5, W_hh = −1, b_ih = 0.1, b_hh = 0,
//! x = 2, h₀ = 0.3, loss L = h₁):
//! a = 0.5·2 + 0.1 − 1·0.3 = 0.8, h₁ = tanh 0.8 = 0.66403677, 1 − h₁² = 0.55905517;
//! ∂L/∂W_ih = 0.55905517·2 = 1.11811034, ∂L/∂W_hh = 0.55905517·0.3 = 0.16771655,
//! ∂L/∂b = 0.55905517, ∂L/∂x = 0.27952759, ∂L/∂h₀ = −0.55905517. (Asserted in a test below.)

use super::{LayerGrads, Probes, State, mean_row_norm};
use crate::params::LayerParams;
use crate::real::Real;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis, Zip, s};

/// What the RNN's backward pass needs from its forward pass.
#[derive(Clone, Debug)]
pub struct RnnCache<F> {
    /// x: (T, B, I)
    pub x: Array3<F>,
    /// hs: (T+1, B, H), hs[0] = h₀
    pub hs: Array3<F>,
}

/// Forward over all T steps. `x`: (T, B, I), `h0`: (B, H).
pub fn forward<F: Real>(p: &LayerParams<F>, x: ArrayView3<F>, h0: ArrayView2<F>) -> RnnCache<F> {
    let (t_len, b, i) = x.dim();
    let h = p.weight_hh.ncols();
    let x = x.as_standard_layout().into_owned();
    let x2 = x
        .view()
        .into_shape_with_order((t_len * b, i))
        .expect("contiguous");

    // All input projections in one product: a = x W_ihᵀ + (b_ih + b_hh), (T·B, H).
    let bias = &p.bias_ih + &p.bias_hh;
    let mut a = Array2::from_shape_fn((t_len * b, h), |(_, j)| bias[j]);
    general_mat_mul(F::one(), &x2, &p.weight_ih.t(), F::one(), &mut a);

    let mut hs = Array3::zeros((t_len + 1, b, h));
    hs.index_axis_mut(Axis(0), 0).assign(&h0);
    for t in 0..t_len {
        let (prev, mut next) = hs.view_mut().split_at(Axis(0), t + 1);
        let h_prev = prev.index_axis(Axis(0), t);
        let mut a_t = a.slice_mut(s![t * b..(t + 1) * b, ..]);
        // a_t += h_{t−1} W_hhᵀ
        general_mat_mul(F::one(), &h_prev, &p.weight_hh.t(), F::one(), &mut a_t);
        // h_t = tanh(a_t)
        Zip::from(next.index_axis_mut(Axis(0), 0))
            .and(&a_t)
            .for_each(|h, &a| *h = a.tanh_act());
    }
    RnnCache { x, hs }
}

/// Backward through time. `dh_out`: (T, B, H) gradient arriving at each h_t from the head.
pub fn backward<F: Real>(
    p: &LayerParams<F>,
    cache: RnnCache<F>,
    dh_out: ArrayView3<F>,
) -> LayerGrads<F> {
    let RnnCache { x, hs } = cache;
    let (t_len, b, i) = x.dim();
    let h = p.weight_hh.ncols();

    let mut da = Array2::<F>::zeros((t_len * b, h)); // da_t for every step: (T·B, H)
    let mut dh = Array2::<F>::zeros((b, h)); // ∂L/∂h_t, (B, H)
    let mut dh_next = Array2::<F>::zeros((b, h)); // from step t+1, (B, H)
    let mut dh_norm = vec![0.0; t_len];
    for t in (0..t_len).rev() {
        // dh_t = dh_out_t + dh_next
        Zip::from(&mut dh)
            .and(dh_out.index_axis(Axis(0), t))
            .and(&dh_next)
            .for_each(|d, &o, &n| *d = o + n);
        dh_norm[t] = mean_row_norm(dh.view());
        // forward was h_t = tanh(a_t), so da_t = dh_t ⊙ (1 − h_t²)
        let mut da_t = da.slice_mut(s![t * b..(t + 1) * b, ..]);
        Zip::from(&mut da_t)
            .and(&dh)
            .and(hs.index_axis(Axis(0), t + 1))
            .for_each(|da, &dh, &h| *da = dh * (F::one() - h * h));
        // forward was a_t += h_{t−1} W_hhᵀ, so dh_{t−1} (recurrent part) = da_t W_hh
        general_mat_mul(F::one(), &da_t, &p.weight_hh, F::zero(), &mut dh_next);
    }

    // Weight gradients over all steps at once.
    let x2 = x
        .view()
        .into_shape_with_order((t_len * b, i))
        .expect("contiguous");
    let h_prev = hs.slice(s![..t_len, .., ..]);
    let h_prev = h_prev
        .into_shape_with_order((t_len * b, h))
        .expect("contiguous");
    let mut g = LayerParams {
        weight_ih: Array2::zeros((h, i)),
        weight_hh: Array2::zeros((h, h)),
        bias_ih: da.sum_axis(Axis(0)),
        bias_hh: ndarray::Array1::zeros(h),
    };
    g.bias_hh.assign(&g.bias_ih);
    general_mat_mul(F::one(), &da.t(), &h_prev, F::zero(), &mut g.weight_hh);
    general_mat_mul(F::one(), &da.t(), &x2, F::zero(), &mut g.weight_ih);
    let dx = da
        .dot(&p.weight_ih)
        .into_shape_with_order((t_len, b, i))
        .expect("contiguous");

    LayerGrads {
        params: g,
        dx,
        dstate0: State {
            h: dh_next,
            c: None,
        },
        probes: Probes {
            dh_norm,
            dc_norm: None,
        },
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
        let cache = forward(&p, x.view(), h0.view());
        assert!((cache.hs[[1, 0, 0]] - 0.664_036_770_267_849).abs() < 1e-12);
        let g = backward(&p, cache, arr3(&[[[1.0]]]).view());
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        close(g.params.weight_ih[[0, 0]], 1.118_110_34);
        close(g.params.weight_hh[[0, 0]], 0.167_716_55);
        close(g.params.bias_ih[0], 0.559_055_17);
        close(g.params.bias_hh[0], 0.559_055_17);
        close(g.dx[[0, 0, 0]], 0.279_527_59);
        close(g.dstate0.h[[0, 0]], -0.559_055_17);
        assert_eq!(g.probes.dh_norm, vec![1.0]);
    }
}
