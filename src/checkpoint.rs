//! Checkpoints: safetensors files with PyTorch's parameter names, so a file moves between
//! rnnlab and `torch.nn.LSTM`/`torch.nn.RNN` + `torch.nn.Linear` with `load_state_dict`.
//!
//! Tensors (f32): `weight_ih_l0` (G·H, I), `weight_hh_l0` (G·H, H), `bias_ih_l0`,
//! `bias_hh_l0` (G·H), `head.weight` (O, H), `head.bias` (O). Metadata (string → string):
//! `format = pt`, `rnnlab.cell`, `rnnlab.readout`, `rnnlab.task`, `rnnlab.seq_len`,
//! `rnnlab.version`. A file saved by PyTorch has no `rnnlab.*` metadata: the cell is then
//! inferred from the shapes (G = 1: RNN, G = 3: GRU, G = 4: LSTM) and the readout comes from
//! the task. Shapes cannot tell a tanh RNN from a ReLU RNN (`nn.RNN(nonlinearity='relu')`):
//! rnnlab's files say which in `rnnlab.cell`; for a file without it, [`CheckpointInfo::cell`]
//! is `None` and the caller decides (see `commands.rs`: the `--model` given).
//! f64 and f16/bf16 tensors are not accepted; f32 is what both sides use by default.

use crate::head::Readout;
use crate::model::Model;
use crate::params::{CellKind, NAMES, Params};
use crate::real::Real;
use anyhow::{Context, Result, anyhow, bail};
use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::Path;

/// What a checkpoint says about itself besides the tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointInfo {
    /// Task the model was trained on, if recorded.
    pub task: Option<String>,
    /// Sequence length it was trained with, if recorded.
    pub seq_len: Option<usize>,
    /// Readout, if recorded.
    pub readout: Option<Readout>,
    /// The cell, if recorded (`rnnlab.cell`); without it the model's cell was inferred from
    /// the shapes, which say "RNN" for tanh and ReLU RNNs alike.
    pub cell: Option<CellKind>,
}

/// Writes `model` to `path` (atomically).
pub fn save(path: &Path, model: &Model<f32>, task: &str, seq_len: usize) -> Result<()> {
    let metadata = [
        ("rnnlab.cell", model.cell().name().to_string()),
        ("rnnlab.readout", model.readout.name().to_string()),
        ("rnnlab.task", task.to_string()),
        ("rnnlab.seq_len", seq_len.to_string()),
    ];
    crate::fsutil::write_atomic(path, &serialize(&model.params, &metadata)?)
}

/// The tensors of `params` (as f32, PyTorch names) and `metadata` as safetensors bytes; also
/// used for `probe`'s `grads.safetensors`.
pub fn serialize<F: Real>(params: &Params<F>, metadata: &[(&str, String)]) -> Result<Vec<u8>> {
    let named: Vec<(String, ArrayViewD<F>)> = params
        .tensors()
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    serialize_tensors(&named, metadata)
}

/// Any named tensors (as f32) and `metadata` as safetensors bytes.
pub fn serialize_tensors<F: Real>(
    named: &[(String, ArrayViewD<F>)],
    metadata: &[(&str, String)],
) -> Result<Vec<u8>> {
    let tensors: Vec<(&str, Vec<usize>, Vec<u8>)> = named
        .iter()
        .map(|(name, t)| {
            (
                name.as_str(),
                t.shape().to_vec(),
                t.iter()
                    .flat_map(|v| (v.f64() as f32).to_le_bytes())
                    .collect(),
            )
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            Ok((
                n.to_string(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    meta.insert("format".into(), "pt".into());
    meta.insert("rnnlab.version".into(), env!("CARGO_PKG_VERSION").into());
    sorted_header(safetensors::serialize(views, Some(meta))?)
}

/// The same safetensors bytes with the header's keys in sorted order. The crate writes the
/// metadata from a `HashMap`, whose order changes from one process to the next, so two runs
/// with the same seed would write the same tensors into files that differ; sorted, they
/// are byte-identical. (The header is JSON after its 8-byte length, padded with spaces to a
/// multiple of 8; the tensors' offsets count from its end, and its length stays the same.)
fn sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])?;
    let mut sorted = serde_json::to_vec(&header)?; // serde_json's maps are sorted by key
    sorted.resize(sorted.len().next_multiple_of(8), b' ');
    anyhow::ensure!(
        sorted.len() == n,
        "safetensors header changed length when sorted"
    );
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..8]);
    out.extend_from_slice(&sorted);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// The bytes of the checkpoint file at `path` (the error names it).
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))
}

/// The tensors and the metadata of checkpoint bytes read from `path` (for the messages).
pub(crate) fn parse<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(SafeTensors<'a>, HashMap<String, String>)> {
    let shown = path.display();
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        anyhow!("checkpoint {shown} is not a valid safetensors file ({e}); is it truncated?")
    })?;
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("checkpoint {shown}: {e}"))?;
    Ok((st, header.metadata().clone().unwrap_or_default()))
}

/// Reads a checkpoint. `readout` is used when the file does not record one (PyTorch files).
pub fn load(path: &Path, readout: Readout) -> Result<(Model<f32>, CheckpointInfo)> {
    let shown = path.display();
    let bytes = read_bytes(path)?;
    let (st, meta) = parse(path, &bytes)?;

    let missing: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| st.tensor(n).is_err())
        .collect();
    if !missing.is_empty() {
        bail!(
            "checkpoint {shown} lacks tensor(s) {}: expected PyTorch names {} (found {})",
            missing.join(", "),
            NAMES.join(", "),
            st.names().join(", ")
        );
    }
    let shape = |n: &str| {
        st.tensor(n)
            .map(|t| t.shape().to_vec())
            .expect("checked above")
    };
    let (w_hh, w_ih, w_head) = (
        shape("weight_hh_l0"),
        shape("weight_ih_l0"),
        shape("head.weight"),
    );
    if w_hh.len() != 2 || w_ih.len() != 2 || w_head.len() != 2 {
        bail!("checkpoint {shown}: weight_ih_l0, weight_hh_l0 and head.weight must be matrices");
    }
    let hidden = w_hh[1];
    if hidden == 0 || w_hh[0] % hidden != 0 {
        bail!("checkpoint {shown}: weight_hh_l0 has shape {w_hh:?}, expected (G·H, H)");
    }
    let inferred = match w_hh[0] / hidden {
        1 => CellKind::Rnn,
        3 => CellKind::Gru,
        4 => CellKind::Lstm,
        g => bail!(
            "checkpoint {shown}: weight_hh_l0 {w_hh:?} has {g} gate blocks; rnnlab reads RNN (1), GRU (3) and LSTM (4)"
        ),
    };
    let recorded = match meta.get("rnnlab.cell") {
        Some(name) => {
            let c = CellKind::parse(name)
                .ok_or_else(|| anyhow!("checkpoint {shown}: unknown cell `{name}`"))?;
            if c.gates() != inferred.gates() {
                bail!(
                    "checkpoint {shown}: metadata says {c} but the shapes are those of an {inferred}"
                );
            }
            Some(c)
        }
        None => None,
    };
    let cell = recorded.unwrap_or(inferred);
    let mut params = Params::<f32>::zeros(cell, w_ih[1], hidden, w_head[0]);
    for (name, dst) in params.tensors_mut() {
        read_tensor(&st, name, dst).with_context(|| format!("checkpoint {shown}"))?;
    }
    if !params.all_finite() {
        bail!("checkpoint {shown} contains NaN or Inf values");
    }
    let readout_meta = match meta.get("rnnlab.readout").map(String::as_str) {
        Some("last") => Some(Readout::Last),
        Some("every") => Some(Readout::Every),
        Some(other) => bail!("checkpoint {shown}: unknown readout `{other}`"),
        None => None,
    };
    let info = CheckpointInfo {
        task: meta.get("rnnlab.task").cloned(),
        seq_len: meta.get("rnnlab.seq_len").and_then(|s| s.parse().ok()),
        readout: readout_meta,
        cell: recorded,
    };
    Ok((
        Model {
            params,
            readout: readout_meta.unwrap_or(readout),
        },
        info,
    ))
}

/// Copies tensor `name` into `dst`, checking dtype and shape.
pub(crate) fn read_tensor(st: &SafeTensors, name: &str, mut dst: ArrayViewMutD<f32>) -> Result<()> {
    let t = st.tensor(name)?;
    if t.dtype() != Dtype::F32 {
        bail!(
            "tensor {name} is {:?}; rnnlab checkpoints are f32 (use .float() in PyTorch)",
            t.dtype()
        );
    }
    if t.shape() != dst.shape() {
        bail!(
            "tensor {name} has shape {:?}, but the other tensors imply {:?}",
            t.shape(),
            dst.shape()
        );
    }
    let values = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
    let src = ndarray::ArrayD::from_shape_vec(IxDyn(t.shape()), values.collect())?;
    dst.assign(&src);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{Init, init_params};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn model(cell: CellKind) -> Model<f32> {
        let params = init_params(
            cell,
            2,
            5,
            1,
            &Init::default(),
            &mut ChaCha8Rng::seed_from_u64(3),
        );
        Model {
            params,
            readout: Readout::Last,
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        for cell in CellKind::ALL {
            let path = dir.path().join(format!("{cell}.safetensors"));
            let m = model(cell);
            save(&path, &m, "adding", 100).unwrap();
            let (back, info) = load(&path, Readout::Every).unwrap();
            assert_eq!(back, m);
            assert_eq!(info.cell, Some(cell));
            assert_eq!(info.task.as_deref(), Some("adding"));
            assert_eq!(info.seq_len, Some(100));
        }
    }

    /// The same model saved twice gives the same bytes, with the header's keys (metadata
    /// included) in sorted order, and still reads back.
    #[test]
    fn saved_bytes_are_reproducible() {
        let m = model(CellKind::Lstm);
        let meta = [("rnnlab.task", "adding".to_string()), ("a", "b".into())];
        let first = serialize(&m.params, &meta).unwrap();
        for _ in 0..4 {
            // (a fresh HashMap inside each call: its order would differ)
            assert_eq!(serialize(&m.params, &meta).unwrap(), first);
        }
        let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&first[8..8 + n]).unwrap();
        let text = std::str::from_utf8(&first[8..8 + n]).unwrap();
        let keys: Vec<&String> = header["__metadata__"].as_object().unwrap().keys().collect();
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(
            positions.is_sorted(),
            "metadata not in sorted order: {text}"
        );
        SafeTensors::deserialize(&first).unwrap();
    }

    #[test]
    fn truncated_and_wrong_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save(&path, &model(CellKind::Lstm), "adding", 10).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let err = format!("{:#}", load(&path, Readout::Last).unwrap_err());
        assert!(err.contains("truncated"), "{err}");
        let err = format!(
            "{:#}",
            load(&dir.path().join("nope.safetensors"), Readout::Last).unwrap_err()
        );
        assert!(err.contains("cannot read checkpoint"), "{err}");
    }
}
