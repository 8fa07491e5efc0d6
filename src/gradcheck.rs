//! The gradient check: every analytic gradient against central finite differences, in f64.
//!
//! For each cell × loss (MSE on the last step, cross-entropy at every step with some steps
//! masked), a small model with PyTorch-default random weights, a random input, and random
//! *non-zero* initial states (so ∂L/∂h₀ and ∂L/∂c₀ are exercised), every scalar θ of every
//! tensor (all parameters, the input x, h₀ and c₀) is perturbed:
//! n = (L(θ+δ) − L(θ−δ)) / 2δ with δ = 1e-5, compared with the backward pass's a by
//! `|a − n| / max(|a| + |n|, 1e-4)`: a relative error, which for entries smaller than 1e-4
//! turns into an absolute one at the 1e-10 level (the round-off in n is ε·L/δ ≈ 3e-11 for a
//! loss near 1, so tinier gradients cannot be checked relatively). The `gradcheck` command and the test suite call [`run`]; a check
//! fails above [`TOLERANCE`].

use crate::batch::Target;
use crate::cell::State;
use crate::head::Readout;
use crate::init::{Init, RecurrentInit, init_params};
use crate::loss;
use crate::model::Model;
use crate::params::CellKind;
use ndarray::{Array2, Array3, ArrayD, ArrayViewD, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A check passes when every tensor's maximum relative error is below this.
pub const TOLERANCE: f64 = 1e-6;
const DELTA: f64 = 1e-5;
const FLOOR: f64 = 1e-4;

/// Which loss a check uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// MSE on the last step's output (the adding task's loss).
    MseLast,
    /// Cross-entropy at every step, some steps without a target (the copy task's loss).
    CrossEntropyEvery,
}

impl LossKind {
    pub const ALL: [LossKind; 2] = [LossKind::MseLast, LossKind::CrossEntropyEvery];

    pub fn name(self) -> &'static str {
        match self {
            LossKind::MseLast => "mse-last",
            LossKind::CrossEntropyEvery => "xent-every",
        }
    }
}

/// The result for one tensor.
#[derive(Clone, Debug)]
pub struct TensorCheck {
    pub name: String,
    pub shape: Vec<usize>,
    /// Largest |a − n| / max(|a| + |n|, 1e-4) over the tensor's entries.
    pub max_rel_error: f64,
    /// Largest |analytic| entry (to show the check is not comparing zeros).
    pub max_abs_grad: f64,
}

impl TensorCheck {
    /// Within tolerance, and not vacuous: a gradient that is zero everywhere (dead ReLU
    /// units, a disconnected tensor) would agree with any finite difference of zero and
    /// check nothing, so it fails.
    pub fn passed(&self) -> bool {
        self.max_rel_error <= TOLERANCE && self.max_abs_grad > 0.0
    }
}

/// Sizes of the checked problem.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub input: usize,
    pub hidden: usize,
    pub output: usize,
    pub batch: usize,
    pub steps: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            input: 3,
            hidden: 5,
            output: 4,
            batch: 3,
            steps: 6,
        }
    }
}

/// Checks every tensor of `cell` under `loss_kind`. `recurrent` picks W_hh's initialisation
/// (orthogonal with gain 1 keeps gradients at distance T large enough to check relatively).
pub fn run(cell: CellKind, loss_kind: LossKind, sizes: Sizes, seed: u64) -> Vec<TensorCheck> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let init = Init::with_recurrent(RecurrentInit::Orthogonal { gain: 1.0 });
    let Sizes {
        input,
        hidden,
        output,
        batch,
        steps,
    } = sizes;
    let readout = match loss_kind {
        LossKind::MseLast => Readout::Last,
        LossKind::CrossEntropyEvery => Readout::Every,
    };
    let model = Model {
        params: init_params::<f64>(cell, input, hidden, output, &init, &mut rng),
        readout,
    };
    let x = Array3::from_shape_fn((steps, batch, input), |_| rng.random_range(-1.0..1.0));
    let state0 = State {
        h: Array2::from_shape_fn((batch, hidden), |_| rng.random_range(-0.8..0.8)),
        c: cell
            .has_cell_state()
            .then(|| Array2::from_shape_fn((batch, hidden), |_| rng.random_range(-1.5..1.5))),
    };
    let target = match loss_kind {
        LossKind::MseLast => Target::Values(Array2::from_shape_fn((batch, output), |_| {
            rng.random_range(-1.0..1.0)
        })),
        LossKind::CrossEntropyEvery => {
            Target::Classes(Array2::from_shape_fn((steps, batch), |(t, _)| {
                // the first step never has a target: exercises the ignore mask
                if t == 0 {
                    -1
                } else {
                    rng.random_range(0..output as i64)
                }
            }))
        }
    };

    let (_, grads) = model.loss_and_grad(x.view(), &target, &state0);
    let loss_at = |model: &Model<f64>, x: &Array3<f64>, s0: &State<f64>| {
        let y = model.forward(x.view(), s0).y;
        loss::loss(y.view(), &target).0
    };

    let mut report = Vec::new();
    // Parameters: one tensor at a time, every entry.
    for (k, (name, analytic)) in grads.params.tensors().into_iter().enumerate() {
        let numeric = central_differences(analytic.shape(), |idx, d| {
            let mut m = model.clone();
            m.params.tensors_mut()[k].1[idx] += d;
            loss_at(&m, &x, &state0)
        });
        report.push(compare(name, analytic, numeric.view()));
    }
    // The input and the initial states.
    let numeric = central_differences(x.shape(), |idx, d| {
        let mut xp = x.clone().into_dyn();
        xp[idx] += d;
        loss_at(&model, &xp.into_dimensionality().expect("3-d"), &state0)
    });
    report.push(compare("x", grads.dx.view().into_dyn(), numeric.view()));
    let numeric = central_differences(state0.h.shape(), |idx, d| {
        let mut s = state0.clone();
        s.h.view_mut().into_dyn()[idx] += d;
        loss_at(&model, &x, &s)
    });
    report.push(compare(
        "h0",
        grads.dstate0.h.view().into_dyn(),
        numeric.view(),
    ));
    if let (Some(c0), Some(dc0)) = (&state0.c, &grads.dstate0.c) {
        let numeric = central_differences(c0.shape(), |idx, d| {
            let mut s = state0.clone();
            s.c.as_mut().expect("LSTM state").view_mut().into_dyn()[idx] += d;
            loss_at(&model, &x, &s)
        });
        report.push(compare("c0", dc0.view().into_dyn(), numeric.view()));
    }
    report
}

/// (L(θ+δ) − L(θ−δ)) / 2δ for every entry of a tensor of `shape`; `loss(idx, d)` evaluates
/// the loss with entry `idx` shifted by `d`.
pub(crate) fn central_differences(
    shape: &[usize],
    loss: impl Fn(IxDyn, f64) -> f64,
) -> ArrayD<f64> {
    ArrayD::from_shape_fn(shape, |idx| {
        (loss(idx.clone(), DELTA) - loss(idx, -DELTA)) / (2.0 * DELTA)
    })
}

pub(crate) fn compare(
    name: &str,
    analytic: ArrayViewD<f64>,
    numeric: ArrayViewD<f64>,
) -> TensorCheck {
    assert_eq!(
        analytic.shape(),
        numeric.shape(),
        "gradient of {name} has the wrong shape"
    );
    let max_rel_error = analytic
        .iter()
        .zip(numeric.iter())
        .map(|(&a, &n)| (a - n).abs() / (a.abs() + n.abs()).max(FLOOR))
        .fold(0.0, f64::max);
    let max_abs_grad = analytic.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    TensorCheck {
        name: name.to_string(),
        shape: analytic.shape().to_vec(),
        max_rel_error,
        max_abs_grad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tensor_of_every_cell_and_loss_passes() {
        for cell in CellKind::ALL {
            for loss_kind in LossKind::ALL {
                let report = run(cell, loss_kind, Sizes::default(), 3);
                let expected = if cell.has_cell_state() { 9 } else { 8 };
                assert_eq!(report.len(), expected);
                for t in &report {
                    assert!(
                        t.passed(),
                        "{cell} {}: {} rel error {:e}",
                        loss_kind.name(),
                        t.name,
                        t.max_rel_error
                    );
                    assert!(
                        t.max_abs_grad > 1e-4,
                        "{cell} {}: {} gradient is ~0, check proves nothing",
                        loss_kind.name(),
                        t.name
                    );
                }
            }
        }
    }

    /// The check must be able to fail: a wrong backward (here: a gradient scaled by 1.01)
    /// is caught.
    #[test]
    fn a_wrong_gradient_is_caught() {
        let a = ndarray::arr1(&[1.0, -2.0, 0.5]).into_dyn();
        let n = ndarray::arr1(&[1.01, -2.0, 0.5]).into_dyn();
        assert!(!compare("w", a.view(), n.view()).passed());
        assert!(compare("w", a.view(), a.view()).passed());
    }

    #[test]
    fn an_all_zero_gradient_checks_nothing_and_fails() {
        let z = ndarray::Array1::<f64>::zeros(3).into_dyn();
        assert!(!compare("dead", z.view(), z.view()).passed());
    }
}
