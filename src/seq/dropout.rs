//! Inverted dropout (Keras' `Dropout(rate)`): in training every unit is zeroed with
//! probability p and the survivors are scaled by 1/(1 − p), so evaluation needs no rescaling
//! and simply passes values through.
//!
//! ```text
//! train:    keep ~ Bernoulli(1 − p) per entry,  s = keep / (1 − p),  y = x ⊙ s
//! eval:     y = x                                 (no draw, s = 1)
//! backward: dx = dy ⊙ s
//! ```
//! The draws come from the generator passed in (seeded by the caller), so a training run is
//! reproducible; the scale array s is the layer's whole cache. Works on any shape.

use crate::real::Real;
use ndarray::{Array, ArrayView, Dimension};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// y = x ⊙ s with a fresh mask from `rng` (training), or y = x (`rng` = None: evaluation).
/// Returns y and the scale s (None in evaluation).
pub fn forward<F: Real, D: Dimension>(
    x: Array<F, D>,
    rate: f64,
    rng: Option<&mut ChaCha8Rng>,
) -> (Array<F, D>, Option<Array<F, D>>) {
    let Some(rng) = rng.filter(|_| rate > 0.0) else {
        return (x, None);
    };
    let scale = draw_scale(x.raw_dim(), rate, rng);
    (x * &scale, Some(scale))
}

/// A fresh scale array: 0 with probability `rate`, else 1/(1 − rate).
pub fn draw_scale<F: Real, D: Dimension>(dim: D, rate: f64, rng: &mut ChaCha8Rng) -> Array<F, D> {
    assert!(
        (0.0..1.0).contains(&rate),
        "dropout rate {rate} is not in [0, 1)"
    );
    let keep = F::of(1.0 / (1.0 - rate));
    Array::from_shape_simple_fn(dim, || {
        if rng.random::<f64>() < rate {
            F::zero()
        } else {
            keep
        }
    })
}

/// dx = dy ⊙ s (forward was y = x ⊙ s; with no scale, y = x and dx = dy).
pub fn backward<F: Real, D: Dimension>(
    dy: Array<F, D>,
    scale: Option<ArrayView<F, D>>,
) -> Array<F, D> {
    match scale {
        Some(s) => dy * &s,
        None => dy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::SeedableRng;

    #[test]
    fn inverted_scaling_seeded_and_identity_in_eval() {
        let x = Array2::<f64>::ones((200, 50));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (y, s) = forward(x.clone(), 0.5, Some(&mut rng));
        let s = s.unwrap();
        // every entry is 0 or 2; about half survive; the mean is preserved in expectation
        assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
        let kept = y.iter().filter(|&&v| v > 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.5).abs() < 0.03, "kept {kept}");
        // the same seed gives the same mask
        let (y2, _) = forward(x.clone(), 0.5, Some(&mut ChaCha8Rng::seed_from_u64(7)));
        assert_eq!(y, y2);
        // backward multiplies by the same scale
        let dx = backward(Array2::from_elem((200, 50), 3.0), Some(s.view()));
        assert_eq!(dx, y.mapv(|v| 3.0 * v));
        // evaluation: identity, no scale
        let (y, s) = forward(x.clone(), 0.5, None);
        assert_eq!((y, s), (x, None));
    }
}
