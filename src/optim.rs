//! Optimizers (SGD with momentum, RMSProp, Adam) and gradient clipping, with PyTorch's
//! update rules so that hyper-parameters mean the same thing as in `torch.optim`.
//!
//! Both work on any model: [`Optimizer::update`] and [`clip_tensors`] take the model's tensors
//! as (parameter, gradient) views; [`Optimizer::step`] and [`clip`] are those for [`Params`].
//!
//! The training loop's order is fixed by design: backward → probes read the raw gradient →
//! clip → optimizer step. Nothing here ever runs inside backward.
//!
//! An update of a large model is shared out among [`Optimizer::threads`] threads, the
//! entries cut into one run per thread: every entry is updated on its own, so the results
//! are the same for any number of threads (tested).

use crate::params::Params;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Zip};
use serde::{Deserialize, Serialize};

/// Which optimizer, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum OptimizerKind {
    /// buf ← μ·buf + g; θ ← θ − lr·buf  (`torch.optim.SGD`, dampening 0)
    Sgd { momentum: f64 },
    /// v ← α·v + (1−α)·g²; θ ← θ − lr·g / (√v + ε)  (`torch.optim.RMSprop`, α = 0.99)
    RmsProp { alpha: f64, eps: f64 },
    /// Adam with bias correction (`torch.optim.Adam`, β = (0.9, 0.999), ε = 1e-8)
    Adam { beta1: f64, beta2: f64, eps: f64 },
}

impl OptimizerKind {
    /// Names `--optimizer` accepts.
    pub const NAMES: [&'static str; 3] = ["sgd", "rmsprop", "adam"];

    /// The optimizer called `name` with PyTorch's default hyper-parameters (`momentum` for SGD).
    pub fn by_name(name: &str, momentum: f64) -> Option<OptimizerKind> {
        Some(match name {
            "sgd" => OptimizerKind::Sgd { momentum },
            "rmsprop" => OptimizerKind::RmsProp {
                alpha: 0.99,
                eps: 1e-8,
            },
            "adam" => OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Sgd { .. } => "sgd",
            OptimizerKind::RmsProp { .. } => "rmsprop",
            OptimizerKind::Adam { .. } => "adam",
        }
    }
}

/// How gradients are clipped before the update.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Clip {
    None,
    /// Rescale all gradients together when their global L2 norm exceeds `max`
    /// (Pascanu et al. 2013, Algorithm 1; `torch.nn.utils.clip_grad_norm_`).
    Norm {
        max: f64,
    },
    /// Clamp every entry to [−max, max] (`torch.nn.utils.clip_grad_value_`).
    Value {
        max: f64,
    },
}

impl std::fmt::Display for Clip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clip::None => write!(f, "no clipping"),
            Clip::Norm { max } => write!(f, "clip norm {max}"),
            Clip::Value { max } => write!(f, "clip value {max}"),
        }
    }
}

/// Applies `clip` to `grads` in place. Returns the global norm *before* clipping.
pub fn clip(grads: &mut Params<f32>, clip: Clip) -> f64 {
    let mut views: Vec<ArrayViewMutD<f32>> =
        grads.tensors_mut().into_iter().map(|(_, t)| t).collect();
    clip_tensors(&mut views, clip)
}

/// [`clip`] over any set of gradient tensors (all of one model, clipped together). Returns
/// the global L2 norm before clipping, accumulated in f64 ([`sum_of_squares`]).
pub fn clip_tensors(grads: &mut [ArrayViewMutD<f32>], clip: Clip) -> f64 {
    let sum = sum_of_squares(grads);
    let norm = sum.sqrt();
    match clip {
        Clip::None => {}
        Clip::Norm { max } => {
            // torch: clip_coef = max / (norm + 1e-6), applied when < 1
            let coef = max / (norm + 1e-6);
            if coef < 1.0 {
                for t in grads.iter_mut() {
                    t.mapv_inplace(|v| v * coef as f32);
                }
            }
        }
        Clip::Value { max } => {
            let m = max as f32;
            for t in grads.iter_mut() {
                t.mapv_inplace(|v| v.clamp(-m, m));
            }
        }
    }
    norm
}

/// Running sums [`sum_of_squares`] keeps.
const LANES: usize = 8;

/// Σ v² over every entry of `grads`, in f64: entry n of each tensor (in logical order) goes
/// into running sum n mod `LANES` (eight), and the sums are added in order at the end. The
/// order depends on the shapes alone, so the same gradients always give the same norm. One
/// running sum waits for each addition to finish before the next: clipping took 0.17 ms of an
/// LSTM H = 256 step (267k entries, on the calling thread, the other one waiting), with eight
/// sums 0.05 ms (sixteen: no faster).
pub fn sum_of_squares(grads: &[ArrayViewMutD<f32>]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let sq = |v: f32| f64::from(v) * f64::from(v);
    for t in grads {
        // (through slices where the layout allows: an IxDyn iterator costs several ns an
        // entry)
        match t.as_slice() {
            Some(s) => {
                let mut runs = s.chunks_exact(LANES);
                for run in &mut runs {
                    for (sum, &v) in lanes.iter_mut().zip(run) {
                        *sum += sq(v);
                    }
                }
                for (sum, &v) in lanes.iter_mut().zip(runs.remainder()) {
                    *sum += sq(v);
                }
            }
            None => {
                for (n, &v) in t.iter().enumerate() {
                    lanes[n % LANES] += sq(v);
                }
            }
        }
    }
    lanes.iter().sum()
}

/// An optimizer with its per-parameter state.
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub lr: f64,
    /// Threads an update may use (every entry is updated on its own, so the results do not
    /// depend on it).
    pub threads: usize,
    step: u64,
    /// First-moment / momentum buffers, one per tensor (empty until the first step).
    m: Vec<ArrayD<f32>>,
    /// Second-moment buffers (RMSProp, Adam).
    v: Vec<ArrayD<f32>>,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, lr: f64) -> Self {
        Optimizer {
            kind,
            lr,
            threads: 1,
            step: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    /// One update θ ← θ − lr·(…) of every tensor of `params` with gradient `grads`.
    pub fn step(&mut self, params: &mut Params<f32>, grads: &Params<f32>) {
        let mut pairs: Vec<_> = params
            .tensors_mut()
            .into_iter()
            .zip(grads.tensors())
            .map(|((_, p), (_, g))| (p, g))
            .collect();
        self.update(&mut pairs);
    }

    /// One update of any model's tensors, given as (parameter, gradient) pairs of equal shape,
    /// always in the same order (the optimizer's state is kept per position in this list).
    pub fn update(&mut self, pairs: &mut [(ArrayViewMutD<f32>, ArrayViewD<f32>)]) {
        if self.m.is_empty() {
            self.m = pairs
                .iter()
                .map(|(_, g)| ArrayD::zeros(g.shape()))
                .collect();
            self.v = self.m.clone();
        }
        assert_eq!(
            self.m.len(),
            pairs.len(),
            "the optimizer was built for a different set of tensors"
        );
        self.step += 1;
        let rule = Rule::new(self.kind, self.lr, self.step);
        // (parameter, first moment, second moment, gradient) as slices for every tensor whose
        // parameter and gradient are contiguous (the moments, owned, always are); any other
        // tensor entry by entry here (a 4-way IxDyn Zip does not vectorise)
        let mut slices = Vec::new();
        for (((p, g), m), v) in pairs.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            if p.as_slice().is_some() && g.as_slice().is_some() {
                slices.push((
                    p.as_slice_mut().expect("contiguous"),
                    m.as_slice_mut().expect("an owned array"),
                    v.as_slice_mut().expect("an owned array"),
                    g.as_slice().expect("contiguous"),
                ));
            } else {
                Zip::from(p)
                    .and(m)
                    .and(v)
                    .and(&*g)
                    .for_each(|p, m, v, &g| rule.apply(p, m, v, g));
            }
        }
        let total: usize = slices.iter().map(|(p, ..)| p.len()).sum();
        let threads = if total < PARALLEL_FROM {
            1
        } else {
            self.threads.max(1)
        };
        let work = share_out(slices, threads);
        crate::cell::run_parallel(work, |pieces| {
            for (p, m, v, g) in pieces {
                rule.apply_slices(p, m, v, g);
            }
        });
    }
}

/// Entries from which an update is shared out among the threads (Adam takes ~1 ns an entry
/// on one thread, 0.3 ms for an LSTM at H = 256; waking a helper costs a few µs).
const PARALLEL_FROM: usize = 1 << 15;

/// The (parameter, first moment, second moment, gradient) slices of the tensors, in order.
type Slices<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a [f32]);

/// `slices` cut, in order, into at most `parts` lists of pieces of equal total length (the
/// last shorter; a tensor may be cut between two lists).
fn share_out(slices: Vec<Slices<'_>>, parts: usize) -> Vec<Vec<Slices<'_>>> {
    let total: usize = slices.iter().map(|(p, ..)| p.len()).sum();
    let per = total.div_ceil(parts.max(1)).max(1);
    let (mut out, mut room): (Vec<Vec<Slices>>, usize) = (vec![Vec::new()], per);
    for (mut p, mut m, mut v, mut g) in slices {
        while !p.is_empty() {
            if room == 0 {
                out.push(Vec::new());
                room = per;
            }
            let n = room.min(p.len());
            let (p0, p1) = p.split_at_mut(n);
            let (m0, m1) = m.split_at_mut(n);
            let (v0, v1) = v.split_at_mut(n);
            let (g0, g1) = g.split_at(n);
            out.last_mut().expect("a list").push((p0, m0, v0, g0));
            (p, m, v, g) = (p1, m1, v1, g1);
            room -= n;
        }
    }
    out
}

/// One step's update of a single entry, with the step's constants.
#[derive(Clone, Copy)]
enum Rule {
    Sgd {
        lr: f32,
        mu: f32,
    },
    RmsProp {
        lr: f32,
        a: f32,
        e: f32,
    },
    Adam {
        b1: f32,
        b2: f32,
        e: f32,
        step_size: f32,
        c2_sqrt: f32,
    },
}

impl Rule {
    fn new(kind: OptimizerKind, lr: f64, step: u64) -> Rule {
        match kind {
            OptimizerKind::Sgd { momentum } => Rule::Sgd {
                lr: lr as f32,
                mu: momentum as f32,
            },
            OptimizerKind::RmsProp { alpha, eps } => Rule::RmsProp {
                lr: lr as f32,
                a: alpha as f32,
                e: eps as f32,
            },
            OptimizerKind::Adam { beta1, beta2, eps } => {
                let c1 = 1.0 - beta1.powi(step as i32);
                let c2 = 1.0 - beta2.powi(step as i32);
                Rule::Adam {
                    b1: beta1 as f32,
                    b2: beta2 as f32,
                    e: eps as f32,
                    step_size: (lr / c1) as f32,
                    c2_sqrt: c2.sqrt() as f32,
                }
            }
        }
    }

    /// θ (`p`) updated from its gradient `g`; `m` is SGD's momentum and Adam's first moment,
    /// `v` RMSProp's and Adam's second moment.
    #[inline(always)]
    fn apply(self, p: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        match self {
            Rule::Sgd { lr, mu } => {
                *m = mu * *m + g;
                *p -= lr * *m;
            }
            Rule::RmsProp { lr, a, e } => {
                *v = a * *v + (1.0 - a) * g * g;
                *p -= lr * g / (v.sqrt() + e);
            }
            Rule::Adam {
                b1,
                b2,
                e,
                step_size,
                c2_sqrt,
            } => {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= step_size * *m / (v.sqrt() / c2_sqrt + e);
            }
        }
    }

    /// [`Rule::apply`] over slices of equal length, the rule chosen once outside the loop
    /// (so that the loop vectorises: with the choice inside, it did not).
    fn apply_slices(self, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        let each = p.iter_mut().zip(m).zip(v).zip(g);
        match self {
            Rule::Sgd { .. } => each.for_each(|(((p, m), v), &g)| self.apply(p, m, v, g)),
            Rule::RmsProp { .. } => each.for_each(|(((p, m), v), &g)| self.apply(p, m, v, g)),
            Rule::Adam { .. } => each.for_each(|(((p, m), v), &g)| self.apply(p, m, v, g)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::CellKind;

    fn one_param(v: f32) -> Params<f32> {
        let mut p = Params::zeros(CellKind::Rnn, 1, 1, 1);
        p.layer.weight_ih[[0, 0]] = v;
        p
    }

    /// Adam's first step moves every parameter by lr·sign(g) (bias correction makes
    /// m̂/√v̂ = g/|g|), as in PyTorch.
    #[test]
    fn adam_first_step_is_lr_times_sign() {
        let mut p = one_param(1.0);
        let mut opt = Optimizer::new(OptimizerKind::by_name("adam", 0.0).unwrap(), 0.1);
        opt.step(&mut p, &one_param(-3.0));
        assert!((p.layer.weight_ih[[0, 0]] - 1.1).abs() < 1e-6);
    }

    /// SGD with momentum 0.9 on g = 1 twice: steps 0.1, then 0.19 (PyTorch's buffer rule).
    #[test]
    fn sgd_momentum_matches_torch() {
        let mut p = one_param(0.0);
        let mut opt = Optimizer::new(OptimizerKind::Sgd { momentum: 0.9 }, 0.1);
        opt.step(&mut p, &one_param(1.0));
        opt.step(&mut p, &one_param(1.0));
        assert!((p.layer.weight_ih[[0, 0]] + 0.29).abs() < 1e-6);
    }

    /// RMSProp's first step: v = 0.01 g², so θ moves by lr·g/(0.1|g|) = 10·lr·sign(g).
    #[test]
    fn rmsprop_first_step() {
        let mut p = one_param(0.0);
        let mut opt = Optimizer::new(OptimizerKind::by_name("rmsprop", 0.0).unwrap(), 0.01);
        opt.step(&mut p, &one_param(2.0));
        assert!((p.layer.weight_ih[[0, 0]] + 0.1).abs() < 1e-5);
    }

    /// An update shared out among threads changes every entry exactly as one thread does,
    /// for every optimizer, with tensors cut between threads (an LSTM of H = 96: 38 K
    /// entries, above PARALLEL_FROM) and one tensor given as a strided view.
    #[test]
    fn updates_do_not_depend_on_threads() {
        let filled = |seed: f32| {
            let mut p = Params::<f32>::zeros(CellKind::Lstm, 3, 96, 2);
            for (k, (_, t)) in p.tensors_mut().into_iter().enumerate() {
                let mut i = 0.0f32;
                t.into_iter().for_each(|v| {
                    i += 1.0;
                    *v = ((i * 0.618 + seed + k as f32).sin() * 0.5).powi(3);
                });
            }
            p
        };
        let total: usize = filled(0.0).tensors().iter().map(|(_, t)| t.len()).sum();
        assert!(total >= PARALLEL_FROM, "{total}");
        for kind in ["adam", "sgd", "rmsprop"] {
            let kind = OptimizerKind::by_name(kind, 0.9).unwrap();
            let run = |threads: usize| {
                let (mut p, mut opt) = (filled(0.0), Optimizer::new(kind, 0.01));
                opt.threads = threads;
                for step in 0..3 {
                    let g = filled(1.0 + step as f32);
                    // (the second tensor through a transposed view: entry by entry)
                    let mut pairs: Vec<_> = p
                        .tensors_mut()
                        .into_iter()
                        .zip(g.tensors())
                        .enumerate()
                        .map(|(k, ((_, p), (_, g)))| match k {
                            1 => (p.reversed_axes(), g.reversed_axes()),
                            _ => (p, g),
                        })
                        .collect();
                    opt.update(&mut pairs);
                }
                p
            };
            let one = run(1);
            for threads in [2, 3] {
                assert_eq!(run(threads), one, "{kind:?} on {threads} threads");
            }
        }
    }

    /// The parts cover every entry once, in order, and there are at most `parts` of them.
    #[test]
    fn share_out_covers_every_entry_in_order() {
        for (sizes, parts) in [
            (vec![5, 0, 17, 3], 4),
            (vec![10], 3),
            (vec![4, 4], 2),
            (vec![7], 1),
            (vec![], 3),
        ] {
            let mut data: Vec<Vec<f32>> = sizes
                .iter()
                .map(|&n| (0..n).map(|i| i as f32).collect())
                .collect();
            let (mut m, mut v) = (data.clone(), data.clone());
            let g = data.clone();
            let slices: Vec<Slices> = data
                .iter_mut()
                .zip(&mut m)
                .zip(&mut v)
                .zip(&g)
                .map(|(((p, m), v), g)| (&mut p[..], &mut m[..], &mut v[..], &g[..]))
                .collect();
            let out = share_out(slices, parts);
            assert!(out.len() <= parts.max(1));
            let flat: Vec<f32> = out
                .iter()
                .flatten()
                .flat_map(|(p, ..)| p.iter().copied())
                .collect();
            let want: Vec<f32> = g.iter().flatten().copied().collect();
            assert_eq!(flat, want, "{sizes:?} in {parts} parts");
        }
    }

    #[test]
    fn clipping_by_norm_and_value() {
        let mut g = Params::<f32>::zeros(CellKind::Rnn, 1, 1, 1);
        g.layer.weight_ih[[0, 0]] = 3.0;
        g.head.bias[0] = -4.0;
        let mut by_norm = g.clone();
        assert_eq!(clip(&mut by_norm, Clip::Norm { max: 1.0 }), 5.0);
        assert!((by_norm.global_norm() - 1.0).abs() < 1e-5);
        assert!((by_norm.layer.weight_ih[[0, 0]] - 0.6).abs() < 1e-5);
        let mut by_value = g.clone();
        clip(&mut by_value, Clip::Value { max: 1.0 });
        assert_eq!(
            (by_value.layer.weight_ih[[0, 0]], by_value.head.bias[0]),
            (1.0, -1.0)
        );
        let mut small = g.clone();
        clip(&mut small, Clip::Norm { max: 10.0 });
        assert_eq!(small, g);
    }

    /// The norm's sum of squares agrees with a plain f64 sum, over tensors whose lengths are
    /// not multiples of the lanes, one of them strided (summed in logical order all the same).
    #[test]
    fn sum_of_squares_is_the_sum() {
        let f = |n: usize| ((n * 7919) % 1013) as f32 / 97.0 - 5.0;
        let mut a = ndarray::Array::from_shape_fn((13, 7), |(i, j)| f(i * 7 + j)).into_dyn();
        let mut b = ndarray::Array::from_shape_fn(5, |i| f(i + 300)).into_dyn();
        let mut c = ndarray::Array::from_shape_fn((6, 9), |(i, j)| f(i * 9 + j + 500));
        let want: f64 = a
            .iter()
            .chain(b.iter())
            .chain(c.t().iter())
            .map(|&v| f64::from(v) * f64::from(v))
            .sum();
        let mut ct = c.view_mut().reversed_axes().into_dyn();
        assert!(ct.as_slice().is_none(), "the test wants a strided tensor");
        let got = sum_of_squares(&[a.view_mut(), b.view_mut(), ct.view_mut()]);
        assert!((got - want).abs() <= 1e-12 * want, "{got} against {want}");
    }
}
