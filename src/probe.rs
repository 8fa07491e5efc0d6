//! Probes: the per-timestep gradient norm ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖) of one model on one batch.
//!
//! L is the task's training loss on the batch (mean over the batch, as PyTorch's default),
//! from the zero initial state. The whole pass runs in f64 from the model's f32 weights:
//! gradients far back in time reach 1e-30 and below, where f32 would underflow to zero.
//! [`write()`] produces `probe`'s files: `grad_norms.csv` (t, distance, dh_norm [, dc_norm]),
//! `grads.safetensors` (the parameter gradients under their PyTorch names, f32) and
//! `grad_norms.png`.

use crate::batch::Batch;
use crate::cell::{Cache, Probes};
use crate::model::Model;
use crate::params::Params;
use crate::plot::{Color, LineChart, Series, line_chart};
use crate::report::{num, write_table};
use crate::tasks::Task;
use anyhow::Result;
use std::path::Path;

/// Everything one probe pass measures.
pub struct ProbeReport {
    pub loss: f64,
    pub probes: Probes,
    /// The gate that decides how much of the previous state a step keeps, mean per timestep:
    /// the LSTM's forget gate f_t (c_t = f ⊙ c_{t−1} + …), the GRU's update gate z_t
    /// (h_t = z ⊙ h_{t−1} + …); None for the vanilla RNNs.
    pub keep_gate: Option<Vec<f64>>,
    /// Parameter gradients of the batch.
    pub grads: Params<f64>,
}

/// One forward/backward pass of `model` on `batch` in f64.
pub fn run(model: &Model<f32>, batch: &Batch) -> ProbeReport {
    let _flush = crate::fpu::FlushSubnormals::new();
    let m64: Model<f64> = model.cast();
    let x = batch.x.mapv(f64::from);
    let fwd = m64.forward(x.view(), &m64.zero_state(x.dim().1));
    let keep_gate = match &fwd.cache {
        Cache::Lstm(c) => Some(c.forget_gate_mean()),
        Cache::Gru(c) => Some(c.update_gate_mean()),
        Cache::Rnn(_) => None,
    };
    let (loss, dy) = crate::loss::loss(fwd.y.view(), &batch.target);
    let grads = m64.backward(fwd, dy.view());
    ProbeReport {
        loss,
        probes: grads.probes,
        keep_gate,
        grads: grads.params,
    }
}

/// The rows of `grad_norms.csv`: t, distance = T−1−t, dh_norm [, dc_norm].
pub fn grad_norm_rows(probes: &Probes) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let t_len = probes.dh_norm.len();
    let mut header = vec!["t", "distance", "dh_norm"];
    if probes.dc_norm.is_some() {
        header.push("dc_norm");
    }
    let rows = (0..t_len)
        .map(|t| {
            let mut r = vec![
                t.to_string(),
                (t_len - 1 - t).to_string(),
                num(probes.dh_norm[t]),
            ];
            if let Some(dc) = &probes.dc_norm {
                r.push(num(dc[t]));
            }
            r
        })
        .collect();
    (header, rows)
}

/// Writes `grad_norms.csv`, `grads.safetensors` and `grad_norms.png` into `dir`.
pub fn write(dir: &Path, report: &ProbeReport, model: &Model<f32>, task: &dyn Task) -> Result<()> {
    let (header, rows) = grad_norm_rows(&report.probes);
    write_table(&dir.join("grad_norms.csv"), &header, &rows)?;
    let meta = [
        ("rnnlab.loss", format!("{:e}", report.loss)),
        ("rnnlab.task", task.name().to_string()),
    ];
    crate::fsutil::write_atomic(
        &dir.join("grads.safetensors"),
        &crate::checkpoint::serialize(&report.grads, &meta)?,
    )?;
    chart(&dir.join("grad_norms.png"), &report.probes, model, task)
}

/// `grad_norms.png`: ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖) against distance from the loss, log y.
fn chart(path: &Path, probes: &Probes, model: &Model<f32>, task: &dyn Task) -> Result<()> {
    let t_len = probes.dh_norm.len();
    let by_distance = |v: &[f64]| {
        (0..t_len)
            .map(|t| ((t_len - 1 - t) as f64, v[t]))
            .collect::<Vec<_>>()
    };
    let label = model.cell().label();
    let mut series = vec![Series::new(
        format!("{label} ‖∂L/∂h_t‖"),
        by_distance(&probes.dh_norm),
        Color::BLUE,
    )];
    if let Some(dc) = &probes.dc_norm {
        series.push(Series::new(
            format!("{label} ‖∂L/∂c_t‖"),
            by_distance(dc),
            Color::VERMILLION,
        ));
    }
    let ratio = probes.dh_norm[0] / probes.dh_norm[t_len - 1];
    line_chart(
        path,
        &LineChart {
            title: format!(
                "{label} on the {} task: gradient norm per timestep",
                task.name()
            ),
            subtitle: Some(format!(
                "{} steps, hidden size {}, mean over the batch; the loss is at distance 0
at distance {} the gradient is {ratio:.2e} of its value at the loss",
                t_len,
                model.params.hidden_size(),
                t_len - 1
            )),
            x_label: "distance from the loss  d = T − 1 − t".into(),
            y_label: "gradient norm (log scale)".into(),
            log_y: true,
            series,
            ..LineChart::default()
        },
    )
}
