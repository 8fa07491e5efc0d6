//! The linear readout head on top of the recurrent layer, forward and backward.
//!
//! y = h Wᵀ + b, applied either to the last hidden state only ([`Readout::Last`], e.g. the
//! adding task's single answer) or to every hidden state ([`Readout::Every`], e.g. the copy
//! task's answer at each step). Shapes: hs (T+1, B, H) as cached by the cell; y (T_out, B, O)
//! with T_out = 1 or T. The head does not know about losses.

use crate::params::Linear;
use crate::real::Real;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, Array3, ArrayView3, Axis, s};

/// Which hidden states the head reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readout {
    /// Only h_{T−1}: y has shape (1, B, O).
    Last,
    /// Every h_t: y has shape (T, B, O).
    Every,
}

impl Readout {
    /// Lowercase name for files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Readout::Last => "last",
            Readout::Every => "every",
        }
    }
}

/// The hidden states the head reads, as rows: (T_out·B, H).
fn read_rows<F: Real>(hs: &Array3<F>, readout: Readout) -> ndarray::ArrayView2<'_, F> {
    let (t1, b, h) = hs.dim();
    let first = match readout {
        Readout::Last => t1 - 1,
        Readout::Every => 1,
    };
    hs.slice(s![first.., .., ..])
        .into_shape_with_order(((t1 - first) * b, h))
        .expect("hidden states are contiguous")
}

/// y = h Wᵀ + b on the states chosen by `readout`. Returns (T_out, B, O).
pub fn forward<F: Real>(head: &Linear<F>, hs: &Array3<F>, readout: Readout) -> Array3<F> {
    let b = hs.dim().1;
    let rows = read_rows(hs, readout);
    let o = head.weight.nrows();
    let mut y = Array2::from_shape_fn((rows.nrows(), o), |(_, j)| head.bias[j]);
    general_mat_mul(F::one(), &rows, &head.weight.t(), F::one(), &mut y);
    let t_out = rows.nrows() / b;
    y.into_shape_with_order((t_out, b, o)).expect("contiguous")
}

/// Given dy (T_out, B, O), returns the head's gradients and ∂L/∂h_t for the T_out states it
/// read, (T_out, B, H): the last T_out of the layer's T steps (the gradient at the others is
/// zero, and the cells take it in this form; see [`crate::cell::backward`]).
pub fn backward<F: Real>(
    head: &Linear<F>,
    hs: &Array3<F>,
    readout: Readout,
    dy: ArrayView3<F>,
) -> (Linear<F>, Array3<F>) {
    let (_, b, h) = hs.dim();
    let (t_out, _, o) = dy.dim();
    let rows = read_rows(hs, readout);
    let dy2 = dy.as_standard_layout();
    let dy2 = dy2
        .view()
        .into_shape_with_order((t_out * b, o))
        .expect("contiguous")
        .to_owned();
    // forward was y = h Wᵀ + b: dW = dyᵀ h, db = Σ dy, dh = dy W
    let mut grad = Linear {
        weight: Array2::zeros((o, h)),
        bias: Array1::zeros(o),
    };
    general_mat_mul(F::one(), &dy2.t(), &rows, F::zero(), &mut grad.weight);
    grad.bias = dy2.sum_axis(Axis(0));
    // (T_out·B, H), T·B·H entries when every state is read: recycled by the caller
    let mut dh: Array2<F> = crate::cell::pool::zeros((t_out * b, h));
    general_mat_mul(F::one(), &dy2, &head.weight, F::zero(), &mut dh);
    let dh = dh.into_shape_with_order((t_out, b, h)).expect("contiguous");
    (grad, dh)
}
