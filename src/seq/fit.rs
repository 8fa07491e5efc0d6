//! Training like Keras' `model.fit`: epochs over a shuffled training set in mini-batches,
//! validation after every epoch, early stopping on the validation loss, and the weights of
//! the best epoch kept (Keras' `EarlyStopping(monitor="val_loss", restore_best_weights=True)`
//! plus `ModelCheckpoint(save_best_only=True)`).
//!
//! Per step: forward in training mode (dropout on) → softmax cross-entropy → backward →
//! clip (if asked) → optimizer update. The last batch of an epoch may be smaller, as in Keras.
//! Seeds: the model is initialised from `seed` by the caller; here `seed` drives two more
//! independent ChaCha8 streams, 1 = the order of the training set in each epoch,
//! 2 = dropout. The loop reports through a callback ([`FitEvent`]); drawing progress bars and
//! writing files is the caller's business.

use super::data::Dataset;
use super::dense;
use super::model::Classifier;
use crate::optim::{Clip, Optimizer, OptimizerKind, clip_tensors};
use ndarray::{Array2, ArrayView1, ArrayView2};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    pub batch: usize,
    pub epochs: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub clip: Clip,
    /// Stop after this many epochs without a lower validation loss (0: never stop early).
    pub patience: usize,
    /// Seed of the shuffles and of dropout.
    pub seed: u64,
    /// Threads a step may use (results do not depend on it).
    pub threads: usize,
}

/// One row of `history.csv` (Keras' `History.history`, one row per epoch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (dropout on, weights changing).
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

/// What the loop reports as it goes.
pub enum FitEvent<'a> {
    /// A training batch finished; loss and accuracy are running means over the epoch so far.
    Batch {
        epoch: usize,
        batch: usize,
        batches: usize,
        loss: f64,
        accuracy: f64,
    },
    /// An epoch finished (validation included).
    Epoch(&'a EpochRow),
}

/// How training ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum FitOutcome {
    /// All epochs ran.
    Finished,
    /// No lower validation loss for `patience` epochs: stopped after `epoch`.
    EarlyStopped { epoch: usize },
    /// The loss or the gradient stopped being a number.
    Diverged { epoch: usize, what: String },
}

/// A finished `fit`.
pub struct FitResult {
    /// The weights of the epoch with the lowest validation loss.
    pub best: Classifier<f32>,
    /// That epoch (1-based; 0 if no epoch finished).
    pub best_epoch: usize,
    pub history: Vec<EpochRow>,
    pub outcome: FitOutcome,
    pub seconds: f64,
}

/// An independent stream of `seed`.
pub fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Share of rows of `logits` (B, C) whose largest entry is the label.
pub fn accuracy(logits: ArrayView2<f32>, labels: ArrayView1<i64>) -> f64 {
    let pred = dense::argmax(logits);
    let right = pred.iter().zip(labels).filter(|(p, y)| p == y).count();
    right as f64 / labels.len().max(1) as f64
}

/// Logits (N, C) of every sequence in evaluation mode (no dropout), 256 at a time.
pub fn predict(model: &Classifier<f32>, data: &Dataset, threads: usize) -> Array2<f32> {
    let ids = data.ids.t(); // (T, N)
    model.predict(ids, 256, threads)
}

/// Mean loss and accuracy of `model` on `data` (evaluation mode).
pub fn evaluate(model: &Classifier<f32>, data: &Dataset, threads: usize) -> (f64, f64) {
    let logits = predict(model, data, threads);
    let (loss, _) = dense::softmax_cross_entropy(logits.view(), data.labels.view());
    (loss, accuracy(logits.view(), data.labels.view()))
}

/// Trains `model` on `train`, validating on `validation` after every epoch.
pub fn fit(
    mut model: Classifier<f32>,
    train: &Dataset,
    validation: &Dataset,
    cfg: &FitConfig,
    on_event: &mut dyn FnMut(FitEvent),
) -> FitResult {
    let _flush = crate::fpu::FlushSubnormals::new(); // vanished gradients stay fast
    let start = Instant::now();
    let mut order_rng = stream(cfg.seed, 1);
    let mut dropout_rng = stream(cfg.seed, 2);
    let mut opt = Optimizer::new(cfg.optimizer, cfg.lr);
    opt.threads = cfg.threads.max(1);
    let mut history = Vec::new();
    let mut best = (f64::INFINITY, 0usize, model.clone());
    let mut outcome = FitOutcome::Finished;
    let batches = train.len().div_ceil(cfg.batch);
    'epochs: for epoch in 1..=cfg.epochs {
        let epoch_start = Instant::now();
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut order_rng);
        let (mut loss_sum, mut right, mut seen) = (0.0, 0.0, 0usize);
        for (k, idx) in order.chunks(cfg.batch).enumerate() {
            let (ids, labels) = train.batch(idx);
            let (loss, logits, grads) = model.loss_and_grad(
                ids.view(),
                labels.view(),
                Some(&mut dropout_rng),
                cfg.threads,
            );
            let mut grads = grads.weights;
            let norm = clip_tensors(&mut grads.tensors_mut(), cfg.clip);
            if !loss.is_finite() || !norm.is_finite() {
                let what = if loss.is_finite() {
                    format!("gradient norm = {norm}")
                } else {
                    format!("loss = {loss}")
                };
                outcome = FitOutcome::Diverged { epoch, what };
                break 'epochs;
            }
            let g_views = grads.tensors(&model.spec).into_iter().map(|(_, g)| g);
            let mut pairs: Vec<_> = model
                .weights
                .tensors_mut()
                .into_iter()
                .zip(g_views)
                .collect();
            opt.update(&mut pairs);
            loss_sum += loss * idx.len() as f64;
            right += accuracy(logits.view(), labels.view()) * idx.len() as f64;
            seen += idx.len();
            on_event(FitEvent::Batch {
                epoch,
                batch: k + 1,
                batches,
                loss: loss_sum / seen as f64,
                accuracy: right / seen as f64,
            });
        }
        let (val_loss, val_accuracy) = evaluate(&model, validation, cfg.threads);
        let row = EpochRow {
            epoch,
            loss: loss_sum / seen as f64,
            accuracy: right / seen as f64,
            val_loss,
            val_accuracy,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        on_event(FitEvent::Epoch(&row));
        history.push(row);
        if !val_loss.is_finite() {
            outcome = FitOutcome::Diverged {
                epoch,
                what: format!("validation loss = {val_loss}"),
            };
            break;
        }
        if val_loss < best.0 {
            best = (val_loss, epoch, model.clone());
        } else if cfg.patience > 0 && epoch - best.1 >= cfg.patience {
            outcome = FitOutcome::EarlyStopped { epoch };
            break;
        }
    }
    FitResult {
        best: best.2,
        best_epoch: best.1,
        history,
        outcome,
        seconds: start.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::CellKind;
    use crate::seq::data::synthetic::Synthetic;
    use crate::seq::gradcheck::small_spec;

    /// A tiny model on a tiny task with a large learning rate overfits quickly: early stopping
    /// must stop `patience` epochs after the lowest validation loss and hand back exactly the
    /// weights of that epoch.
    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        let task = Synthetic {
            size: 120,
            vocab: 9,
            classes: 3,
            seq_len: 6,
            min_len: 2,
            min_distance: 0,
            max_distance: 5,
            padding: crate::seq::data::Side::Pre,
        };
        let (train, val) = task.generate(1).split(0.25, 1).unwrap();
        let cfg = FitConfig {
            batch: 8,
            epochs: 40,
            lr: 0.05,
            optimizer: OptimizerKind::by_name("adam", 0.0).unwrap(),
            clip: Clip::None,
            patience: 2,
            seed: 3,
            threads: 1,
        };
        let model = Classifier::<f32>::new(small_spec(CellKind::Lstm), 3);
        let mut epochs_seen = 0;
        let r = fit(model, &train, &val, &cfg, &mut |e| {
            if let FitEvent::Epoch(_) = e {
                epochs_seen += 1
            }
        });
        let FitOutcome::EarlyStopped { epoch } = r.outcome else {
            panic!("expected an early stop, got {:?}", r.outcome)
        };
        assert_eq!(epoch, r.best_epoch + cfg.patience);
        assert_eq!((r.history.len(), epochs_seen), (epoch, epoch));
        let best = r
            .history
            .iter()
            .map(|h| h.val_loss)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(r.history[r.best_epoch - 1].val_loss, best);
        // the returned weights are those of the best epoch: they reproduce its validation loss
        let (val_loss, _) = evaluate(&r.best, &val, 1);
        assert!((val_loss - best).abs() < 1e-12, "{val_loss} vs {best}");
        assert!(
            r.history[0].loss > r.history[epoch - 1].loss,
            "training loss falls"
        );
    }
}
