//! The LSTM with forget gate (PyTorch's `nn.LSTM`), forward and backward through time.
//!
//! Forward, per step, with the stacked gate pre-activations in PyTorch's order i, f, g, o:
//! ```text
//! [a_i a_f a_g a_o] = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh      (B, 4H)
//! i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)              (B, H) each
//! c_t = f ⊙ c_{t−1} + i ⊙ g
//! h_t = o ⊙ tanh(c_t)
//! ```
//! Backward, walking t down and carrying `dh_next`, `dc_next` (the parts of ∂L/∂h_t and
//! ∂L/∂c_t that come from step t+1):
//! ```text
//! dh_t = dh_out_t + dh_next                                (probe ‖dh_t‖)
//! dc_t = dc_next + dh_t ⊙ o ⊙ (1 − tanh²c_t)               (probe ‖dc_t‖)
//! do = dh_t ⊙ tanh c_t    di = dc_t ⊙ g    dg = dc_t ⊙ i    df = dc_t ⊙ c_{t−1}
//! da_i = di·i(1−i)  da_f = df·f(1−f)  da_g = dg·(1−g²)  da_o = do·o(1−o)
//! dc_next ← dc_t ⊙ f        dh_next ← da_t W_hh
//! ```
//! The gate activations are cached in one (T, B, 4H) buffer and the backward pass overwrites
//! each step's activations with that step's pre-activation gradients, so the largest part of
//! the cache is reused for the gradients instead of being allocated twice.
//!
//! A one-step case by hand (I = H = B = 1, all weights 0 except b_ih = [0, 1, 0, 0]
//! (forget bias 1), W_ih = [1, 1, 1, 1]ᵀ, x = 0.5, h₀ = 0, c₀ = 2, loss L = h₁):
//! a = [0.5, 1.5, 0.5, 0.5]; i = o = σ(0.5) = 0.62245933, f = σ(1.5) = 0.81757448,
//! g = tanh 0.5 = 0.46211716; c₁ = 0.81757448·2 + 0.62245933·0.46211716 = 1.92279809;
//! h₁ = 0.62245933·tanh(1.92279809) = 0.62245933·0.95814724 = 0.59640769.
//! ∂L/∂c₁ = o(1 − tanh²c₁) = 0.62245933·0.08195387 = 0.05101295; ∂L/∂c₀ = ∂L/∂c₁·f = 0.04170689.
//! (Asserted in a test below.)

use super::{LayerGrads, Probes, State, mean_row_norm};
use crate::params::LayerParams;
use crate::real::Real;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, Axis, Zip, s};

/// What the LSTM's backward pass needs from its forward pass.
#[derive(Clone, Debug)]
pub struct LstmCache<F> {
    /// x: (T, B, I)
    pub x: Array3<F>,
    /// Activated gates [i f g o] per step: (T, B, 4H)
    pub gates: Array3<F>,
    /// cs: (T+1, B, H), cs[0] = c₀
    pub cs: Array3<F>,
    /// tanh(c_t): (T, B, H)
    pub tanh_cs: Array3<F>,
    /// hs: (T+1, B, H), hs[0] = h₀
    pub hs: Array3<F>,
}

impl<F: Real> LstmCache<F> {
    /// Mean forget-gate activation over batch and units, per timestep: (T).
    pub fn forget_gate_mean(&self) -> Vec<f64> {
        let h = self.hs.dim().2;
        self.gates
            .outer_iter()
            .map(|g| {
                let f = g.slice(s![.., h..2 * h]);
                f.iter().map(|v| v.f64()).sum::<f64>() / f.len() as f64
            })
            .collect()
    }
}

/// Forward over all T steps. `x`: (T, B, I), `h0`, `c0`: (B, H).
pub fn forward<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    h0: ArrayView2<F>,
    c0: ArrayView2<F>,
) -> LstmCache<F> {
    let (t_len, b, i) = x.dim();
    let h = p.weight_hh.ncols();
    let x = x.as_standard_layout().into_owned();
    let x2 = x
        .view()
        .into_shape_with_order((t_len * b, i))
        .expect("contiguous");

    // All input projections in one product: x W_ihᵀ + (b_ih + b_hh), (T·B, 4H).
    let bias = &p.bias_ih + &p.bias_hh;
    let mut gates = Array2::from_shape_fn((t_len * b, 4 * h), |(_, j)| bias[j]);
    general_mat_mul(F::one(), &x2, &p.weight_ih.t(), F::one(), &mut gates);
    let mut gates = gates
        .into_shape_with_order((t_len, b, 4 * h))
        .expect("contiguous");

    let mut hs = Array3::zeros((t_len + 1, b, h));
    let mut cs = Array3::zeros((t_len + 1, b, h));
    let mut tanh_cs = Array3::zeros((t_len, b, h));
    hs.index_axis_mut(Axis(0), 0).assign(&h0);
    cs.index_axis_mut(Axis(0), 0).assign(&c0);
    for t in 0..t_len {
        let (h_prev, mut h_next) = hs.view_mut().split_at(Axis(0), t + 1);
        let (c_prev, mut c_next) = cs.view_mut().split_at(Axis(0), t + 1);
        let mut a = gates.index_axis_mut(Axis(0), t);
        // a += h_{t−1} W_hhᵀ
        general_mat_mul(
            F::one(),
            &h_prev.index_axis(Axis(0), t),
            &p.weight_hh.t(),
            F::one(),
            &mut a,
        );

        let a = a.as_slice_mut().expect("contiguous");
        let c_prev = c_prev.index_axis(Axis(0), t);
        let c_prev = c_prev.as_slice().expect("contiguous");
        let c_next = c_next
            .index_axis_mut(Axis(0), 0)
            .into_slice()
            .expect("contiguous");
        let h_next = h_next
            .index_axis_mut(Axis(0), 0)
            .into_slice()
            .expect("contiguous");
        let mut tanh_c = tanh_cs.index_axis_mut(Axis(0), t);
        let tanh_c = tanh_c.as_slice_mut().expect("contiguous");
        for r in 0..b {
            let (gi, rest) = a[r * 4 * h..(r + 1) * 4 * h].split_at_mut(h);
            let (gf, rest) = rest.split_at_mut(h);
            let (gg, go) = rest.split_at_mut(h);
            let k = r * h;
            for j in 0..h {
                let (iv, fv) = (gi[j].sigmoid(), gf[j].sigmoid());
                let (gv, ov) = (gg[j].tanh_act(), go[j].sigmoid());
                (gi[j], gf[j], gg[j], go[j]) = (iv, fv, gv, ov);
                let c = fv * c_prev[k + j] + iv * gv; // c_t = f ⊙ c_{t−1} + i ⊙ g
                let tc = c.tanh_act();
                c_next[k + j] = c;
                tanh_c[k + j] = tc;
                h_next[k + j] = ov * tc; // h_t = o ⊙ tanh(c_t)
            }
        }
    }
    LstmCache {
        x,
        gates,
        cs,
        tanh_cs,
        hs,
    }
}

/// Backward through time. `dh_out`: (T, B, H) gradient arriving at each h_t from the head.
pub fn backward<F: Real>(
    p: &LayerParams<F>,
    cache: LstmCache<F>,
    dh_out: ArrayView3<F>,
) -> LayerGrads<F> {
    let LstmCache {
        x,
        mut gates,
        cs,
        tanh_cs,
        hs,
    } = cache;
    let (t_len, b, i) = x.dim();
    let h = p.weight_hh.ncols();

    let mut dh = Array2::<F>::zeros((b, h)); // ∂L/∂h_t
    let mut dh_next = Array2::<F>::zeros((b, h)); // recurrent part from step t+1
    let mut dc_next = Array2::<F>::zeros((b, h)); // ∂L/∂c_t from step t+1
    let mut dc = Array2::<F>::zeros((b, h)); // ∂L/∂c_t (only kept for the probe)
    let mut dh_norm = vec![0.0; t_len];
    let mut dc_norm = vec![0.0; t_len];
    for t in (0..t_len).rev() {
        Zip::from(&mut dh)
            .and(dh_out.index_axis(Axis(0), t))
            .and(&dh_next)
            .for_each(|d, &o, &n| *d = o + n);
        dh_norm[t] = mean_row_norm(dh.view());

        let mut g_t = gates.index_axis_mut(Axis(0), t);
        let g = g_t.as_slice_mut().expect("contiguous");
        let c_prev = cs.index_axis(Axis(0), t);
        let c_prev = c_prev.as_slice().expect("contiguous");
        let tanh_c = tanh_cs.index_axis(Axis(0), t);
        let tanh_c = tanh_c.as_slice().expect("contiguous");
        let dh_s = dh.as_slice().expect("contiguous");
        let dc_s = dc.as_slice_mut().expect("contiguous");
        let dcn = dc_next.as_slice_mut().expect("contiguous");
        for r in 0..b {
            let (gi, rest) = g[r * 4 * h..(r + 1) * 4 * h].split_at_mut(h);
            let (gf, rest) = rest.split_at_mut(h);
            let (gg, go) = rest.split_at_mut(h);
            let k = r * h;
            for j in 0..h {
                let (iv, fv, gv, ov) = (gi[j], gf[j], gg[j], go[j]);
                let (tc, dhv) = (tanh_c[k + j], dh_s[k + j]);
                // forward: h_t = o ⊙ tanh(c_t); c_t also flows on to step t+1
                let dcv = dcn[k + j] + dhv * ov * (F::one() - tc * tc);
                dc_s[k + j] = dcv;
                // forward: c_t = f ⊙ c_{t−1} + i ⊙ g
                let (di, df, dg, d_o) = (dcv * gv, dcv * c_prev[k + j], dcv * iv, dhv * tc);
                dcn[k + j] = dcv * fv;
                // through the nonlinearities, from their cached outputs
                gi[j] = di * iv * (F::one() - iv);
                gf[j] = df * fv * (F::one() - fv);
                gg[j] = dg * (F::one() - gv * gv);
                go[j] = d_o * ov * (F::one() - ov);
            }
        }
        dc_norm[t] = mean_row_norm(dc.view());
        // forward was a += h_{t−1} W_hhᵀ, so the recurrent part of dh_{t−1} = da_t W_hh
        general_mat_mul(F::one(), &g_t, &p.weight_hh, F::zero(), &mut dh_next);
    }

    // Weight gradients over all steps at once; `gates` now holds da for every step.
    let da = gates
        .into_shape_with_order((t_len * b, 4 * h))
        .expect("contiguous");
    let x2 = x
        .view()
        .into_shape_with_order((t_len * b, i))
        .expect("contiguous");
    let h_prev = hs.slice(s![..t_len, .., ..]);
    let h_prev = h_prev
        .into_shape_with_order((t_len * b, h))
        .expect("contiguous");
    let db: Array1<F> = da.sum_axis(Axis(0));
    let mut g = LayerParams {
        weight_ih: Array2::zeros((4 * h, i)),
        weight_hh: Array2::zeros((4 * h, h)),
        bias_ih: db.clone(),
        bias_hh: db,
    };
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
            c: Some(dc_next),
        },
        probes: Probes {
            dh_norm,
            dc_norm: Some(dc_norm),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2, arr3};

    /// The one-step case derived by hand in the module docs.
    #[test]
    fn one_step_by_hand() {
        let p = LayerParams {
            weight_ih: arr2(&[[1.0f64], [1.0], [1.0], [1.0]]),
            weight_hh: Array2::zeros((4, 1)),
            bias_ih: arr1(&[0.0, 1.0, 0.0, 0.0]),
            bias_hh: Array1::zeros(4),
        };
        let cache = forward(
            &p,
            arr3(&[[[0.5f64]]]).view(),
            arr2(&[[0.0]]).view(),
            arr2(&[[2.0]]).view(),
        );
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        close(cache.cs[[1, 0, 0]], 1.922_798_09);
        close(cache.hs[[1, 0, 0]], 0.596_407_69);
        close(cache.forget_gate_mean()[0], 0.817_574_48);
        let g = backward(&p, cache, arr3(&[[[1.0]]]).view());
        close(g.probes.dc_norm.as_ref().unwrap()[0], 0.051_012_95);
        close(g.dstate0.c.as_ref().unwrap()[[0, 0]], 0.041_706_89);
        assert_eq!(g.dstate0.h[[0, 0]], 0.0); // W_hh = 0: nothing flows back through h
    }
}
