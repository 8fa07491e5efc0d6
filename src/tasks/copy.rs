//! The copying-memory task (Arjovsky, Shah & Bengio 2016).
//!
//! Symbols: 0 = blank, 1…8 = data, 9 = delimiter; inputs are one-hot over these 10.
//! A sequence is K data symbols (uniform over 1…8), then T−1 blanks, the delimiter, then K
//! blanks: T + 2K steps. The target is blank at every step except the last K, where it is the
//! K data symbols in order; outputs are logits over the 9 target classes (blank, 1…8).
//! Loss: cross-entropy averaged over all T + 2K steps. A memoryless model that answers blank
//! and then guesses uniformly scores K·ln 8 / (T + 2K). Accuracy is counted on the K recalled
//! symbols only (chance 1/8): over all steps it would be meaningless, since answering blank
//! everywhere already scores (T + K)/(T + 2K).

use super::Task;
use crate::batch::{Batch, Target};
use crate::head::Readout;
use ndarray::{Array2, Array3, ArrayView3, s};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Number of input symbols: blank, 8 data symbols, delimiter.
pub const INPUT_SYMBOLS: usize = 10;
/// Number of target classes: blank and the 8 data symbols.
pub const CLASSES: usize = 9;
/// The delimiter's input id.
pub const DELIMITER: usize = 9;

/// The copy task: remember `symbols` (K) symbols over a gap of `seq_len` (T) steps.
#[derive(Clone, Debug)]
pub struct Copy {
    pub seq_len: usize,
    pub symbols: usize,
}

impl Task for Copy {
    fn name(&self) -> &'static str {
        "copy"
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn steps(&self) -> usize {
        self.seq_len + 2 * self.symbols
    }
    fn input_size(&self) -> usize {
        INPUT_SYMBOLS
    }
    fn output_size(&self) -> usize {
        CLASSES
    }
    fn readout(&self) -> Readout {
        Readout::Every
    }

    fn sample(&self, rng: &mut ChaCha8Rng, batch: usize) -> Batch {
        let (t, k) = (self.seq_len, self.symbols);
        let steps = self.steps();
        let mut x = Array3::<f32>::zeros((steps, batch, INPUT_SYMBOLS));
        let mut y = Array2::<i64>::zeros((steps, batch)); // blank everywhere …
        for b in 0..batch {
            let data: Vec<usize> = (0..k).map(|_| rng.random_range(1..=8)).collect();
            for step in 0..steps {
                let symbol = if step < k {
                    data[step]
                } else if step == t + k - 1 {
                    DELIMITER
                } else {
                    0
                };
                x[[step, b, symbol]] = 1.0;
            }
            for (j, &d) in data.iter().enumerate() {
                y[[t + k + j, b]] = d as i64; // … except the last K steps
            }
        }
        Batch {
            x,
            target: Target::Classes(y),
        }
    }

    fn accuracy(&self, y: ArrayView3<f32>, batch: &Batch) -> f64 {
        let Target::Classes(target) = &batch.target else {
            panic!("copy task batches have class targets")
        };
        let steps = self.steps();
        let recall = s![steps - self.symbols.., ..];
        let (mut hits, mut total) = (0usize, 0usize);
        for ((t, b), &k) in target.slice(recall).indexed_iter() {
            let logits = y.slice(s![steps - self.symbols + t, b, ..]);
            let argmax = logits
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (j, &v)| {
                    if v > best.1 { (j, v) } else { best }
                })
                .0;
            hits += usize::from(argmax as i64 == k);
            total += 1;
        }
        hits as f64 / total as f64
    }

    fn baseline_loss(&self) -> f64 {
        self.symbols as f64 * 8f64.ln() / self.steps() as f64
    }
    fn chance_accuracy(&self) -> f64 {
        1.0 / 8.0
    }
    fn describe(&self) -> String {
        format!(
            "copy, T = {}, K = {}: K symbols from 8, T−1 blanks, a delimiter, K blanks ({} steps); \
             recall the K symbols in order; cross-entropy at every step; accuracy on the recalled symbols; \
             memoryless baseline K·ln8/(T+2K) = {:.4}",
            self.seq_len,
            self.symbols,
            self.steps(),
            self.baseline_loss()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn layout_matches_the_definition() {
        let task = Copy {
            seq_len: 5,
            symbols: 3,
        };
        let batch = task.sample(&mut ChaCha8Rng::seed_from_u64(0), 4);
        let Target::Classes(y) = &batch.target else {
            unreachable!()
        };
        assert_eq!(batch.dim(), (11, 4, 10));
        for b in 0..4 {
            let ids: Vec<usize> = (0..11)
                .map(|t| (0..10).find(|&j| batch.x[[t, b, j]] == 1.0).unwrap())
                .collect();
            assert!(ids[..3].iter().all(|&d| (1..=8).contains(&d)));
            assert_eq!(&ids[3..7], &[0, 0, 0, 0]); // T−1 = 4 blanks
            assert_eq!(ids[7], DELIMITER);
            assert_eq!(&ids[8..], &[0, 0, 0]);
            let targets: Vec<i64> = (0..11).map(|t| y[[t, b]]).collect();
            assert!(targets[..8].iter().all(|&k| k == 0));
            assert_eq!(
                targets[8..],
                ids[..3].iter().map(|&d| d as i64).collect::<Vec<_>>()[..]
            );
            // every row of x is one-hot
            assert!((0..11).all(|t| batch.x.slice(s![t, b, ..]).sum() == 1.0));
        }
    }

    /// The memoryless strategy (blank, then uniform over the 8 symbols) reaches exactly the
    /// documented baseline loss and chance accuracy on the recalled symbols.
    #[test]
    fn memoryless_strategy_scores_the_baseline() {
        let task = Copy {
            seq_len: 20,
            symbols: 10,
        };
        let batch = task.sample(&mut ChaCha8Rng::seed_from_u64(2), 2000);
        let steps = task.steps();
        let y = Array3::<f32>::from_shape_fn((steps, 2000, CLASSES), |(t, _, j)| {
            if t < steps - 10 {
                if j == 0 { 100.0 } else { 0.0 }
            } else if j == 0 {
                -100.0
            } else {
                0.0
            }
        });
        let (loss, _) = crate::loss::loss(y.view(), &batch.target);
        assert!(
            (loss - task.baseline_loss()).abs() < 1e-5,
            "{loss} vs {}",
            task.baseline_loss()
        );
        // with the answer = the true symbol everywhere, accuracy is 1
        let Target::Classes(t) = &batch.target else {
            unreachable!()
        };
        let perfect = Array3::<f32>::from_shape_fn((steps, 2000, CLASSES), |(s, b, j)| {
            f32::from(j as i64 == t[[s, b]])
        });
        assert_eq!(task.accuracy(perfect.view(), &batch), 1.0);
        assert!((task.accuracy(y.view(), &batch) - 0.125).abs() < 0.02);
    }
}
