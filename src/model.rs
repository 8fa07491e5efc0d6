//! A model = one recurrent layer + a linear readout head; one training step's arithmetic.
//!
//! [`Model::forward`] runs cell then head; [`Model::backward`] runs head then cell backward
//! and returns a [`Gradients`] with exactly the layout of the parameters, the input and
//! initial-state gradients, and the probes. [`Model::loss_and_grad`] adds the loss in the
//! middle. No optimizer, no clipping, no task knowledge here.

use crate::batch::Target;
use crate::cell::{self, Backward, Cache, Probes, State};
use crate::head::{self, Readout};
use crate::loss;
use crate::params::{CellKind, Params};
use crate::real::Real;
use ndarray::{Array3, ArrayView3};

/// A recurrent model: its parameters and how the head reads the hidden states.
#[derive(Clone, Debug, PartialEq)]
pub struct Model<F> {
    pub params: Params<F>,
    pub readout: Readout,
}

/// The result of a forward pass: the output and everything backward needs.
pub struct Forward<F> {
    /// Head output: (T_out, B, O).
    pub y: Array3<F>,
    /// The recurrent layer's cache (holds the hidden states).
    pub cache: Cache<F>,
}

/// All gradients of one backward pass. (`Dx` = `Option<Array3<F>>` from
/// [`Model::backward_with`], where ∂L/∂x may not have been asked for.)
#[derive(Clone, Debug)]
pub struct Gradients<F, Dx = Array3<F>> {
    /// Same layout (and names) as the parameters.
    pub params: Params<F>,
    /// ∂L/∂x: (T, B, I)
    pub dx: Dx,
    /// ∂L/∂(initial state)
    pub dstate0: State<F>,
    /// Per-timestep ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖), raw, before any clipping.
    pub probes: Probes,
}

impl<F: Real> Model<F> {
    /// The cell kind.
    pub fn cell(&self) -> CellKind {
        self.params.cell
    }

    /// The all-zero initial state for a batch of `b` sequences.
    pub fn zero_state(&self, b: usize) -> State<F> {
        State::zeros(self.cell(), b, self.params.hidden_size())
    }

    /// Forward over `x` (T, B, I) from `state0`.
    pub fn forward(&self, x: ArrayView3<F>, state0: &State<F>) -> Forward<F> {
        self.forward_with(x, state0, 1)
    }

    /// [`Model::forward`] with the batch split over `threads` threads (same numbers).
    pub fn forward_with(&self, x: ArrayView3<F>, state0: &State<F>, threads: usize) -> Forward<F> {
        let cache = cell::forward(self.cell(), &self.params.layer, x, state0, threads);
        let y = head::forward(&self.params.head, cache.hs(), self.readout);
        Forward { y, cache }
    }

    /// Backward from dL/dy (T_out, B, O), consuming the forward cache.
    pub fn backward(&self, fwd: Forward<F>, dy: ArrayView3<F>) -> Gradients<F> {
        let g = self.backward_with(fwd, dy, Backward::default());
        Gradients {
            params: g.params,
            dx: g.dx.expect("the default backward computes ∂L/∂x"),
            dstate0: g.dstate0,
            probes: g.probes,
        }
    }

    /// Backward as `how` asks (threads, whether ∂L/∂x is needed).
    pub fn backward_with(
        &self,
        fwd: Forward<F>,
        dy: ArrayView3<F>,
        how: Backward,
    ) -> Gradients<F, Option<Array3<F>>> {
        let (head_grad, dh_out) =
            head::backward(&self.params.head, fwd.cache.hs(), self.readout, dy);
        let layer = cell::backward(&self.params.layer, fwd.cache, dh_out.view(), how);
        cell::pool::recycle(dh_out);
        Gradients {
            params: Params {
                cell: self.cell(),
                layer: layer.params,
                head: head_grad,
            },
            dx: layer.dx,
            dstate0: layer.dstate0,
            probes: layer.probes,
        }
    }

    /// What a training step needs: the loss, the parameter gradients and the probes, without
    /// ∂L/∂x, with the batch split over `threads` threads (results do not depend on it).
    pub fn train_grads(
        &self,
        x: ArrayView3<F>,
        target: &Target,
        state0: &State<F>,
        threads: usize,
    ) -> (f64, Params<F>, Probes) {
        let fwd = self.forward_with(x, state0, threads);
        let (l, dy) = loss::loss(fwd.y.view(), target);
        let how = Backward {
            threads,
            input_grad: false,
        };
        let g = self.backward_with(fwd, dy.view(), how);
        (l, g.params, g.probes)
    }

    /// Loss of the batch (mean reduction, see [`loss`]) and all gradients.
    pub fn loss_and_grad(
        &self,
        x: ArrayView3<F>,
        target: &Target,
        state0: &State<F>,
    ) -> (f64, Gradients<F>) {
        let fwd = self.forward(x, state0);
        let (l, dy) = loss::loss(fwd.y.view(), target);
        (l, self.backward(fwd, dy.view()))
    }

    /// Head outputs only, from the zero state, in chunks of at most `chunk` sequences so that
    /// evaluating on a large held-out set does not hold a huge cache. `x`: (T, B, I).
    pub fn predict(&self, x: ArrayView3<F>, chunk: usize) -> Array3<F> {
        let b = x.dim().1;
        let parts: Vec<Array3<F>> = (0..b)
            .step_by(chunk.max(1))
            .map(|s| {
                let xs = x.slice(ndarray::s![.., s..(s + chunk).min(b), ..]);
                self.forward(xs, &self.zero_state(xs.dim().1)).y
            })
            .collect();
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(ndarray::Axis(1), &views).expect("same T_out and O")
    }

    /// The same model in another float type.
    pub fn cast<G: Real>(&self) -> Model<G> {
        Model {
            params: self.params.cast(),
            readout: self.readout,
        }
    }
}
