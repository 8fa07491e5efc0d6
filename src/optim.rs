//! Optimizers (SGD with momentum, RMSProp, Adam) and gradient clipping, with PyTorch's
//! update rules so that hyper-parameters mean the same thing as in `torch.optim`.
//!
//! Both work on any model: [`Optimizer::update`] and [`clip_tensors`] take the model's tensors
//! as (parameter, gradient) views; [`Optimizer::step`] and [`clip`] are those for [`Params`].
//!
//! The training loop's order is fixed by design: backward → probes read the raw gradient →
//! clip → optimizer step. Nothing here ever runs inside backward.

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
/// the global L2 norm before clipping, accumulated in f64.
pub fn clip_tensors(grads: &mut [ArrayViewMutD<f32>], clip: Clip) -> f64 {
    // one sum in logical order over every entry (through slices where the layout allows:
    // an IxDyn iterator costs several ns an entry, on the calling thread alone)
    let mut sum = 0.0f64;
    let mut add = |&v: &f32| sum += f64::from(v) * f64::from(v);
    for t in grads.iter() {
        match t.as_slice() {
            Some(s) => s.iter().for_each(&mut add),
            None => t.iter().for_each(&mut add),
        }
    }
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

/// An optimizer with its per-parameter state.
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub lr: f64,
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
        let lr = self.lr as f32;
        for (k, (p, g)) in pairs.iter_mut().enumerate() {
            let (m, v) = (&mut self.m[k], &mut self.v[k]);
            match self.kind {
                OptimizerKind::Sgd { momentum } => {
                    let mu = momentum as f32;
                    Zip::from(p).and(m).and(&*g).for_each(|p, m, &g| {
                        *m = mu * *m + g;
                        *p -= lr * *m;
                    });
                }
                OptimizerKind::RmsProp { alpha, eps } => {
                    let (a, e) = (alpha as f32, eps as f32);
                    Zip::from(p).and(v).and(&*g).for_each(|p, v, &g| {
                        *v = a * *v + (1.0 - a) * g * g;
                        *p -= lr * g / (v.sqrt() + e);
                    });
                }
                OptimizerKind::Adam { beta1, beta2, eps } => {
                    let (b1, b2, e) = (beta1 as f32, beta2 as f32, eps as f32);
                    let c1 = 1.0 - beta1.powi(self.step as i32);
                    let c2 = 1.0 - beta2.powi(self.step as i32);
                    let step_size = (self.lr / c1) as f32;
                    let c2_sqrt = c2.sqrt() as f32;
                    let adam = |p: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
                        *m = b1 * *m + (1.0 - b1) * g;
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        *p -= step_size * *m / (v.sqrt() / c2_sqrt + e);
                    };
                    // as slices where all four allow it (a 4-way IxDyn Zip does not vectorise)
                    match (
                        p.as_slice_mut(),
                        m.as_slice_mut(),
                        v.as_slice_mut(),
                        g.as_slice(),
                    ) {
                        (Some(p), Some(m), Some(v), Some(g)) => {
                            for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                                adam(p, m, v, g);
                            }
                        }
                        _ => Zip::from(p)
                            .and(m)
                            .and(v)
                            .and(&*g)
                            .for_each(|p, m, v, &g| adam(p, m, v, g)),
                    }
                }
            }
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
}
