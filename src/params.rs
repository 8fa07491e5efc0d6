//! Parameter tensors with PyTorch's names and shapes, and the same layout for gradients.
//!
//! As in llm.c, one struct serves both the parameters and their gradients, so the optimizer,
//! clipping, the gradient check and checkpoints are all one loop over named `(param, grad)`
//! pairs ([`Params::tensors`], [`Params::tensors_mut`]). Names are exactly those of
//! `torch.nn.RNN` / `torch.nn.LSTM` / `torch.nn.GRU` (`weight_ih_l0`, …) plus the readout
//! `head.weight`, `head.bias`. How the values are *initialised* lives in `init.rs`, not here.

use crate::real::Real;
use ndarray::{Array1, Array2, ArrayViewD, ArrayViewMutD, Zip};

/// Which recurrent cell a model uses. The number of gate blocks in the stacked weights is
/// [`CellKind::gates`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Vanilla tanh RNN (Elman), PyTorch's `nn.RNN`: one block.
    Rnn,
    /// LSTM with forget gate: blocks i, f, g, o (PyTorch's order).
    Lstm,
    /// GRU: blocks r, z, n (PyTorch's order and formulation, `nn.GRU`).
    Gru,
    /// The vanilla RNN with ReLU instead of tanh, `nn.RNN(nonlinearity='relu')`: one block.
    /// With identity W_hh it is the IRNN of Le, Jaitly & Hinton (2015). Same shapes as
    /// [`CellKind::Rnn`], so checkpoints record the cell in their metadata.
    #[serde(rename = "rnn-relu")]
    RnnRelu,
}

impl CellKind {
    /// All kinds, in the order they are listed to users.
    pub const ALL: [CellKind; 4] = [
        CellKind::Rnn,
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::RnnRelu,
    ];

    /// Number of gate blocks stacked in `weight_ih_l0` / `weight_hh_l0`.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn | CellKind::RnnRelu => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// True for the vanilla RNNs (tanh or ReLU), whose only path back in time is
    /// h_{t−1} → W_hh → nonlinearity → h_t (where the Pascanu et al. bound applies).
    pub fn is_vanilla(self) -> bool {
        matches!(self, CellKind::Rnn | CellKind::RnnRelu)
    }

    /// True if the state has a memory cell c besides h (LSTM).
    pub fn has_cell_state(self) -> bool {
        self == CellKind::Lstm
    }

    /// Lowercase name as used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Rnn => "rnn",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
            CellKind::RnnRelu => "rnn-relu",
        }
    }

    /// Display name for charts ("RNN", "LSTM", "GRU", "ReLU RNN").
    pub fn label(self) -> &'static str {
        match self {
            CellKind::Rnn => "RNN",
            CellKind::Lstm => "LSTM",
            CellKind::Gru => "GRU",
            CellKind::RnnRelu => "ReLU RNN",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<CellKind> {
        CellKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The weights of one recurrent layer, G = [`CellKind::gates`] blocks of H rows each.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams<F> {
    /// `weight_ih_l0`: (G·H, I)
    pub weight_ih: Array2<F>,
    /// `weight_hh_l0`: (G·H, H)
    pub weight_hh: Array2<F>,
    /// `bias_ih_l0`: (G·H)
    pub bias_ih: Array1<F>,
    /// `bias_hh_l0`: (G·H)
    pub bias_hh: Array1<F>,
}

/// A linear map y = x Wᵀ + b (PyTorch's `nn.Linear`).
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<F> {
    /// `weight`: (O, H)
    pub weight: Array2<F>,
    /// `bias`: (O)
    pub bias: Array1<F>,
}

/// Everything a model learns: one recurrent layer and the readout head. Also the layout of
/// its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct Params<F> {
    pub cell: CellKind,
    pub layer: LayerParams<F>,
    pub head: Linear<F>,
}

/// The PyTorch names of the tensors, in [`Params::tensors`] order.
pub const NAMES: [&str; 6] = [
    "weight_ih_l0",
    "weight_hh_l0",
    "bias_ih_l0",
    "bias_hh_l0",
    "head.weight",
    "head.bias",
];

impl<F: Real> Params<F> {
    /// All-zero parameters (also: a zeroed gradient) for `cell` with input size I, hidden
    /// size H and output size O.
    pub fn zeros(cell: CellKind, input: usize, hidden: usize, output: usize) -> Self {
        let gh = cell.gates() * hidden;
        Params {
            cell,
            layer: LayerParams {
                weight_ih: Array2::zeros((gh, input)),
                weight_hh: Array2::zeros((gh, hidden)),
                bias_ih: Array1::zeros(gh),
                bias_hh: Array1::zeros(gh),
            },
            head: Linear {
                weight: Array2::zeros((output, hidden)),
                bias: Array1::zeros(output),
            },
        }
    }

    /// Input size I.
    pub fn input_size(&self) -> usize {
        self.layer.weight_ih.ncols()
    }

    /// Hidden size H.
    pub fn hidden_size(&self) -> usize {
        self.layer.weight_hh.ncols()
    }

    /// Output size O of the head.
    pub fn output_size(&self) -> usize {
        self.head.weight.nrows()
    }

    /// The tensors with their PyTorch names, in a fixed order.
    pub fn tensors(&self) -> [(&'static str, ArrayViewD<'_, F>); 6] {
        [
            (NAMES[0], self.layer.weight_ih.view().into_dyn()),
            (NAMES[1], self.layer.weight_hh.view().into_dyn()),
            (NAMES[2], self.layer.bias_ih.view().into_dyn()),
            (NAMES[3], self.layer.bias_hh.view().into_dyn()),
            (NAMES[4], self.head.weight.view().into_dyn()),
            (NAMES[5], self.head.bias.view().into_dyn()),
        ]
    }

    /// Mutable tensors with their PyTorch names, same order as [`Params::tensors`].
    pub fn tensors_mut(&mut self) -> [(&'static str, ArrayViewMutD<'_, F>); 6] {
        [
            (NAMES[0], self.layer.weight_ih.view_mut().into_dyn()),
            (NAMES[1], self.layer.weight_hh.view_mut().into_dyn()),
            (NAMES[2], self.layer.bias_ih.view_mut().into_dyn()),
            (NAMES[3], self.layer.bias_hh.view_mut().into_dyn()),
            (NAMES[4], self.head.weight.view_mut().into_dyn()),
            (NAMES[5], self.head.bias.view_mut().into_dyn()),
        ]
    }

    /// Total number of scalars.
    pub fn len(&self) -> usize {
        self.tensors().iter().map(|(_, t)| t.len()).sum()
    }

    /// True if there are no scalars at all (never, for a valid model).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Global L2 norm over all tensors, accumulated in f64.
    pub fn global_norm(&self) -> f64 {
        self.tensors()
            .iter()
            .flat_map(|(_, t)| t.iter())
            .map(|v| v.f64() * v.f64())
            .sum::<f64>()
            .sqrt()
    }

    /// Cosine of the angle between `self` and `other` seen as two long vectors (f64
    /// accumulation); 1 if either is all zeros.
    pub fn cosine(&self, other: &Params<F>) -> f64 {
        let dot: f64 = self
            .tensors()
            .iter()
            .zip(other.tensors().iter())
            .flat_map(|((_, a), (_, b))| a.iter().zip(b.iter()))
            .map(|(a, b)| a.f64() * b.f64())
            .sum();
        let norms = self.global_norm() * other.global_norm();
        if norms > 0.0 { dot / norms } else { 1.0 }
    }

    /// True if every entry is finite.
    pub fn all_finite(&self) -> bool {
        self.tensors()
            .iter()
            .all(|(_, t)| t.iter().all(|v| v.is_finite()))
    }

    /// Multiplies every entry by `s`.
    pub fn scale(&mut self, s: F) {
        for (_, mut t) in self.tensors_mut() {
            t.mapv_inplace(|v| v * s);
        }
    }

    /// Converts every tensor to another float type.
    pub fn cast<G: Real>(&self) -> Params<G> {
        let c1 = |a: &Array1<F>| a.mapv(|v| G::of(v.f64()));
        let c2 = |a: &Array2<F>| a.mapv(|v| G::of(v.f64()));
        Params {
            cell: self.cell,
            layer: LayerParams {
                weight_ih: c2(&self.layer.weight_ih),
                weight_hh: c2(&self.layer.weight_hh),
                bias_ih: c1(&self.layer.bias_ih),
                bias_hh: c1(&self.layer.bias_hh),
            },
            head: Linear {
                weight: c2(&self.head.weight),
                bias: c1(&self.head.bias),
            },
        }
    }

    /// `self += alpha * other`, tensor by tensor (shapes must match).
    pub fn add_scaled(&mut self, alpha: F, other: &Params<F>) {
        for ((_, mut a), (_, b)) in self.tensors_mut().into_iter().zip(other.tensors()) {
            Zip::from(&mut a).and(&b).for_each(|a, &b| *a += alpha * b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_pytorch() {
        let p = Params::<f32>::zeros(CellKind::Lstm, 2, 8, 1);
        let shapes: Vec<_> = p
            .tensors()
            .iter()
            .map(|(n, t)| (*n, t.shape().to_vec()))
            .collect();
        assert_eq!(
            shapes,
            vec![
                ("weight_ih_l0", vec![32, 2]),
                ("weight_hh_l0", vec![32, 8]),
                ("bias_ih_l0", vec![32]),
                ("bias_hh_l0", vec![32]),
                ("head.weight", vec![1, 8]),
                ("head.bias", vec![1]),
            ]
        );
        assert_eq!(p.len(), 32 * 2 + 32 * 8 + 64 + 8 + 1);
        assert_eq!(
            (p.input_size(), p.hidden_size(), p.output_size()),
            (2, 8, 1)
        );
    }

    #[test]
    fn global_norm_and_scale() {
        let mut p = Params::<f64>::zeros(CellKind::Rnn, 1, 1, 1);
        p.layer.weight_ih[[0, 0]] = 3.0;
        p.head.bias[0] = 4.0;
        assert_eq!(p.global_norm(), 5.0);
        p.scale(0.5);
        assert_eq!(p.global_norm(), 2.5);
        let mut q = p.clone();
        assert!((p.cosine(&q) - 1.0).abs() < 1e-15);
        q.head.bias[0] = 0.0; // q = (1.5, 0): cos = 1.5 / 2.5
        assert!((p.cosine(&q) - 0.6).abs() < 1e-15);
        assert!(p.all_finite());
        p.head.bias[0] = f64::NAN;
        assert!(!p.all_finite());
    }
}
