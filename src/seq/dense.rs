//! The classifier's output: Dense (Keras' `Dense(C, activation="softmax")`) with categorical
//! cross-entropy.
//!
//! ```text
//! forward:  z = x Wᵀ + b          x (B, D), W (C, D) (PyTorch's `nn.Linear` layout), z (B, C)
//!           p = softmax(z)        (the "softmax" of the Keras layer; only for reporting)
//!           L = −(1/B) Σ_b log p[b, y_b]
//! backward: dz = (p − onehot(y)) / B     (softmax and cross-entropy together)
//!           dW = dzᵀ x,   db = Σ_b dz,   dx = dz W
//! ```
//! The loss itself is [`crate::loss::cross_entropy`] (a numerically stable log-softmax), read
//! as one output step: z becomes (1, B, C) and the targets (1, B). Keras' categorical
//! cross-entropy on one-hot targets is exactly this loss with class ids.

use crate::params::Linear;
use crate::real::Real;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Ix3};

/// z = x Wᵀ + b: `x` (B, D) → (B, C).
pub fn forward<F: Real>(dense: &Linear<F>, x: ArrayView2<F>) -> Array2<F> {
    x.dot(&dense.weight.t()) + &dense.bias
}

/// Given dz (B, C) and the layer's input x (B, D): the layer's gradients and dx (B, D).
pub fn backward<F: Real>(
    dense: &Linear<F>,
    x: ArrayView2<F>,
    dz: ArrayView2<F>,
) -> (Linear<F>, Array2<F>) {
    // forward was z = x Wᵀ + b, so dW = dzᵀ x, db = Σ_b dz, dx = dz W
    let grad = Linear {
        weight: dz.t().dot(&x),
        bias: dz.sum_axis(Axis(0)),
    };
    (grad, dz.dot(&dense.weight))
}

/// Mean categorical cross-entropy of logits `z` (B, C) against class ids `y` (B), and dL/dz.
pub fn softmax_cross_entropy<F: Real>(z: ArrayView2<F>, y: ArrayView1<i64>) -> (f64, Array2<F>) {
    let z3 = z.insert_axis(Axis(0)); // (1, B, C)
    let y2 = y.insert_axis(Axis(0)); // (1, B)
    let (loss, dz) = crate::loss::cross_entropy(z3, y2);
    let dz = dz.into_dimensionality::<Ix3>().expect("(1, B, C)");
    (loss, dz.index_axis_move(Axis(0), 0))
}

/// softmax(z) row by row: (B, C) probabilities.
pub fn softmax<F: Real>(z: ArrayView2<F>) -> Array2<F> {
    let mut p = z.to_owned();
    for mut row in p.rows_mut() {
        let m = row.iter().fold(F::neg_infinity(), |a, &v| a.max(v));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row /= s;
    }
    p
}

/// Index of the largest logit of each row: the predicted class ids (B).
pub fn argmax<F: Real>(z: ArrayView2<F>) -> Array1<i64> {
    z.rows()
        .into_iter()
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    /// Two classes, one sequence: z = (0, ln 3) → p = (1/4, 3/4); target 1 → L = ln(4/3),
    /// dz = (1/4, −1/4).
    #[test]
    fn softmax_cross_entropy_by_hand() {
        let z = arr2(&[[0.0f64, 3f64.ln()]]);
        let (l, dz) = softmax_cross_entropy(z.view(), arr1(&[1i64]).view());
        assert!((l - (4.0f64 / 3.0).ln()).abs() < 1e-12);
        assert!((dz[[0, 0]] - 0.25).abs() < 1e-12 && (dz[[0, 1]] + 0.25).abs() < 1e-12);
        let p = softmax(z.view());
        assert!((p[[0, 1]] - 0.75).abs() < 1e-12);
        assert_eq!(argmax(z.view()), arr1(&[1]));
    }

    #[test]
    fn dense_forward_backward_by_hand() {
        let d = Linear {
            weight: arr2(&[[1.0f64, 2.0], [0.0, -1.0]]),
            bias: arr1(&[0.5, 0.0]),
        };
        let x = arr2(&[[1.0, 1.0]]);
        assert_eq!(forward(&d, x.view()), arr2(&[[3.5, -1.0]]));
        let (g, dx) = backward(&d, x.view(), arr2(&[[1.0, 2.0]]).view());
        assert_eq!(g.weight, arr2(&[[1.0, 1.0], [2.0, 2.0]]));
        assert_eq!(g.bias, arr1(&[1.0, 2.0]));
        assert_eq!(dx, arr2(&[[1.0, 0.0]]));
    }
}
