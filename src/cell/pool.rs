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

use ndarray::{Array, Dimension, ShapeBuilder};
use std::any::Any;
use std::cell::RefCell;

/// Most buffers kept per thread.
pub const KEEP: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// An all-zero array of `shape`, in a recycled buffer when one of this element type is large
/// enough (the smallest such), else freshly allocated.
pub fn zeros<F: Clone + num_traits::Zero + 'static, D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
) -> Array<F, D> {
    let mut a = take(shape);
    // as one slice (a memset for floats), not element by element through ndarray's `fill`
    a.as_slice_memory_order_mut()
        .expect("a fresh array is contiguous")
        .fill(F::zero());
    a
}

/// An array of `shape` whose entries are unspecified (zeros, or whatever a recycled buffer
/// held): for arrays the caller writes completely before reading any entry.
pub fn take<F: Clone + num_traits::Zero + 'static, D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
) -> Array<F, D> {
    let shape = shape.into_shape_with_order();
    let len = shape.size();
    let mut buf: Vec<F> = FREE
        .with(|f| {
            let mut free = f.borrow_mut();
            let best = free
                .iter()
                .enumerate()
                .filter_map(|(k, b)| b.downcast_ref::<Vec<F>>().map(|v| (k, v.capacity())))
                .filter(|&(_, cap)| cap >= len)
                .min_by_key(|&(_, cap)| cap)
                .map(|(k, _)| k);
            best.map(|k| {
                *free
                    .swap_remove(k)
                    .downcast::<Vec<F>>()
                    .expect("type checked")
            })
        })
        .unwrap_or_default();
    buf.truncate(len);
    buf.resize(len, F::zero()); // only a fresh (or shorter) buffer is extended with zeros
    Array::from_shape_vec(shape, buf).expect("length matches the shape")
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
}
