//! Recurrent cells over a whole batch of sequences: forward fills a cache, backward consumes
//! it (backpropagation through time) and returns every gradient plus the per-timestep probes.
//!
//! Layout, used everywhere in this module: time-major. T = timesteps, B = batch, I = input
//! size, H = hidden size, G = gate blocks (1 for the RNN, 4 for the LSTM, 3 for the GRU).
//! - inputs `x`: (T, B, I); hidden states `hs`: (T+1, B, H) with `hs[0]` = h₀, so step t
//!   reads its predecessor `hs[t]` and writes `hs[t+1]` without a special case.
//! - `dh_out`: (T_out, B, H), the gradient of the loss with respect to the last T_out ≤ T
//!   outputs h_t that arrives from *above* (the readout head: T_out = 1 when it reads only
//!   the last state, T when it reads every state); zero at the earlier steps, which need no
//!   array of zeros. The recurrence adds its own part.
//!
//! How the cells are fast (DESIGN.md, Performance): the time loop allocates nothing; each step
//! is one product into the gate buffer ([`gemm`], an AVX-512 kernel for f32) and one fused
//! pass of elementwise gate math ([`simd`]: vectorised, with a polynomial exp); the weight
//! gradients of all timesteps are one product after the loop (`weight_grads`); the probe
//! norms are summed in f64 inside the fused pass; the big arrays come from a per-thread
//! [`pool`] of recycled buffers. Sequences of a batch never interact inside the recurrence, so
//! with `threads` > 1 the batch is split into chunks of rows whose time loops the threads
//! advance a few steps at a time, each taking the chunk furthest behind ([`slices`]: a faster
//! core takes more), and the products after the loop are split by output rows or columns: every
//! number is computed by the same operations in the same order whatever the thread count, so
//! results are bit-identical with 1 or 2 threads. The calling thread takes part, with helper
//! threads that spin between the regions of a step ([`team`]); `threads` = 1 starts no other
//! thread (sweeps run many single-threaded runs side by side).
//!
//! An optional mask (T, B) skips steps per sequence (padding, Keras' `mask_zero`): see
//! [`mask`] and [`forward_masked`]; the mask travels in the cache to the backward pass.
//!
//! [`reference`](mod@reference) keeps the plain implementation the fast cells are tested against.
//! This module knows nothing about heads, losses or tasks.

pub mod gemm;
pub mod gru;
pub mod lstm;
pub mod mask;
pub mod pool;
pub mod reference;
pub mod rnn;
pub mod simd;
pub mod slices;
pub mod team;

use crate::params::{CellKind, LayerParams};
use crate::real::Real;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

/// The recurrent state carried between steps: h (B, H), and c (B, H) for the LSTM.
#[derive(Clone, Debug, PartialEq)]
pub struct State<F> {
    /// h: (B, H)
    pub h: Array2<F>,
    /// c: (B, H), only for cells with a memory cell (LSTM).
    pub c: Option<Array2<F>>,
}

impl<F: Real> State<F> {
    /// The all-zero initial state (PyTorch's default when no state is passed).
    pub fn zeros(cell: CellKind, batch: usize, hidden: usize) -> Self {
        let c = cell
            .has_cell_state()
            .then(|| Array2::zeros((batch, hidden)));
        State {
            h: Array2::zeros((batch, hidden)),
            c,
        }
    }
}

/// Per-timestep gradient norms: the probe of DESIGN.md. For every t, the mean over the batch
/// of the per-sequence L2 norm of ∂L/∂h_t (and ∂L/∂c_t), computed and accumulated in f64.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probes {
    /// ‖∂L/∂h_t‖ for t = 0 … T−1.
    pub dh_norm: Vec<f64>,
    /// ‖∂L/∂c_t‖ for t = 0 … T−1 (LSTM only).
    pub dc_norm: Option<Vec<f64>>,
}

/// What a cell's backward pass returns.
#[derive(Clone, Debug)]
pub struct LayerGrads<F> {
    /// Gradients of the layer's weights (same layout as the weights).
    pub params: LayerParams<F>,
    /// ∂L/∂x: (T, B, I), when asked for ([`Backward::input_grad`]).
    pub dx: Option<Array3<F>>,
    /// ∂L/∂(initial state).
    pub dstate0: State<F>,
    /// The probes, a by-product of the backward walk.
    pub probes: Probes,
}

/// The forward cache of one layer; holds the hidden states the head reads. (Moved once per
/// pass, so the size difference between the variants costs nothing worth a `Box`.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Cache<F> {
    Rnn(rnn::RnnCache<F>),
    Lstm(lstm::LstmCache<F>),
    Gru(gru::GruCache<F>),
}

impl<F: Real> Cache<F> {
    /// All hidden states, (T+1, B, H), `hs[0]` = h₀.
    pub fn hs(&self) -> &Array3<F> {
        match self {
            Cache::Rnn(c) => &c.hs,
            Cache::Lstm(c) => &c.hs,
            Cache::Gru(c) => &c.hs,
        }
    }

    /// The final state (h_T, and c_T for the LSTM).
    pub fn final_state(&self) -> State<F> {
        let t = self.hs().dim().0 - 1;
        let h = self.hs().index_axis(ndarray::Axis(0), t).to_owned();
        let c = match self {
            Cache::Lstm(c) => Some(c.cs.index_axis(ndarray::Axis(0), t).to_owned()),
            Cache::Rnn(_) | Cache::Gru(_) => None,
        };
        State { h, c }
    }
}

/// Runs the cell of `params` over `x` (T, B, I) from `state0`, on `threads` threads.
pub fn forward<F: Real>(
    cell: CellKind,
    params: &LayerParams<F>,
    x: ArrayView3<F>,
    state0: &State<F>,
    threads: usize,
) -> Cache<F> {
    forward_masked(cell, params, x, None, state0, threads)
}

/// [`forward`], skipping the steps where `mask` (T, B) is 0: the state is carried over and
/// the step gets no gradient (see [`mask`]). Entries must be 0 or 1.
pub fn forward_masked<F: Real>(
    cell: CellKind,
    params: &LayerParams<F>,
    x: ArrayView3<F>,
    mask: Option<ArrayView2<F>>,
    state0: &State<F>,
    threads: usize,
) -> Cache<F> {
    let h0 = state0.h.view();
    match cell {
        CellKind::Rnn | CellKind::RnnRelu => {
            let activation = match cell {
                CellKind::RnnRelu => rnn::Activation::Relu,
                _ => rnn::Activation::Tanh,
            };
            Cache::Rnn(rnn::forward_masked(
                params, x, mask, h0, activation, threads,
            ))
        }
        CellKind::Gru => Cache::Gru(gru::forward_masked(params, x, mask, h0, threads)),
        CellKind::Lstm => {
            let c0 = state0
                .c
                .as_ref()
                .expect("an LSTM needs an initial cell state c0");
            Cache::Lstm(lstm::forward_masked(
                params,
                x,
                mask,
                h0,
                c0.view(),
                threads,
            ))
        }
    }
}

/// The mask as the cache keeps it: checked against (T, B), copied to standard layout.
pub(crate) fn own_mask<F: Real>(
    mask: Option<ArrayView2<F>>,
    t: usize,
    b: usize,
) -> Option<Array2<F>> {
    mask.map(|m| {
        mask::check(&m, t, b);
        m.as_standard_layout().into_owned()
    })
}

/// The mask's column blocks matching a split of the batch into blocks of `rows`
/// (all None without a mask): as many items as row blocks.
pub(crate) fn mask_blocks<F: Real>(
    mask: Option<&Array2<F>>,
    rows: usize,
) -> Box<dyn Iterator<Item = Option<ArrayView2<'_, F>>> + '_> {
    match mask {
        Some(m) => Box::new(m.axis_chunks_iter(ndarray::Axis(1), rows).map(Some)),
        None => Box::new(std::iter::repeat(None)),
    }
}

/// What a backward pass is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backward {
    /// Threads to split the batch over (1: the calling thread alone).
    pub threads: usize,
    /// Whether to compute ∂L/∂x (training does not need it).
    pub input_grad: bool,
}

impl Default for Backward {
    /// One thread, ∂L/∂x included: everything, as the gradient check wants it.
    fn default() -> Self {
        Backward {
            threads: 1,
            input_grad: true,
        }
    }
}

/// Backpropagation through time: consumes the cache, takes ∂L/∂h_t from above for the last
/// T_out ≤ T steps, (T_out, B, H), and returns all gradients and the probes.
pub fn backward<F: Real>(
    params: &LayerParams<F>,
    cache: Cache<F>,
    dh_out: ArrayView3<F>,
    how: Backward,
) -> LayerGrads<F> {
    let (t1, b, h) = cache.hs().dim();
    let (t_out, b_out, h_out) = dh_out.dim();
    assert!(
        t_out < t1 && (b_out, h_out) == (b, h),
        "backward: ∂L/∂h from above is {:?}, the layer ran T = {}, B = {b}, H = {h}",
        dh_out.dim(),
        t1 - 1,
    );
    match cache {
        Cache::Rnn(c) => rnn::backward(params, c, dh_out, how),
        Cache::Lstm(c) => lstm::backward(params, c, dh_out, how),
        Cache::Gru(c) => gru::backward(params, c, dh_out, how),
    }
}

/// ∂L/∂h_t from above for one block of rows: given for the last T_out of T steps, zero before.
pub(crate) struct DhOut<'a, F> {
    /// (T_out, b, H)
    given: ArrayView3<'a, F>,
    /// T − T_out: the first step given
    first: usize,
    /// (b, H) zeros for the steps before `first` (empty when every step is given)
    zeros: Array2<F>,
}

impl<F: Real> DhOut<'_, F> {
    /// ∂L/∂h_t from above: (b, H), contiguous.
    pub(crate) fn at(&self, t: usize) -> ArrayView2<'_, F> {
        match t.checked_sub(self.first) {
            Some(k) => self.given.index_axis(ndarray::Axis(0), k),
            None => self.zeros.view(),
        }
    }
}

/// `dh_out` (T_out, B, H) of a layer that ran `t_len` steps, in blocks of `rows` rows (as the
/// cells cut their caches).
pub(crate) fn dh_out_blocks<'a, F: Real>(
    dh_out: ArrayView3<'a, F>,
    t_len: usize,
    rows: usize,
) -> impl Iterator<Item = DhOut<'a, F>> {
    let (t_out, b, h) = dh_out.dim();
    let first = t_len - t_out;
    (0..b).step_by(rows.max(1)).map(move |r0| {
        let given = dh_out.slice_move(ndarray::s![.., r0..(r0 + rows).min(b), ..]);
        DhOut {
            zeros: Array2::zeros((if first > 0 { given.dim().1 } else { 0 }, h)),
            given,
            first,
        }
    })
}

/// Rows per block when a batch of `batch` rows is split for `threads` threads: a multiple of
/// [`gemm::MR`] (so that the products' register tiles stay full), at least 1. Fewer blocks
/// than threads when the batch is small; one block when `threads` ≤ 1.
pub(crate) fn block_rows(batch: usize, threads: usize) -> usize {
    if threads <= 1 {
        return batch.max(1);
    }
    batch.div_ceil(threads).next_multiple_of(gemm::MR).max(1)
}

/// `a` and `b` side by side, as the two items of a [`run_parallel`] (on the caller's thread and
/// a helper of its [`team`], or both on the caller's when the team is busy), returning both.
/// (Used for the two directions of a bidirectional layer.)
pub(crate) fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    // each job with the slot it fills: the two slots are separate borrows, so no lock
    enum Job<'s, FA, A, FB, B> {
        A(FA, &'s mut Option<A>),
        B(FB, &'s mut Option<B>),
    }
    let (mut out_a, mut out_b) = (None, None);
    run_parallel(
        vec![Job::A(a, &mut out_a), Job::B(b, &mut out_b)],
        |job| match job {
            Job::A(a, out) => *out = Some(a()),
            Job::B(b, out) => *out = Some(b()),
        },
    );
    let ran = "run_parallel returns when every item has run";
    (out_a.expect(ran), out_b.expect(ran))
}

/// Runs `job` once per item, the items shared out among as many threads (the caller's and its
/// [`team`]); one item: on the caller's thread. Each thread takes item number [`team::member`]
/// first, so that a job reading what that thread's chunks of a time loop wrote (see
/// [`slices`]) finds it in its own core's caches; a thread done with its own takes any left.
pub(crate) fn run_parallel<T: Send>(items: Vec<T>, job: impl Fn(T) + Sync) {
    let threads = items.len();
    let queue: std::sync::Mutex<Vec<Option<T>>> =
        std::sync::Mutex::new(items.into_iter().map(Some).collect());
    team::workers(threads, &|| {
        let _flush = crate::fpu::FlushSubnormals::new(); // as on the caller's thread
        let mine = team::member();
        loop {
            // (its own item first, then any left; the lock is released before the job runs)
            let next = {
                let mut queue = queue.lock().expect("no worker panicked");
                match queue.get_mut(mine).and_then(Option::take) {
                    Some(item) => Some(item),
                    None => queue.iter_mut().find_map(Option::take),
                }
            };
            let Some(item) = next else { break };
            job(item);
        }
    });
}

/// A copy into `data`, made of units of `unit` entries each (a panel, a row), shared out
/// among `threads` threads in runs of whole units, a multiple of `granule` units each (the
/// last run shorter): `job(first, run)` fills the units from number `first` on. Copies of
/// fewer than [`PARALLEL_COPY_FROM`] entries run on the calling thread alone.
pub(crate) fn copy_in_parallel<F: Send>(
    data: &mut [F],
    unit: usize,
    granule: usize,
    threads: usize,
    job: impl Fn(usize, &mut [F]) + Sync,
) {
    if data.is_empty() {
        return;
    }
    let units = data.len() / unit;
    let per_run = if data.len() < PARALLEL_COPY_FROM {
        units
    } else {
        units.div_ceil(threads.max(1)).next_multiple_of(granule)
    };
    let runs: Vec<_> = data.chunks_mut(per_run * unit).enumerate().collect();
    run_parallel(runs, |(r, run)| job(r * per_run, run));
}

/// Entries from which [`copy_in_parallel`] shares a copy (a transpose, a packing of
/// weights) out among the threads: below it, waking a helper costs about what it saves.
pub(crate) const PARALLEL_COPY_FROM: usize = 1 << 14;

/// a = x_t W_ihᵀ + (b_ih + b_hh) for one step's block of rows: `x` (b, I), `w_ih_t` (I, G·H),
/// `bias` (G·H), `a` (b, G·H) overwritten. For the small inputs of the tasks (I ≤ 16) one
/// fused pass, bias + Σ_c x[r, c]·W_ihᵀ[c, :] in order of c ([`gemm::Affine`]); otherwise a
/// product.
pub(crate) fn input_projection<F: Real>(
    x: ndarray::ArrayView2<F>,
    w_ih_t: &Array2<F>,
    bias: &ndarray::Array1<F>,
    a: &mut ndarray::ArrayViewMut2<F>,
) {
    match small_input(x, w_ih_t, bias) {
        Some(affine) => affine.write_to(a),
        None => projection_product(x, w_ih_t, bias, a),
    }
}

/// [`input_projection`] for many inputs: the bias, then a product accumulated onto it.
fn projection_product<F: Real>(
    x: ndarray::ArrayView2<F>,
    w_ih_t: &Array2<F>,
    bias: &ndarray::Array1<F>,
    a: &mut ndarray::ArrayViewMut2<F>,
) {
    a.rows_mut().into_iter().for_each(|mut r| r.assign(bias));
    gemm::mat_mul(&x, &w_ih_t.view(), true, a);
}

/// a = (x_t W_ihᵀ + (b_ih + b_hh)) + h_{t−1} W_hhᵀ for one step's block of rows: `h_prev`
/// (b, H), `w_hh_t` W_hhᵀ packed, the rest as [`input_projection`], which this is followed by
/// a product, bit for bit. For small inputs the product's tiles add the input projection
/// themselves ([`gemm::mat_mul_packed_affine`]): `a` is written once, not filled, read back
/// and rewritten.
pub(crate) fn preactivation<F: Real>(
    x: ndarray::ArrayView2<F>,
    w_ih_t: &Array2<F>,
    bias: &ndarray::Array1<F>,
    h_prev: ndarray::ArrayView2<F>,
    w_hh_t: &gemm::PackedB<F>,
    a: &mut ndarray::ArrayViewMut2<F>,
) {
    match small_input(x, w_ih_t, bias) {
        Some(affine) => gemm::mat_mul_packed_affine(&affine, &h_prev, w_hh_t, a),
        None => {
            projection_product(x, w_ih_t, bias, a);
            gemm::mat_mul_packed(&h_prev, w_hh_t, true, a);
        }
    }
}

/// The input projection as a [`gemm::Affine`] when the inputs are few (I ≤ 16; any layout:
/// the affine map takes every layout, on its fast path where the rows are contiguous).
fn small_input<'a, F: Real>(
    x: ndarray::ArrayView2<'a, F>,
    w_ih_t: &'a Array2<F>,
    bias: &'a ndarray::Array1<F>,
) -> Option<gemm::Affine<'a, F>> {
    (w_ih_t.nrows() <= 16).then(|| gemm::Affine {
        x,
        w: w_ih_t.view(),
        bias: bias.view(),
    })
}

/// Mean over the batch of per-row norms given as squared sums: `sq` is (T, B) row-major;
/// returns (T) values of (1/B) Σ_b √sq[t, b], summed in batch order.
pub(crate) fn mean_norms(sq: &[f64], batch: usize) -> Vec<f64> {
    sq.chunks_exact(batch)
        .map(|row| row.iter().map(|s| s.sqrt()).sum::<f64>() / batch as f64)
        .collect()
}

/// Mean activation of gate block `block` (0-based, H units wide) over batch and units, per
/// timestep: `gates` (T, B, G·H) → (T). The LSTM's forget gate is block 1 of [i f g o], the
/// GRU's update gate block 1 of [r z …].
pub(crate) fn gate_mean<F: Real>(gates: &Array3<F>, hidden: usize, block: usize) -> Vec<f64> {
    gates
        .outer_iter()
        .map(|g| {
            let gate = g.slice(ndarray::s![.., block * hidden..(block + 1) * hidden]);
            gate.iter().map(|v| v.f64()).sum::<f64>() / gate.len() as f64
        })
        .collect()
}

/// The weight gradients of all timesteps in one product, after the backward loop, plus ∂L/∂x
/// if asked for. `da`: (T·B, G·H), the pre-activation gradients of every step; `hs`: (T+1, B, H)
/// (only h₀ … h_{T−1} are read); `x`: (T, B, I).
///
/// ```text
/// forward was a_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh, so
/// [dW_hhᵀ; dW_ihᵀ; db] = [h_{t−1} | x_t | 1]ᵀ · da        ((H + I + 1), G·H), one product
/// db_ih = db_hh = db;   dx_t = da_t W_ih
/// ```
pub(crate) fn weight_grads<F: Real>(
    p: &LayerParams<F>,
    da: ndarray::ArrayView2<F>,
    hs: Array3<F>,
    x: ndarray::ArrayView3<F>,
    how: Backward,
) -> (LayerParams<F>, Option<Array3<F>>) {
    use ndarray::s;
    let (t_len, b, i) = x.dim();
    let h = hs.dim().2;
    let out = grad_product(da, hs, x, da.ncols(), how.threads);
    let db = out.row(h + i).to_owned();
    let grads = LayerParams {
        weight_ih: transposed(out.slice(s![h..h + i, ..]), how.threads),
        weight_hh: transposed(out.slice(s![..h, ..]), how.threads),
        bias_ih: db.clone(),
        bias_hh: db,
    };
    pool::recycle(out);
    let dx = how.input_grad.then(|| {
        let mut dx = Array2::<F>::zeros((t_len * b, i));
        gemm::mat_mul(&da, &p.weight_ih.view(), false, &mut dx.view_mut());
        dx.into_shape_with_order((t_len, b, i)).expect("contiguous")
    });
    (grads, dx)
}

/// Pieces the weight-gradient sum over T·B is cut into (fewer when T·B is shorter than that
/// many [`gemm::KC`]-deep blocks, or the batch has fewer rows): piece p is the batch's rows
/// p·B / 2 … (p + 1)·B / 2 at every timestep, t by t (see [`gemm::PackedAt`]), summed into a
/// partial product of its own, the partials then added in order. The cut depends on the
/// shape alone, never on the thread count, so every thread count computes the same sums.
/// Two threads take one piece each: each reads half of [h | x | 1] and of da, once, where
/// cutting P into column blocks had both threads read all of [h | x | 1], twice (measured
/// against that split: RNN steps 0.89–0.91×, GRU 0.97, LSTM 0.96–0.99, H = 256 1.00–1.01;
/// BENCHMARKS.md). And the half each reads is the half its own time loops wrote (the rows of
/// its chunks, see [`slices`]), from its own core's caches: the pieces were first halves of
/// the timesteps, of which each thread had written only half the rows. Alternating runs,
/// order alternated, 8 pairs, against those pieces: RNN H = 64 0.937, H = 128 0.954, LSTM
/// H = 64 0.954, H = 128 0.986, B = 128 0.973, H = 256 0.989, T = 400 0.971, GRU 0.940. Each
/// piece is cut evenly (at T·B = 6400, whole numbers of KC blocks left one thread a block
/// more of work and the other waiting for it: the product took 7.73–7.90 ms at LSTM H = 256
/// instead of 7.42–7.56, timed per region).
pub(crate) const K_PIECES: usize = 2;

/// Piece `p` of `n` rows cut into `pieces` even pieces: rows p·n / pieces … (p + 1)·n / pieces
/// (the batch's rows in piece p of the weight-gradient sum, see [`K_PIECES`]).
fn piece_rows(n: usize, pieces: usize, p: usize) -> std::ops::Range<usize> {
    p * n / pieces..(p + 1) * n / pieces
}

/// P = [h_{t−1} | x_t | 1]ᵀ · da, summed over all steps: (H + I + 1, C) for `da` (T·B, C).
/// Rows 0…H−1 hold Σ_t h_{t−1}ᵀ da_t, rows H…H+I−1 Σ_t x_tᵀ da_t, row H+I Σ_t Σ_b da_t: the
/// weight and bias gradients, transposed. `hs` (T+1, B, H) is consumed (only h₀ … h_{T−1}
/// are read), `x` is (T, B, I). [h_{t−1} | x_t | 1] is built once, in the layout the product
/// reads ([`gemm::PackedAt`]), and shared by the threads. The sum is cut into [`K_PIECES`]
/// pieces by rows of the batch (P = P₀ + P₁), and each piece, with its columns of P cut into as many
/// groups as the threads need beyond one per piece, is advanced through its part of the sum in
/// slices of KC-deep blocks by whichever thread is free (see [`slices`]); each entry is the
/// same sums in the same order whatever the threads. Only the first `h_cols` columns of da
/// need the rows of h_{t−1} (the GRU's dax_n block has no recurrent weight): in the columns
/// after them rows 0…H−1 are skipped (left zero, up to the last multiple of [`gemm::MR`]
/// rows). P comes from the buffer [`pool`]: hand it back ([`pool::recycle`]) when done.
pub(crate) fn grad_product<F: Real>(
    da: ndarray::ArrayView2<F>,
    hs: Array3<F>,
    x: ndarray::ArrayView3<F>,
    h_cols: usize,
    threads: usize,
) -> Array2<F> {
    use ndarray::{Axis, s};
    let (t_len, b, i) = x.dim();
    let h = hs.dim().2;
    let (m, cols_total) = (h + i + 1, da.ncols());
    let k = t_len * b;
    let da = da
        .into_shape_with_order((t_len, b, cols_total))
        .expect("contiguous");
    // The pieces of the sum: the batch cut into even ranges of rows, each piece those rows at
    // every timestep, t by t, summed in KC-deep blocks from its first row on.
    let pieces = K_PIECES.min(k.div_ceil(gemm::KC)).min(b).max(1);
    let batch_rows: Vec<_> = (0..pieces).map(|p| piece_rows(b, pieces, p)).collect();
    let rows_of_a: Vec<std::ops::Range<usize>> = batch_rows
        .iter()
        .map(|r| t_len * r.start..t_len * r.end)
        .collect();
    // A = [h_{t−1} | x_t | 1]: (T·B, H + I + 1) in the pieces' order, row by row, a piece
    // per thread
    let (h_all, x_all) = (hs.as_slice(), x.to_slice());
    let (h_all, x_all) = (
        h_all.expect("standard layout"),
        x_all.expect("standard layout"),
    );
    let a = gemm::PackedAt::build(m, rows_of_a.clone(), threads, |q, dst| {
        let p = rows_of_a
            .iter()
            .rposition(|r| r.start <= q)
            .expect("row 0 on");
        let (run, q) = (batch_rows[p].len(), q - rows_of_a[p].start);
        let row = q / run * b + batch_rows[p].start + q % run; // (t, r) → t·B + r
        dst[..h].copy_from_slice(&h_all[row * h..][..h]);
        dst[h..h + i].copy_from_slice(&x_all[row * i..][..i]);
        dst[h + i] = F::one();
    });
    pool::recycle(hs);

    // (from the pool, on a cache line as the tiles' loads and stores of C want it: every
    // entry is written below but the rows of h_{t−1} in the columns after h_cols, zeroed
    // here; the first is the result, which the caller hands back. Fresh zeroed arrays, as
    // before, cost an allocation and a release of 2 × 1 MiB every step at LSTM H = 256:
    // alternating runs, order alternated, LSTM H = 128 0.954, H = 256 0.980, T = 400 0.971,
    // GRU 0.987, RNN H = 128 0.996.)
    let skip = h - h % gemm::MR;
    let mut partials: Vec<Array2<F>> = (0..pieces)
        .map(|_| {
            let mut p: Array2<F> = pool::take((m, cols_total));
            if k == 0 {
                p.fill(F::zero()); // (no block to write it)
            } else {
                p.slice_mut(s![..skip, h_cols..]).fill(F::zero());
            }
            p
        })
        .collect();
    // How far one call goes: a few KC-deep blocks on the fast path; where the product cannot
    // be cut along k exactly, a whole piece.
    let depth = if gemm::splits_k_exactly::<F>() {
        gemm::KC
    } else {
        k.max(1)
    };
    let groups = threads.div_ceil(pieces).max(1);
    // (chunks: per piece and group of columns, its first row of the sum and the parts it
    // advances: of the first h_cols columns with every row of P, of the rest with the rows from
    // `skip` on, each with the first row of P it holds)
    let mut chunks = Vec::new();
    for (p, partial) in partials.iter_mut().enumerate() {
        let rows = a.piece(p);
        let (out_h, out_rest) = partial.view_mut().split_at(Axis(1), h_cols);
        let da = da.slice(s![.., batch_rows[p].clone(), ..]); // (T, rows, C)
        let (da_h, da_rest) = da.split_at(Axis(2), h_cols);
        let out_rest = out_rest.slice_move(s![skip.., ..]);
        let mut parts: Vec<Vec<_>> = (0..groups).map(|_| Vec::new()).collect();
        for (mut out, mut da, row0) in [(out_h, da_h, 0), (out_rest, da_rest, skip)] {
            let cols = da.dim().2.div_ceil(groups).next_multiple_of(gemm::NR);
            for group in parts.iter_mut() {
                let w = cols.min(da.dim().2);
                if w == 0 {
                    break;
                }
                let (out_w, out_next) = out.split_at(Axis(1), w);
                let (da_w, da_next) = da.split_at(Axis(2), w);
                group.push((out_w, da_w, row0));
                (out, da) = (out_next, da_next);
            }
        }
        chunks.extend(parts.into_iter().map(|g| (rows.start, rows.len(), g)));
    }
    // (the last piece is the longest)
    let steps = a.piece(pieces - 1).len().div_ceil(depth);
    // (each chunk's slices go to the thread whose time loops wrote its rows of da and h: the
    // chunks of piece p are p·groups … (p + 1)·groups − 1, see `slices`)
    slices::run(chunks, steps, threads, |(start, len, parts), blocks| {
        let ks = (blocks.start * depth).min(*len)..(blocks.end * depth).min(*len);
        if ks.is_empty() {
            return;
        }
        for (out, da, row0) in parts.iter_mut() {
            let rows = *start + ks.start..*start + ks.end;
            gemm::mat_mul_at(&a, rows, *row0, da, ks.start > 0, out)
        }
    });
    a.recycle();
    // P = P₀ + P₁ + …, in order
    let mut partials = partials.into_iter();
    let mut out = partials.next().expect("at least one piece");
    for partial in partials {
        out += &partial;
        pool::recycle(partial);
    }
    out
}

/// Whether a layer of `hidden` units prefetches the rows of its caches that the next step
/// will write (forward) or read (backward), during this step's gate math
/// ([`simd::prefetch`]): from H = 128 on. Measured in alternating blocks of steps on the
/// project's machine, it made LSTM and GRU steps 1–9% faster at H = 128 and 256 (one and two
/// threads; T = 100 and 400), but 1–9% slower at H = 64, where a step's rows are few enough
/// for the hardware prefetchers and the fetched lines only crowd L1.
pub(crate) fn prefetches(hidden: usize) -> bool {
    hidden >= 128
}

/// aᵀ in standard layout, copied in square tiles that stay in L1, from row slices of `a`
/// (ndarray's copy of a transposed view goes element by element with a stride through the
/// whole of `a`: ~1 ms for a weight gradient of H = 256, on the calling thread alone; indexing
/// `a` entry by entry inside the tiles still cost ~4 ns an entry). The rows of aᵀ are shared
/// out among `threads` threads (0.31 ms on one thread for the recurrent weights' gradient of
/// an LSTM at H = 256, (1024, 256), which the other thread spent waiting).
pub(crate) fn transposed<F: Real>(a: ArrayView2<F>, threads: usize) -> Array2<F> {
    const TILE: usize = 16;
    let (m, n) = a.dim();
    let Some(rows) = a
        .rows()
        .into_iter()
        .map(|r| r.to_slice())
        .collect::<Option<Vec<_>>>()
    else {
        return a.t().as_standard_layout().into_owned(); // rows with a stride
    };
    let mut t = Array2::<F>::zeros((n, m));
    // rows j of aᵀ (columns of a) in runs of whole tiles
    let dst = t.as_slice_mut().expect("fresh array");
    copy_in_parallel(dst, m, TILE, threads, |first, dst| {
        let cols = first..first + dst.len() / m;
        for (i0, tile_rows) in rows.chunks(TILE).enumerate() {
            for j0 in cols.clone().step_by(TILE) {
                let j1 = (j0 + TILE).min(cols.end);
                for (di, row) in tile_rows.iter().enumerate() {
                    let i = i0 * TILE + di;
                    for (j, &v) in (j0..j1).zip(&row[j0..j1]) {
                        dst[(j - cols.start) * m + i] = v;
                    }
                }
            }
        }
    });
    t
}

/// The data of a block of rows (contiguous: a row range of one step).
pub(crate) fn slice<'a, F, D: ndarray::Dimension>(v: &'a ndarray::ArrayView<'_, F, D>) -> &'a [F] {
    v.as_slice().expect("row block is contiguous")
}

/// The data of a mutable block of rows (contiguous: a row range of one step).
pub(crate) fn slice_mut<'a, F, D: ndarray::Dimension>(
    v: &'a mut ndarray::ArrayViewMut<'_, F, D>,
) -> &'a mut [F] {
    v.as_slice_mut().expect("row block is contiguous")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::s;

    #[test]
    fn transposed_matches_ndarray_on_cut_views() {
        // 37 × 45: tails in both tile dimensions; the column cut gives rows with a stride
        let a = Array2::from_shape_fn((37, 50), |(i, j)| (i * 50 + j) as f32);
        let b = Array2::from_shape_fn((50, 37), |(i, j)| (i * 37 + j) as f32);
        // large enough to be shared out among threads, with tails there too
        let c = Array2::from_shape_fn((150, 203), |(i, j)| (i * 203 + j) as f32);
        assert!(c.len() >= PARALLEL_COPY_FROM);
        for v in [
            a.view(),
            a.slice(s![3.., ..45]),
            a.slice(s![..1, ..]),
            b.t(),
            c.view(),
            c.slice(s![5.., 1..]),
        ] {
            for threads in [1, 2, 3] {
                assert_eq!(transposed(v, threads), v.t().to_owned());
            }
        }
    }

    /// On two threads each piece of the weight-gradient sum is made of the rows of the time
    /// loops' chunks that the thread taking that piece first owns (the batches of the standard
    /// configurations and a few others): what it reads it wrote itself.
    #[test]
    fn each_thread_sums_the_rows_its_time_loops_wrote() {
        let threads = 2;
        for b in [64, 128, 32, 96, 256] {
            let rows = slices::chunk_rows(b, threads);
            let chunks = b.div_ceil(rows);
            for c in 0..chunks {
                let chunk = c * rows..((c + 1) * rows).min(b);
                let piece = piece_rows(b, K_PIECES, slices::owner(c, chunks, threads));
                assert!(
                    piece.start <= chunk.start && chunk.end <= piece.end,
                    "B {b}: chunk {c} (rows {chunk:?}) is not in its owner's piece {piece:?}"
                );
            }
        }
    }

    /// The weight-gradient product, cut into pieces along T·B (3 and 4 KC blocks: pieces of
    /// unequal length; one block: a single piece), against the sums in f64: the same numbers
    /// on 1–3 threads, close to the exact ones, and the rows of h_{t−1} left zero in the
    /// columns after `h_cols`.
    #[test]
    fn grad_product_matches_the_sums_on_any_threads() {
        let (h, i, c, h_cols) = (13, 2, 40, 30); // c − h_cols: columns without h_{t−1}
        for (t, b) in [(9, 64), (2, 100), (16, 56), (5, 67)] {
            let k = t * b;
            let f = |n: usize, seed: usize| ((n * 7919 + seed) % 1009) as f32 / 504.5 - 1.0;
            let hs = Array3::from_shape_fn((t + 1, b, h), |(s, r, u)| f(s * b * h + r * h + u, 1));
            let x = Array3::from_shape_fn((t, b, i), |(s, r, u)| f(s * b * i + r * i + u, 2));
            let da = Array2::from_shape_fn((k, c), |(p, j)| f(p * c + j, 3));
            let one = grad_product(da.view(), hs.clone(), x.view(), h_cols, 1);
            for threads in [2, 3] {
                let got = grad_product(da.view(), hs.clone(), x.view(), h_cols, threads);
                assert_eq!(got, one, "T {t}, B {b}, {threads} threads");
            }
            // exact: Σ_p A(p, row)·da(p, j) with A = [h_{t−1} | x_t | 1]
            let a = |p: usize, row: usize| -> f64 {
                let (s, r) = (p / b, p % b);
                match row {
                    row if row < h => hs[[s, r, row]] as f64,
                    row if row < h + i => x[[s, r, row - h]] as f64,
                    _ => 1.0,
                }
            };
            let skip = h - h % gemm::MR;
            for row in 0..h + i + 1 {
                for j in 0..c {
                    if j >= h_cols && row < skip {
                        assert_eq!(one[[row, j]], 0.0, "skipped row {row}, column {j}");
                        continue;
                    }
                    let want: f64 = (0..k).map(|p| a(p, row) * da[[p, j]] as f64).sum();
                    let err = (one[[row, j]] as f64 - want).abs();
                    assert!(
                        err < 1e-5 * k as f64,
                        "T {t}, B {b}: P[{row}, {j}] off by {err}"
                    );
                }
            }
        }
    }
}
