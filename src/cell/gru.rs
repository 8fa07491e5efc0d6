//! The GRU (PyTorch's `nn.GRU`), forward and backward through time.
//!
//! Forward, per step, with the stacked gate blocks in PyTorch's order r, z, n. The input and
//! the recurrent projections are kept apart, because the reset gate r multiplies only the
//! recurrent part of the candidate — *including* its bias b_hn (PyTorch's formulation; the
//! original of Cho et al. 2014 applies r to h_{t−1} before the product):
//! ```text
//! [ax_r ax_z ax_n] = x_t W_ihᵀ + b_ih                       (B, 3H)
//! [ah_r ah_z ah_n] = h_{t−1} W_hhᵀ + b_hh                   (B, 3H)
//! r = σ(ax_r + ah_r)            reset gate                  (B, H) each
//! z = σ(ax_z + ah_z)            update gate
//! n = tanh(ax_n + r ⊙ ah_n)     candidate
//! h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}
//! ```
//! Backward, walking t from T−1 down to 0 and carrying `dh_next` = the part of ∂L/∂h_t that
//! comes from step t+1:
//! ```text
//! dh_t  = dh_out_t + dh_next                                (the probe: ‖dh_t‖)
//! dn    = dh_t ⊙ (1 − z)          dz = dh_t ⊙ (h_{t−1} − n)
//! dax_n = dn ⊙ (1 − n²)                                     (tanh' from the cached output)
//! dah_n = dax_n ⊙ r               dr = dax_n ⊙ ah_n
//! da_r  = dr ⊙ r(1 − r)           da_z = dz ⊙ z(1 − z)      (σ' from the cached outputs)
//! dh_next ← dh_t ⊙ z + [da_r da_z dah_n] W_hh               (into step t−1)
//! ```
//! and after the loop, over all steps at once: dW_ih = Σ_t [da_r da_z dax_n]ᵀ x_t,
//! db_ih = Σ [da_r da_z dax_n], dW_hh = Σ_t [da_r da_z dah_n]ᵀ h_{t−1},
//! db_hh = Σ [da_r da_z dah_n], dx_t = [da_r da_z dax_n] W_ih. Unlike in the RNN and the LSTM,
//! b_ih and b_hh get different gradients (in the n block: b_hn sits behind the reset gate).
//!
//! The cache holds x, h and per step the four (B, H) blocks [r z ah_n n]; backward overwrites
//! each step's blocks with [da_r da_z dah_n dax_n], so that the first three are the recurrent
//! pre-activation gradients (one product into `dh_next`) and all four feed one weight-gradient
//! product after the loop (`grad_product`). Each step is two products (input and
//! recurrent projection) and one fused elementwise pass, forward (`gates_forward`) and
//! backward (`gates_backward`) side by side below; the batch splits into independent row
//! blocks across threads (see the module docs of [`super`]).
//!
//! A one-step case by hand (I = H = B = 1, all weights and biases 0 except W_in = 1, W_hn = 1,
//! b_hn = 0.5; x = 1, h₀ = 0.5, loss L = h₁):
//! ax = [0, 0, 1], ah = [0, 0, 1·0.5 + 0.5] = [0, 0, 1]; r = z = σ(0) = 0.5;
//! n = tanh(1 + 0.5·1) = tanh 1.5 = 0.90514825; h₁ = 0.5·0.90514825 + 0.5·0.5 = 0.70257413.
//! Backward with dh₁ = 1: dn = 0.5, dz = 0.5 − 0.90514825 = −0.40514825;
//! dax_n = 0.5·(1 − 0.90514825²) = 0.09035332 = ∂L/∂b_in = ∂L/∂x (W_in = 1);
//! dah_n = 0.09035332·0.5 = 0.04517666 = ∂L/∂b_hn (half of ∂L/∂b_in: the reset gate);
//! ∂L/∂W_hn = 0.04517666·0.5 = 0.02258833; da_r = 0.09035332·1·0.25 = 0.02258833;
//! da_z = −0.40514825·0.25 = −0.10128706; ∂L/∂h₀ = 1·z + dah_n·W_hn = 0.54517666.
//! (Asserted in a test below.)

use super::simd::{self, LANES, load_lanes, multiversion, store_lanes, sum_sq_f64};
use super::slices;
use super::{Backward, LayerGrads, Probes, State, gemm, mean_norms, pool, slice, slice_mut};
use crate::params::LayerParams;
use crate::real::Real;
use ndarray::{
    Array1, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis,
    concatenate, s,
};
use std::ops::Range;

/// What the GRU's backward pass needs from its forward pass.
#[derive(Clone, Debug)]
pub struct GruCache<F> {
    /// x: (T, B, I)
    pub x: Array3<F>,
    /// Per step the blocks [r z ah_n n]: (T, B, 4H), ah_n = h_{t−1} W_hnᵀ + b_hn.
    pub gates: Array3<F>,
    /// hs: (T+1, B, H), `hs[0]` = h₀
    pub hs: Array3<F>,
    /// mask: (T, B), 0 = a skipped step (see [`super::mask`]); None = no step skipped
    pub mask: Option<Array2<F>>,
}

impl<F: Real> GruCache<F> {
    /// Mean update-gate activation z over batch and units, per timestep: (T). The share of
    /// h_{t−1} that h_t keeps (∂h_t/∂h_{t−1} contains diag(z)).
    pub fn update_gate_mean(&self) -> Vec<f64> {
        super::gate_mean(&self.gates, self.hs.dim().2, 1)
    }
}

/// The weights and biases as the per-step products read them.
struct StepWeights<F> {
    /// W_ihᵀ: (I, 3H)
    w_ih_t: Array2<F>,
    /// W_hhᵀ: (H, 3H), packed for the per-step product
    w_hh_t: gemm::PackedB<F>,
    /// b_ih: (3H)
    b_ih: Array1<F>,
    /// b_hh: (3H)
    b_hh: Array1<F>,
}

/// Forward over all T steps. `x`: (T, B, I), `h0`: (B, H).
pub fn forward<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    h0: ArrayView2<F>,
    threads: usize,
) -> GruCache<F> {
    forward_masked(p, x, None, h0, threads)
}

/// [`forward`] skipping the steps where `mask` (T, B) is 0 (see [`super::mask`]).
pub fn forward_masked<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    mask: Option<ArrayView2<F>>,
    h0: ArrayView2<F>,
    threads: usize,
) -> GruCache<F> {
    let (t_len, b, _) = x.dim();
    let mask = super::own_mask(mask, t_len, b);
    let h = p.weight_hh.ncols();
    let mut x_own: Array3<F> = pool::take(x.dim());
    x_own.assign(&x);
    let x = x_own;
    let w = StepWeights {
        w_ih_t: p.weight_ih.t().as_standard_layout().into_owned(),
        w_hh_t: gemm::PackedB::new(p.weight_hh.t(), threads),
        b_ih: p.bias_ih.clone(),
        b_hh: p.bias_hh.clone(),
    };
    let mut gates = pool::take((t_len, b, 4 * h));
    let mut hs = pool::take((t_len + 1, b, h));
    hs.index_axis_mut(Axis(0), 0).assign(&h0);

    let rows = slices::chunk_rows(b, threads);
    let chunks: Vec<_> = x
        .axis_chunks_iter(Axis(1), rows)
        .zip(gates.axis_chunks_iter_mut(Axis(1), rows))
        .zip(hs.axis_chunks_iter_mut(Axis(1), rows))
        .zip(super::mask_blocks(mask.as_ref(), rows))
        .map(|(((x, gates), hs), mask)| FwdRows {
            ax: Array2::zeros((x.dim().1, 3 * h)),
            ah: Array2::zeros((x.dim().1, 3 * h)),
            x,
            gates,
            hs,
            mask,
        })
        .collect();
    slices::run(chunks, t_len, threads, |r, steps| {
        forward_rows(&w, r, steps)
    });
    w.w_hh_t.recycle();
    GruCache { x, gates, hs, mask }
}

/// One chunk of rows (sequences) of the forward pass.
struct FwdRows<'a, F> {
    /// x: (T, b, I)
    x: ArrayView3<'a, F>,
    /// gates: (T, b, 4H)
    gates: ArrayViewMut3<'a, F>,
    /// hs: (T+1, b, H)
    hs: ArrayViewMut3<'a, F>,
    /// mask: (T, b)
    mask: Option<ArrayView2<'a, F>>,
    /// (b, 3H): x_t W_ihᵀ + b_ih
    ax: Array2<F>,
    /// (b, 3H): h_{t−1} W_hhᵀ (b_hh is added in the pass)
    ah: Array2<F>,
}

/// Steps `steps` of the time loop over one chunk of rows.
fn forward_rows<F: Real>(w: &StepWeights<F>, r: &mut FwdRows<'_, F>, steps: Range<usize>) {
    let FwdRows {
        x,
        gates,
        hs,
        mask,
        ax,
        ah,
    } = r;
    let h = hs.dim().2;
    // (from a step's rows of gates and hs[t + 1] to the next step's: prefetched)
    let t_len = gates.dim().0;
    let ahead = super::prefetches(h).then(|| [gates.strides()[0], hs.strides()[0]]);
    for t in steps {
        // [ax_r ax_z ax_n] = x_t W_ihᵀ + b_ih                                  (b, 3H)
        super::input_projection(
            x.index_axis(Axis(0), t),
            &w.w_ih_t,
            &w.b_ih,
            &mut ax.view_mut(),
        );
        // [ah_r ah_z ah_n] = h_{t−1} W_hhᵀ (+ b_hh below)                      (b, 3H)
        let (prev, mut next) = hs.view_mut().split_at(Axis(0), t + 1);
        let h_prev = prev.index_axis(Axis(0), t);
        gemm::mat_mul_packed(&h_prev, &w.w_hh_t, false, &mut ah.view_mut());
        gates_forward::<F>(
            slice(&ax.view()),
            slice(&ah.view()),
            slice(&w.b_hh.view()),
            slice(&h_prev),
            slice_mut(&mut gates.index_axis_mut(Axis(0), t)),
            slice_mut(&mut next.index_axis_mut(Axis(0), 0)),
            h,
            ahead.filter(|_| t + 1 < t_len),
        );
        // masked rows: h_t = h_{t−1}
        if let Some(m) = &mask {
            super::mask::hold(m.row(t), hs.view_mut(), t);
        }
    }
}

// (public, hidden, for the kernel benchmark `gate_pass_forward_gru`)
multiversion!(#[doc(hidden)] pub fn gates_forward<F: Real>(ax: &[F], ah: &[F], b_hh: &[F], h_prev: &[F], g: &mut [F], h_out: &mut [F], hidden: usize, next: Option<[isize; 2]>) => gates_forward_body);

/// One step's elementwise part, row by row: ax (b, 3H) = x_t W_ihᵀ + b_ih, ah (b, 3H) =
/// h_{t−1} W_hhᵀ, b_hh (3H); writes [r z ah_n n] to g (b, 4H) and h_t to h_out (b, H).
/// `next`: the offsets from g and h_out to the rows the next step will write, fetched a block
/// of units at a time ([`simd::prefetch_units`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gates_forward_body<F: Real>(
    ax: &[F],
    ah: &[F],
    b_hh: &[F],
    h_prev: &[F],
    g: &mut [F],
    h_out: &mut [F],
    hidden: usize,
    next: Option<[isize; 2]>,
) {
    let (bh_r, bh_z, bh_n) = split3(b_hh, hidden);
    let rows = ax
        .chunks_exact(3 * hidden)
        .zip(ah.chunks_exact(3 * hidden))
        .zip(h_prev.chunks_exact(hidden))
        .zip(g.chunks_exact_mut(4 * hidden))
        .zip(h_out.chunks_exact_mut(hidden));
    // (the offsets of the next step's rows, one per slice the unit loop fetches from)
    let next = next.map(|[g, h]| [g, g, g, g, h]);
    for ((((ax, ah), h_prev), g), h_out) in rows {
        let (ax_r, ax_z, ax_n) = split3(ax, hidden);
        let (ah_r, ah_z, ah_n) = split3(ah, hidden);
        let (g_r, rest) = g.split_at_mut(hidden);
        let (g_z, rest) = rest.split_at_mut(hidden);
        let (g_ahn, g_n) = rest.split_at_mut(hidden);
        // Two sweeps over the row: first r and z, then n and h_t, reading r and z back from
        // g's rows (in L1); the first also fetches the next step's rows. In one sweep a block
        // of units carried ~190 cycles of dependent latency (σ, then the tanh of a sum with
        // r, each an exp and a division), and the core kept only about two blocks in flight:
        // ~90 cycles a block. Split, each chain is about half as long, and both sweeps take
        // ~62 cycles a block (16 rows at H = 128, in L1: the kernel bench
        // `gate_pass_forward_gru`; BENCHMARKS.md). Each sweep goes
        // LANES units at a time through local arrays (see `simd::LANES`), whole blocks
        // first, then the rest, written out so that the whole blocks have a constant length.
        let (x, a, b) = ([ax_r, ax_z], [ah_r, ah_z], [bh_r, bh_z]);
        let mut j = 0;
        while j + LANES <= hidden {
            simd::prefetch_units([&g_r[..], g_z, g_ahn, g_n, h_out], next, j, LANES);
            update_reset_units(x, a, b, [&mut *g_r, &mut *g_z], j, LANES);
            j += LANES;
        }
        if j < hidden {
            simd::prefetch_units([&g_r[..], g_z, g_ahn, g_n, h_out], next, j, hidden - j);
            update_reset_units(x, a, b, [&mut *g_r, &mut *g_z], j, hidden - j);
        }
        let xab = [ax_n, ah_n, bh_n];
        let mut j = 0;
        while j + LANES <= hidden {
            let (rz, g2) = ([&g_r[..], g_z], [&mut *g_ahn, &mut *g_n]);
            candidate_units(xab, rz, h_prev, g2, h_out, j, LANES);
            j += LANES;
        }
        if j < hidden {
            let (rz, g2) = ([&g_r[..], g_z], [g_ahn, g_n]);
            candidate_units(xab, rz, h_prev, g2, h_out, j, hidden - j);
        }
    }
}

/// Units j … j+n−1 (n ≤ [`LANES`]) of one row of [`gates_forward_body`], its first sweep:
/// x = [ax_r ax_z], a = [ah_r ah_z] (without b_hh), b = [bh_r bh_z] in; g = [r z] out.
#[inline(always)]
fn update_reset_units<F: Real>(
    x: [&[F]; 2],
    a: [&[F]; 2],
    b: [&[F]; 2],
    g: [&mut [F]; 2],
    j: usize,
    n: usize,
) {
    let r = j..j + n;
    let [x_r, x_z] = x;
    let [a_r, a_z] = a;
    let [b_r, b_z] = b;
    let [ux_r, ux_z, ua_r, ua_z, ub_r, ub_z] =
        load_lanes([x_r, x_z, a_r, a_z, b_r, b_z], r.clone());
    let mut out = [[F::zero(); LANES]; 2];
    let [gr, gz] = &mut out;
    for l in 0..LANES {
        // r = σ(ax_r + ah_r)   z = σ(ax_z + ah_z)   (ah including b_hh)
        gr[l] = (ux_r[l] + (ua_r[l] + ub_r[l])).sigmoid();
        gz[l] = (ux_z[l] + (ua_z[l] + ub_z[l])).sigmoid();
    }
    store_lanes(g, r, &out);
}

/// Units j … j+n−1 (n ≤ [`LANES`]) of one row of [`gates_forward_body`], its second sweep:
/// xab = [ax_n ah_n bh_n] (ah_n without b_hn), rz = [r z] from the first sweep and h_{t−1}
/// in; g = [ah_n n] (ah_n with b_hn) and h_out out.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn candidate_units<F: Real>(
    xab: [&[F]; 3],
    rz: [&[F]; 2],
    h_prev: &[F],
    g: [&mut [F]; 2],
    h_out: &mut [F],
    j: usize,
    n: usize,
) {
    let r = j..j + n;
    let one = F::one();
    let [x_n, a_n, b_n] = xab;
    let [g_r, g_z] = rz;
    let srcs = [x_n, a_n, b_n, g_r, g_z, h_prev];
    let [ux_n, ua_n, ub_n, ur, uz, uhp] = load_lanes(srcs, r.clone());
    let mut out = [[F::zero(); LANES]; 3];
    let [gahn, gn, uh] = &mut out;
    for l in 0..LANES {
        // n = tanh(ax_n + r ⊙ ah_n), the reset gate on W_hn h + b_hn
        gahn[l] = ua_n[l] + ub_n[l];
        gn[l] = (ux_n[l] + ur[l] * gahn[l]).tanh_act();
        // h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}
        uh[l] = (one - uz[l]) * gn[l] + uz[l] * uhp[l];
    }
    store_lanes(g, r.clone(), &out[..2]);
    store_lanes([h_out], r, &out[2..]);
}

/// Backward through time. `dh_out`: (T_out, B, H) gradient arriving at the last T_out
/// states h_t from above (see [`super::backward`]).
pub fn backward<F: Real>(
    p: &LayerParams<F>,
    cache: GruCache<F>,
    dh_out: ArrayView3<F>,
    how: Backward,
) -> LayerGrads<F> {
    let GruCache {
        x,
        mut gates,
        hs,
        mask,
    } = cache;
    let (t_len, b, i) = x.dim();
    let h = p.weight_hh.ncols();

    let mut dh_sq = Array2::<f64>::zeros((t_len, b)); // ‖∂L/∂h_t‖² per row
    // Running recurrent part of ∂L/∂h from step t+1; after the loop, ∂L/∂h₀.
    let mut dh_next = Array2::<F>::zeros((b, h));

    let rows = slices::chunk_rows(b, how.threads);
    let chunks: Vec<_> = gates
        .axis_chunks_iter_mut(Axis(1), rows)
        .zip(hs.axis_chunks_iter(Axis(1), rows))
        .zip(super::dh_out_blocks(dh_out, t_len, rows))
        .zip(dh_sq.axis_chunks_iter_mut(Axis(1), rows))
        .zip(dh_next.axis_chunks_iter_mut(Axis(0), rows))
        .zip(super::mask_blocks(mask.as_ref(), rows))
        .map(|(((((gates, hs), dh_out), dh_sq), dh_next), mask)| Rows {
            dh: vec![F::zero(); h],
            carry: mask.map(|_| Array2::zeros(dh_next.dim())),
            gates,
            hs,
            dh_out,
            dh_sq,
            dh_next,
            mask,
        })
        .collect();
    let w_hh = gemm::PackedB::new(p.weight_hh.view(), how.threads); // (3H, H)
    slices::run_backward(chunks, t_len, how.threads, |rows, steps| {
        backward_rows(&w_hh, rows, steps)
    });
    w_hh.recycle();

    // `gates` now holds [da_r da_z dah_n dax_n] for every step: (T·B, 4H).
    let d = gates
        .into_shape_with_order((t_len * b, 4 * h))
        .expect("contiguous");
    // P = [h_{t−1} | x_t | 1]ᵀ · [da_r da_z dah_n dax_n]: (H + I + 1, 4H). The recurrent
    // weights take columns r, z, h_n; the input weights columns r, z, x_n (so the rows of
    // h_{t−1} are not computed in the x_n block).
    let prod = super::grad_product(d.view(), hs, x.view(), 3 * h, how.threads);
    let input_cols = |rows: ndarray::ArrayView2<F>| {
        concatenate(
            Axis(1),
            &[rows.slice(s![.., ..2 * h]), rows.slice(s![.., 3 * h..])],
        )
        .expect("same rows")
    };
    let params = LayerParams {
        weight_ih: super::transposed(input_cols(prod.slice(s![h..h + i, ..])).view(), how.threads),
        weight_hh: super::transposed(prod.slice(s![..h, ..3 * h]), how.threads),
        bias_ih: input_cols(prod.slice(s![h + i..h + i + 1, ..]))
            .row(0)
            .to_owned(),
        bias_hh: prod.slice(s![h + i, ..3 * h]).to_owned(),
    };
    pool::recycle(prod);
    // forward was [ax_r ax_z ax_n] = x_t W_ihᵀ + b_ih, so dx_t = [da_r da_z dax_n] W_ih
    let dx = how.input_grad.then(|| {
        let mut dx = Array2::<F>::zeros((t_len * b, i));
        let w_rz = p.weight_ih.slice(s![..2 * h, ..]);
        let w_n = p.weight_ih.slice(s![2 * h.., ..]);
        gemm::mat_mul(&d.slice(s![.., ..2 * h]), &w_rz, false, &mut dx.view_mut());
        gemm::mat_mul(&d.slice(s![.., 3 * h..]), &w_n, true, &mut dx.view_mut());
        dx.into_shape_with_order((t_len, b, i)).expect("contiguous")
    });
    pool::recycle(d);
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
    /// (T, b, 4H): [r z ah_n n] in, [da_r da_z dah_n dax_n] out
    gates: ArrayViewMut3<'a, F>,
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
    /// (H): one row of dh_t, for the probe
    dh: Vec<F>,
    /// (b, H): masked rows' ∂L/∂h_t, passed on to step t−1 unchanged
    carry: Option<Array2<F>>,
}

/// Steps `steps` (walked downwards) of the backward time loop over one chunk of rows.
fn backward_rows<F: Real>(w_hh: &gemm::PackedB<F>, r: &mut Rows<'_, F>, steps: Range<usize>) {
    let h = r.hs.dim().2;
    // (from a step's rows of gates and hs[t] to the previous step's: prefetched)
    let behind = super::prefetches(h).then(|| [-r.gates.strides()[0], -r.hs.strides()[0]]);
    for t in steps.rev() {
        if let (Some(m), Some(carry)) = (&r.mask, &mut r.carry) {
            let dh_out_t = r.dh_out.at(t);
            super::mask::save(m.row(t), dh_out_t, Some(r.dh_next.view()), carry.view_mut());
        }
        let mut d = r.gates.index_axis_mut(Axis(0), t);
        gates_backward::<F>(
            slice_mut(&mut d),
            slice(&r.hs.index_axis(Axis(0), t)),
            slice(&r.dh_out.at(t)),
            slice_mut(&mut r.dh_next),
            &mut r.dh,
            slice_mut(&mut r.dh_sq.index_axis_mut(Axis(0), t)),
            h,
            behind.filter(|_| t > 0),
        );
        // masked rows: h_t = h_{t−1}, so the step's gates get no gradient
        if let Some(m) = &r.mask {
            super::mask::restore(m.row(t), None, d.view_mut());
        }
        // forward was [ah_r ah_z ah_n] = h_{t−1} W_hhᵀ + b_hh, so the path through the gates
        // adds [da_r da_z dah_n] W_hh to dh_{t−1} (whose direct part dh_t ⊙ z is already there)
        gemm::mat_mul_packed(&d.slice(s![.., ..3 * h]), w_hh, true, &mut r.dh_next);
        // masked rows: ∂L/∂h_{t−1} = ∂L/∂h_t
        if let (Some(m), Some(carry)) = (&r.mask, &r.carry) {
            super::mask::restore(m.row(t), Some(carry.view()), r.dh_next.view_mut());
        }
    }
}

multiversion!(fn gates_backward<F: Real>(g: &mut [F], h_prev: &[F], dh_out: &[F], dh_next: &mut [F], dh: &mut [F], dh_sq: &mut [f64], hidden: usize, next: Option<[isize; 2]>) => gates_backward_body);

/// One step's elementwise part backward, row by row (the forward is [`gates_forward_body`]):
/// g (b, 4H) holds [r z ah_n n] and is overwritten with [da_r da_z dah_n dax_n]; dh_next
/// (b, H) is the recurrent part of ∂L/∂h_t from step t+1 on entry and the direct part of
/// ∂L/∂h_{t−1}, dh_t ⊙ z, on exit; each row's ‖dh_t‖² goes to dh_sq (b), via the row buffer dh.
/// `next`: the offsets from g and h_prev to the rows the next step backward will read,
/// fetched a block of units at a time ([`simd::prefetch_units`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gates_backward_body<F: Real>(
    g: &mut [F],
    h_prev: &[F],
    dh_out: &[F],
    dh_next: &mut [F],
    dh: &mut [F],
    dh_sq: &mut [f64],
    hidden: usize,
    next: Option<[isize; 2]>,
) {
    let rows = g
        .chunks_exact_mut(4 * hidden)
        .zip(h_prev.chunks_exact(hidden))
        .zip(dh_out.chunks_exact(hidden))
        .zip(dh_next.chunks_exact_mut(hidden))
        .zip(dh_sq.iter_mut());
    // (the offsets of the next step's rows, one per slice the unit loop fetches from)
    let next = next.map(|[g, h]| [g, g, g, g, h]);
    for ((((g, h_prev), dh_out), dh_next), sq) in rows {
        let (g_r, rest) = g.split_at_mut(hidden);
        let (g_z, rest) = rest.split_at_mut(hidden);
        let (g_ahn, g_n) = rest.split_at_mut(hidden);
        let dh = &mut dh[..hidden];
        // LANES units at a time through local arrays (see `simd::LANES`), then the rest
        let mut j = 0;
        while j + LANES <= hidden {
            simd::prefetch_units([&g_r[..], g_z, g_ahn, g_n, h_prev], next, j, LANES);
            let g4 = [&mut *g_r, g_z, g_ahn, g_n];
            backward_units(g4, h_prev, dh_out, dh_next, dh, j, LANES);
            j += LANES;
        }
        if j < hidden {
            simd::prefetch_units([&g_r[..], g_z, g_ahn, g_n, h_prev], next, j, hidden - j);
            let g4 = [g_r, g_z, g_ahn, g_n];
            backward_units(g4, h_prev, dh_out, dh_next, dh, j, hidden - j);
        }
        *sq = sum_sq_f64(dh);
    }
}

/// Units j … j+n−1 (n ≤ [`LANES`]) of one row of [`gates_backward_body`]: g = [r z ah_n n]
/// in, [da_r da_z dah_n dax_n] out; dh_next (the recurrent part of ∂L/∂h_t) in, dh_t ⊙ z
/// out; dh_t (the probe's ∂L/∂h_t) to `dh`.
#[inline(always)]
fn backward_units<F: Real>(
    g: [&mut [F]; 4],
    h_prev: &[F],
    dh_out: &[F],
    dh_next: &mut [F],
    dh: &mut [F],
    j: usize,
    n: usize,
) {
    let r = j..j + n;
    let [g_r, g_z, g_ahn, g_n] = g;
    let one = F::one();
    let mut u = load_lanes(
        [&g_r[..], g_z, g_ahn, g_n, h_prev, dh_out, dh_next],
        r.clone(),
    );
    let (mut udh, mut udn) = ([F::zero(); LANES], [F::zero(); LANES]);
    let [ur, uz, uahn, un, uhp, udo, udr] = &mut u;
    for l in 0..LANES {
        let (r, z, ahn, n) = (ur[l], uz[l], uahn[l], un[l]);
        // dh_t = dh_out_t + dh_next: the probe's ∂L/∂h_t
        let dh_t = udo[l] + udr[l];
        udh[l] = dh_t;
        // forward: h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}, so
        // dn = dh_t ⊙ (1 − z),  dz = dh_t ⊙ (h_{t−1} − n),  dh_{t−1} (direct) = dh_t ⊙ z
        let dn = dh_t * (one - z);
        let dz = dh_t * (uhp[l] - n);
        udn[l] = dh_t * z;
        // forward: n = tanh(ax_n + r ⊙ ah_n), so dax_n = dn ⊙ (1 − n²),
        // dah_n = dax_n ⊙ r,  dr = dax_n ⊙ ah_n
        let dax_n = dn * (one - n * n);
        let dah_n = dax_n * r;
        let dr = dax_n * ahn;
        // forward: r = σ(a_r), z = σ(a_z); σ' = σ(1 − σ) from the outputs
        ur[l] = dr * r * (one - r);
        uz[l] = dz * z * (one - z);
        uahn[l] = dah_n;
        un[l] = dax_n;
    }
    store_lanes([g_r, g_z, g_ahn, g_n], r.clone(), &u[..4]);
    store_lanes([dh_next, dh], r, &[udn, udh]);
}

/// The three H-wide blocks of a 3H-wide row.
#[inline(always)]
fn split3<F>(v: &[F], hidden: usize) -> (&[F], &[F], &[F]) {
    let (a, rest) = v.split_at(hidden);
    let (b, c) = rest.split_at(hidden);
    (a, b, &c[..hidden])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2, arr3};

    /// The one-step case derived by hand in the module docs.
    #[test]
    fn one_step_by_hand() {
        let p = LayerParams {
            weight_ih: arr2(&[[0.0f64], [0.0], [1.0]]),
            weight_hh: arr2(&[[0.0f64], [0.0], [1.0]]),
            bias_ih: Array1::zeros(3),
            bias_hh: arr1(&[0.0, 0.0, 0.5]),
        };
        let cache = forward(&p, arr3(&[[[1.0f64]]]).view(), arr2(&[[0.5]]).view(), 1);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        close(cache.hs[[1, 0, 0]], 0.702_574_13);
        close(cache.update_gate_mean()[0], 0.5);
        let g = backward(&p, cache, arr3(&[[[1.0]]]).view(), Backward::default());
        // dax_n = ∂L/∂b_in, and b_hn behind the reset gate gets r times that
        close(g.params.bias_ih[2], 0.090_353_32);
        close(g.params.bias_hh[2], 0.045_176_66);
        close(g.params.weight_hh[[2, 0]], 0.022_588_33);
        close(g.params.weight_ih[[2, 0]], 0.090_353_32);
        // r and z blocks: same gradient for both biases
        close(g.params.bias_ih[0], 0.022_588_33);
        close(g.params.bias_hh[0], 0.022_588_33);
        close(g.params.bias_ih[1], -0.101_287_06);
        close(g.params.bias_hh[1], -0.101_287_06);
        close(g.dx.unwrap()[[0, 0, 0]], 0.090_353_32);
        close(g.dstate0.h[[0, 0]], 0.545_176_66);
        assert_eq!(g.probes.dh_norm, vec![1.0]);
    }
}
