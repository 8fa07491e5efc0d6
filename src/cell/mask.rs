//! Masked steps (Keras' `mask_zero`): where a sequence's mask is 0 at step t, the step is
//! skipped: the state is carried over unchanged and the step's gates receive no gradient.
//!
//! ```text
//! forward:   h_t = m_t·h_new + (1 − m_t)·h_{t−1}      (and c_t likewise), m_t ∈ {0, 1} per row
//! backward:  masked rows: da_t = 0,  ∂L/∂h_{t−1} = ∂L/∂h_t,  ∂L/∂c_{t−1} = ∂L/∂c_t
//! ```
//! The cells compute every row of every step as usual and then apply these fixes to the
//! masked rows of the step, so the unmasked fast path is untouched (`mask` = None costs
//! nothing). Mask entries must be exactly 0 or 1: the backward fix-ups are the derivative of
//! the forward line above only for 0/1 (the cache keeps the mixed state, not h_new).
//! Everything here works on one block of rows of one step.

use crate::real::Real;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, ArrayViewMut3, Axis};

/// Forward, after step t: in `states` (T+1, b, H) (state t+1 = after step t), the rows where
/// `m_t` (b) is 0 get state t+1 ← state t.
pub(crate) fn hold<F: Real>(m_t: ArrayView1<F>, mut states: ArrayViewMut3<F>, t: usize) {
    let (prev, mut next) = states.view_mut().split_at(Axis(0), t + 1);
    let (prev, mut next) = (prev.index_axis(Axis(0), t), next.index_axis_mut(Axis(0), 0));
    for (r, &m) in m_t.iter().enumerate() {
        if m == F::zero() {
            next.row_mut(r).assign(&prev.row(r));
        }
    }
}

/// Backward, before step t's kernel: `carry` (b, H) ← `a` + `b` on the masked rows (the
/// gradient that will pass through the step unchanged; `b` may be absent).
pub(crate) fn save<F: Real>(
    m_t: ArrayView1<F>,
    a: ArrayView2<F>,
    b: Option<ArrayView2<F>>,
    mut carry: ArrayViewMut2<F>,
) {
    for (r, &m) in m_t.iter().enumerate() {
        if m == F::zero() {
            let mut c = carry.row_mut(r);
            c.assign(&a.row(r));
            if let Some(b) = &b {
                c += &b.row(r);
            }
        }
    }
}

/// Backward: `dst` (b, ·) ← `src` on the masked rows (`src` None: zeros), e.g. da_t = 0, or
/// ∂L/∂h_{t−1} = the saved ∂L/∂h_t.
pub(crate) fn restore<F: Real>(
    m_t: ArrayView1<F>,
    src: Option<ArrayView2<F>>,
    mut dst: ArrayViewMut2<F>,
) {
    for (r, &m) in m_t.iter().enumerate() {
        if m == F::zero() {
            match &src {
                Some(s) => dst.row_mut(r).assign(&s.row(r)),
                None => dst.row_mut(r).fill(F::zero()),
            }
        }
    }
}

/// Backward: the probe's squared norm of the masked rows of one step from `carry` (b, H).
pub(crate) fn probe<F: Real>(m_t: ArrayView1<F>, carry: ArrayView2<F>, sq: &mut [f64]) {
    for ((sq, &m), row) in sq.iter_mut().zip(&m_t).zip(carry.rows()) {
        if m == F::zero() {
            *sq = row.iter().map(|v| v.f64() * v.f64()).sum();
        }
    }
}

/// Checks a mask (T, B) against x (T, B, ·): same T and B, entries 0 or 1.
pub(crate) fn check<F: Real>(mask: &ArrayView2<F>, t: usize, b: usize) {
    assert_eq!(mask.dim(), (t, b), "the mask must be (T, B) = ({t}, {b})");
    assert!(
        mask.iter().all(|&m| m == F::zero() || m == F::one()),
        "mask entries must be 0 or 1"
    );
}
