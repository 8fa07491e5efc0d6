//! Losses, each returning the loss value and its gradient with respect to the head's output.
//!
//! Both use PyTorch's default `reduction='mean'`: MSE averages over all B·O entries;
//! cross-entropy averages over the steps that have a target (class id −1 = no target, as
//! `ignore_index=-1`). Values are returned in f64; gradients in the model's float type.

use crate::batch::Target;
use crate::real::Real;
use ndarray::{Array3, ArrayView2, ArrayView3, Axis};

/// Mean squared error on the last read-out step. `y`: (T_out, B, O), `target`: (B, O).
/// L = mean (y − target)²; dL/dy = 2 (y − target) / (B·O).
pub fn mse<F: Real>(y: ArrayView3<F>, target: ArrayView2<f32>) -> (f64, Array3<F>) {
    let (t_out, b, o) = y.dim();
    assert_eq!((b, o), target.dim(), "targets (B, O) must match the output");
    let n = (b * o) as f64;
    let last = y.index_axis(Axis(0), t_out - 1);
    let mut dy = Array3::zeros(y.dim());
    let mut loss = 0.0;
    for ((d, &yv), &tv) in dy
        .index_axis_mut(Axis(0), t_out - 1)
        .iter_mut()
        .zip(last.iter())
        .zip(target.iter())
    {
        let e = yv - F::of(tv as f64);
        loss += e.f64() * e.f64();
        *d = F::of(2.0 / n) * e;
    }
    (loss / n, dy)
}

/// Softmax cross-entropy. `logits`: (T_out, B, C), `target`: (T_out, B) class ids,
/// −1 = ignored. L = −Σ log softmax(logits)\[target\] / (number of targets);
/// dL/dlogits = (softmax − onehot) / (number of targets) at targeted steps, 0 elsewhere.
pub fn cross_entropy<F: Real>(logits: ArrayView3<F>, target: ArrayView2<i64>) -> (f64, Array3<F>) {
    let (t_out, b, c) = logits.dim();
    assert_eq!(
        (t_out, b),
        target.dim(),
        "class targets (T_out, B) must match the output"
    );
    let n = target.iter().filter(|&&k| k >= 0).count();
    let mut dy = Array3::zeros(logits.dim());
    if n == 0 {
        return (0.0, dy);
    }
    let scale = 1.0 / n as f64;
    let mut loss = 0.0;
    for t in 0..t_out {
        for r in 0..b {
            let k = target[[t, r]];
            if k < 0 {
                continue;
            }
            let z = logits.slice(ndarray::s![t, r, ..]);
            let m = z.iter().fold(F::neg_infinity(), |a, &v| a.max(v));
            let sum: F = z.iter().map(|&v| (v - m).exp()).sum();
            let log_sum = m + sum.ln();
            loss += (log_sum - z[k as usize]).f64();
            let mut d = dy.slice_mut(ndarray::s![t, r, ..]);
            for j in 0..c {
                let p = (z[j] - log_sum).exp();
                let onehot = if j == k as usize { F::one() } else { F::zero() };
                d[j] = (p - onehot) * F::of(scale);
            }
        }
    }
    (loss * scale, dy)
}

/// The loss matching a batch's targets: MSE for values, cross-entropy for class ids.
pub fn loss<F: Real>(y: ArrayView3<F>, target: &Target) -> (f64, Array3<F>) {
    match target {
        Target::Values(v) => mse(y, v.view()),
        Target::Classes(c) => cross_entropy(y, c.view()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr2, arr3};

    #[test]
    fn mse_matches_hand_computation() {
        // errors 0.5 and −1 → L = (0.25 + 1) / 2 = 0.625; dy = 2e/2 = e
        let (l, dy) = mse(
            arr3(&[[[1.5f64], [0.0]]]).view(),
            arr2(&[[1.0f32], [1.0]]).view(),
        );
        assert!((l - 0.625).abs() < 1e-12);
        assert_eq!(dy, arr3(&[[[0.5], [-1.0]]]));
    }

    #[test]
    fn cross_entropy_ignores_masked_steps() {
        // logits (0, ln 3): softmax (1/4, 3/4); target 1 → −ln(3/4); second step ignored.
        let z = arr3(&[[[0.0f64, 3f64.ln()]], [[5.0, -5.0]]]);
        let (l, dy) = cross_entropy(z.view(), arr2(&[[1i64], [-1]]).view());
        assert!((l - (4.0f64 / 3.0).ln()).abs() < 1e-12);
        assert!((dy[[0, 0, 0]] - 0.25).abs() < 1e-12 && (dy[[0, 0, 1]] + 0.25).abs() < 1e-12);
        assert_eq!(dy[[1, 0, 0]], 0.0);
    }
}
