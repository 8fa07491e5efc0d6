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
//! The cache holds x, the gate activations (T, B, 4H), c and h; tanh(c_t) is recomputed in
//! backward rather than stored. The backward pass overwrites each step's activations with that
//! step's pre-activation gradients, so the largest part of the cache is reused for the
//! gradients instead of being allocated twice. Each step is one product (for small inputs
//! with x_t W_ihᵀ + b computed inside its tiles: `cell::preactivation`) and one fused
//! elementwise pass, forward (`gates_forward`) and backward (`gates_backward`) side by
//! side below; the batch splits into independent row blocks across threads (see the module
//! docs of [`super`]).
//!
//! A one-step case by hand (I = H = B = 1, all weights 0 except b_ih = [0, 1, 0, 0]
//! (forget bias 1), W_ih = [1, 1, 1, 1]ᵀ, x = 0.5, h₀ = 0, c₀ = 2, loss L = h₁):
//! a = [0.5, 1.5, 0.5, 0.5]; i = o = σ(0.5) = 0.62245933, f = σ(1.5) = 0.81757448,
//! g = tanh 0.5 = 0.46211716; c₁ = 0.81757448·2 + 0.62245933·0.46211716 = 1.92279809;
//! h₁ = 0.62245933·tanh(1.92279809) = 0.62245933·0.95814724 = 0.59640769.
//! ∂L/∂c₁ = o(1 − tanh²c₁) = 0.62245933·0.08195387 = 0.05101295; ∂L/∂c₀ = ∂L/∂c₁·f = 0.04170689.
//! (Asserted in a test below.)

use super::simd::{self, LANES, load_lanes, multiversion, store_lanes, sum_sq_f64};
use super::slices;
use super::{Backward, LayerGrads, Probes, State, gemm, mean_norms, pool, slice, slice_mut};
use crate::params::LayerParams;
use crate::real::Real;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3, Axis};
use std::ops::Range;

/// What the LSTM's backward pass needs from its forward pass.
#[derive(Clone, Debug)]
pub struct LstmCache<F> {
    /// x: (T, B, I)
    pub x: Array3<F>,
    /// Activated gates [i f g o] per step: (T, B, 4H)
    pub gates: Array3<F>,
    /// cs: (T+1, B, H), `cs[0]` = c₀
    pub cs: Array3<F>,
    /// hs: (T+1, B, H), `hs[0]` = h₀
    pub hs: Array3<F>,
    /// mask: (T, B), 0 = a skipped step (see [`super::mask`]); None = no step skipped
    pub mask: Option<Array2<F>>,
}

impl<F: Real> LstmCache<F> {
    /// Mean forget-gate activation over batch and units, per timestep: (T).
    pub fn forget_gate_mean(&self) -> Vec<f64> {
        super::gate_mean(&self.gates, self.hs.dim().2, 1)
    }
}

/// The weights and bias as the per-step products read them.
struct StepWeights<F> {
    /// W_ihᵀ: (I, 4H)
    w_ih_t: Array2<F>,
    /// W_hhᵀ: (H, 4H), packed for the per-step product
    w_hh_t: gemm::PackedB<F>,
    /// b_ih + b_hh: (4H)
    bias: ndarray::Array1<F>,
}

/// Forward over all T steps. `x`: (T, B, I), `h0`, `c0`: (B, H).
pub fn forward<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    h0: ArrayView2<F>,
    c0: ArrayView2<F>,
    threads: usize,
) -> LstmCache<F> {
    forward_masked(p, x, None, h0, c0, threads)
}

/// [`forward`] skipping the steps where `mask` (T, B) is 0 (see [`super::mask`]).
pub fn forward_masked<F: Real>(
    p: &LayerParams<F>,
    x: ArrayView3<F>,
    mask: Option<ArrayView2<F>>,
    h0: ArrayView2<F>,
    c0: ArrayView2<F>,
    threads: usize,
) -> LstmCache<F> {
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
    };
    let mut gates = pool::take((t_len, b, 4 * h));
    let mut hs = pool::take((t_len + 1, b, h));
    let mut cs = pool::take((t_len + 1, b, h));
    hs.index_axis_mut(Axis(0), 0).assign(&h0);
    cs.index_axis_mut(Axis(0), 0).assign(&c0);

    let rows = slices::chunk_rows(b, threads);
    let chunks: Vec<_> = x
        .axis_chunks_iter(Axis(1), rows)
        .zip(gates.axis_chunks_iter_mut(Axis(1), rows))
        .zip(hs.axis_chunks_iter_mut(Axis(1), rows))
        .zip(cs.axis_chunks_iter_mut(Axis(1), rows))
        .zip(super::mask_blocks(mask.as_ref(), rows))
        .map(|((((x, gates), hs), cs), mask)| FwdRows {
            x,
            gates,
            hs,
            cs,
            mask,
        })
        .collect();
    slices::run(chunks, t_len, threads, |r, steps| {
        forward_rows(&w, r, steps)
    });
    w.w_hh_t.recycle();
    LstmCache {
        x,
        gates,
        cs,
        hs,
        mask,
    }
}

/// One chunk of rows (sequences) of the forward pass.
struct FwdRows<'a, F> {
    /// x: (T, b, I)
    x: ArrayView3<'a, F>,
    /// gates: (T, b, 4H)
    gates: ArrayViewMut3<'a, F>,
    /// hs, cs: (T+1, b, H)
    hs: ArrayViewMut3<'a, F>,
    cs: ArrayViewMut3<'a, F>,
    /// mask: (T, b)
    mask: Option<ArrayView2<'a, F>>,
}

/// Steps `steps` of the time loop over one chunk of rows.
fn forward_rows<F: Real>(w: &StepWeights<F>, r: &mut FwdRows<'_, F>, steps: Range<usize>) {
    let FwdRows {
        x,
        gates,
        hs,
        cs,
        mask,
    } = r;
    let h = hs.dim().2;
    // (from a step's rows of gates, cs[t + 1] and hs[t + 1] to the next step's: prefetched)
    let t_len = gates.dim().0;
    let ahead =
        super::prefetches(h).then(|| [gates.strides()[0], cs.strides()[0], hs.strides()[0]]);
    for t in steps {
        let mut a = gates.index_axis_mut(Axis(0), t);
        // a = (x_t W_ihᵀ + (b_ih + b_hh)) + h_{t−1} W_hhᵀ                    (b, 4H)
        let (x_t, h_prev) = (x.index_axis(Axis(0), t), hs.index_axis(Axis(0), t));
        super::preactivation(x_t, &w.w_ih_t, &w.bias, h_prev, &w.w_hh_t, &mut a);
        let (c_prev, mut c_next) = cs.view_mut().split_at(Axis(0), t + 1);
        let mut h_next = hs.index_axis_mut(Axis(0), t + 1);
        gates_forward::<F>(
            slice_mut(&mut a),
            slice(&c_prev.index_axis(Axis(0), t)),
            slice_mut(&mut c_next.index_axis_mut(Axis(0), 0)),
            slice_mut(&mut h_next),
            h,
            ahead.filter(|_| t + 1 < t_len),
        );
        // masked rows: h_t = h_{t−1}, c_t = c_{t−1}
        if let Some(m) = &mask {
            super::mask::hold(m.row(t), hs.view_mut(), t);
            super::mask::hold(m.row(t), cs.view_mut(), t);
        }
    }
}

// (public, hidden, for the kernel benchmark `gate_pass_forward_lstm`)
multiversion!(#[doc(hidden)] pub fn gates_forward<F: Real>(a: &mut [F], c_prev: &[F], c: &mut [F], h_out: &mut [F], hidden: usize, next: Option<[isize; 3]>) => gates_forward_body);

/// One step's elementwise part, row by row: a (b, 4H) holds [a_i a_f a_g a_o] and is
/// overwritten with [i f g o]; writes c_t and h_t (b, H). `next`: the offsets from a, c and
/// h_out to the rows the next step will write, fetched a block of units at a time
/// ([`simd::prefetch_units`]).
#[inline(always)]
fn gates_forward_body<F: Real>(
    a: &mut [F],
    c_prev: &[F],
    c: &mut [F],
    h_out: &mut [F],
    hidden: usize,
    next: Option<[isize; 3]>,
) {
    let rows = a
        .chunks_exact_mut(4 * hidden)
        .zip(c_prev.chunks_exact(hidden))
        .zip(c.chunks_exact_mut(hidden))
        .zip(h_out.chunks_exact_mut(hidden));
    // (the offsets of the next step's rows, one per slice the unit loop fetches from)
    let next = next.map(|[a, c, h]| [a, a, a, a, c, h]);
    for (((a, c_prev), c), h_out) in rows {
        let (a_i, rest) = a.split_at_mut(hidden);
        let (a_f, rest) = rest.split_at_mut(hidden);
        let (a_g, a_o) = rest.split_at_mut(hidden);
        // Two sweeps over the row: first the four gates, in place, then c_t and h_t from
        // them (read back from the row, in L1); the first also fetches the next step's rows.
        // In one sweep a block of units carried a gate's exp and division and then c_t's
        // tanh, with its own, as one chain of dependent latency, and ran at ~114 cycles a
        // block; split, ~86 (16 rows at H = 128, in L1: `gate_pass_forward_lstm`; see the
        // GRU's forward pass and BENCHMARKS.md). Each sweep goes LANES units at a time
        // through local arrays (which
        // nothing else can alias, so the compiler vectorises the unit loop), then the rest.
        let mut j = 0;
        while j + LANES <= hidden {
            simd::prefetch_units([&a_i[..], a_f, a_g, a_o, c, h_out], next, j, LANES);
            activate_units([&mut *a_i, a_f, a_g, a_o], j, LANES);
            j += LANES;
        }
        if j < hidden {
            simd::prefetch_units([&a_i[..], a_f, a_g, a_o, c, h_out], next, j, hidden - j);
            activate_units([&mut *a_i, a_f, a_g, a_o], j, hidden - j);
        }
        let gates = [&a_i[..], a_f, a_g, a_o];
        let mut j = 0;
        while j + LANES <= hidden {
            state_units(gates, c_prev, c, h_out, j, LANES);
            j += LANES;
        }
        if j < hidden {
            state_units(gates, c_prev, c, h_out, j, hidden - j);
        }
    }
}

/// Units j … j+n−1 (n ≤ [`LANES`]) of one row of [`gates_forward_body`], its first sweep:
/// the pre-activations [a_i a_f a_g a_o] in, the gates [i f g o] out, in place.
#[inline(always)]
fn activate_units<F: Real>(a: [&mut [F]; 4], j: usize, n: usize) {
    let r = j..j + n;
    let [a_i, a_f, a_g, a_o] = a;
    let mut u = load_lanes([&a_i[..], a_f, a_g, a_o], r.clone());
    let [ui, uf, ug, uo] = &mut u;
    for l in 0..LANES {
        // i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
        (ui[l], uf[l]) = (ui[l].sigmoid(), uf[l].sigmoid());
        (ug[l], uo[l]) = (ug[l].tanh_act(), uo[l].sigmoid());
    }
    store_lanes([a_i, a_f, a_g, a_o], r, &u);
}

/// Units j … j+n−1 (n ≤ [`LANES`]) of one row of [`gates_forward_body`], its second sweep:
/// the gates [i f g o] and c_{t−1} in, c_t and h_t out.
#[inline(always)]
fn state_units<F: Real>(
    gates: [&[F]; 4],
    c_prev: &[F],
    c: &mut [F],
    h_out: &mut [F],
    j: usize,
    n: usize,
) {
    let r = j..j + n;
    let [g_i, g_f, g_g, g_o] = gates;
    let [ui, uf, ug, uo, ucp] = load_lanes([g_i, g_f, g_g, g_o, c_prev], r.clone());
    let mut out = [[F::zero(); LANES]; 2];
    let [uc, uh] = &mut out;
    for l in 0..LANES {
        // c_t = f ⊙ c_{t−1} + i ⊙ g
        uc[l] = uf[l] * ucp[l] + ui[l] * ug[l];
        // h_t = o ⊙ tanh(c_t)
        uh[l] = uo[l] * uc[l].tanh_act();
    }
    store_lanes([c, h_out], r, &out);
}

/// Backward through time. `dh_out`: (T_out, B, H) gradient arriving at the last T_out
/// states h_t from above (see [`super::backward`]).
pub fn backward<F: Real>(
    p: &LayerParams<F>,
    cache: LstmCache<F>,
    dh_out: ArrayView3<F>,
    how: Backward,
) -> LayerGrads<F> {
    let LstmCache {
        x,
        mut gates,
        cs,
        hs,
        mask,
    } = cache;
    let (t_len, b, _) = x.dim();
    let h = p.weight_hh.ncols();

    // Per step and row, ‖∂L/∂h_t‖² and ‖∂L/∂c_t‖² (f64), reduced to the probes after the loop.
    let mut dh_sq = Array2::<f64>::zeros((t_len, b));
    let mut dc_sq = Array2::<f64>::zeros((t_len, b));
    // Running ∂L/∂h, ∂L/∂c from step t+1; after the loop, ∂L/∂h₀ and ∂L/∂c₀.
    let mut dh_next = Array2::<F>::zeros((b, h));
    let mut dc_next = Array2::<F>::zeros((b, h));

    let rows = slices::chunk_rows(b, how.threads);
    let chunks: Vec<_> = gates
        .axis_chunks_iter_mut(Axis(1), rows)
        .zip(cs.axis_chunks_iter(Axis(1), rows))
        .zip(super::dh_out_blocks(dh_out, t_len, rows))
        .zip(dh_sq.axis_chunks_iter_mut(Axis(1), rows))
        .zip(dc_sq.axis_chunks_iter_mut(Axis(1), rows))
        .zip(dh_next.axis_chunks_iter_mut(Axis(0), rows))
        .zip(dc_next.axis_chunks_iter_mut(Axis(0), rows))
        .zip(super::mask_blocks(mask.as_ref(), rows))
        .map(
            |(((((((g, cs), dh_out), dh_sq), dc_sq), dh_n), dc_n), mask)| Rows {
                scratch: vec![F::zero(); 2 * h],
                carry: mask.map(|_| (Array2::zeros(dh_n.dim()), Array2::zeros(dh_n.dim()))),
                gates: g,
                cs,
                dh_out,
                dh_sq,
                dc_sq,
                dh_next: dh_n,
                dc_next: dc_n,
                mask,
            },
        )
        .collect();
    let w_hh = gemm::PackedB::new(p.weight_hh.view(), how.threads); // (4H, H)
    slices::run_backward(chunks, t_len, how.threads, |rows, steps| {
        backward_rows(&w_hh, rows, steps)
    });
    w_hh.recycle();
    pool::recycle(cs);

    // `gates` now holds da for every step.
    let da = gates
        .into_shape_with_order((t_len * b, 4 * h))
        .expect("contiguous");
    let (params, dx) = super::weight_grads(p, da.view(), hs, x.view(), how);
    pool::recycle(da);
    pool::recycle(x);
    LayerGrads {
        params,
        dx,
        dstate0: State {
            h: dh_next,
            c: Some(dc_next),
        },
        probes: Probes {
            dh_norm: mean_norms(dh_sq.as_slice().expect("contiguous"), b),
            dc_norm: Some(mean_norms(dc_sq.as_slice().expect("contiguous"), b)),
        },
    }
}

/// One thread's share of the backward pass: a block of b rows (sequences) of every array.
struct Rows<'a, F> {
    /// (T, b, 4H): activations in, pre-activation gradients out
    gates: ArrayViewMut3<'a, F>,
    /// (T+1, b, H)
    cs: ArrayView3<'a, F>,
    /// (T, b, H)
    /// ∂L/∂h_t from above
    dh_out: super::DhOut<'a, F>,
    /// (T, b): ‖dh_t‖², ‖dc_t‖² per row
    dh_sq: ArrayViewMut2<'a, f64>,
    dc_sq: ArrayViewMut2<'a, f64>,
    /// (b, H): running ∂L/∂h, ∂L/∂c from step t+1; ∂L/∂h₀, ∂L/∂c₀ at the end
    dh_next: ArrayViewMut2<'a, F>,
    dc_next: ArrayViewMut2<'a, F>,
    /// (T, b): 0 = a skipped step
    mask: Option<ArrayView2<'a, F>>,
    /// (2H): one row of dh_t and of dc_t
    scratch: Vec<F>,
    /// (b, H) each: masked rows' ∂L/∂h_t and ∂L/∂c_t, passed on to step t−1 unchanged
    carry: Option<(Array2<F>, Array2<F>)>,
}

/// Steps `steps` (walked downwards) of the backward time loop over one chunk of rows.
fn backward_rows<F: Real>(w_hh: &gemm::PackedB<F>, r: &mut Rows<'_, F>, steps: Range<usize>) {
    let h = r.cs.dim().2;
    // (from a step's rows of gates and cs[t] to the previous step's: prefetched)
    let behind = super::prefetches(h).then(|| [-r.gates.strides()[0], -r.cs.strides()[0]]);
    for t in steps.rev() {
        if let (Some(m), Some((carry_h, carry_c))) = (&r.mask, &mut r.carry) {
            let dh_out_t = r.dh_out.at(t);
            super::mask::save(
                m.row(t),
                dh_out_t,
                Some(r.dh_next.view()),
                carry_h.view_mut(),
            );
            super::mask::save(m.row(t), r.dc_next.view(), None, carry_c.view_mut());
        }
        let mut da = r.gates.index_axis_mut(Axis(0), t);
        gates_backward::<F>(
            slice_mut(&mut da),
            slice(&r.cs.index_axis(Axis(0), t)),
            slice(&r.cs.index_axis(Axis(0), t + 1)),
            slice(&r.dh_out.at(t)),
            slice(&r.dh_next.view()),
            slice_mut(&mut r.dc_next),
            &mut r.scratch,
            slice_mut(&mut r.dh_sq.index_axis_mut(Axis(0), t)),
            slice_mut(&mut r.dc_sq.index_axis_mut(Axis(0), t)),
            h,
            behind.filter(|_| t > 0),
        );
        // masked rows: h_t = h_{t−1} and c_t = c_{t−1}, so da_t = 0, ∂L/∂c_{t−1} = ∂L/∂c_t
        if let (Some(m), Some((_, carry_c))) = (&r.mask, &r.carry) {
            super::mask::restore(m.row(t), None, da.view_mut());
            super::mask::restore(m.row(t), Some(carry_c.view()), r.dc_next.view_mut());
            let mut dc_sq = r.dc_sq.index_axis_mut(Axis(0), t);
            let dc_sq = dc_sq.as_slice_mut().expect("contiguous");
            super::mask::probe(m.row(t), carry_c.view(), dc_sq);
        }
        // forward was a += h_{t−1} W_hhᵀ, so the recurrent part of dh_{t−1} = da_t W_hh
        gemm::mat_mul_packed(&da.view(), w_hh, false, &mut r.dh_next);
        // masked rows: ∂L/∂h_{t−1} = ∂L/∂h_t
        if let (Some(m), Some((carry_h, _))) = (&r.mask, &r.carry) {
            super::mask::restore(m.row(t), Some(carry_h.view()), r.dh_next.view_mut());
        }
    }
}

multiversion!(fn gates_backward<F: Real>(g: &mut [F], c_prev: &[F], c: &[F], dh_out: &[F], dh_next: &[F], dc_next: &mut [F], scratch: &mut [F], dh_sq: &mut [f64], dc_sq: &mut [f64], hidden: usize, next: Option<[isize; 2]>) => gates_backward_body);

/// One step's elementwise part backward, row by row (the forward is [`gates_forward_body`]):
/// g (b, 4H) holds [i f g o] and is overwritten with [da_i da_f da_g da_o]; dc_next (b, H) is
/// ∂L/∂c_t from step t+1 on entry and ∂L/∂c_{t−1} on exit; the squared norms of dh_t and
/// dc_t per row go to dh_sq, dc_sq (b). `next`: the offsets from g and c_prev to the rows
/// the next step backward will read, fetched a block of units at a time
/// ([`simd::prefetch_units`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gates_backward_body<F: Real>(
    g: &mut [F],
    c_prev: &[F],
    c: &[F],
    dh_out: &[F],
    dh_next: &[F],
    dc_next: &mut [F],
    scratch: &mut [F],
    dh_sq: &mut [f64],
    dc_sq: &mut [f64],
    hidden: usize,
    next: Option<[isize; 2]>,
) {
    let (dh, dc) = scratch.split_at_mut(hidden);
    let rows = g
        .chunks_exact_mut(4 * hidden)
        .zip(c_prev.chunks_exact(hidden))
        .zip(c.chunks_exact(hidden))
        .zip(dh_out.chunks_exact(hidden))
        .zip(dh_next.chunks_exact(hidden))
        .zip(dc_next.chunks_exact_mut(hidden))
        .zip(dh_sq.iter_mut().zip(dc_sq.iter_mut()));
    // (the offsets of the next step's rows, one per slice the unit loop fetches from)
    let next = next.map(|[g, c]| [g, g, g, g, c]);
    for ((((((g, c_prev), c), dh_out), dh_next), dc_next), (dh_sq, dc_sq)) in rows {
        let (g_i, rest) = g.split_at_mut(hidden);
        let (g_f, rest) = rest.split_at_mut(hidden);
        let (g_g, g_o) = rest.split_at_mut(hidden);
        // LANES units at a time through local arrays, as in the forward.
        let mut j = 0;
        while j + LANES <= hidden {
            simd::prefetch_units([&g_i[..], g_f, g_g, g_o, c_prev], next, j, LANES);
            let (g4, cs) = ([&mut *g_i, g_f, g_g, g_o], [c_prev, c]);
            backward_units(g4, cs, [dh_out, dh_next], dc_next, [dh, dc], j, LANES);
            j += LANES;
        }
        if j < hidden {
            simd::prefetch_units([&g_i[..], g_f, g_g, g_o, c_prev], next, j, hidden - j);
            let (g4, cs) = ([g_i, g_f, g_g, g_o], [c_prev, c]);
            backward_units(g4, cs, [dh_out, dh_next], dc_next, [dh, dc], j, hidden - j);
        }
        *dh_sq = sum_sq_f64(dh);
        *dc_sq = sum_sq_f64(dc);
    }
}

/// Units j … j+n−1 (n ≤ [`LANES`]) of one row of [`gates_backward_body`]: g = [i f g o] in,
/// [da_i da_f da_g da_o] out; c = [c_{t−1}, c_t]; dh_in = [dh_out_t, dh_next]; dc_next in
/// and out; probe = [dh_t, dc_t] out.
#[inline(always)]
fn backward_units<F: Real>(
    g: [&mut [F]; 4],
    c: [&[F]; 2],
    dh_in: [&[F]; 2],
    dc_next: &mut [F],
    probe: [&mut [F]; 2],
    j: usize,
    n: usize,
) {
    let r = j..j + n;
    let [g_i, g_f, g_g, g_o] = g;
    let one = F::one();
    let srcs = [&g_i[..], g_f, g_g, g_o, c[0], c[1], dh_in[0], dh_in[1]];
    let mut u = load_lanes(srcs, r.clone());
    let [mut udcn] = load_lanes([&dc_next[..]], r.clone());
    let (mut udh, mut udc) = ([F::zero(); LANES], [F::zero(); LANES]);
    let [ui, uf, ug, uo, ucp, uc, udo, udn] = &mut u;
    for l in 0..LANES {
        // dh_t = dh_out_t + dh_next: the probe's ∂L/∂h_t
        let dh_t = udo[l] + udn[l];
        udh[l] = dh_t;
        let (i, f, g, o) = (ui[l], uf[l], ug[l], uo[l]);
        // forward: h_t = o ⊙ tanh(c_t), and c_t also flows on to step t+1, so
        // dc_t = dc_next + dh_t ⊙ o ⊙ (1 − tanh²c_t),  do = dh_t ⊙ tanh c_t
        let tc = uc[l].tanh_act();
        let dc_t = udcn[l] + dh_t * o * (one - tc * tc);
        udc[l] = dc_t;
        let d_o = dh_t * tc;
        // forward: c_t = f ⊙ c_{t−1} + i ⊙ g, so
        // di = dc_t ⊙ g,  df = dc_t ⊙ c_{t−1},  dg = dc_t ⊙ i,  dc_{t−1} = dc_t ⊙ f
        let (di, df, dg) = (dc_t * g, dc_t * ucp[l], dc_t * i);
        udcn[l] = dc_t * f;
        // forward: i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o); from the outputs:
        // σ' = σ(1 − σ), tanh' = 1 − tanh²
        ui[l] = di * i * (one - i);
        uf[l] = df * f * (one - f);
        ug[l] = dg * (one - g * g);
        uo[l] = d_o * o * (one - o);
    }
    store_lanes([g_i, g_f, g_g, g_o], r.clone(), &u[..4]);
    let [dh, dc] = probe;
    store_lanes([dc_next, dh, dc], r, &[udcn, udh, udc]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, arr1, arr2, arr3};

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
            1,
        );
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        close(cache.cs[[1, 0, 0]], 1.922_798_09);
        close(cache.hs[[1, 0, 0]], 0.596_407_69);
        close(cache.forget_gate_mean()[0], 0.817_574_48);
        let g = backward(&p, cache, arr3(&[[[1.0]]]).view(), Backward::default());
        close(g.probes.dc_norm.as_ref().unwrap()[0], 0.051_012_95);
        close(g.dstate0.c.as_ref().unwrap()[[0, 0]], 0.041_706_89);
        assert_eq!(g.dstate0.h[[0, 0]], 0.0); // W_hh = 0: nothing flows back through h
    }
}
