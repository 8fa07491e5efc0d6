//! The classifier as a stack of layers described in a config file ([`ModelSpec`]): its
//! weights ([`Weights`], also the layout of its gradient), Keras' initialisation, and one
//! forward/backward pass through the whole stack.
//!
//! A description, as written in TOML (the Keras example; `cell` swaps every recurrent layer):
//! ```toml
//! [model]
//! cell = "lstm"
//! layers = [
//!   { kind = "embedding", vocab = 10000, dim = 256 },            # mask_zero = true
//!   { kind = "recurrent", units = 64, bidirectional = true, return_sequences = true },
//!   { kind = "dropout", rate = 0.5 },
//!   { kind = "recurrent", units = 32 },
//!   { kind = "dropout", rate = 0.5 },
//!   { kind = "dense", units = 10 },                               # softmax
//! ]
//! ```
//! Rules ([`ModelSpec::validate`]): an embedding first, a dense softmax last, recurrent layers
//! in between read sequences (so every one but the last needs `return_sequences`), dropout
//! anywhere after the embedding.
//!
//! Tensor names follow PyTorch's `nn.Sequential` state dicts with the layer index and kind:
//! `0.embedding.weight` (V, E); `1.lstm.weight_ih_l0` (G·H, I), `…weight_hh_l0` (G·H, H),
//! `…bias_ih_l0`, `…bias_hh_l0` (G·H) and the same with `_reverse` for the reverse direction;
//! `5.dense.weight` (C, D), `5.dense.bias` (C).

use super::dense;
use super::dropout;
use super::embedding;
use super::recurrent::{self, Output, Recurrent, RecurrentCache, RecurrentSpec};
use crate::init::orthogonal;
use crate::params::{CellKind, LayerParams, Linear};
use crate::real::Real;
use anyhow::{Result, bail};
use ndarray::{Array1, Array2, Array3, ArrayD, ArrayView2, ArrayViewD, ArrayViewMutD, Axis, s};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One layer of a description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum LayerSpec {
    /// Token ids → vectors; with `mask_zero`, id 0 is padding and masked in the layers above.
    Embedding {
        vocab: usize,
        dim: usize,
        #[serde(default = "yes")]
        mask_zero: bool,
    },
    /// A recurrent layer of the model's cell kind.
    Recurrent {
        units: usize,
        #[serde(default)]
        bidirectional: bool,
        #[serde(default)]
        return_sequences: bool,
    },
    /// Inverted dropout (training only).
    Dropout { rate: f64 },
    /// The output layer: `units` classes, softmax.
    Dense {
        units: usize,
        #[serde(default = "softmax")]
        activation: String,
    },
}

fn yes() -> bool {
    true
}

fn softmax() -> String {
    "softmax".into()
}

/// A whole model: the cell kind of every recurrent layer, and the layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// "lstm", "rnn", … (every recurrent layer; the one setting that swaps the cells).
    pub cell: CellKind,
    /// LSTM forget-gate bias at initialisation (Keras' `unit_forget_bias=True` is 1).
    #[serde(default = "one")]
    pub forget_bias: f64,
    pub layers: Vec<LayerSpec>,
}

fn one() -> f64 {
    1.0
}

impl ModelSpec {
    /// Checks the stack; errors name the layer (`model.layers[k]`) and what is wrong.
    pub fn validate(&self) -> Result<()> {
        let n = self.layers.len();
        let Some(LayerSpec::Embedding { vocab, dim, .. }) = self.layers.first() else {
            bail!(
                "model.layers[0] must be an embedding (kind = \"embedding\"): the model reads token ids"
            );
        };
        if *vocab < 2 || *dim == 0 {
            bail!(
                "model.layers[0]: vocab = {vocab} and dim = {dim} are invalid: vocab must be at least 2 and dim at least 1"
            );
        }
        let Some(LayerSpec::Dense { units, activation }) = self.layers.last() else {
            bail!(
                "model.layers[{}] must be a dense softmax layer (kind = \"dense\"): the model ends in class probabilities",
                n.saturating_sub(1)
            );
        };
        if activation != "softmax" {
            bail!(
                "model.layers[{}]: activation = \"{activation}\" is invalid: only \"softmax\" is supported",
                n - 1
            );
        }
        if *units < 2 {
            bail!(
                "model.layers[{}]: units = {units} is invalid: a classifier needs at least 2 classes",
                n - 1
            );
        }
        let mut sequence = true; // the activation so far is a sequence (T, B, D)
        let mut recurrent = 0;
        for (k, layer) in self.layers.iter().enumerate().skip(1) {
            match layer {
                LayerSpec::Embedding { .. } => {
                    bail!("model.layers[{k}]: an embedding can only be the first layer")
                }
                LayerSpec::Recurrent {
                    units,
                    return_sequences,
                    ..
                } => {
                    if *units == 0 {
                        bail!("model.layers[{k}]: units = 0 is invalid: it must be at least 1");
                    }
                    if !sequence {
                        bail!(
                            "model.layers[{k}]: a recurrent layer needs a sequence, but the layer before returns one vector per sequence (set return_sequences = true there)"
                        );
                    }
                    sequence = *return_sequences;
                    recurrent += 1;
                }
                LayerSpec::Dropout { rate } => {
                    if !(0.0..1.0).contains(rate) {
                        bail!("model.layers[{k}]: rate = {rate} is invalid: it must be in [0, 1)");
                    }
                }
                LayerSpec::Dense { .. } if k != n - 1 => {
                    bail!("model.layers[{k}]: a dense layer can only be the last layer")
                }
                LayerSpec::Dense { .. } => {
                    if sequence {
                        bail!(
                            "model.layers[{k}]: the dense layer needs one vector per sequence, but the layer before returns a sequence (set return_sequences = false on the last recurrent layer)"
                        );
                    }
                }
            }
        }
        if recurrent == 0 {
            bail!("the model has no recurrent layer (kind = \"recurrent\")");
        }
        if !self.forget_bias.is_finite() {
            bail!(
                "model.forget_bias = {} is invalid: it must be a finite number",
                self.forget_bias
            );
        }
        Ok(())
    }

    /// Embedding rows V.
    pub fn vocab(&self) -> usize {
        match self.layers[0] {
            LayerSpec::Embedding { vocab, .. } => vocab,
            _ => unreachable!("validated: an embedding comes first"),
        }
    }

    /// Classes C.
    pub fn classes(&self) -> usize {
        match self.layers.last() {
            Some(LayerSpec::Dense { units, .. }) => *units,
            _ => unreachable!("validated: a dense layer comes last"),
        }
    }

    /// The same model with another vocabulary size and number of classes (to fit a data set).
    pub fn with_sizes(&self, vocab: usize, classes: usize) -> ModelSpec {
        let mut spec = self.clone();
        if let Some(LayerSpec::Embedding { vocab: v, .. }) = spec.layers.first_mut() {
            *v = vocab;
        }
        if let Some(LayerSpec::Dense { units, .. }) = spec.layers.last_mut() {
            *units = classes;
        }
        spec
    }

    /// One line, Keras style: "Embedding(10000, 256, mask_zero) → Bidirectional(LSTM(64), seq) → …".
    pub fn describe(&self) -> String {
        let cell = self.cell.label();
        self.layers
            .iter()
            .map(|l| match l {
                LayerSpec::Embedding {
                    vocab,
                    dim,
                    mask_zero,
                } => {
                    format!(
                        "Embedding({vocab}, {dim}{})",
                        if *mask_zero { ", mask_zero" } else { "" }
                    )
                }
                LayerSpec::Recurrent {
                    units,
                    bidirectional,
                    return_sequences,
                } => {
                    let inner = format!(
                        "{cell}({units}{})",
                        if *return_sequences {
                            ", return_sequences"
                        } else {
                            ""
                        }
                    );
                    if *bidirectional {
                        format!("Bidirectional({inner})")
                    } else {
                        inner
                    }
                }
                LayerSpec::Dropout { rate } => format!("Dropout({rate})"),
                LayerSpec::Dense { units, activation } => format!("Dense({units}, {activation})"),
            })
            .collect::<Vec<_>>()
            .join(" → ")
    }

    /// The recurrent layer shape of layer `k`, if it is one.
    fn recurrent(&self, k: usize) -> Option<RecurrentSpec> {
        match self.layers[k] {
            LayerSpec::Recurrent {
                units,
                bidirectional,
                return_sequences,
            } => Some(RecurrentSpec {
                cell: self.cell,
                units,
                bidirectional,
                return_sequences,
            }),
            _ => None,
        }
    }
}

/// The learned tensors of one layer. (A handful per model, so the size difference between
/// the variants costs nothing worth a `Box`.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum LayerWeights<F> {
    /// (V, E)
    Embedding(Array2<F>),
    Recurrent(Recurrent<F>),
    Dropout,
    Dense(Linear<F>),
}

/// Every tensor of a model, layer by layer; also the layout of its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights<F> {
    pub layers: Vec<LayerWeights<F>>,
}

impl<F: Real> Weights<F> {
    /// The tensors with their names (see the module docs), in a fixed order.
    pub fn tensors(&self, spec: &ModelSpec) -> Vec<(String, ArrayViewD<'_, F>)> {
        let mut out = Vec::new();
        for (k, w) in self.layers.iter().enumerate() {
            match w {
                LayerWeights::Embedding(e) => {
                    out.push((format!("{k}.embedding.weight"), e.view().into_dyn()))
                }
                LayerWeights::Recurrent(r) => {
                    let dirs = std::iter::once((&r.forward, ""))
                        .chain(r.reverse.iter().map(|p| (p, "_reverse")));
                    for (p, suffix) in dirs {
                        let cell = spec.cell.name();
                        out.push((
                            format!("{k}.{cell}.weight_ih_l0{suffix}"),
                            p.weight_ih.view().into_dyn(),
                        ));
                        out.push((
                            format!("{k}.{cell}.weight_hh_l0{suffix}"),
                            p.weight_hh.view().into_dyn(),
                        ));
                        out.push((
                            format!("{k}.{cell}.bias_ih_l0{suffix}"),
                            p.bias_ih.view().into_dyn(),
                        ));
                        out.push((
                            format!("{k}.{cell}.bias_hh_l0{suffix}"),
                            p.bias_hh.view().into_dyn(),
                        ));
                    }
                }
                LayerWeights::Dropout => {}
                LayerWeights::Dense(d) => {
                    out.push((format!("{k}.dense.weight"), d.weight.view().into_dyn()));
                    out.push((format!("{k}.dense.bias"), d.bias.view().into_dyn()));
                }
            }
        }
        out
    }

    /// Mutable tensors, in the order of [`Weights::tensors`].
    pub fn tensors_mut(&mut self) -> Vec<ArrayViewMutD<'_, F>> {
        let mut out = Vec::new();
        for w in &mut self.layers {
            match w {
                LayerWeights::Embedding(e) => out.push(e.view_mut().into_dyn()),
                LayerWeights::Recurrent(r) => {
                    for p in std::iter::once(&mut r.forward).chain(r.reverse.as_mut()) {
                        out.push(p.weight_ih.view_mut().into_dyn());
                        out.push(p.weight_hh.view_mut().into_dyn());
                        out.push(p.bias_ih.view_mut().into_dyn());
                        out.push(p.bias_hh.view_mut().into_dyn());
                    }
                }
                LayerWeights::Dropout => {}
                LayerWeights::Dense(d) => {
                    out.push(d.weight.view_mut().into_dyn());
                    out.push(d.bias.view_mut().into_dyn());
                }
            }
        }
        out
    }

    /// Total number of scalars.
    pub fn len(&self, spec: &ModelSpec) -> usize {
        self.tensors(spec).iter().map(|(_, t)| t.len()).sum()
    }

    /// The same weights in another float type.
    pub fn cast<G: Real>(&self) -> Weights<G> {
        let c1 = |a: &Array1<F>| a.mapv(|v| G::of(v.f64()));
        let c2 = |a: &Array2<F>| a.mapv(|v| G::of(v.f64()));
        let cl = |p: &LayerParams<F>| LayerParams {
            weight_ih: c2(&p.weight_ih),
            weight_hh: c2(&p.weight_hh),
            bias_ih: c1(&p.bias_ih),
            bias_hh: c1(&p.bias_hh),
        };
        Weights {
            layers: self
                .layers
                .iter()
                .map(|w| match w {
                    LayerWeights::Embedding(e) => LayerWeights::Embedding(c2(e)),
                    LayerWeights::Recurrent(r) => LayerWeights::Recurrent(Recurrent {
                        forward: cl(&r.forward),
                        reverse: r.reverse.as_ref().map(cl),
                    }),
                    LayerWeights::Dropout => LayerWeights::Dropout,
                    LayerWeights::Dense(d) => LayerWeights::Dense(Linear {
                        weight: c2(&d.weight),
                        bias: c1(&d.bias),
                    }),
                })
                .collect(),
        }
    }
}

/// Keras' default initialisation, from `seed`: embedding U(−0.05, 0.05); recurrent kernels
/// W_ih Glorot-uniform U(±√(6/(I + G·H))), recurrent matrices W_hh orthogonal (per gate
/// block), biases 0 except the LSTM's forget block of b_ih (`forget_bias`, Keras'
/// `unit_forget_bias`); dense weight Glorot-uniform U(±√(6/(D + C))), bias 0.
pub fn init_weights<F: Real>(spec: &ModelSpec, seed: u64) -> Weights<F> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uniform = |shape: (usize, usize), limit: f64, rng: &mut ChaCha8Rng| {
        Array2::from_shape_simple_fn(shape, || F::of(rng.random_range(-limit..limit)))
    };
    let mut width = 0; // features of the activation entering the next layer
    let mut layers = Vec::new();
    for (k, layer) in spec.layers.iter().enumerate() {
        let w = match layer {
            LayerSpec::Embedding { vocab, dim, .. } => {
                width = *dim;
                LayerWeights::Embedding(uniform((*vocab, *dim), 0.05, &mut rng))
            }
            LayerSpec::Recurrent { .. } => {
                let r = spec.recurrent(k).expect("a recurrent layer");
                let (h, gh) = (r.units, spec.cell.gates() * r.units);
                let direction = |rng: &mut ChaCha8Rng| {
                    let mut p = LayerParams {
                        weight_ih: uniform((gh, width), (6.0 / (width + gh) as f64).sqrt(), rng),
                        weight_hh: Array2::zeros((gh, h)),
                        bias_ih: Array1::zeros(gh),
                        bias_hh: Array1::zeros(gh),
                    };
                    for g in 0..spec.cell.gates() {
                        let q = orthogonal(h, rng).mapv(F::of);
                        p.weight_hh.slice_mut(s![g * h..(g + 1) * h, ..]).assign(&q);
                    }
                    if spec.cell == CellKind::Lstm {
                        p.bias_ih
                            .slice_mut(s![h..2 * h])
                            .fill(F::of(spec.forget_bias));
                    }
                    p
                };
                let forward = direction(&mut rng);
                let reverse = r.bidirectional.then(|| direction(&mut rng));
                width = r.output_size();
                LayerWeights::Recurrent(Recurrent { forward, reverse })
            }
            LayerSpec::Dropout { .. } => LayerWeights::Dropout,
            LayerSpec::Dense { units, .. } => LayerWeights::Dense(Linear {
                weight: uniform(
                    (*units, width),
                    (6.0 / (width + units) as f64).sqrt(),
                    &mut rng,
                ),
                bias: Array1::zeros(*units),
            }),
        };
        layers.push(w);
    }
    Weights { layers }
}

/// A classifier: its description and its weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Classifier<F> {
    pub spec: ModelSpec,
    pub weights: Weights<F>,
}

/// One layer's forward cache (layers 1 … n−1; the embedding's is the ids kept in the pass). (Moved
/// once per pass: the size difference between the variants costs nothing worth a `Box`.)
#[allow(clippy::large_enum_variant)]
enum LayerCache<F> {
    Recurrent(RecurrentCache<F>),
    Dropout(Option<ArrayD<F>>),
    Dense { x: Array2<F> },
}

/// A forward pass: the logits and everything backward needs.
pub struct Pass<F> {
    /// Logits z: (B, C).
    pub logits: Array2<F>,
    /// The ids (T, B) looked up by the embedding (None when the pass started from e).
    ids: Option<Array2<u32>>,
    /// Caches of layers 1 … n−1, in order.
    caches: Vec<LayerCache<F>>,
}

/// What backward returns.
pub struct Grads<F> {
    /// Same layout as the weights (the embedding's is zero when the pass started from e).
    pub weights: Weights<F>,
    /// ∂L/∂e, the gradient at the embedding's output: (T, B, E).
    pub d_embedded: Array3<F>,
}

/// An activation (or its gradient) between layers: a sequence (T, B, D) or one vector per
/// sequence (B, D).
enum Act<F> {
    Seq(Array3<F>),
    Vec(Array2<F>),
}

impl<F: Real> Classifier<F> {
    /// A fresh model with Keras' initialisation ([`init_weights`]).
    pub fn new(spec: ModelSpec, seed: u64) -> Self {
        let weights = init_weights(&spec, seed);
        Classifier { spec, weights }
    }

    /// The embedding table (V, E).
    fn table(&self) -> &Array2<F> {
        match &self.weights.layers[0] {
            LayerWeights::Embedding(table) => table,
            _ => unreachable!("validated: an embedding comes first"),
        }
    }

    /// Forward over `ids` (T, B). Training mode when `dropout_rng` is given (dropout draws
    /// from it), evaluation otherwise. `threads`: see [`recurrent::forward`].
    pub fn forward(
        &self,
        ids: ArrayView2<u32>,
        dropout_rng: Option<&mut ChaCha8Rng>,
        threads: usize,
    ) -> Pass<F> {
        // e = W[ids]                                                         (T, B, E)
        let e = embedding::forward(self.table(), ids);
        let mut pass = self.forward_embedded(e, ids, dropout_rng, threads);
        pass.ids = Some(ids.to_owned());
        pass
    }

    /// Forward from the embedding's output `e` (T, B, E) through layers 1 … n−1; `ids`
    /// (T, B) give the mask.
    pub fn forward_embedded(
        &self,
        e: Array3<F>,
        ids: ArrayView2<u32>,
        mut dropout_rng: Option<&mut ChaCha8Rng>,
        threads: usize,
    ) -> Pass<F> {
        let mask_zero = matches!(
            self.spec.layers[0],
            LayerSpec::Embedding {
                mask_zero: true,
                ..
            }
        );
        let mask: Option<Array2<F>> = mask_zero.then(|| embedding::mask(ids)); // (T, B)
        let mut act = Act::Seq(e);
        let mut caches = Vec::new();
        let layers = self.spec.layers.iter().zip(&self.weights.layers);
        for (k, (layer, w)) in layers.enumerate().skip(1) {
            let (next, cache) = match (layer, w, act) {
                (LayerSpec::Recurrent { .. }, LayerWeights::Recurrent(r), Act::Seq(x)) => {
                    let spec = self.spec.recurrent(k).expect("a recurrent layer");
                    let m = mask.as_ref().map(|m| m.view());
                    let (y, cache) = recurrent::forward(&spec, r, x.view(), m, threads);
                    let y = match y {
                        Output::Sequence(y) => Act::Seq(y),
                        Output::Last(y) => Act::Vec(y),
                    };
                    (y, LayerCache::Recurrent(cache))
                }
                (LayerSpec::Dropout { rate }, _, act) => {
                    let rng = dropout_rng.as_deref_mut();
                    let (y, scale) = match act {
                        Act::Seq(x) => {
                            let (y, s) = dropout::forward(x, *rate, rng);
                            (Act::Seq(y), s.map(|s| s.into_dyn()))
                        }
                        Act::Vec(x) => {
                            let (y, s) = dropout::forward(x, *rate, rng);
                            (Act::Vec(y), s.map(|s| s.into_dyn()))
                        }
                    };
                    (y, LayerCache::Dropout(scale))
                }
                (LayerSpec::Dense { .. }, LayerWeights::Dense(d), Act::Vec(x)) => {
                    // z = x Wᵀ + b                                                   (B, C)
                    let z = dense::forward(d, x.view());
                    (Act::Vec(z), LayerCache::Dense { x })
                }
                _ => unreachable!("validated stack"),
            };
            act = next;
            caches.push(cache);
        }
        let Act::Vec(logits) = act else {
            unreachable!("validated: a dense layer comes last")
        };
        Pass {
            logits,
            ids: None,
            caches,
        }
    }

    /// Backward from dL/dz (B, C), consuming the pass: layer n−1 down to the embedding.
    pub fn backward(&self, mut pass: Pass<F>, dlogits: Array2<F>, threads: usize) -> Grads<F> {
        let n = self.spec.layers.len();
        let mut grads: Vec<LayerWeights<F>> = Vec::with_capacity(n);
        let mut d = Act::Vec(dlogits);
        for k in (1..n).rev() {
            let cache = pass.caches.pop().expect("one cache per layer");
            let (g, next) = match (cache, &self.weights.layers[k], d) {
                (LayerCache::Dense { x }, LayerWeights::Dense(w), Act::Vec(dz)) => {
                    let (g, dx) = dense::backward(w, x.view(), dz.view());
                    (LayerWeights::Dense(g), Act::Vec(dx))
                }
                (LayerCache::Dropout(scale), _, d) => {
                    let next = match d {
                        Act::Seq(dy) => Act::Seq(dropout::backward(dy, view_as(&scale))),
                        Act::Vec(dy) => Act::Vec(dropout::backward(dy, view_as(&scale))),
                    };
                    (LayerWeights::Dropout, next)
                }
                (LayerCache::Recurrent(c), LayerWeights::Recurrent(w), d) => {
                    let spec = self.spec.recurrent(k).expect("a recurrent layer");
                    let dy = match d {
                        Act::Seq(dy) => Output::Sequence(dy),
                        Act::Vec(dy) => Output::Last(dy),
                    };
                    let (g, dx) = recurrent::backward(&spec, w, c, dy, threads);
                    (LayerWeights::Recurrent(g), Act::Seq(dx))
                }
                _ => unreachable!("validated stack"),
            };
            grads.push(g);
            d = next;
        }
        let Act::Seq(de) = d else {
            unreachable!("the embedding outputs a sequence")
        };
        let dw = match &pass.ids {
            Some(ids) => embedding::backward(self.spec.vocab(), ids.view(), de.view()),
            None => Array2::zeros(self.table().dim()),
        };
        grads.push(LayerWeights::Embedding(dw));
        grads.reverse();
        Grads {
            weights: Weights { layers: grads },
            d_embedded: de,
        }
    }

    /// Mean cross-entropy of a batch and every gradient. `ids` (T, B), `labels` (B).
    pub fn loss_and_grad(
        &self,
        ids: ArrayView2<u32>,
        labels: ndarray::ArrayView1<i64>,
        dropout_rng: Option<&mut ChaCha8Rng>,
        threads: usize,
    ) -> (f64, Array2<F>, Grads<F>) {
        let pass = self.forward(ids, dropout_rng, threads);
        let (loss, dz) = dense::softmax_cross_entropy(pass.logits.view(), labels);
        let logits = pass.logits.clone();
        (loss, logits, self.backward(pass, dz, threads))
    }

    /// Logits (N, C) of every sequence of `ids` (T, N) in evaluation mode, `chunk` at a time.
    pub fn predict(&self, ids: ArrayView2<u32>, chunk: usize, threads: usize) -> Array2<F> {
        let n = ids.ncols();
        let parts: Vec<Array2<F>> = (0..n)
            .step_by(chunk.max(1))
            .map(|s| {
                let part = ids.slice(s![.., s..(s + chunk).min(n)]);
                self.forward(part, None, threads).logits
            })
            .collect();
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views).expect("same number of classes")
    }
}

/// A cached dropout scale as a view of the activation's dimensionality.
fn view_as<F: Real, D: ndarray::Dimension>(
    scale: &Option<ArrayD<F>>,
) -> Option<ndarray::ArrayView<'_, F, D>> {
    scale.as_ref().map(|s| {
        s.view()
            .into_dimensionality()
            .expect("the scale has the activation's shape")
    })
}
