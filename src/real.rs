//! The float type the numeric code is generic over.
//!
//! Training runs in `f32`; the gradient check runs the very same code in `f64`. Everything
//! numeric takes a `F: Real`. The one place the two differ is the gate nonlinearities: `f32`
//! uses [`exp_f32`], a branch-free polynomial `exp` that the compiler vectorises (glibc's
//! `expf`/`tanhf` cost ~25 ns per element, as much as the matrix products, and never
//! vectorise); `f64` keeps the exact library functions so that finite differences are exact.
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
    /// e^x as used by the cells (fast polynomial for `f32`, exact for `f64`).
    fn exp_act(self) -> Self;
    /// Hyperbolic tangent as used by the cells: 2 / (1 + e^(−2x)) − 1 for `f32` (max abs
    /// error ~2e−7, saturates to exactly ±1), the library `tanh` for `f64`.
    fn tanh_act(self) -> Self;
    /// Logistic sigmoid 1 / (1 + e^(−x)) (exactly 0 and 1 far out in the tails).
    #[inline(always)]
    fn sigmoid(self) -> Self {
        Self::one() / (Self::one() + (-self).exp_act())
    }
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp_act(self) -> Self {
        exp_f32(self)
    }
    #[inline(always)]
    fn tanh_act(self) -> Self {
        2.0 / (1.0 + exp_f32(-2.0 * self)) - 1.0
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp_act(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn tanh_act(self) -> Self {
        self.tanh()
    }
}

/// e^x in `f32`, within 2 ulp of the exact value on the whole line, with no branch and no
/// library call, so that a loop over it vectorises (Cephes' `expf`, range reduction
/// x = n·ln 2 + r with |r| ≤ ln 2 / 2, a degree-7 polynomial for e^r, then 2^n built in the
/// exponent bits). Returns exactly 0 below −87.3 and +∞ above 88.7 (where e^x leaves the
/// normal `f32` range); NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const HI: f32 = 88.72; // e^HI ≈ 3.4e38, just below f32::MAX
    const LO: f32 = -87.33; // e^LO ≈ 1.18e-38, the smallest normal f32
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split in two so that n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to the nearest integer and leaves that integer in the low
    // mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // No clamping here: out of [LO, HI] the result is replaced below, whatever garbage the
    // exponent arithmetic made of it (and a NaN stays NaN through every step).
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND; // round(x / ln 2), as a float
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32; // the same, as an int
    // Fused multiply-adds (one rounding each; exact on every CPU: an FMA instruction where
    // the multiversioned loops run, the library's fmaf elsewhere).
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = 1.987_569_1e-4f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let er = (p * r).mul_add(r, r) + 1.0; // e^r
    let two_n = f32::from_bits((n_int.wrapping_add(127) as u32) << 23); // 2^n in range
    let y = er * two_n;
    if x > HI {
        f32::INFINITY
    } else if x < LO {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for k in -1_000_000..=1_000_000 {
            let x = k as f32 * 8.7e-5; // [-87, 87]
            let exact = (x as f64).exp();
            let rel = ((exp_f32(x) as f64 - exact) / exact).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }

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
        assert!(f32::NAN.tanh_act().is_nan());
    }

    #[test]
    fn sigmoid_matches_definition() {
        assert!((0.0f64.sigmoid() - 0.5).abs() < 1e-15);
        assert!((2.0f64.sigmoid() - 0.8807970779778823).abs() < 1e-15);
        assert!((2.0f32.sigmoid() - 0.880_797_1).abs() < 1e-7);
        assert_eq!((-1000.0f32).sigmoid(), 0.0);
        assert_eq!(1000.0f32.sigmoid(), 1.0);
        assert!(f32::NAN.sigmoid().is_nan());
    }
}
