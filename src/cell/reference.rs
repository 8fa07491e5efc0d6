//! The plain reference implementation of the cells: the straightforward code, kept as the
//! yardstick the fast cells in `rnn.rs`, `lstm.rs` and `gru.rs` are tested against (as llm.c
//! keeps `*_naive` kernels). Nothing in training calls it.
//!
//! Otherwise identical to the fast cells in what it computes, it differs in how: ndarray's
//! `general_mat_mul` for every product, all input projections in one product before the time
//! loop, one thread, a separate (T, B, H) cache of tanh(c_t), ∂L/∂x always computed, and the
//! probe norms in their own pass ([`mean_row_norm`]). The equations are in the fast cells'
//! module docs.

use super::rnn::Activation;
use super::{LayerGrads, Probes, State};
use crate::params::LayerParams;
use crate::real::Real;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, Axis, Zip, s};

/// Mean over the rows of a (B, H) matrix of each row's L2 norm, in f64.
pub fn mean_row_norm<F: Real>(m: ArrayView2<F>) -> f64 {
    let b = m.nrows();
    let total: f64 = m
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v.f64() * v.f64()).sum::<f64>().sqrt())
        .sum();
    total / b as f64
}

// ---------------------------------------------------------------- RNN

/// The reference RNN's forward cache.
#[derive(Clone, Debug)]
pub struct RefRnnCache<F> {
    /// x: (T, B, I)
    pub x: Array3<F>,
    /// hs: (T+1, B, H), `hs[0]` = h₀
    pub hs: Array3<F>,
    pub act: Activation,
}

/// Forward over all T steps with nonlinearity `act`. `x`: (T, B, I), `h0`: (B, H).
pub fn rnn_forward<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    h0: ArrayView2<F>,
    act: Activation,
) -> RefRnnCache<F> {
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
        // h_t = φ(a_t)
        Zip::from(next.index_axis_mut(Axis(0), 0))
            .and(&a_t)
            .for_each(|h, &a| {
                *h = match act {
                    Activation::Tanh => a.tanh_act(),
                    Activation::Relu => a.max(F::zero()),
                }
            });
    }
    RefRnnCache { x, hs, act }
}

/// Backward through time. `dh_out`: (T, B, H) gradient arriving at each h_t from the head.
pub fn rnn_backward<F: Real>(
    p: &LayerParams<F>,
    cache: RefRnnCache<F>,
    dh_out: ArrayView3<F>,
) -> LayerGrads<F> {
    let RefRnnCache { x, hs, act } = cache;
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
        // forward was h_t = φ(a_t), so da_t = dh_t ⊙ φ'(a_t): 1 − h_t² for tanh, [h_t > 0] for relu
        let mut da_t = da.slice_mut(s![t * b..(t + 1) * b, ..]);
        Zip::from(&mut da_t)
            .and(&dh)
            .and(hs.index_axis(Axis(0), t + 1))
            .for_each(|da, &dh, &h| {
                *da = match act {
                    Activation::Tanh => dh * (F::one() - h * h),
                    Activation::Relu if h > F::zero() => dh,
                    Activation::Relu => F::zero(),
                }
            });
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
        dx: Some(dx),
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

// ---------------------------------------------------------------- LSTM

/// The reference LSTM's forward cache.
#[derive(Clone, Debug)]
pub struct RefLstmCache<F> {
    /// x: (T, B, I)
    pub x: Array3<F>,
    /// Activated gates [i f g o] per step: (T, B, 4H)
    pub gates: Array3<F>,
    /// cs: (T+1, B, H), `cs[0]` = c₀
    pub cs: Array3<F>,
    /// tanh(c_t): (T, B, H)
    pub tanh_cs: Array3<F>,
    /// hs: (T+1, B, H), `hs[0]` = h₀
    pub hs: Array3<F>,
}

/// Forward over all T steps. `x`: (T, B, I), `h0`, `c0`: (B, H).
pub fn lstm_forward<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    h0: ArrayView2<F>,
    c0: ArrayView2<F>,
) -> RefLstmCache<F> {
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
    RefLstmCache {
        x,
        gates,
        cs,
        tanh_cs,
        hs,
    }
}

/// Backward through time. `dh_out`: (T, B, H) gradient arriving at each h_t from the head.
pub fn lstm_backward<F: Real>(
    p: &LayerParams<F>,
    cache: RefLstmCache<F>,
    dh_out: ArrayView3<F>,
) -> LayerGrads<F> {
    let RefLstmCache {
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
        dx: Some(dx),
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

// ---------------------------------------------------------------- GRU

/// The reference GRU's forward cache.
#[derive(Clone, Debug)]
pub struct RefGruCache<F> {
    /// x: (T, B, I)
    pub x: Array3<F>,
    /// r, z, n per step: (T, B, H) each
    pub r: Array3<F>,
    pub z: Array3<F>,
    pub n: Array3<F>,
    /// ah_n = h_{t−1} W_hnᵀ + b_hn per step: (T, B, H)
    pub ah_n: Array3<F>,
    /// hs: (T+1, B, H), `hs[0]` = h₀
    pub hs: Array3<F>,
}

/// Forward over all T steps. `x`: (T, B, I), `h0`: (B, H).
pub fn gru_forward<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    h0: ArrayView2<F>,
) -> RefGruCache<F> {
    let (t_len, b, i) = x.dim();
    let h = p.weight_hh.ncols();
    let x = x.as_standard_layout().into_owned();
    let x2 = x
        .view()
        .into_shape_with_order((t_len * b, i))
        .expect("contiguous");
    // All input projections in one product: ax = x W_ihᵀ + b_ih, (T·B, 3H).
    let mut ax = Array2::from_shape_fn((t_len * b, 3 * h), |(_, j)| p.bias_ih[j]);
    general_mat_mul(F::one(), &x2, &p.weight_ih.t(), F::one(), &mut ax);

    let mut c = RefGruCache {
        r: Array3::zeros((t_len, b, h)),
        z: Array3::zeros((t_len, b, h)),
        n: Array3::zeros((t_len, b, h)),
        ah_n: Array3::zeros((t_len, b, h)),
        hs: Array3::zeros((t_len + 1, b, h)),
        x: Array3::zeros((0, 0, 0)),
    };
    c.hs.index_axis_mut(Axis(0), 0).assign(&h0);
    for t in 0..t_len {
        let h_prev = c.hs.index_axis(Axis(0), t).to_owned();
        // ah = h_{t−1} W_hhᵀ + b_hh, (B, 3H)
        let mut ah = Array2::from_shape_fn((b, 3 * h), |(_, j)| p.bias_hh[j]);
        general_mat_mul(F::one(), &h_prev, &p.weight_hh.t(), F::one(), &mut ah);
        let ax_t = ax.slice(s![t * b..(t + 1) * b, ..]);
        for r in 0..b {
            for j in 0..h {
                let rv = (ax_t[[r, j]] + ah[[r, j]]).sigmoid();
                let zv = (ax_t[[r, h + j]] + ah[[r, h + j]]).sigmoid();
                let ahn = ah[[r, 2 * h + j]];
                let nv = (ax_t[[r, 2 * h + j]] + rv * ahn).tanh_act();
                c.r[[t, r, j]] = rv;
                c.z[[t, r, j]] = zv;
                c.n[[t, r, j]] = nv;
                c.ah_n[[t, r, j]] = ahn;
                // h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}
                c.hs[[t + 1, r, j]] = (F::one() - zv) * nv + zv * h_prev[[r, j]];
            }
        }
    }
    c.x = x;
    c
}

/// Backward through time. `dh_out`: (T, B, H) gradient arriving at each h_t from the head.
pub fn gru_backward<F: Real>(
    p: &LayerParams<F>,
    cache: RefGruCache<F>,
    dh_out: ArrayView3<F>,
) -> LayerGrads<F> {
    let RefGruCache {
        x,
        r,
        z,
        n,
        ah_n,
        hs,
    } = cache;
    let (t_len, b, i) = x.dim();
    let h = p.weight_hh.ncols();

    // Pre-activation gradients of every step: input side [da_r da_z dax_n] and recurrent
    // side [da_r da_z dah_n], (T·B, 3H) each.
    let mut dax = Array2::<F>::zeros((t_len * b, 3 * h));
    let mut dah = Array2::<F>::zeros((t_len * b, 3 * h));
    let mut dh = Array2::<F>::zeros((b, h)); // ∂L/∂h_t
    let mut dh_next = Array2::<F>::zeros((b, h)); // from step t+1
    let mut dh_norm = vec![0.0; t_len];
    for t in (0..t_len).rev() {
        Zip::from(&mut dh)
            .and(dh_out.index_axis(Axis(0), t))
            .and(&dh_next)
            .for_each(|d, &o, &n| *d = o + n);
        dh_norm[t] = mean_row_norm(dh.view());
        let mut dax_t = dax.slice_mut(s![t * b..(t + 1) * b, ..]);
        let mut dah_t = dah.slice_mut(s![t * b..(t + 1) * b, ..]);
        for row in 0..b {
            for j in 0..h {
                let (rv, zv, nv) = (r[[t, row, j]], z[[t, row, j]], n[[t, row, j]]);
                let d = dh[[row, j]];
                // forward: h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}
                let dn = d * (F::one() - zv);
                let dz = d * (hs[[t, row, j]] - nv);
                // forward: n = tanh(ax_n + r ⊙ ah_n)
                let dax_n = dn * (F::one() - nv * nv);
                let dr = dax_n * ah_n[[t, row, j]];
                // forward: r = σ(a_r), z = σ(a_z)
                let da_r = dr * rv * (F::one() - rv);
                let da_z = dz * zv * (F::one() - zv);
                dax_t[[row, j]] = da_r;
                dax_t[[row, h + j]] = da_z;
                dax_t[[row, 2 * h + j]] = dax_n;
                dah_t[[row, j]] = da_r;
                dah_t[[row, h + j]] = da_z;
                dah_t[[row, 2 * h + j]] = dax_n * rv;
                // the direct path of h_t = … + z ⊙ h_{t−1}
                dh_next[[row, j]] = d * zv;
            }
        }
        // forward: ah = h_{t−1} W_hhᵀ + b_hh, so dh_{t−1} += dah_t W_hh
        general_mat_mul(F::one(), &dah_t, &p.weight_hh, F::one(), &mut dh_next);
    }

    let x2 = x
        .view()
        .into_shape_with_order((t_len * b, i))
        .expect("contiguous");
    let h_prev = hs.slice(s![..t_len, .., ..]);
    let h_prev = h_prev
        .into_shape_with_order((t_len * b, h))
        .expect("contiguous");
    let mut g = LayerParams {
        weight_ih: Array2::zeros((3 * h, i)),
        weight_hh: Array2::zeros((3 * h, h)),
        bias_ih: dax.sum_axis(Axis(0)),
        bias_hh: dah.sum_axis(Axis(0)),
    };
    general_mat_mul(F::one(), &dah.t(), &h_prev, F::zero(), &mut g.weight_hh);
    general_mat_mul(F::one(), &dax.t(), &x2, F::zero(), &mut g.weight_ih);
    let dx = dax
        .dot(&p.weight_ih)
        .into_shape_with_order((t_len, b, i))
        .expect("contiguous");
    LayerGrads {
        params: g,
        dx: Some(dx),
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
