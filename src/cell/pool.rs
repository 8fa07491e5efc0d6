//! Recycled buffers for the large per-step arrays (gate cache, states, the weight-gradient
//! operand).
//!
//! A training step allocates the same few arrays of several MiB every time and frees them at
//! the end of backward. Fresh allocations that size come from the operating system zeroed
//! page by page (the allocator maps and unmaps them), which cost 10–20% of a small step in
//! page faults. Backward hands its spent buffers back ([`recycle`]); the next forward takes
//! them ([`zeros`], or [`take`] for arrays the caller overwrites completely, which skips
//! the zeroing). Buffers are per thread (a sweep's runs never share), at most [`KEEP`] of
//! them. Between two steps the pool holds about one step's cache; `rnnlab bench` measures
//! peak memory from an empty pool, so the figure includes these buffers.
//!
//! Fresh buffers ask Linux for transparent huge pages (2 MiB) over the part of them that
//! spans whole huge pages (`huge_page_span`). The caches are tens of MiB, more 4 KiB
//! pages than the TLB holds (at LSTM H = 256 each row of the gate cache is a page of its
//! own); with huge pages an LSTM H = 256 step took 1–5% less time (BENCHMARKS.md). Only a
//! hint: where the kernel has huge pages off (or on another OS), nothing changes.
//!
//! Every array starts on a cache line ([`ALIGN`] = 64 bytes), as does the kernel's scratch
//! ([`aligned_zeros`]). The allocator only promises 16 bytes, and
//! then every 64-byte vector load or store of a row (an AVX-512 register; the gate rows,
//! the products' panels and tiles are all whole multiples of it) straddles two cache lines,
//! which costs about a second access: aligned, steps took 2–9% less time (BENCHMARKS.md).
//! Only the addresses change, never the arithmetic.

use ndarray::{Array, Array1, Dimension, IntoDimension};
use std::any::Any;
use std::cell::RefCell;

/// Most buffers kept per thread.
pub const KEEP: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// An all-zero array of `shape`, in a recycled buffer when one of this element type is large
/// enough (the smallest such), else freshly allocated; it starts on an [`ALIGN`]-byte
/// boundary.
pub fn zeros<F: Clone + num_traits::Zero + 'static, D: Dimension, Sh: IntoDimension<Dim = D>>(
    shape: Sh,
) -> Array<F, D> {
    let mut a = take(shape);
    // as one slice (a memset for floats), not element by element through ndarray's `fill`
    a.as_slice_memory_order_mut()
        .expect("a fresh array is contiguous")
        .fill(F::zero());
    a
}

/// Where every buffer starts: a multiple of this many bytes (a cache line, and the width of
/// an AVX-512 vector).
pub const ALIGN: usize = 64;

/// Elements of F that cover [`ALIGN`] bytes: the room a buffer needs beyond its length to
/// start its array on the boundary.
fn slack<F>() -> usize {
    (ALIGN / std::mem::size_of::<F>().max(1)).max(1)
}

/// The first index of `buf` at an [`ALIGN`]-byte boundary (< [`slack`]).
fn aligned_start<F>(buf: &[F]) -> usize {
    let off = buf.as_ptr().align_offset(ALIGN);
    assert!(
        off < slack::<F>(),
        "a buffer of this type cannot be aligned"
    );
    off
}

/// An array of `shape` whose entries are unspecified (zeros, or whatever a recycled buffer
/// held): for arrays the caller writes completely before reading any entry. It starts on
/// an [`ALIGN`]-byte boundary.
pub fn take<F: Clone + num_traits::Zero + 'static, D: Dimension, Sh: IntoDimension<Dim = D>>(
    shape: Sh,
) -> Array<F, D> {
    let dim = shape.into_dimension();
    let len = dim.size();
    let need = len + slack::<F>();
    let mut buf: Vec<F> = FREE
        .with(|f| {
            let mut free = f.borrow_mut();
            let best = free
                .iter()
                .enumerate()
                .filter_map(|(k, b)| b.downcast_ref::<Vec<F>>().map(|v| (k, v.capacity())))
                .filter(|&(_, cap)| cap >= need)
                .min_by_key(|&(_, cap)| cap)
                .map(|(k, _)| k);
            best.map(|k| {
                *free
                    .swap_remove(k)
                    .downcast::<Vec<F>>()
                    .expect("type checked")
            })
        })
        .unwrap_or_else(|| fresh(need));
    // (the allocation does not move, so its aligned start is known before it is filled)
    let start = aligned_start(&buf);
    // Only a fresh buffer, or one never used this long, is extended (with zeros: the memory
    // must hold values). A buffer keeps the length it has had, and the array covers the part
    // it needs: truncated to each array, a buffer that served a short array and then a long
    // one was zero-filled over the difference every time (steps whose buffers changed roles,
    // such as a GRU's after an LSTM's in one `rnnlab bench`, took ~5% longer).
    if buf.len() < start + len {
        buf.resize(start + len, F::zero());
    }
    place(buf, start, dim)
}

/// An all-zero array of `shape` that starts on an [`ALIGN`]-byte boundary, freshly
/// allocated rather than from the pool: for the kernel's scratch of a single product, which
/// would crowd the pool's few large buffers out.
pub fn aligned_zeros<F: Clone + num_traits::Zero, D: Dimension, Sh: IntoDimension<Dim = D>>(
    shape: Sh,
) -> Array<F, D> {
    let dim = shape.into_dimension();
    let len = dim.size();
    if len == 0 {
        return Array::from_shape_vec(dim, Vec::new()).expect("empty"); // (no address to align)
    }
    let mut buf = vec![F::zero(); len + slack::<F>()];
    let start = aligned_start(&buf);
    buf.truncate(start + len);
    place(buf, start, dim)
}

/// `buf[start..start + |dim|]` as an array of `dim` (which owns all of `buf`: [`recycle`] gets
/// the whole buffer back).
fn place<F, D: Dimension>(buf: Vec<F>, start: usize, dim: D) -> Array<F, D> {
    let end = start + dim.size();
    Array1::from_vec(buf)
        .slice_move(ndarray::s![start..end])
        .into_shape_with_order(dim)
        .expect("length matches the shape")
}

/// An empty buffer with room for `len` elements, its whole huge pages advised as such before
/// anything touches them (the advice applies to pages faulted in afterwards).
fn fresh<F>(len: usize) -> Vec<F> {
    let buf = Vec::with_capacity(len);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Some((start, bytes)) =
        huge_page_span(buf.as_ptr() as usize, len * std::mem::size_of::<F>())
    {
        // SAFETY: the span lies inside `buf`'s allocation, which nothing references yet;
        // MADV_HUGEPAGE changes how its pages are backed, never their contents.
        unsafe { libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
    }
    buf
}

/// Transparent huge pages are 2 MiB on x86-64 (and on aarch64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// The whole huge pages inside the `bytes` bytes from address `start`, as (first address,
/// length), or `None` when they contain none.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn huge_page_span(start: usize, bytes: usize) -> Option<(usize, usize)> {
    let first = start.div_ceil(HUGE_PAGE) * HUGE_PAGE;
    let end = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
    (end > first).then(|| (first, end - first))
}

/// Gives an array's buffer back for a later [`zeros`] on this thread.
pub fn recycle<F: 'static, D: Dimension>(a: Array<F, D>) {
    let (buf, _) = a.into_raw_vec_and_offset();
    if buf.capacity() == 0 {
        return;
    }
    FREE.with(|f| {
        let mut free = f.borrow_mut();
        if free.len() >= KEEP {
            free.remove(0); // the oldest goes
        }
        free.push(Box::new(buf));
    });
}

/// Drops every buffer kept on this thread (for memory measurements from a clean start).
pub fn clear() {
    FREE.with(|f| f.borrow_mut().clear());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer that served a short array and then serves a longer one again is neither
    /// reallocated nor filled over the difference: `take` leaves what was there.
    #[test]
    fn a_buffer_keeps_its_length_between_short_and_long_arrays() {
        clear();
        let mut long = take::<f32, _, _>(1000);
        long.fill(7.0);
        let ptr = long.as_ptr();
        recycle(long);
        let short = take::<f32, _, _>(10);
        assert_eq!(short.as_ptr(), ptr);
        recycle(short);
        let again = take::<f32, _, _>(1000);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.iter().all(|&v| v == 7.0), "zero-filled: {again:?}");
        clear();
    }

    #[test]
    fn recycled_buffers_come_back_zeroed_and_typed() {
        clear();
        let mut a = zeros::<f32, _, _>((4, 5));
        a.fill(3.0);
        let ptr = a.as_ptr();
        recycle(a);
        let b = zeros::<f64, _, _>((2, 2)); // another type: not the f32 buffer
        assert!(b.iter().all(|&v| v == 0.0));
        let c = zeros::<f32, _, _>((3, 6)); // 18 ≤ 20: reuses it, zeroed
        assert_eq!(c.as_ptr(), ptr);
        assert!(c.iter().all(|&v| v == 0.0));
        recycle(c);
        let d = take::<f32, _, _>((2, 3)); // reused, contents unspecified but the right shape
        assert_eq!((d.as_ptr(), d.dim()), (ptr, (2, 3)));
        clear();
    }

    /// Arrays of f32 and f64, fresh or recycled, and the kernel's scratch all start on a
    /// cache line and have the requested length.
    #[test]
    fn arrays_start_on_a_cache_line() {
        fn check<F: Clone + num_traits::Zero + 'static>() {
            clear();
            for len in [1, 5, 16, 17, 1000, 4099] {
                let a = take::<F, _, _>((len, 3));
                assert_eq!(a.as_ptr() as usize % ALIGN, 0, "len {len}");
                assert_eq!(a.len(), len * 3);
                recycle(a);
                let b = zeros::<F, _, _>(len + 1); // recycled when it fits
                assert_eq!(b.as_ptr() as usize % ALIGN, 0, "len {len}");
                assert!(b.iter().all(|v| v.is_zero()));
                recycle(b);
                let s = aligned_zeros::<F, _, _>((len, 2));
                assert_eq!((s.as_ptr() as usize % ALIGN, s.len()), (0, 2 * len));
                assert!(s.iter().all(|v| v.is_zero()));
            }
            assert_eq!(take::<F, _, _>((0, 3)).len(), 0); // (an empty array has no address)
            assert_eq!(aligned_zeros::<F, _, _>(0).len(), 0);
            clear();
        }
        check::<f32>();
        check::<f64>();
    }

    #[test]
    fn huge_page_span_is_the_whole_huge_pages_inside() {
        const M: usize = HUGE_PAGE;
        assert_eq!(huge_page_span(M, 3 * M), Some((M, 3 * M))); // aligned at both ends
        assert_eq!(huge_page_span(M + 16, 3 * M), Some((2 * M, 2 * M))); // both ends cut
        assert_eq!(huge_page_span(M - 1, M + 1), Some((M, M)));
        assert_eq!(huge_page_span(M + 16, 2 * M - 17), None); // ends one byte short
        assert_eq!(huge_page_span(M + 16, M), None);
        assert_eq!(huge_page_span(0, 0), None);
    }
}
