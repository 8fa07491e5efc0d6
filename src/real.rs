//! The float type the numeric code is generic over.
//!
//! Training runs in `f32`; the gradient check runs the very same code in `f64`. Everything
//! numeric takes a `F: Real`. The one place the two differ is the gate nonlinearities: `f32`
//! uses an `exp`-based `tanh` (glibc's `tanhf` costs ~25 ns per element, as much as the matrix
//! products), `f64` keeps the exact library function so that finite differences are exact.
//! This file does not define any array type: arrays are `ndarray`'s.

use ndarray::{LinalgScalar, ScalarOperand};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A floating-point scalar the models can be computed in (`f32` or `f64`).
pub trait Real:
    LinalgScalar
    + ScalarOperand
    + num_traits::Float
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// Name used in messages and file metadata ("f32" / "f64").
    const NAME: &'static str;
    /// Converts from `f64` (rounding for `f32`).
    fn of(x: f64) -> Self;
    /// Widens to `f64`.
    fn f64(self) -> f64;
    /// Hyperbolic tangent as used by the cells (fast for `f32`, exact for `f64`).
    fn tanh_act(self) -> Self;
    /// Logistic sigmoid 1 / (1 + e^(−x)).
    #[inline]
    fn sigmoid(self) -> Self {
        Self::one() / (Self::one() + (-self).exp())
    }
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn f64(self) -> f64 {
        self as f64
    }
    /// tanh(x) = 2 / (1 + e^(−2x)) − 1, max abs error ~2e−7 on the whole line (saturates
    /// cleanly: e^(−2x) overflows to +inf for x < −44 and the result is exactly −1).
    #[inline]
    fn tanh_act(self) -> Self {
        2.0 / (1.0 + (-2.0 * self).exp()) - 1.0
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn f64(self) -> f64 {
        self
    }
    #[inline]
    fn tanh_act(self) -> Self {
        self.tanh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_tanh_is_close_to_libm_everywhere() {
        let mut worst = 0.0f32;
        for k in -200_000..=200_000 {
            let x = k as f32 * 1e-4 * 5.0; // [-100, 100]
            worst = worst.max((x.tanh_act() - x.tanh()).abs());
        }
        assert!(worst < 5e-7, "worst abs error {worst}");
        assert_eq!((-1000.0f32).tanh_act(), -1.0);
        assert_eq!(1000.0f32.tanh_act(), 1.0);
    }

    #[test]
    fn sigmoid_matches_definition() {
        assert!((0.0f64.sigmoid() - 0.5).abs() < 1e-15);
        assert!((2.0f64.sigmoid() - 0.8807970779778823).abs() < 1e-15);
        assert_eq!((-1000.0f32).sigmoid(), 0.0);
    }
}
