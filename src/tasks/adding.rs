//! The adding problem (Hochreiter & Schmidhuber 1997; in this form Le et al. 2015 and
//! Arjovsky, Shah & Bengio 2016).
//!
//! Input at each of T steps: (value ~ U[0, 1], marker ∈ {0, 1}). Exactly one marker lies in
//! the first half, t ∈ [0, ⌊T/2⌋), and one in the second, t ∈ [⌊T/2⌋, T). Target: the sum of
//! the two marked values, read from the last step, MSE loss. Baseline: always answering 1
//! (the mean of the sum) gives MSE = Var(u₁ + u₂) = 1/6 ≈ 0.167. Accuracy: share of sequences
//! with |error| < 0.04; answering 1 scores 1 − 0.96² = 0.0784 (the sum is triangular on [0, 2]).

use super::Task;
use crate::batch::{Batch, Target};
use crate::head::Readout;
use ndarray::{Array2, Array3, ArrayView3, Axis};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Accuracy criterion: |prediction − target| < 0.04.
pub const TOLERANCE: f32 = 0.04;

/// The adding problem with sequences of length `seq_len`.
#[derive(Clone, Debug)]
pub struct Adding {
    pub seq_len: usize,
}

impl Task for Adding {
    fn name(&self) -> &'static str {
        "adding"
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn steps(&self) -> usize {
        self.seq_len
    }
    fn input_size(&self) -> usize {
        2
    }
    fn output_size(&self) -> usize {
        1
    }
    fn readout(&self) -> Readout {
        Readout::Last
    }

    fn sample(&self, rng: &mut ChaCha8Rng, batch: usize) -> Batch {
        let t_len = self.seq_len;
        let half = t_len / 2;
        let mut x = Array3::<f32>::zeros((t_len, batch, 2));
        let mut y = Array2::<f32>::zeros((batch, 1));
        for b in 0..batch {
            for t in 0..t_len {
                x[[t, b, 0]] = rng.random::<f32>();
            }
            let first = rng.random_range(0..half);
            let second = rng.random_range(half..t_len);
            x[[first, b, 1]] = 1.0;
            x[[second, b, 1]] = 1.0;
            y[[b, 0]] = x[[first, b, 0]] + x[[second, b, 0]];
        }
        Batch {
            x,
            target: Target::Values(y),
        }
    }

    fn accuracy(&self, y: ArrayView3<f32>, batch: &Batch) -> f64 {
        let Target::Values(target) = &batch.target else {
            panic!("adding task batches have value targets")
        };
        let last = y.index_axis(Axis(0), y.dim().0 - 1);
        let hits = last
            .iter()
            .zip(target.iter())
            .filter(|(p, t)| (*p - *t).abs() < TOLERANCE)
            .count();
        hits as f64 / target.len() as f64
    }

    fn baseline_loss(&self) -> f64 {
        1.0 / 6.0
    }
    fn chance_accuracy(&self) -> f64 {
        1.0 - 0.96 * 0.96
    }
    fn describe(&self) -> String {
        format!(
            "adding, T = {}: inputs (value ~ U[0,1], marker), one marker in [0, {}) and one in [{}, {}); \
             target = sum of the marked values at the last step; MSE; accuracy |err| < 0.04; baseline MSE 1/6",
            self.seq_len,
            self.seq_len / 2,
            self.seq_len / 2,
            self.seq_len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn one_marker_per_half_and_target_is_their_sum() {
        let task = Adding { seq_len: 9 };
        let batch = task.sample(&mut ChaCha8Rng::seed_from_u64(0), 500);
        let Target::Values(y) = &batch.target else {
            unreachable!()
        };
        for b in 0..500 {
            let marks: Vec<usize> = (0..9).filter(|&t| batch.x[[t, b, 1]] == 1.0).collect();
            assert_eq!(marks.len(), 2);
            assert!(marks[0] < 4 && (4..9).contains(&marks[1]), "{marks:?}");
            assert!((0..9).all(|t| [0.0, 1.0].contains(&batch.x[[t, b, 1]])));
            let sum = batch.x[[marks[0], b, 0]] + batch.x[[marks[1], b, 0]];
            assert_eq!(y[[b, 0]], sum);
        }
    }

    #[test]
    fn same_seed_same_batch() {
        let task = Adding { seq_len: 50 };
        let a = task.sample(&mut ChaCha8Rng::seed_from_u64(5), 8);
        let b = task.sample(&mut ChaCha8Rng::seed_from_u64(5), 8);
        let c = task.sample(&mut ChaCha8Rng::seed_from_u64(6), 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// The documented baseline and chance level, measured: predicting 1 on many sequences.
    #[test]
    fn baseline_and_chance_match_measurement() {
        let task = Adding { seq_len: 20 };
        let batch = task.sample(&mut ChaCha8Rng::seed_from_u64(1), 100_000);
        let ones = Array3::<f32>::ones((1, 100_000, 1));
        let (mse, _) = crate::loss::loss(ones.view(), &batch.target);
        assert!((mse - task.baseline_loss()).abs() < 0.003, "{mse}");
        let acc = task.accuracy(ones.view(), &batch);
        assert!((acc - task.chance_accuracy()).abs() < 0.004, "{acc}");
    }
}
