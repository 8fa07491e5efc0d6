//! Classifier checkpoints: safetensors files with the tensors under their names
//! (`0.embedding.weight`, `1.lstm.weight_ih_l0_reverse`, …, see [`super::model`]), f32, and
//! the model description as JSON in the metadata (`rnnlab.model`), so that the file alone
//! rebuilds the model. Other metadata (epoch, validation loss, data) is free-form.

use super::model::{Classifier, ModelSpec};
use crate::checkpoint::{parse, read_bytes, read_tensor, serialize_tensors};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Writes `model` and `metadata` to `path` (atomically).
pub fn save(path: &Path, model: &Classifier<f32>, metadata: &[(&str, String)]) -> Result<()> {
    let mut meta = vec![
        ("rnnlab.kind", "classifier".to_string()),
        ("rnnlab.model", serde_json::to_string(&model.spec)?),
    ];
    meta.extend(metadata.iter().cloned());
    let bytes = serialize_tensors(&model.weights.tensors(&model.spec), &meta)?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// Reads a classifier checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<Classifier<f32>> {
    let shown = path.display();
    let bytes = read_bytes(path)?;
    let (st, meta) = parse(path, &bytes)?;
    let spec: ModelSpec = match meta.get("rnnlab.model") {
        Some(json) => serde_json::from_str(json)
            .with_context(|| format!("checkpoint {shown}: bad rnnlab.model"))?,
        None => {
            bail!("checkpoint {shown} has no rnnlab.model entry: it is not a classifier checkpoint")
        }
    };
    spec.validate()
        .with_context(|| format!("checkpoint {shown}"))?;
    let mut model = Classifier::<f32>::new(spec, 0);
    let names: Vec<String> = model
        .weights
        .tensors(&model.spec)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (name, dst) in names.iter().zip(model.weights.tensors_mut()) {
        read_tensor(&st, name, dst).with_context(|| format!("checkpoint {shown}"))?;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::CellKind;
    use crate::seq::gradcheck::small_spec;

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("best.safetensors");
        let m = Classifier::<f32>::new(small_spec(CellKind::Lstm), 3);
        save(&path, &m, &[("rnnlab.epoch", "2".into())]).unwrap();
        assert_eq!(load(&path).unwrap(), m);
        std::fs::write(&path, b"nonsense").unwrap();
        assert!(format!("{:#}", load(&path).unwrap_err()).contains("not a valid safetensors file"));
    }
}
