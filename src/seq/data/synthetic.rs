//! The synthetic long-range classification task: which key token was in the sequence, and
//! how far back?
//!
//! Definition (every draw from one seeded ChaCha8 generator, so a seed gives the same data on
//! every machine):
//! - ids: 0 = padding, 1 = unknown (never used here), 2 … 2+C−1 = the C key tokens (key k
//!   means class k), 2+C … V−1 = distractor words.
//! - for each sequence: the class k ~ U{0 … C−1}; the key's distance from the end
//!   d ~ U{d_min … d_max} (d real tokens follow the key, so d = 0 means the key is the last
//!   token); the length L ~ U{max(L_min, d+1) … T}; the L real tokens are distractors drawn
//!   uniformly from 2+C … V−1 except position L−1−d, which holds key k;
//! - the L tokens are padded with 0 to T at the start (`padding = "pre"`, Keras' default) or
//!   at the end (`"post"`).
//!
//! Nothing but the key carries information about the class, so a model that cannot carry
//! what it saw over d steps scores chance (1/C) on keys at distance d.

use super::{Dataset, Side, pad_to};
use anyhow::{Result, bail};
use ndarray::{Array1, Array2};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The task's parameters (the `[data]` table of a classifier file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synthetic {
    /// Number of sequences generated (before the validation split).
    pub size: usize,
    /// Embedding rows V (ids 0 … V−1).
    pub vocab: usize,
    /// Number of classes C (= key tokens).
    pub classes: usize,
    /// Padded length T.
    pub seq_len: usize,
    /// Shortest sequence L_min (real tokens).
    pub min_len: usize,
    /// Smallest distance of the key from the end.
    pub min_distance: usize,
    /// Largest distance of the key from the end (< T).
    pub max_distance: usize,
    /// Where the padding goes.
    pub padding: Side,
}

impl Default for Synthetic {
    /// The Keras example's sizes: V = 10000, C = 10, T = 100, keys anywhere.
    fn default() -> Self {
        Synthetic {
            size: 10_000,
            vocab: 10_000,
            classes: 10,
            seq_len: 100,
            min_len: 20,
            min_distance: 0,
            max_distance: 99,
            padding: Side::Pre,
        }
    }
}

impl Synthetic {
    /// Range checks; errors name the key and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if self.classes < 2 {
            bail!(
                "data.classes = {} is invalid: it must be at least 2",
                self.classes
            );
        }
        if self.vocab < self.classes + 3 {
            bail!(
                "data.vocab = {} is invalid: it must be at least classes + 3 = {} (padding, unknown, {} keys and a distractor)",
                self.vocab,
                self.classes + 3,
                self.classes
            );
        }
        if self.vocab > u32::MAX as usize {
            bail!("data.vocab = {} is too large", self.vocab);
        }
        if self.size < 2 {
            bail!(
                "data.size = {} is invalid: it must be at least 2 (training and validation)",
                self.size
            );
        }
        if self.seq_len == 0 {
            bail!("data.seq_len = 0 is invalid: it must be at least 1");
        }
        if self.min_len == 0 || self.min_len > self.seq_len {
            bail!(
                "data.min_len = {} is invalid: it must be between 1 and data.seq_len = {}",
                self.min_len,
                self.seq_len
            );
        }
        if self.min_distance > self.max_distance || self.max_distance >= self.seq_len {
            bail!(
                "data.min_distance = {} and data.max_distance = {} are invalid: they need min ≤ max < data.seq_len = {}",
                self.min_distance,
                self.max_distance,
                self.seq_len
            );
        }
        Ok(())
    }

    /// [`Synthetic::size`] sequences from `seed`.
    pub fn generate(&self, seed: u64) -> Dataset {
        self.generate_n(self.size, seed)
    }

    /// `n` sequences from `seed`.
    pub fn generate_n(&self, n: usize, seed: u64) -> Dataset {
        self.validate().expect("validated Synthetic");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (c, t) = (self.classes, self.seq_len);
        let first_distractor = 2 + c as u32;
        let mut ids = Array2::zeros((n, t));
        let mut labels = Array1::zeros(n);
        let mut distances = Vec::with_capacity(n);
        for (i, mut row) in ids.rows_mut().into_iter().enumerate() {
            let k = rng.random_range(0..c);
            let d = rng.random_range(self.min_distance..=self.max_distance);
            let len = rng.random_range(self.min_len.max(d + 1)..=t);
            let mut seq: Vec<u32> = (0..len)
                .map(|_| rng.random_range(first_distractor..self.vocab as u32))
                .collect();
            seq[len - 1 - d] = 2 + k as u32;
            let padded = pad_to(&seq, t, self.padding, Side::Pre);
            row.iter_mut().zip(padded).for_each(|(dst, v)| *dst = v);
            labels[i] = k as i64;
            distances.push(d);
        }
        Dataset {
            ids,
            labels,
            key_distance: Some(distances),
            vocab: self.vocab,
            classes: c,
        }
    }

    /// One line: the exact definition, for logs and summaries.
    pub fn describe(&self) -> String {
        format!(
            "synthetic key-token task: V = {}, C = {} classes (key ids 2…{}), T = {}, lengths {}…{}, key {}…{} tokens before the end, {}-padded",
            self.vocab,
            self.classes,
            self.classes + 1,
            self.seq_len,
            self.min_len,
            self.seq_len,
            self.min_distance,
            self.max_distance,
            self.padding.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::data::PAD;

    #[test]
    fn the_key_sits_at_its_distance_among_distractors() {
        for padding in [Side::Pre, Side::Post] {
            let s = Synthetic {
                size: 300,
                vocab: 50,
                classes: 4,
                seq_len: 12,
                min_len: 3,
                min_distance: 0,
                max_distance: 11,
                padding,
            };
            let d = s.generate(5);
            assert_eq!(d, s.generate(5), "seeded");
            assert_ne!(d, s.generate(6));
            let dist = d.key_distance.as_ref().unwrap();
            for (i, row) in d.ids.rows().into_iter().enumerate() {
                let real: Vec<u32> = row.iter().copied().filter(|&v| v != PAD).collect();
                // padding only on the requested side
                let first_real = row.iter().position(|&v| v != PAD).unwrap();
                match padding {
                    Side::Pre => assert!(row.iter().skip(first_real).all(|&v| v != PAD)),
                    Side::Post => assert_eq!(first_real, 0),
                }
                let keys: Vec<usize> = (0..real.len()).filter(|&j| real[j] < 6).collect();
                assert_eq!(keys.len(), 1, "exactly one key token");
                assert_eq!(real.len() - 1 - keys[0], dist[i]);
                assert_eq!(real[keys[0]] as i64 - 2, d.labels[i]);
                assert!(real.len() >= 3 && real.iter().all(|&v| (2..50).contains(&v)));
            }
            // every distance and every class occurs
            assert!((0..12).all(|k| dist.contains(&k)));
            assert!(d.class_shares().iter().all(|&s| s > 0.15));
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        let s = Synthetic {
            max_distance: 100,
            ..Synthetic::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("data.max_distance = 100")
        );
    }
}
