//! A batch of sequences and its targets, and the batch file format of DESIGN.md.
//!
//! In memory everything is time-major: `x` is (T, B, I) so that step t is one contiguous
//! (B, I) matrix. On disk (`probe --batch-file`, `--dump-batch`) a batch is PyTorch's
//! batch-first layout: a safetensors file with `x` (B, T, I) f32 and `y`, either (B, 1) f32
//! regression targets or (B, T) i64 class ids with −1 for "no target at this step".
//! The conversion happens here and nowhere else.

use anyhow::{Context, Result, bail};
use ndarray::{Array2, Array3};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::path::Path;

/// Targets of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Regression targets for the last step: (B, O).
    Values(Array2<f32>),
    /// Class ids per read-out step: (T_out, B); −1 = no target (ignored by loss and accuracy).
    Classes(Array2<i64>),
}

/// Inputs and targets of B sequences of length T.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// x: (T, B, I)
    pub x: Array3<f32>,
    pub target: Target,
}

impl Batch {
    /// (T, B, I).
    pub fn dim(&self) -> (usize, usize, usize) {
        self.x.dim()
    }

    /// Writes the batch as a safetensors file in batch-first layout (atomically: a temporary
    /// file in the same folder, renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        let x_bt = self.x.view().permuted_axes([1, 0, 2]);
        let x: Vec<u8> = x_bt.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (t, b, i) = self.x.dim();
        let (y, y_shape, y_dtype) = match &self.target {
            Target::Values(v) => (
                v.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
                vec![v.nrows(), v.ncols()],
                Dtype::F32,
            ),
            Target::Classes(c) => {
                let c_bt = c.t();
                (
                    c_bt.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    vec![c.ncols(), c.nrows()],
                    Dtype::I64,
                )
            }
        };
        let tensors = vec![
            (
                "x".to_string(),
                TensorView::new(Dtype::F32, vec![b, t, i], &x)?,
            ),
            ("y".to_string(), TensorView::new(y_dtype, y_shape, &y)?),
        ];
        let bytes = safetensors::serialize(tensors, None)?;
        crate::fsutil::write_atomic(path, &bytes)
    }

    /// Reads a batch file (see the module docs for the layout).
    pub fn load(path: &Path) -> Result<Batch> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read batch file {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "batch file {} is not a valid safetensors file: {e}",
                path.display()
            )
        })?;
        let get = |name: &str| {
            st.tensor(name).map_err(|_| {
                anyhow::anyhow!("batch file {} has no tensor `{name}`", path.display())
            })
        };
        let x = get("x")?;
        if x.dtype() != Dtype::F32 || x.shape().len() != 3 {
            bail!(
                "batch file {}: `x` must be f32 with shape (B, T, I), found {:?} {:?}",
                path.display(),
                x.dtype(),
                x.shape()
            );
        }
        let (b, t, i) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        if b == 0 || t == 0 || i == 0 {
            bail!(
                "batch file {}: `x` has an empty dimension {:?}",
                path.display(),
                x.shape()
            );
        }
        let xv: Vec<f32> = x
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let x_bt = Array3::from_shape_vec((b, t, i), xv)?;
        let x_tb = x_bt
            .permuted_axes([1, 0, 2])
            .as_standard_layout()
            .into_owned();
        let y = get("y")?;
        let target = match (y.dtype(), y.shape()) {
            (Dtype::F32, [yb, o]) if *yb == b => {
                let v: Vec<f32> = y
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                Target::Values(Array2::from_shape_vec((b, *o), v)?)
            }
            (Dtype::I64 | Dtype::I32, [yb, yt]) if *yb == b && (*yt == t || *yt == 1) => {
                let v: Vec<i64> = if y.dtype() == Dtype::I64 {
                    y.data()
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect()
                } else {
                    y.data()
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect()
                };
                let c = Array2::from_shape_vec((b, *yt), v)?;
                Target::Classes(c.t().as_standard_layout().into_owned())
            }
            (dt, shape) => bail!(
                "batch file {}: `y` must be f32 (B, O) targets or i64 (B, T) class ids with B = {b}, T = {t}; found {dt:?} {shape:?}",
                path.display()
            ),
        };
        Ok(Batch { x: x_tb, target })
    }
}
