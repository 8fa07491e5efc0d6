//! The matrix product the cells run on: C = A·B (+ C), with an AVX-512 kernel for `f32`.
//!
//! Every product in a training step has one operand whose rows are contiguous (a weight
//! matrix or a block of cached states) and one that is read with arbitrary strides, and the
//! per-step products are small ((B, H)·(H, 4H) with B = 64). `ndarray`'s default backend
//! (matrixmultiply) packs both operands on every call and only uses 256-bit vectors; on a CPU
//! with AVX-512 this kernel needs no packing and runs about twice as fast at these shapes.
//!
//! [`mat_mul`] takes the fast path when F is `f32`, the CPU has AVX-512F, and B and C have
//! contiguous rows; otherwise (in particular always for `f64`, which the gradient check needs
//! exact and reproducible) it calls `ndarray::linalg::general_mat_mul`. [`mat_mul_packed`]
//! is the same product for a B that many products share, copied once into the layout the
//! kernel reads fastest ([`PackedB`]: the recurrent weights, multiplied every timestep);
//! [`mat_mul_packed_affine`] adds to it a step's input projection, bias + X·W for an X of a
//! few columns ([`Affine`]), computed inside the tiles; and [`mat_mul_at`] is the
//! weight-gradient product Aᵀ·B for an A built straight into that layout ([`PackedAt`]),
//! which threads share and which can be cut along k.
//!
//! Determinism: every entry C[i, j] is computed by the same sequence of operations, whatever
//! the tile it falls in and however the rows of A are split between threads: a sum over k in
//! increasing order in blocks of [`KC`], each block added to C in order. So splitting the rows
//! of a product across threads gives bit-identical results.
//!
//! This module knows nothing about recurrent cells.

use crate::real::Real;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayView3, ArrayViewMut2};
use std::any::TypeId;
use std::ops::Range;

/// Rows of C per register tile.
pub const MR: usize = 8;
/// Columns of C per register tile (two 16-lane vectors).
pub const NR: usize = 32;
/// From this many entries of B on (4 MiB of f32, about the L2 cache of a core), each KC × NR
/// strip of B is packed by the first row tile that reads it, for the tiles after it.
pub const PACK_B_ENTRIES: usize = 1 << 20;
/// Depth of one pass over k: a KC × NR panel of B (32 KiB) stays in L1.
pub const KC: usize = 256;
/// Rows of A that [`PackedAt::build`] gathers before writing them into the panels (32 rows
/// of [h | x | 1] at H = 256 are 33 KiB: they stay in L1; 16 rows did as well, 64 and 256
/// less well at H = 64).
const BUILD_ROWS: usize = 32;

/// C ← A·B + β·C for A (m, k), B (k, n), C (m, n), with β ∈ {0, 1} (`accumulate`).
pub fn mat_mul<F: Real>(
    a: &ArrayView2<F>,
    b: &ArrayView2<F>,
    accumulate: bool,
    c: &mut ArrayViewMut2<F>,
) {
    product(a, Rhs::View(b), accumulate, c)
}

/// A right-hand operand B (k, n) prepared once for many products A·B with the same B: the
/// weight matrix that every timestep multiplies by.
///
/// On the fast path (f32, AVX-512) B is copied into [`NR`]-column panels,
/// `panel[jb][p][j] = B(p, jb·NR + j)` (the last panel's padding is never read: the edge
/// tiles load B with masks), so that a register tile
/// reads its strip of B sequentially. Read in place, the 128-byte strip a tile needs from
/// each row of B lies 4·n bytes after the previous one; at n = 4H = 512 those rows fall into
/// a few L1 sets only, so the strip is evicted before the next row tile reads it again and
/// comes from L2 every time. Packed, the per-step products run 15–30% faster (BENCHMARKS.md).
/// Packing once per pass (the forward packs W_hhᵀ, the backward W_hh; per timestep was
/// tried and cost as much as it saved) makes it nearly free. The sums are the same, in the
/// same order: results are bit-identical to [`mat_mul`] with the unpacked B.
#[derive(Clone, Debug)]
pub struct PackedB<F>(Packing<F>);

/// What [`PackedB`] holds (private: the kernel trusts the panels' size).
#[derive(Clone, Debug)]
enum Packing<F> {
    /// B itself, for the general path (f64, or no AVX-512).
    Plain(Array2<F>),
    /// ⌈n / NR⌉ panels of k rows of NR entries (from the pool: on a cache line).
    Panels {
        panels: ndarray::Array1<F>,
        k: usize,
        n: usize,
    },
}

impl<F: Real> PackedB<F> {
    /// Prepares B (k, n), of any layout (a weight matrix or its transpose), for
    /// [`mat_mul_packed`], its panels shared out among `threads` threads (the forward and
    /// the backward pass each pack a weight matrix on every training step: ~0.3 and 0.1 ms
    /// on one thread for an LSTM's at H = 256, which the other thread spent waiting).
    pub fn new(b: ArrayView2<F>, threads: usize) -> Self {
        if !kernel_runs::<F>() {
            return PackedB(Packing::Plain(b.as_standard_layout().into_owned()));
        }
        let (k, n) = b.dim();
        // from the buffer pool (see [`Self::recycle`]); every entry but the padding is
        // written below
        let mut panels = super::pool::take::<F, _, _>(n.div_ceil(NR) * k * NR);
        let all = panels.as_slice_mut().expect("fresh array");
        super::copy_in_parallel(all, k * NR, 1, threads, |first, panels| {
            for (q, panel) in panels.chunks_mut(k * NR).enumerate() {
                pack_panel(b, (first + q) * NR, panel);
            }
        });
        PackedB(Packing::Panels { panels, k, n })
    }

    /// Hands the panels back to the buffer pool (see [`super::pool`]): the forward and the
    /// backward pass each pack a weight matrix every training step.
    pub fn recycle(self) {
        if let Packing::Panels { panels, .. } = self.0 {
            super::pool::recycle(panels);
        }
    }

    /// (k, n)
    pub fn dim(&self) -> (usize, usize) {
        match &self.0 {
            Packing::Plain(b) => b.dim(),
            Packing::Panels { k, n, .. } => (*k, *n),
        }
    }
}

/// One panel of [`PackedB`]: B's columns j0 … j0 + NR − 1 (fewer in the last panel),
/// `panel[p·NR + jj] = B(p, j0 + jj)`. B is read along its memory order: the panel's part of
/// each row of B, or each of its columns whole for a transposed view.
fn pack_panel<F: Real>(b: ArrayView2<F>, j0: usize, panel: &mut [F]) {
    let w = NR.min(b.ncols() - j0);
    if b.strides()[1] == 1 {
        for (p, row) in b.rows().into_iter().enumerate() {
            let row = row.to_slice().expect("unit stride");
            panel[p * NR..][..w].copy_from_slice(&row[j0..j0 + w]);
        }
    } else {
        for jj in 0..w {
            let col = b.column(j0 + jj);
            let dst = panel[jj..].iter_mut().step_by(NR);
            match col.as_slice() {
                // (a column of W_hhᵀ is a row of W_hh: through a slice, not ndarray's iterator)
                Some(col) => dst.zip(col).for_each(|(d, &v)| *d = v),
                None => dst.zip(&col).for_each(|(d, &v)| *d = v),
            }
        }
    }
}

/// The left operand of the weight-gradient products, Aᵀ·B with A (k, m) = [h_{t−1} | x_t | 1]
/// over all T·B rows and the sum over those k rows: built once per backward pass, row by row,
/// and read by every thread.
///
/// The rows are cut into pieces, in the order the sum takes them (the caller's choice, fixed
/// by the shape alone: [`PackedAt::piece`]), and each piece into [`KC`]-deep blocks from its
/// first row on (the last block of a piece shorter): the sum over k runs block by block, and a
/// product may be cut along k wherever a block ends.
/// On the fast path (f32, AVX-512) A goes straight into the layout the kernel would copy it
/// into for every product: for each block, [`MR`]-column panels of Aᵀ,
/// `panel[i / MR][p][i % MR] = A(p, i)` (the last panel zero-padded). The threads, which
/// split the product by the columns of B or by pieces of k, then share one copy instead of
/// each packing all of A. Elsewhere A is kept as it is and the product is ndarray's.
#[derive(Clone, Debug)]
pub struct PackedAt<F> {
    data: APacking<F>,
    m: usize,
    /// The pieces' rows, in order: 0 … k between them.
    pieces: Vec<Range<usize>>,
}

/// What [`PackedAt`] holds (private: the kernel trusts the panels' size).
#[derive(Clone, Debug)]
enum APacking<F> {
    /// A itself, (k, m).
    Plain(Array2<F>),
    /// The panels of every block, k·⌈m / MR⌉·MR entries; the block from row p0 on starts at
    /// entry p0·⌈m / MR⌉·MR. (The padding rows of the last panel are never read.)
    Panels(ndarray::Array1<F>),
}

impl<F: Real> PackedAt<F> {
    /// A (k, m) with k the rows of all `pieces` (consecutive from row 0 on, none empty unless
    /// it is the only one), with row p written by `row(p, dst)` (dst: m entries). The pieces
    /// are shared out among `threads` threads in runs of whole pieces, thread i taking run i
    /// first (`run_parallel`): `row` reads what the threads' time loops wrote,
    /// and with one piece per thread, piece i holds the rows that thread i wrote.
    pub fn build(
        m: usize,
        pieces: Vec<Range<usize>>,
        threads: usize,
        row: impl Fn(usize, &mut [F]) + Sync,
    ) -> Self {
        let consecutive = pieces.windows(2).all(|w| w[0].end == w[1].start);
        assert!(
            pieces.first().is_some_and(|p| p.start == 0)
                && consecutive
                && (pieces.len() == 1 || pieces.iter().all(|p| !p.is_empty())),
            "PackedAt: pieces {pieces:?} do not cut 0.. into consecutive runs of rows"
        );
        let k = pieces.last().expect("a piece").end;
        let per_run = pieces.len().div_ceil(threads.max(1));
        let runs: Vec<Vec<Range<usize>>> = pieces
            .chunks(per_run)
            .map(|run| run.iter().flat_map(|p| blocks(p.clone())).collect())
            .collect();
        let run_rows = |run: &[Range<usize>]| run[run.len() - 1].end - run[0].start;
        if !kernel_runs::<F>() {
            let mut a: Array2<F> = super::pool::take((k, m)); // every row written below
            let mut jobs = Vec::new();
            let mut rest = a.view_mut();
            for run in runs.iter().filter(|run| !run.is_empty()) {
                let (mine, next) = rest.split_at(ndarray::Axis(0), run_rows(run));
                jobs.push((run[0].start, mine));
                rest = next;
            }
            super::run_parallel(jobs, |(p0, mut rows)| {
                for (r, mut dst) in rows.rows_mut().into_iter().enumerate() {
                    row(p0 + r, dst.as_slice_mut().expect("standard layout"));
                }
            });
            let data = APacking::Plain(a);
            return PackedAt { data, m, pieces };
        }
        let m_pad = m.div_ceil(MR) * MR;
        // from the buffer pool: a fresh one would cost a page fault per 4 KiB every step
        let mut panels: ndarray::Array1<F> = super::pool::take(k * m_pad);
        let mut jobs = Vec::new();
        let mut rest = panels.as_slice_mut().expect("fresh array");
        for run in runs.into_iter().filter(|run| !run.is_empty()) {
            let (mine, next) = std::mem::take(&mut rest).split_at_mut(run_rows(&run) * m_pad);
            jobs.push((run, mine));
            rest = next;
        }
        super::run_parallel(jobs, |(run, mut part)| {
            // BUILD_ROWS rows of A at a time into a buffer (rows padded to m_pad), then from
            // it into the panels one panel after the other: each panel gets BUILD_ROWS·MR
            // entries in one sequential run. Scattering each row straight into its ⌈m / MR⌉
            // panels kept as many lines half-written at once (33 at H = 256), more than the
            // core has in flight: perf put the build at ~3 GB/s (LSTM H = 256, one thread).
            // This order made RNN H = 128 steps 4–5% faster, LSTM and GRU steps 1–1.5%
            // (BENCHMARKS.md).
            let mut buf = vec![F::zero(); BUILD_ROWS * m_pad];
            for rows in run {
                let kc = rows.len();
                let (block, next) = std::mem::take(&mut part).split_at_mut(kc * m_pad);
                part = next;
                for q0 in (0..kc).step_by(BUILD_ROWS) {
                    let n_rows = BUILD_ROWS.min(kc - q0);
                    for (q, dst) in buf.chunks_exact_mut(m_pad).take(n_rows).enumerate() {
                        row(rows.start + q0 + q, &mut dst[..m]);
                    }
                    for (ib, panel) in block.chunks_mut(MR * kc).enumerate() {
                        let c0 = ib * MR;
                        let panel = &mut panel[q0 * MR..(q0 + n_rows) * MR];
                        // (whole MR-entry pieces: the last panel's padding gets the buffer's,
                        // never read)
                        for (dst, src) in panel.chunks_exact_mut(MR).zip(buf.chunks_exact(m_pad)) {
                            let dst = dst.first_chunk_mut::<MR>().expect("MR entries");
                            *dst = *src[c0..].first_chunk::<MR>().expect("rows padded to MR");
                        }
                    }
                }
            }
        });
        let data = APacking::Panels(panels);
        PackedAt { data, m, pieces }
    }

    /// Hands the buffer back to the pool (see [`super::pool`]).
    pub fn recycle(self) {
        match self.data {
            APacking::Plain(a) => super::pool::recycle(a),
            APacking::Panels(panels) => super::pool::recycle(panels),
        }
    }

    /// (k, m)
    pub fn dim(&self) -> (usize, usize) {
        (self.pieces.last().expect("a piece").end, self.m)
    }

    /// The rows of piece `p`.
    pub fn piece(&self, p: usize) -> Range<usize> {
        self.pieces[p].clone()
    }

    /// The piece of which `ks` is a run of whole blocks (an empty `ks`: of which it is a
    /// row bound), if any.
    fn piece_of(&self, ks: &Range<usize>) -> Option<Range<usize>> {
        self.pieces
            .iter()
            .find(|piece| {
                piece.start <= ks.start
                    && ks.end <= piece.end
                    && (ks.is_empty()
                        || (ks.start - piece.start).is_multiple_of(KC)
                            && ((ks.end - piece.start).is_multiple_of(KC) || ks.end == piece.end))
            })
            .cloned()
    }
}

/// The blocks of a piece: KC rows each from its first row on, the last shorter.
fn blocks(rows: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    (rows.start..rows.end)
        .step_by(KC)
        .map(move |p0| p0..(p0 + KC).min(rows.end))
}

/// C (m − `col0`, n) ← `A[ks, col0..]ᵀ·B` (+ C): the sum over the rows `ks` of A (a run of
/// whole blocks of one piece, see [`PackedAt`]), for the columns of A from `col0` on (a
/// multiple of [`MR`], or m: a product that needs only some rows of the result skips the
/// others). `b` holds B's rows for the whole piece, in runs: (runs, run, n), row q of the
/// piece being `b[q / run, q % run]` (a 2-D B is `b.insert_axis(Axis(0))`; the weight
/// gradients pass da's rows of one range of the batch at every timestep). Cutting a product
/// over k at the blocks' bounds and accumulating the parts in order gives bit-identical
/// results on the fast path (the kernel adds each block into C in turn anyway); see
/// [`splits_k_exactly`]. Every entry is the same whatever `col0`. (Elsewhere, with ndarray's
/// product, the sum goes a run of B's rows at a time: one product per run, added into C in
/// turn, rather than a copy of B.)
pub fn mat_mul_at<F: Real>(
    a: &PackedAt<F>,
    ks: std::ops::Range<usize>,
    col0: usize,
    b: &ArrayView3<F>,
    accumulate: bool,
    c: &mut ArrayViewMut2<F>,
) {
    let (k, m_all) = a.dim();
    let (runs, run, n) = b.dim();
    let piece = a.piece_of(&ks);
    assert!(
        piece.as_ref().is_some_and(|p| p.len() == runs * run)
            && (col0.is_multiple_of(MR) || col0 == m_all)
            && col0 <= m_all
            && c.dim() == (m_all - col0, n),
        "mat_mul_at: rows {ks:?}, columns {col0}.. of ({k}, {m_all})ᵀ·{:?} into {:?}",
        b.dim(),
        c.dim()
    );
    // (the product's first row of B, counted from the piece's first)
    let first = ks.start - piece.expect("checked").start;
    let m = m_all - col0;
    if empty_product((m, n, ks.len()), accumulate, c) {
        return;
    }
    let panels = match &a.data {
        APacking::Plain(a) => {
            // (ndarray's product wants B as one matrix: one product per run, each added to
            // C in turn — always, even where the runs would make one matrix, so that the
            // sums do not depend on whether they do: a product split into groups of columns,
            // as more threads split it, must give the same numbers)
            let a = a.slice(ndarray::s![ks.clone(), col0..]);
            let mut q = first;
            while q < first + ks.len() {
                let (r, i) = (q / run, q % run);
                let len = (run - i).min(first + ks.len() - q);
                let a = a.slice(ndarray::s![q - first..q - first + len, ..]);
                let b = b.slice(ndarray::s![r, i..i + len, ..]);
                mat_mul(&a.t(), &b, accumulate || q > first, c);
                q += len;
            }
            return;
        }
        APacking::Panels(panels) => panels,
    };
    // (the column stride of a single column is never used)
    assert!(
        n == 1 || b.strides()[2] == 1 && c.strides()[1] == 1,
        "mat_mul_at: B and C need contiguous rows, got strides {:?} and {:?}",
        b.strides(),
        c.strides()
    );
    let m_pad = m_all.div_ceil(MR) * MR;
    // SAFETY: panels are only made for f32 with AVX-512, so F is f32 and the kernel may run;
    // they hold every block of k rows of ⌈m_all / MR⌉ panels, ks is a run of whole blocks of
    // one piece, KC deep from its first on, and the one from row ks.start on begins at entry
    // ks.start·m_pad; col0 starts a panel; B holds the piece's rows, of which the product
    // reads first … first + |ks| − 1, and C is a valid view of the asserted shape.
    unsafe {
        avx512::gemm(
            (m, n, ks.len()),
            ALayout::Panels {
                ptr: (panels.as_ptr() as *const f32).add(ks.start * m_pad),
                m_pad,
                col0,
            },
            BLayout::Runs {
                ptr: b.as_ptr() as *const f32,
                rs: b.strides()[1],
                run,
                outer: b.strides()[0],
                first,
            },
            (c.as_mut_ptr() as *mut f32, c.strides()[0]),
            Init::of(accumulate),
        )
    }
}

/// True if a product over k cut at multiples of [`KC`] into pieces, each accumulated into C
/// in order, gives bit-identical results to one product: on the fast path (f32, AVX-512),
/// where the kernel sums each KC-deep block into C in turn anyway; not for ndarray's.
pub fn splits_k_exactly<F: 'static>() -> bool {
    kernel_runs::<F>()
}

/// True if the AVX-512 kernel computes products of F here (f32 on a CPU with AVX-512F).
fn kernel_runs<F: 'static>() -> bool {
    TypeId::of::<F>() == TypeId::of::<f32>() && has_avx512()
}

/// Handles the shapes with nothing to multiply (m, n or k zero; C ← 0 unless accumulating)
/// and returns true if there were any.
fn empty_product<F: Real>(
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    c: &mut ArrayViewMut2<F>,
) -> bool {
    if m > 0 && n > 0 && k == 0 && !accumulate {
        c.fill(F::zero());
    }
    m == 0 || n == 0 || k == 0
}

/// C ← A·B + β·C as [`mat_mul`], for a B prepared by [`PackedB::new`]; bit-identical results.
pub fn mat_mul_packed<F: Real>(
    a: &ArrayView2<F>,
    b: &PackedB<F>,
    accumulate: bool,
    c: &mut ArrayViewMut2<F>,
) {
    match &b.0 {
        Packing::Plain(b) => product(a, Rhs::View(&b.view()), accumulate, c),
        Packing::Panels { panels, k, n } => product(
            a,
            Rhs::Panels(panels.as_slice().expect("contiguous"), *k, *n),
            accumulate,
            c,
        ),
    }
}

/// bias + X·W for an X (m, q) with few columns (the inputs of the synthetic tasks: q ≤ 16), W
/// (q, n) and bias (n). Each row is summed as the bias plus X(i, 0)·W(0, ·), plus
/// X(i, 1)·W(1, ·) and so on, each product rounded and then added. The first term of a
/// recurrent step's pre-activations (x_t W_ihᵀ + b), which [`mat_mul_packed_affine`]
/// computes inside the product's tiles.
pub struct Affine<'a, F> {
    /// X (m, q)
    pub x: ArrayView2<'a, F>,
    /// W (q, n)
    pub w: ArrayView2<'a, F>,
    /// bias (n)
    pub bias: ArrayView1<'a, F>,
}

impl<F: Real> Affine<'_, F> {
    /// (m, n, q), checked against each other.
    fn dims(&self) -> (usize, usize, usize) {
        let ((m, q), (q2, n)) = (self.x.dim(), self.w.dim());
        assert!(
            q == q2 && self.bias.len() == n,
            "affine: ({m}, {q})·({q2}, {n}) + ({})",
            self.bias.len()
        );
        (m, n, q)
    }

    /// C ← bias + X·W, C (m, n). (Operands of another layout are copied into standard
    /// layout first: the sums are the same.)
    pub fn write_to(&self, c: &mut ArrayViewMut2<F>) {
        let (m, n, q) = self.dims();
        assert_eq!(c.dim(), (m, n), "affine into {:?}", c.dim());
        let (x, w, bias) = (
            self.x.as_standard_layout(),
            self.w.as_standard_layout(),
            self.bias.as_standard_layout(),
        );
        let standard = "as_standard_layout";
        let rows = |out: &mut [F]| {
            let (x, w) = (x.as_slice().expect(standard), w.as_slice().expect(standard));
            affine_rows::<F>(x, w, bias.as_slice().expect(standard), out, q, n)
        };
        match c.as_slice_mut() {
            Some(out) => rows(out),
            None => {
                let mut out = Array2::zeros((m, n));
                rows(out.as_slice_mut().expect("fresh array"));
                c.assign(&out);
            }
        }
    }
}

super::simd::multiversion!(fn affine_rows<F: Real>(x: &[F], w: &[F], bias: &[F], out: &mut [F], q: usize, n: usize) => affine_rows_body);

#[inline(always)]
fn affine_rows_body<F: Real>(x: &[F], w: &[F], bias: &[F], out: &mut [F], q: usize, n: usize) {
    if n == 0 {
        return;
    }
    for (r, out_row) in out.chunks_exact_mut(n).enumerate() {
        out_row.copy_from_slice(&bias[..n]);
        for (&xc, w_row) in x[r * q..(r + 1) * q].iter().zip(w.chunks_exact(n)) {
            for (o, &w) in out_row.iter_mut().zip(w_row) {
                *o += xc * w;
            }
        }
    }
}

/// C ← (bias + X·W) + A·B for a B prepared by [`PackedB::new`]: bit-identical to
/// [`Affine::write_to`] followed by [`mat_mul_packed`] with β = 1. On the fast path the tiles
/// compute bias + X·W themselves before they store their sums, so C is written once instead
/// of being filled by one pass and read back and rewritten by the next.
pub fn mat_mul_packed_affine<F: Real>(
    affine: &Affine<F>,
    a: &ArrayView2<F>,
    b: &PackedB<F>,
    c: &mut ArrayViewMut2<F>,
) {
    let (m, n, q) = affine.dims();
    let fast = match &b.0 {
        Packing::Panels { panels, k, n: n2 } => {
            let contiguous = affine.x.strides()[1] == 1
                && affine.w.strides()[1] == 1
                && affine.bias.strides() == [1];
            (contiguous && *k > 0 && c.strides()[1] == 1).then_some((panels, *k, *n2))
        }
        Packing::Plain(_) => None,
    };
    let Some((panels, k, n2)) = fast else {
        affine.write_to(c);
        return mat_mul_packed(a, b, true, c);
    };
    assert!(
        a.dim() == (m, k) && n2 == n && c.dim() == (m, n),
        "mat_mul_packed_affine: ({m}, ·)·({k}, {n2}) with A {:?} into {:?}",
        a.dim(),
        c.dim()
    );
    // (k > 0 here: nothing to fill when m or n is 0)
    if empty_product((m, n, k), true, c) {
        return;
    }
    let init = Init::Affine {
        x: affine.x.as_ptr() as *const f32,
        x_rs: affine.x.strides()[0],
        q,
        w: affine.w.as_ptr() as *const f32,
        w_rs: affine.w.strides()[0],
        bias: affine.bias.as_ptr() as *const f32,
    };
    // SAFETY: panels are only made for f32 with AVX-512, so F is f32 and the kernel may run;
    // every view has the shape checked above, X and W are read at the strides of their views,
    // and C's rows are contiguous.
    unsafe {
        avx512::gemm(
            (m, n, k),
            ALayout::Strided(a.as_ptr() as *const f32, a.strides()[0], a.strides()[1]),
            BLayout::Panels(panels.as_ptr() as *const f32),
            (c.as_mut_ptr() as *mut f32, c.strides()[0]),
            init,
        )
    }
}

/// B as [`product`] gets it.
enum Rhs<'a, F> {
    /// Any view: the fast kernel reads it in place when its rows are contiguous.
    View(&'a ArrayView2<'a, F>),
    /// [`PackedB`]'s panels of a (k, n) matrix (only made for f32 with AVX-512).
    Panels(&'a [F], usize, usize),
}

/// The one place that picks the kernel: the AVX-512 one for f32 when the CPU has it and B
/// and C are laid out for it, ndarray's `general_mat_mul` otherwise.
fn product<F: Real>(a: &ArrayView2<F>, b: Rhs<'_, F>, accumulate: bool, c: &mut ArrayViewMut2<F>) {
    let (k2, n) = match &b {
        Rhs::View(b) => b.dim(),
        Rhs::Panels(_, k, n) => (*k, *n),
    };
    let (m, k) = a.dim();
    assert!(
        k == k2 && c.dim() == (m, n),
        "mat_mul: ({m}, {k})·({k2}, {n}) into {:?}",
        c.dim()
    );
    if empty_product((m, n, k), accumulate, c) {
        return;
    }
    let fast = kernel_runs::<F>() && c.strides()[1] == 1;
    let layout = match b {
        Rhs::View(b) if fast && b.strides()[1] == 1 => {
            BLayout::Rows(b.as_ptr() as *const f32, b.strides()[0])
        }
        Rhs::View(b) => {
            let beta = if accumulate { F::one() } else { F::zero() };
            return general_mat_mul(F::one(), a, b, beta, c);
        }
        Rhs::Panels(panels, ..) => {
            assert!(fast, "mat_mul_packed: C needs contiguous rows");
            BLayout::Panels(panels.as_ptr() as *const f32)
        }
    };
    // SAFETY: F is f32 (checked above: panels are only made for f32 too), so the pointers
    // are pointers to f32; the shapes and strides come from valid views of those sizes, and
    // panels hold ⌈n / NR⌉ panels of k rows of NR entries; AVX-512F is present.
    unsafe {
        avx512::gemm(
            (m, n, k),
            ALayout::Strided(a.as_ptr() as *const f32, a.strides()[0], a.strides()[1]),
            layout,
            (c.as_mut_ptr() as *mut f32, c.strides()[0]),
            Init::of(accumulate),
        )
    }
}

/// What the AVX-512 kernel adds the product A·B to.
#[derive(Clone, Copy)]
enum Init {
    /// Nothing: C ← A·B.
    Zero,
    /// C itself: C ← C + A·B.
    C,
    /// [`Affine`], computed in each tile before the sum is stored: C ← (bias + X·W) + A·B,
    /// X(i, q) = x[i·x_rs + q] for q < `q`, W(q, j) = w[q·w_rs + j], bias(j) = `bias[j]`.
    Affine {
        x: *const f32,
        x_rs: isize,
        q: usize,
        w: *const f32,
        w_rs: isize,
        bias: *const f32,
    },
}

impl Init {
    /// β = 1 (`accumulate`) or 0.
    fn of(accumulate: bool) -> Self {
        if accumulate { Init::C } else { Init::Zero }
    }

    /// The same for the tile whose first entry is C(i0, j0).
    ///
    /// # Safety
    /// For [`Init::Affine`], i0 and j0 must lie inside X's rows and W's columns.
    unsafe fn at(self, i0: usize, j0: usize) -> Self {
        match self {
            Init::Affine {
                x,
                x_rs,
                q,
                w,
                w_rs,
                bias,
            } => unsafe {
                Init::Affine {
                    x: x.offset(i0 as isize * x_rs),
                    x_rs,
                    q,
                    w: w.add(j0),
                    w_rs,
                    bias: bias.add(j0),
                }
            },
            other => other,
        }
    }
}

/// How the AVX-512 kernel finds A(i, p).
#[derive(Clone, Copy)]
enum ALayout {
    /// With these row and k strides: A(i, p) = ptr[i·rs + p·ks].
    Strided(*const f32, isize, isize),
    /// [`PackedAt`]'s panels (of all its m_pad columns), from a row that starts a block (the
    /// blocks KC deep from there on, the last possibly shorter), read from column `col0` (a
    /// multiple of MR) on: A(i, p) for p in the block starting at p0 and kc deep = ptr[p0·m_pad + ((col0 + i) / MR)·MR·kc + (p − p0)·MR + i % MR].
    Panels {
        ptr: *const f32,
        m_pad: usize,
        col0: usize,
    },
}

/// How the AVX-512 kernel finds B(p, j).
#[derive(Clone, Copy)]
enum BLayout {
    /// Row-major with this row stride: B(p, j) = ptr[p·rs + j].
    Rows(*const f32, isize),
    /// Runs of `run` rows `rs` apart, the runs `outer` apart, from row `first` of the first
    /// run on: B(p, j) = ptr[(q / run)·outer + (q % run)·rs + j] with q = first + p (the rows
    /// of one batch row range over all timesteps, in the weight-gradient products). Read only
    /// by the tiles that copy B into a strip.
    Runs {
        ptr: *const f32,
        rs: isize,
        run: usize,
        outer: isize,
        first: usize,
    },
    /// [`PackedB`]'s panels: B(p, j) = ptr[((j / NR)·k + p)·NR + j % NR].
    Panels(*const f32),
}

/// True if the CPU has AVX-512F (checked once; the fast kernels run only then).
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f")
                && std::env::var_os("RNNLAB_NO_AVX512").is_none()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{ALayout, BLayout, Init, KC, MR, NR, PACK_B_ENTRIES};
    use crate::cell::pool::aligned_zeros;
    use std::arch::x86_64::*;

    /// C (m, n) ← A·B + what `init` says. A as `a` says, B as `b` says,
    /// C(i, j) = c[i·c_rs + j] (strides in elements).
    ///
    /// # Safety
    /// The pointers must address matrices of these shapes and strides; AVX-512F must be
    /// available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(
        (m, n, k): (usize, usize, usize),
        a: ALayout,
        b: BLayout,
        (c, c_rs): (*mut f32, isize),
        init: Init,
    ) {
        // When A is strided along k (A = Mᵀ for a row-major M, as in the weight gradients),
        // each kc block of A is first copied into MR-row panels, panel[p][r] = A(i0 + r, p),
        // so that the tiles read it sequentially; the sums themselves are unchanged.
        let (a, a_rs, a_ks, prepacked_a, (a_m_pad, a_col0)) = match a {
            ALayout::Strided(ptr, rs, ks) => (ptr, rs, ks, false, (0, 0)),
            ALayout::Panels { ptr, m_pad, col0 } => (ptr, 0, 0, true, (m_pad, col0)),
        };
        let pack = !prepacked_a && a_ks != 1;
        // (scratch on a cache line, as the tiles' vector loads want it, see `pool`; none at all
        // for the per-step products, whose A is read in place and B comes packed)
        let mut panels_buf =
            pack.then(|| aligned_zeros::<f32, _, _>(m.div_ceil(MR) * MR * KC.min(k)));
        let panels: &mut [f32] = match &mut panels_buf {
            Some(p) => p.as_slice_mut().expect("fresh array"),
            None => &mut [],
        };
        // When B is larger than the L2 cache (the weight gradients' da, k = T·B rows: read
        // once, from memory) the first row tile of each column block reads B's rows in place,
        // fetching ahead, and also writes what it loads into one NR-column strip,
        // strip[p][j] = B(p0 + p, j0 + j), from which the block's other row tiles read it
        // sequentially and from L1 instead of 128 bytes per row of B. (A weight matrix read
        // every timestep stays in L2 and is read in place.)
        let (b, b_rs, runs, prepacked) = match b {
            BLayout::Rows(ptr, rs) => (ptr, rs, None, false),
            BLayout::Runs {
                ptr,
                rs,
                run,
                outer,
                first,
            } => (ptr, rs, Some((run.max(1), outer, first)), false),
            BLayout::Panels(ptr) => (ptr, NR as isize, None, true),
        };
        // (A piece of a product cut along k (A prepacked) is part of a large product.)
        let pack_b = !prepacked && (prepacked_a || k > KC && k * n >= PACK_B_ENTRIES);
        assert!(
            runs.is_none() || pack_b,
            "B in runs is read only through the strip"
        );
        // Where row q of B starts, from b; the strip-writing tiles read B's rows, and fetch
        // them ahead, at the offsets of their block's rows, FAR_AHEAD more past its end.
        let row_offset = |q: usize| -> isize {
            match runs {
                None => q as isize * b_rs,
                Some((run, outer, first)) => {
                    let q = first + q;
                    (q / run) as isize * outer + (q % run) as isize * b_rs
                }
            }
        };
        let mut offsets = [0isize; KC + FAR_AHEAD as usize];
        let mut strip_buf = pack_b.then(|| aligned_zeros::<f32, _, _>(NR * KC));
        let strip: &mut [f32] = match &mut strip_buf {
            Some(p) => p.as_slice_mut().expect("fresh array"),
            None => &mut [],
        };
        let mut p0 = 0;
        while p0 < k {
            let kc = KC.min(k - p0);
            // (later blocks of k add to what the first stored)
            let block_init = if p0 == 0 { init } else { Init::C };
            let mut a_p = unsafe { a.offset(p0 as isize * a_ks) };
            // (B's first row of the block, where B is read in place by every tile)
            let b_p = b.wrapping_offset(p0 as isize * b_rs);
            if pack_b {
                for (p, o) in offsets.iter_mut().enumerate() {
                    *o = row_offset(p0 + p);
                }
            }
            // (offset of column j0 per j0: panel jb = j0 / NR of a prepacked B starts at
            // b[jb·k·NR], and b_p is already at row p0 of it)
            let j0_step = if prepacked { k } else { 1 };
            // (offset of row i0 per i0; a tile reading A in place takes its rows a_rs apart,
            // with k stride 1, since A strided along k is packed)
            let mut i0_step = a_rs;
            let panel_a = prepacked_a || pack;
            if prepacked_a {
                // this block's panels start at row p0 of a (which starts a block); the
                // product's first row of C is column a_col0 of the panels
                a_p = unsafe { a.add(p0 * a_m_pad + a_col0 * kc) };
                i0_step = kc as isize;
            } else if pack {
                for p in 0..kc {
                    let a_row = unsafe { a_p.offset(p as isize * a_ks) };
                    for ib in 0..m.div_ceil(MR) {
                        let rows = MR.min(m - ib * MR);
                        let dst = &mut panels[ib * MR * kc + p * MR..][..rows];
                        if a_rs == 1 {
                            // SAFETY: row p of Aᵀ holds m contiguous entries
                            let src =
                                unsafe { std::slice::from_raw_parts(a_row.add(ib * MR), rows) };
                            copy_short::<MR>(dst, src);
                        } else {
                            for (r, d) in dst.iter_mut().enumerate() {
                                *d = unsafe { *a_row.offset((ib * MR + r) as isize * a_rs) };
                            }
                        }
                    }
                }
                // tile i0 = ib·MR now starts at panels[i0·kc]; inside it r has stride 1, p MR
                (a_p, i0_step) = (panels.as_ptr(), kc as isize);
            }
            let mut j0 = 0;
            while j0 < n {
                let cols = NR.min(n - j0);
                // lane masks of the two 16-wide halves of this column block
                let m0 = mask(cols.min(16));
                let m1 = mask(cols.saturating_sub(16));
                let mut i0 = 0;
                while i0 < m {
                    let rows = MR.min(m - i0);
                    let a_t = unsafe { a_p.offset(i0 as isize * i0_step) };
                    // (B's rows in place, or packed, or from the strip the first tile writes)
                    let writes = pack_b && i0 == 0;
                    let (b_t, t_b_rs) = match (pack_b, i0) {
                        (true, 0) => (unsafe { b.add(j0) }, b_rs),
                        (true, _) => (strip.as_ptr(), NR as isize),
                        (false, _) => (unsafe { b_p.add(j0 * j0_step) }, b_rs),
                    };
                    let c_t = unsafe { c.offset(i0 as isize * c_rs).add(j0) };
                    // SAFETY: (i0, j0) is an entry of C, so of X's rows and W's columns
                    let t_init = unsafe { block_init.at(i0, j0) };
                    let args = (kc, a_t, a_rs, b_t, t_b_rs, c_t, c_rs, m0, m1, t_init);
                    // What comes from further away than L1, fetched ahead by the tile: a
                    // prepacked A (the weight gradients' [h | x | 1]) comes from L3 in the first
                    // column block of each KC block and from L2 after it, so in that block
                    // every tile but the last fetches the next tile's panel; a packed B (the
                    // recurrent weights) comes from L2 for the first row tile of each column
                    // block, which fetches its rows ahead (the tiles below find them in L1).
                    let fetch = if prepacked_a && j0 == 0 && i0 + MR < m {
                        FETCH_A
                    } else if prepacked && i0 == 0 {
                        FETCH_B
                    } else {
                        FETCH_NONE
                    };
                    let (full, strip_to) = (cols == NR, (strip.as_mut_ptr(), offsets.as_ptr()));
                    unsafe {
                        // (each combination its own instance of the tile, so that a tile's loop
                        // holds only what it does; a prepacked B is never written to a strip)
                        macro_rules! dispatch {
                            ($(($w:literal, $p:ident, $a:literal)),*) => {
                                match (writes, fetch, panel_a) {
                                    $(($w, $p, $a) =>
                                        tile_rows::<$w, $p, $a>(full, rows, args, strip_to),)*
                                    _ => unreachable!(),
                                }
                            };
                        }
                        dispatch!(
                            (false, FETCH_NONE, true),
                            (false, FETCH_A, true),
                            (true, FETCH_NONE, true),
                            (true, FETCH_A, true),
                            (false, FETCH_B, true),
                            (false, FETCH_NONE, false),
                            (true, FETCH_NONE, false),
                            (false, FETCH_B, false)
                        )
                    }
                    i0 += MR;
                }
                j0 += NR;
            }
            p0 += KC;
        }
    }

    /// dst[..src.len()] = src for a source of at most N entries; a full one as one fixed-size
    /// copy (inlined vector moves rather than a call to memcpy per panel row).
    #[inline(always)]
    fn copy_short<const N: usize>(dst: &mut [f32], src: &[f32]) {
        if let (Ok(s), Some(d)) = (<&[f32; N]>::try_from(src), dst.first_chunk_mut::<N>()) {
            *d = *s;
        } else {
            dst[..src.len()].copy_from_slice(src);
        }
    }

    /// How many rows ahead a strip-writing tile fetches B into L1, and how many into L2. B's
    /// rows there are the weight gradient's da, 4·G·H entries apart (4 KiB at LSTM H = 256),
    /// so its lines fall into two sets of L1 (12 ways each): fetched into L1 much further
    /// ahead, they are evicted before the tile reads them. (A measured choice:
    /// `gemm_weight_grad_from_l3` 4–5% faster at 4 KiB apart than 32 rows ahead into L1 alone,
    /// which was the earlier choice; 16 / 96 no better than that.)
    const AHEAD: isize = 8;
    const FAR_AHEAD: isize = 64;

    /// What a tile fetches ahead, besides what `STRIP` fetches: nothing, the next tile's panel
    /// of a prepacked A, or the rows [`FETCH_B_AHEAD`] ahead of a packed B.
    const FETCH_NONE: u8 = 0;
    const FETCH_A: u8 = 1;
    const FETCH_B: u8 = 2;

    /// How many rows ahead a tile reading a packed B from L2 fetches it (a measured choice: two
    /// 8-row tiles over 32 strips of B in L2 ran at 200 GFLOP/s on their own, at 209–214
    /// fetching 8 or 16 rows ahead, and 206–209 fetching 32 ahead).
    const FETCH_B_AHEAD: isize = 16;

    /// The lowest `lanes` bits set.
    fn mask(lanes: usize) -> __mmask16 {
        ((1u32 << lanes) - 1) as __mmask16
    }

    type TileArgs = (
        usize,
        *const f32,
        isize,
        *const f32,
        isize,
        *mut f32,
        isize,
        __mmask16,
        __mmask16,
        Init,
    );

    /// [`tile`] for `rows` (1 ≤ rows ≤ [`MR`]) rows, all 32 columns (`full`) or fewer.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_rows<const STRIP: bool, const FETCH: u8, const PANEL_A: bool>(
        full: bool,
        rows: usize,
        args: TileArgs,
        strip: (*mut f32, *const isize),
    ) {
        macro_rules! by_rows {
            ($full:literal) => {
                match rows {
                    8 => tile::<8, $full, STRIP, FETCH, PANEL_A>(args, strip),
                    7 => tile::<7, $full, STRIP, FETCH, PANEL_A>(args, strip),
                    6 => tile::<6, $full, STRIP, FETCH, PANEL_A>(args, strip),
                    5 => tile::<5, $full, STRIP, FETCH, PANEL_A>(args, strip),
                    4 => tile::<4, $full, STRIP, FETCH, PANEL_A>(args, strip),
                    3 => tile::<3, $full, STRIP, FETCH, PANEL_A>(args, strip),
                    2 => tile::<2, $full, STRIP, FETCH, PANEL_A>(args, strip),
                    _ => tile::<1, $full, STRIP, FETCH, PANEL_A>(args, strip),
                }
            };
        }
        unsafe {
            if full {
                by_rows!(true)
            } else {
                by_rows!(false)
            }
        }
    }

    /// B's row p as two vectors: plain loads for a full 32-column tile (`FULL`; the masks are
    /// then all ones), masked loads at the right edge. A masked load costs an extra uop on
    /// the ports the FMAs use, so the full tiles, nearly all of them, avoid it; the values
    /// are the same either way.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_pair<const FULL: bool>(
        row: *const f32,
        m0: __mmask16,
        m1: __mmask16,
    ) -> (__m512, __m512) {
        unsafe {
            if FULL {
                (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)))
            } else {
                (
                    _mm512_maskz_loadu_ps(m0, row),
                    _mm512_maskz_loadu_ps(m1, row.add(16)),
                )
            }
        }
    }

    /// One R × 32 tile of C: R·2 accumulator registers, B's row loaded as two vectors, A's
    /// entries broadcast. The sum over p runs in increasing order, then is added to what
    /// `init` says. `FULL`: all 32 columns exist (m0 = m1 = all ones). `STRIP`: B is read in
    /// place from memory, its row p at `b + offsets[p]` (rows in runs, see [`BLayout`]),
    /// fetched [`AHEAD`] rows ahead into L1 and [`FAR_AHEAD`] into L2, and each row loaded is
    /// also stored at `strip[p·NR..]` (on a cache line) for the tiles below this one
    /// (`offsets` holds FAR_AHEAD entries past the block for the fetches). `FETCH`:
    /// [`FETCH_A`]: A is in panels, and the next tile's panel, which follows this one's, is
    /// fetched into L1 along the way, a line every other p; [`FETCH_B`]: B is in panels, and
    /// its row p + [`FETCH_B_AHEAD`] is fetched into L1 with row p. `PANEL_A`: A is in MR-row
    /// panels, A(i, p) = a[p·MR + i]; otherwise it is read in place, A(i, p) = a[i·a_rs + p].
    /// (Both known when the tile is compiled, so that finding A(i, p) costs the loop no
    /// arithmetic: with the strides as variables it spent 10 integer instructions per p
    /// next to its 16 FMAs, some of them on the FMA ports.)
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<
        const R: usize,
        const FULL: bool,
        const STRIP: bool,
        const FETCH: u8,
        const PANEL_A: bool,
    >(
        (k, a, a_rs, b, b_rs, c, c_rs, m0, m1, init): TileArgs,
        (strip, offsets): (*mut f32, *const isize),
    ) {
        // (A in place: one pointer per row, all read at the same p, so that each broadcast is
        // one addressing mode, row + 4·p, and the loop adds nothing per row. The pointers go
        // through `black_box` because the compiler otherwise sees that they are a + i·a_rs
        // and recomputes them from each other in the loop, an add per row and p.)
        let a_rows: [*const f32; R] = std::array::from_fn(|i| match PANEL_A {
            true => a,
            false => std::hint::black_box(a.wrapping_offset(i as isize * a_rs)),
        });
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        for p in 0..k as isize {
            unsafe {
                let b_row = match STRIP {
                    true => b.offset(*offsets.offset(p)),
                    false => b.offset(p * b_rs),
                };
                let (b0, b1) = load_pair::<FULL>(b_row, m0, m1);
                if STRIP {
                    // (a hint: any address will do, so no bounds to keep)
                    let ahead = b.wrapping_offset(*offsets.offset(p + AHEAD));
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
                    let far = b.wrapping_offset(*offsets.offset(p + FAR_AHEAD));
                    _mm_prefetch::<_MM_HINT_T1>(far as *const i8);
                    _mm_prefetch::<_MM_HINT_T1>(far.wrapping_add(16) as *const i8);
                    let dst = strip.offset(p * NR as isize);
                    _mm512_store_ps(dst, b0);
                    _mm512_store_ps(dst.add(16), b1);
                }
                if FETCH == FETCH_B {
                    // (B in panels: rows of NR entries, two lines each)
                    let ahead = b.wrapping_offset((p + FETCH_B_AHEAD) * NR as isize);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
                }
                if FETCH == FETCH_A && p & 1 == 0 {
                    // (A in panels: the next tile's panel starts k·MR entries on, and one
                    // line holds rows p and p + 1 of it)
                    let ahead = a.wrapping_offset((k * MR) as isize + p * MR as isize);
                    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
                }
                for i in 0..R {
                    let av = _mm512_set1_ps(if PANEL_A {
                        *a.offset(p * MR as isize + i as isize)
                    } else {
                        *a_rows[i].offset(p)
                    });
                    lo[i] = _mm512_fmadd_ps(av, b0, lo[i]);
                    hi[i] = _mm512_fmadd_ps(av, b1, hi[i]);
                }
            }
        }
        for i in 0..R {
            unsafe {
                let c_row = c.offset(i as isize * c_rs);
                let (mut v0, mut v1) = (lo[i], hi[i]);
                match init {
                    Init::Zero => {}
                    Init::C => {
                        let (c0, c1) = load_pair::<FULL>(c_row, m0, m1);
                        v0 = _mm512_add_ps(c0, v0);
                        v1 = _mm512_add_ps(c1, v1);
                    }
                    Init::Affine {
                        x,
                        x_rs,
                        q,
                        w,
                        w_rs,
                        bias,
                    } => {
                        // bias + Σ_q X(i, q)·W(q, ·), in order of q, each product rounded
                        // and then added: the arithmetic of `affine_rows`
                        let (mut p0, mut p1) = load_pair::<FULL>(bias, m0, m1);
                        for qq in 0..q as isize {
                            let xv = _mm512_set1_ps(*x.offset(i as isize * x_rs + qq));
                            let (w0, w1) = load_pair::<FULL>(w.offset(qq * w_rs), m0, m1);
                            p0 = _mm512_add_ps(p0, _mm512_mul_ps(xv, w0));
                            p1 = _mm512_add_ps(p1, _mm512_mul_ps(xv, w1));
                        }
                        v0 = _mm512_add_ps(p0, v0);
                        v1 = _mm512_add_ps(p1, v1);
                    }
                }
                if FULL {
                    _mm512_storeu_ps(c_row, v0);
                    _mm512_storeu_ps(c_row.add(16), v1);
                } else {
                    _mm512_mask_storeu_ps(c_row, m0, v0);
                    _mm512_mask_storeu_ps(c_row.add(16), m1, v1);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx512 {
    /// Never called: [`super::has_avx512`] is false off x86-64.
    pub(super) unsafe fn gemm(
        _: (usize, usize, usize),
        _: super::ALayout,
        _: super::BLayout,
        _: (*mut f32, isize),
        _: super::Init,
    ) {
        unreachable!()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3, Axis, s};

    fn filled(m: usize, n: usize, seed: f32) -> Array2<f32> {
        Array2::from_shape_fn((m, n), |(i, j)| ((i * 31 + j * 17) as f32 * seed).sin())
    }

    /// Odd shapes (tails in every dimension, k across two KC blocks), transposed and sliced
    /// operands, both β: the fast path agrees with ndarray to f32 round-off.
    #[test]
    fn agrees_with_ndarray_on_odd_shapes_and_strides() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (9, 33, 5),
            (64, 512, 128),
            (13, 70, 300),
            (8, 32, 256),
        ] {
            let a_t = filled(k, m, 0.37); // A given transposed: strided rows
            let b = filled(k + 3, n, 0.11);
            let b = b.slice(s![3.., ..]);
            let c0 = filled(m, n, 0.05);
            for accumulate in [false, true] {
                let mut fast = c0.clone();
                mat_mul(&a_t.t(), &b, accumulate, &mut fast.view_mut());
                let mut want = c0.clone();
                let beta = if accumulate { 1.0 } else { 0.0 };
                general_mat_mul(1.0, &a_t.t(), &b, beta, &mut want);
                let err = (&fast - &want).iter().fold(0.0f32, |e, v| e.max(v.abs()));
                assert!(
                    err < 1e-4 * k as f32,
                    "({m},{n},{k}) acc={accumulate}: {err}"
                );
            }
        }
    }

    /// A packed B gives bit-identical products, at edge shapes (n not a multiple of NR, k
    /// across KC blocks) and with strided A.
    #[test]
    fn packed_b_is_bit_identical() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (9, 33, 5),
            (64, 512, 128),
            (13, 70, 300),
            (3, 4, 0),
        ] {
            let a_t = filled(k, m, 0.37);
            let b = filled(n, k, 0.11).reversed_axes(); // B given transposed, as W_hhᵀ is
            let b_rows = b.as_standard_layout(); // as W_hh is; mat_mul reads it in place
            let packings = [1, 2, 3].into_iter().flat_map(|threads| {
                [
                    PackedB::new(b.view(), threads),
                    PackedB::new(b_rows.view(), threads),
                ]
            });
            for packed in packings {
                for accumulate in [false, true] {
                    for a in [a_t.t(), a_t.t().as_standard_layout().into_owned().view()] {
                        let mut want = filled(m, n, 0.05);
                        let mut got = want.clone();
                        mat_mul(&a, &b_rows.view(), accumulate, &mut want.view_mut());
                        mat_mul_packed(&a, &packed, accumulate, &mut got.view_mut());
                        assert_eq!(want, got, "({m},{n},{k}) acc={accumulate}");
                    }
                }
            }
        }
    }

    /// The input projection added inside the tiles is bit for bit the separate pass followed
    /// by the accumulating product: edge tiles in every direction, k over two KC blocks,
    /// q = 0 to 5, X and C with rows wider than their views. (f64 checks the fallback.)
    #[test]
    fn affine_in_the_tiles_is_the_pass_then_the_product() {
        fn check<F: Real>() {
            let cast = |a: Array2<f32>| a.mapv(|v| F::of(v as f64));
            for &(m, n, k) in &[(1, 5, 3), (9, 33, 20), (17, 64, 300), (16, 45, 256)] {
                for q in [0, 1, 2, 5] {
                    let x_wide = cast(filled(m, q + 3, 0.9));
                    let x = x_wide.slice(s![.., 1..q + 1]);
                    let w = cast(filled(q, n, 0.4));
                    let bias = cast(filled(1, n, 0.23)).row(0).to_owned();
                    let (a, b) = (cast(filled(m, k, 0.3)), cast(filled(k, n, 0.7)));
                    let packed = PackedB::new(b.view(), 1);
                    let affine = Affine {
                        x,
                        w: w.view(),
                        bias: bias.view(),
                    };
                    let mut want = Array2::from_elem((m, n), F::of(f64::NAN));
                    affine.write_to(&mut want.view_mut());
                    mat_mul_packed(&a.view(), &packed, true, &mut want.view_mut());
                    let mut got_wide = Array2::from_elem((m, n + 7), F::of(f64::NAN));
                    let mut got = got_wide.slice_mut(s![.., 2..n + 2]);
                    mat_mul_packed_affine(&affine, &a.view(), &packed, &mut got);
                    assert_eq!(want, got, "{} ({m},{n},{k}) q={q}", F::NAME);
                    let cols = [0, 1, n + 2, n + 6];
                    for v in cols.map(|j| got_wide.column(j).to_owned()) {
                        assert!(v.iter().all(|v| v.is_nan()), "wrote outside C");
                    }
                }
            }
        }
        check::<f32>();
        check::<f64>();
    }

    /// Packing into a recycled buffer full of NaN (the padding of the last panel keeps them)
    /// gives the same products: the padding is never read.
    #[test]
    fn packed_b_padding_is_never_read() {
        let (m, k, n): (usize, usize, usize) = (9, 20, 45); // 45 = one full 32-column panel and 13 columns
        let panels = n.div_ceil(NR) * k * NR;
        // (with room for the pool to start the array on a cache line)
        super::super::pool::recycle(ndarray::Array1::from_elem(panels + 16, f32::NAN));
        let (a, b) = (filled(m, k, 0.3), filled(k, n, 0.7));
        let packed = PackedB::new(b.view(), 1);
        let mut want = Array2::zeros((m, n));
        let mut got = Array2::zeros((m, n));
        mat_mul(&a.view(), &b.view(), false, &mut want.view_mut());
        mat_mul_packed(&a.view(), &packed, false, &mut got.view_mut());
        assert_eq!(want, got);
        if let Packing::Panels { panels, .. } = &packed.0 {
            assert!(
                panels.iter().any(|v| v.is_nan()),
                "the test reused the NaN buffer"
            );
        }
        super::super::pool::clear();
    }

    /// `pieces` even pieces of k rows.
    fn even(k: usize, pieces: usize) -> Vec<Range<usize>> {
        (0..pieces)
            .map(|p| crate::cell::piece_rows(k, pieces, p))
            .collect()
    }

    /// B's rows of a piece in runs, as the weight gradients pass them: the piece's rows of a
    /// (k, n) matrix `b`, spread over a (runs, run, n) array with other rows between the runs
    /// (so that the runs are not one strided matrix), and that array's view of them.
    fn in_runs(b: ArrayView2<f32>, run: usize) -> (Array3<f32>, Range<usize>) {
        let (k, n) = b.dim();
        let runs = k.div_ceil(run.max(1));
        let mut spread = Array3::from_elem((runs, run + 3, n + 5), f32::NAN);
        for q in 0..k {
            let mut dst = spread.slice_mut(s![q / run, 1 + q % run, ..n]);
            dst.assign(&b.row(q));
        }
        (spread, 1..run + 1)
    }

    /// Aᵀ·B over each piece of a [`PackedAt`], whole or cut at its blocks' bounds and
    /// accumulated, is bit-identical to [`mat_mul`] on the transposed view of those rows
    /// (which packs A itself), at edge shapes (m not a multiple of MR, pieces not a multiple
    /// of KC, pieces across blocks), for any number of pieces and threads of the build, and
    /// with B's rows in one matrix or in runs (runs across the blocks' bounds).
    #[test]
    fn packed_at_is_bit_identical_whole_and_cut() {
        for &(k, m, n) in &[
            (1, 1, 1),
            (300, 13, 40),
            (3 * KC + 17, 37, 70),
            (2 * KC, 8, 32),
        ] {
            let a = filled(k, m, 0.23);
            let b = filled(k, n, 0.41);
            for pieces in [1, 2, 3].into_iter().filter(|&p| p <= k) {
                for threads in [1, 2, 3] {
                    let packed = PackedAt::build(m, even(k, pieces), threads, |p, dst| {
                        dst.copy_from_slice(a.row(p).as_slice().unwrap())
                    });
                    let case = format!("({k},{m},{n}), {pieces} pieces, {threads} threads");
                    // (B in runs that are not one matrix: ndarray's product, elsewhere, takes
                    // one product per run, so the same sums rounded in another order)
                    let same = |want: ArrayView2<f32>, got: &Array2<f32>, what: &str| {
                        if splits_k_exactly::<f32>() {
                            assert_eq!(want, got, "{case}: {what}");
                        } else {
                            let off = (&want - got).iter().fold(0f32, |m, d| m.max(d.abs()));
                            assert!(off < 1e-4, "{case}: {what}: off by {off}");
                        }
                    };
                    for p in 0..pieces {
                        let rows = packed.piece(p);
                        let (a, b) = (a.slice(s![rows.clone(), ..]), b.slice(s![rows.clone(), ..]));
                        let mut want = Array2::zeros((m, n));
                        mat_mul(&a.t(), &b, false, &mut want.view_mut());
                        let mut whole = Array2::zeros((m, n));
                        let b3 = b.insert_axis(Axis(0));
                        mat_mul_at(&packed, rows.clone(), 0, &b3, false, &mut whole.view_mut());
                        assert_eq!(want, whole, "{case}: piece {p} whole");
                        // B's rows in runs across the blocks' bounds (a run length that
                        // divides the piece's rows) and within them, in a bigger array
                        let across = [40, 24, 50, 30, 7, 5, 3, 2, 1]
                            .into_iter()
                            .find(|r| rows.len() % r == 0)
                            .expect("1 divides");
                        let runs = [across, 64, 1].into_iter();
                        for run in runs.filter(|r| rows.len() % r == 0) {
                            let (spread, inner) = in_runs(b, run);
                            let b3 = spread.slice(s![.., inner, ..n]);
                            let mut got = Array2::zeros((m, n));
                            mat_mul_at(&packed, rows.clone(), 0, &b3, false, &mut got.view_mut());
                            same(want.view(), &got, &format!("piece {p} in runs of {run}"));
                        }
                        // block by block where that is exact, else whole; and only the
                        // columns of A from col0 on: the same rows of the result
                        let step = if splits_k_exactly::<f32>() {
                            KC
                        } else {
                            rows.len().max(1)
                        };
                        let (spread, inner) = in_runs(b, across);
                        for b3 in [b3, spread.slice(s![.., inner, ..n])] {
                            for col0 in (0..m).step_by(MR).chain([m]) {
                                let mut part = Array2::zeros((m - col0, n));
                                for (q, k0) in rows.clone().step_by(step).enumerate() {
                                    let ks = k0..(k0 + step).min(rows.end);
                                    let c = &mut part.view_mut();
                                    mat_mul_at(&packed, ks, col0, &b3, q > 0, c);
                                }
                                let want = want.slice(s![col0.., ..]);
                                let runs = b3.dim().1;
                                let what = format!("piece {p} from column {col0}, runs of {runs}");
                                same(want, &part, &what);
                            }
                        }
                    }
                }
            }
        }
    }

    /// A product over rows that end inside a block, or cross from one piece into the next,
    /// would read the panels with the wrong layout: it is refused.
    #[test]
    fn packed_at_refuses_rows_off_its_blocks() {
        let (k, m) = (2 * KC, 16);
        let a = filled(k, m, 0.5);
        let packed = PackedAt::build(m, even(k, 2), 1, |p, dst| {
            dst.copy_from_slice(a.row(p).as_slice().unwrap())
        });
        let ok = |ks: std::ops::Range<usize>| {
            std::panic::catch_unwind(|| {
                let b = filled(KC, 32, 0.7); // (a piece's rows)
                let mut c = Array2::zeros((m, 32));
                let b = b.view().insert_axis(Axis(0));
                mat_mul_at(&packed, ks, 0, &b, false, &mut c.view_mut());
            })
            .is_ok()
        };
        assert!(ok(0..KC) && ok(KC..2 * KC) && ok(3..3));
        assert!(!ok(0..KC / 2), "ends inside a block");
        assert!(!ok(8..KC), "starts inside a block");
        assert!(!ok(KC / 2..3 * KC / 2), "crosses into the next piece");
        assert!(!ok(0..2 * KC), "two pieces in one product");
    }

    /// Splitting the rows of A (as the threaded cells do) gives bit-identical rows.
    #[test]
    fn row_split_is_bit_identical() {
        let (m, n, k) = (64, 96, 600);
        let a = filled(m, k, 0.3);
        let b = filled(k, n, 0.7);
        let mut whole = Array2::zeros((m, n));
        mat_mul(&a.view(), &b.view(), false, &mut whole.view_mut());
        let mut split = Array2::zeros((m, n));
        for (lo, hi) in [(0, 27), (27, 64)] {
            let mut c = split.slice_mut(s![lo..hi, ..]);
            mat_mul(&a.slice(s![lo..hi, ..]), &b.view(), false, &mut c);
        }
        assert_eq!(whole, split);
    }
}
