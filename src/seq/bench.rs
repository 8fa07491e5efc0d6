//! Timing one training step of a classifier preset, as `rnnlab bench` reports it next to
//! Keras' figure (shared/reference/README.md: the Keras example at B = 32, T = 100 takes
//! 334 ms per step on the project's machine kind).
//!
//! The step is exactly the one `fit` runs: forward in training mode (dropout on), softmax
//! cross-entropy, backward through every layer (embedding included), clipping as the preset
//! says, optimizer update. The batch is what `keras_ref.py` feeds: B sequences of T ids drawn
//! uniformly from 1 … V−1 (no padding), classes uniform, one fixed batch from seed 0.

use super::config::{self, ClassifierFile};
use super::model::Classifier;
use crate::optim::{Optimizer, clip_tensors};
use anyhow::Result;
use ndarray::{Array1, Array2};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Keras 3 / TensorFlow 2.21's time per step of the preset at B = 32, T = 100 (ms).
pub const KERAS_MS: f64 = 334.0;

/// Median ms per training step of `file`'s model at batch `b`, length `t`, over `steps` steps
/// after `warmup` untimed ones (timed as `rnnlab bench` times the recurrent models).
pub fn step_ms(
    file: &ClassifierFile,
    b: usize,
    t: usize,
    threads: usize,
    warmup: usize,
    steps: usize,
) -> f64 {
    let _flush = crate::fpu::FlushSubnormals::new(); // as in training
    let spec = file.synthetic_model();
    let (vocab, classes) = (spec.vocab(), spec.classes());
    let mut model = Classifier::<f32>::new(spec, 0);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let ids = Array2::from_shape_simple_fn((t, b), || rng.random_range(1..vocab as u32));
    let labels = Array1::from_shape_simple_fn(b, || rng.random_range(0..classes as i64));
    let mut opt = Optimizer::new(file.fit.optimizer().expect("validated"), file.fit.lr);
    opt.threads = threads.max(1);
    let mut dropout = ChaCha8Rng::seed_from_u64(1);
    let step = || {
        let (_, _, grads) =
            model.loss_and_grad(ids.view(), labels.view(), Some(&mut dropout), threads);
        let mut g = grads.weights;
        clip_tensors(&mut g.tensors_mut(), file.fit.clip());
        let gv = g.tensors(&model.spec).into_iter().map(|(_, g)| g);
        let mut pairs: Vec<_> = model.weights.tensors_mut().into_iter().zip(gv).collect();
        opt.update(&mut pairs);
    };
    crate::bench::median_ms(warmup, steps, step)
}

/// Loads `preset` (a name or a path, as `fit --preset` takes it), so that a bad one fails
/// before anything is timed.
pub fn load(preset: &str) -> Result<ClassifierFile> {
    let (origin, text) = config::find_preset(preset)?;
    config::load(&text, &origin, false, &[], &mut |_| {})
}

/// Times the loaded preset `name` at B = 32, T = 100 and prints one line against Keras'
/// figure; returns the ms per step.
pub fn report(
    name: &str,
    file: &ClassifierFile,
    threads: usize,
    warmup: usize,
    steps: usize,
) -> f64 {
    let ms = step_ms(file, 32, 100, threads, warmup, steps);
    println!(
        "classifier {name} ({}): B 32, T 100: {ms:.1} ms/step, {:.0} seq/s; Keras 3 / TF 2.21: {KERAS_MS:.0} ms/step, {:.1}× faster",
        file.synthetic_model().describe(),
        32.0 / (ms / 1e3),
        KERAS_MS / ms
    );
    ms
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timed step runs the preset's full training step (a tiny version of it here).
    #[test]
    fn a_step_of_a_small_preset_is_timed() {
        let (origin, text) = config::find_preset("keras-lstm").unwrap();
        let sets = [
            ("data.vocab".to_string(), "50".to_string()),
            ("data.classes".to_string(), "3".to_string()),
            ("data.seq_len".to_string(), "8".to_string()),
            ("data.min_len".to_string(), "4".to_string()),
            ("data.max_distance".to_string(), "7".to_string()),
        ];
        let file = config::load(&text, &origin, false, &sets, &mut |_| {}).unwrap();
        let ms = step_ms(&file, 4, 8, 1, 1, 3);
        assert!(ms.is_finite() && ms > 0.0, "{ms}");
    }
}
