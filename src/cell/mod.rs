//! Recurrent cells over a whole batch of sequences: forward fills a cache, backward consumes
//! it (backpropagation through time) and returns every gradient plus the per-timestep probes.
//!
//! Layout, used everywhere in this module: time-major. T = timesteps, B = batch, I = input
//! size, H = hidden size, G = gate blocks (1 for the RNN, 4 for the LSTM).
//! - inputs `x`: (T, B, I); hidden states `hs`: (T+1, B, H) with `hs[0]` = h₀, so step t
//!   reads its predecessor `hs[t]` and writes `hs[t+1]` without a special case.
//! - `dh_out`: (T, B, H), the gradient of the loss with respect to each output h_t that
//!   arrives from *above* (the readout head); the recurrence adds its own part.
//!
//! Each cell does the two things DESIGN.md's Performance section asks for: one large product
//! for all input projections before the time loop, and the weight gradients as one large
//! product over all timesteps after the backward loop; the time loop itself allocates nothing.
//! This module knows nothing about heads, losses or tasks.

pub mod lstm;
pub mod rnn;

use crate::params::{CellKind, LayerParams};
use crate::real::Real;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

/// The recurrent state carried between steps: h (B, H), and c (B, H) for the LSTM.
#[derive(Clone, Debug, PartialEq)]
pub struct State<F> {
    /// h: (B, H)
    pub h: Array2<F>,
    /// c: (B, H), only for cells with a memory cell (LSTM).
    pub c: Option<Array2<F>>,
}

impl<F: Real> State<F> {
    /// The all-zero initial state (PyTorch's default when no state is passed).
    pub fn zeros(cell: CellKind, batch: usize, hidden: usize) -> Self {
        let c = match cell {
            CellKind::Lstm => Some(Array2::zeros((batch, hidden))),
            CellKind::Rnn => None,
        };
        State {
            h: Array2::zeros((batch, hidden)),
            c,
        }
    }
}

/// Per-timestep gradient norms: the probe of DESIGN.md. For every t, the mean over the batch
/// of the per-sequence L2 norm of ∂L/∂h_t (and ∂L/∂c_t), computed and accumulated in f64.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Probes {
    /// ‖∂L/∂h_t‖ for t = 0 … T−1.
    pub dh_norm: Vec<f64>,
    /// ‖∂L/∂c_t‖ for t = 0 … T−1 (LSTM only).
    pub dc_norm: Option<Vec<f64>>,
}

/// What a cell's backward pass returns.
#[derive(Clone, Debug)]
pub struct LayerGrads<F> {
    /// Gradients of the layer's weights (same layout as the weights).
    pub params: LayerParams<F>,
    /// ∂L/∂x: (T, B, I)
    pub dx: Array3<F>,
    /// ∂L/∂(initial state).
    pub dstate0: State<F>,
    /// The probes, a by-product of the backward walk.
    pub probes: Probes,
}

/// The forward cache of one layer; holds the hidden states the head reads. (Moved once per
/// pass, so the size difference between the variants costs nothing worth a `Box`.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Cache<F> {
    Rnn(rnn::RnnCache<F>),
    Lstm(lstm::LstmCache<F>),
}

impl<F: Real> Cache<F> {
    /// All hidden states, (T+1, B, H), `hs[0]` = h₀.
    pub fn hs(&self) -> &Array3<F> {
        match self {
            Cache::Rnn(c) => &c.hs,
            Cache::Lstm(c) => &c.hs,
        }
    }

    /// The final state (h_T, and c_T for the LSTM).
    pub fn final_state(&self) -> State<F> {
        let t = self.hs().dim().0 - 1;
        let h = self.hs().index_axis(ndarray::Axis(0), t).to_owned();
        let c = match self {
            Cache::Rnn(_) => None,
            Cache::Lstm(c) => Some(c.cs.index_axis(ndarray::Axis(0), t).to_owned()),
        };
        State { h, c }
    }
}

/// Runs the cell of `params` over `x` (T, B, I) from `state0`.
pub fn forward<F: Real>(
    cell: CellKind,
    params: &LayerParams<F>,
    x: ArrayView3<F>,
    state0: &State<F>,
) -> Cache<F> {
    match cell {
        CellKind::Rnn => Cache::Rnn(rnn::forward(params, x, state0.h.view())),
        CellKind::Lstm => {
            let c0 = state0
                .c
                .as_ref()
                .expect("an LSTM needs an initial cell state c0");
            Cache::Lstm(lstm::forward(params, x, state0.h.view(), c0.view()))
        }
    }
}

/// Backpropagation through time: consumes the cache, takes ∂L/∂h_t from above (T, B, H)
/// and returns all gradients and the probes.
pub fn backward<F: Real>(
    params: &LayerParams<F>,
    cache: Cache<F>,
    dh_out: ArrayView3<F>,
) -> LayerGrads<F> {
    match cache {
        Cache::Rnn(c) => rnn::backward(params, c, dh_out),
        Cache::Lstm(c) => lstm::backward(params, c, dh_out),
    }
}

/// Mean over the rows of a (B, H) matrix of each row's L2 norm, in f64.
pub(crate) fn mean_row_norm<F: Real>(m: ArrayView2<F>) -> f64 {
    let b = m.nrows();
    let total: f64 = m
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v.f64() * v.f64()).sum::<f64>().sqrt())
        .sum();
    total / b as f64
}
