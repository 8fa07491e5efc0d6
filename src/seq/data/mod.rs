//! Data for the sequence classifier: token-id sequences with one class each.
//!
//! A [`Dataset`] holds N sequences already padded to one length T, batch-first on the host
//! ((N, T), the natural layout for shuffling and splitting); [`Dataset::batch`] hands the model
//! a time-major (T, B) batch, the layout of every layer. Id 0 is padding, id 1 the unknown
//! word. Two sources: the seeded synthetic long-range task ([`synthetic`]) and a user's CSV
//! file ([`csv_text`], through the [`tokenizer`]). Nothing here knows about models.

pub mod csv_text;
pub mod synthetic;
pub mod tokenizer;

use anyhow::{Result, bail};
use ndarray::{Array1, Array2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Id of the padding token (masked by the embedding).
pub const PAD: u32 = 0;
/// Id of words outside the vocabulary.
pub const UNK: u32 = 1;

/// Where padding (or truncation) happens: Keras' `pad_sequences(padding=…, truncating=…)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// At the start (Keras' default for both): the sequence ends at the last step.
    Pre,
    /// At the end.
    Post,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Pre => "pre",
            Side::Post => "post",
        }
    }
}

/// `ids` padded with [`PAD`] or cut to exactly `len` ids.
pub fn pad_to(ids: &[u32], len: usize, padding: Side, truncating: Side) -> Vec<u32> {
    let kept = if ids.len() > len {
        match truncating {
            Side::Pre => &ids[ids.len() - len..],
            Side::Post => &ids[..len],
        }
    } else {
        ids
    };
    let fill = std::iter::repeat_n(PAD, len - kept.len());
    match padding {
        Side::Pre => fill.chain(kept.iter().copied()).collect(),
        Side::Post => kept.iter().copied().chain(fill).collect(),
    }
}

/// N padded sequences and their classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Token ids, one row per sequence: (N, T).
    pub ids: Array2<u32>,
    /// Class id of each sequence: (N).
    pub labels: Array1<i64>,
    /// Synthetic task only: how many real tokens follow the key token (0 = it is the last).
    pub key_distance: Option<Vec<usize>>,
    /// Embedding rows the ids need (largest id + 1 at most).
    pub vocab: usize,
    /// Number of classes C (labels are 0 … C−1).
    pub classes: usize,
}

impl Dataset {
    /// Number of sequences N.
    pub fn len(&self) -> usize {
        self.ids.nrows()
    }

    /// True if there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence length T.
    pub fn seq_len(&self) -> usize {
        self.ids.ncols()
    }

    /// The sequences `idx` as a time-major batch: ids (T, B) and labels (B).
    pub fn batch(&self, idx: &[usize]) -> (Array2<u32>, Array1<i64>) {
        let ids = self.ids.select(Axis(0), idx).reversed_axes();
        let ids = ids.as_standard_layout().into_owned();
        (ids, self.labels.select(Axis(0), idx))
    }

    /// The sequences `idx`, in that order, as a dataset of their own.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        Dataset {
            ids: self.ids.select(Axis(0), idx),
            labels: self.labels.select(Axis(0), idx),
            key_distance: self
                .key_distance
                .as_ref()
                .map(|d| idx.iter().map(|&i| d[i]).collect()),
            vocab: self.vocab,
            classes: self.classes,
        }
    }

    /// A seeded split into (training, validation) with `validation` ∈ (0, 1) of the sequences
    /// (rounded, at least 1) in the second part, after a shuffle by `seed`.
    pub fn split(&self, validation: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        let n = self.len();
        if !(validation > 0.0 && validation < 1.0) {
            bail!("validation split {validation} is invalid: it must be between 0 and 1");
        }
        let n_val = ((n as f64 * validation).round() as usize).max(1);
        if n_val >= n {
            bail!(
                "{n} sequences are too few for a validation split of {validation}: nothing would be left to train on"
            );
        }
        let order = shuffled(n, seed);
        let (train, val) = order.split_at(n - n_val);
        Ok((self.subset(train), self.subset(val)))
    }

    /// Share of each class: (C).
    pub fn class_shares(&self) -> Vec<f64> {
        let mut counts = vec![0usize; self.classes];
        for &y in &self.labels {
            counts[y as usize] += 1;
        }
        counts
            .into_iter()
            .map(|c| c as f64 / self.len().max(1) as f64)
            .collect()
    }
}

/// 0 … n−1 in a seeded random order.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    #[test]
    fn padding_and_truncation_follow_keras() {
        assert_eq!(pad_to(&[5, 6], 4, Side::Pre, Side::Pre), vec![0, 0, 5, 6]);
        assert_eq!(pad_to(&[5, 6], 4, Side::Post, Side::Pre), vec![5, 6, 0, 0]);
        assert_eq!(pad_to(&[1, 2, 3], 2, Side::Pre, Side::Pre), vec![2, 3]);
        assert_eq!(pad_to(&[1, 2, 3], 2, Side::Pre, Side::Post), vec![1, 2]);
        assert_eq!(pad_to(&[], 2, Side::Pre, Side::Pre), vec![0, 0]);
    }

    #[test]
    fn batches_are_time_major_and_splits_seeded_and_disjoint() {
        let d = Dataset {
            ids: arr2(&[[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12], [13, 14, 15]]),
            labels: ndarray::arr1(&[0, 1, 0, 1, 1]),
            key_distance: None,
            vocab: 16,
            classes: 2,
        };
        let (ids, y) = d.batch(&[2, 0]);
        assert_eq!(ids, arr2(&[[7, 1], [8, 2], [9, 3]]));
        assert_eq!(y, ndarray::arr1(&[0, 0]));
        let (tr, va) = d.split(0.4, 3).unwrap();
        assert_eq!((tr.len(), va.len()), (3, 2));
        let mut firsts: Vec<u32> = tr
            .ids
            .column(0)
            .iter()
            .chain(va.ids.column(0))
            .copied()
            .collect();
        firsts.sort_unstable();
        assert_eq!(firsts, vec![1, 4, 7, 10, 13]);
        assert_eq!(d.split(0.4, 3).unwrap().1, va);
        assert!(d.split(1.0, 3).is_err());
        assert_eq!(d.class_shares(), vec![0.4, 0.6]);
    }
}
