//! A Keras-style recurrent layer over the cells of [`crate::cell`]: padding mask, optional
//! `Bidirectional` wrapper, and `return_sequences`.
//!
//! ```text
//! x (T, B, I), mask m (T, B) ∈ {0, 1} (1 = a real token)
//! forward direction:  h→_t = cell(x_t, h→_{t−1})  where m_t = 1;  h→_t = h→_{t−1} where m_t = 0
//! reverse direction:  the same cell (own weights) over x_{T−1}, …, x_0 with the mask reversed,
//!                     h←_t = the reverse run's state after reading x_t
//! return_sequences:   y_t = m_t · [h→_t, h←_t]      (T, B, D·H), zero at masked steps
//! otherwise:          y   = [h→_{T−1}, h←_0]        (B, D·H), each the state after the
//!                                                    last real token in its direction
//! ```
//! (D = 2 directions when bidirectional, else 1; the LSTM's c is masked like h.) Masked steps
//! neither change the state nor receive gradient (Keras' `mask_zero`), which the cells do
//! themselves ([`crate::cell::forward_masked`]); so pre- and post-padded versions of the same
//! sequences give the same final states. Zero outputs at masked steps are what Keras'
//! `Bidirectional` returns; a masked layer above never reads them either way.
//!
//! The reversed run is the same cell code given reversed views of x and the mask (the cell
//! copies its input into its cache anyway, so reversing costs no extra pass); its outputs
//! and gradients are reversed back here. With two or more threads the two directions run
//! side by side, each on half of the threads.

use crate::cell::{self, Backward, Cache, State};
use crate::params::{CellKind, LayerParams};
use crate::real::Real;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis, s};

/// The shape of one recurrent layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecurrentSpec {
    pub cell: CellKind,
    /// Hidden units H per direction.
    pub units: usize,
    pub bidirectional: bool,
    pub return_sequences: bool,
}

impl RecurrentSpec {
    /// Output features D·H.
    pub fn output_size(&self) -> usize {
        self.units * self.directions()
    }

    /// D: 2 when bidirectional, else 1.
    pub fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }
}

/// The weights of one layer: one cell per direction (PyTorch's `_reverse` tensors).
#[derive(Clone, Debug, PartialEq)]
pub struct Recurrent<F> {
    /// The forward direction.
    pub forward: LayerParams<F>,
    /// The reverse direction (bidirectional layers only).
    pub reverse: Option<LayerParams<F>>,
}

/// What backward needs: each direction's cell cache and the mask.
pub struct RecurrentCache<F> {
    forward: Cache<F>,
    reverse: Option<Cache<F>>,
    /// m: (T, B)
    mask: Option<Array2<F>>,
}

/// A layer's output: a sequence (T, B, D·H) or one vector per sequence (B, D·H).
#[derive(Clone, Debug, PartialEq)]
pub enum Output<F> {
    Sequence(Array3<F>),
    Last(Array2<F>),
}

/// Runs the layer over `x` (T, B, I) from zero states, skipping the steps where `mask` (T, B)
/// is 0. `threads` ≥ 2 runs the two directions of a bidirectional layer side by side.
pub fn forward<F: Real>(
    spec: &RecurrentSpec,
    w: &Recurrent<F>,
    x: ArrayView3<F>,
    mask: Option<ArrayView2<F>>,
    threads: usize,
) -> (Output<F>, RecurrentCache<F>) {
    let (t_len, b, _) = x.dim();
    let h = spec.units;
    let state0 = State::zeros(spec.cell, b, h);
    let run_forward =
        |threads| cell::forward_masked(spec.cell, &w.forward, x, mask, &state0, threads);
    let run_reverse = |p: &LayerParams<F>, threads| {
        let x_rev = x.slice(s![..;-1, .., ..]);
        let m_rev = mask.map(|m| m.slice_move(s![..;-1, ..]));
        cell::forward_masked(spec.cell, p, x_rev, m_rev, &state0, threads)
    };
    let (fwd, rev) = match &w.reverse {
        None => (run_forward(threads), None),
        Some(p) if threads >= 2 => {
            let (f, r) = cell::join(
                || run_forward(threads / 2),
                || run_reverse(p, threads - threads / 2),
            );
            (f, Some(r))
        }
        Some(p) => (run_forward(1), Some(run_reverse(p, 1))),
    };

    let out = if spec.return_sequences {
        // y_t = m_t · [h→_t, h←_t]: h→_t is hs[t+1] of the forward run; h←_t is the reverse
        // run's state after its step T−1−t, i.e. its hs[T−t].
        let mut y = Array3::zeros((t_len, b, spec.output_size()));
        y.slice_mut(s![.., .., ..h])
            .assign(&fwd.hs().slice(s![1.., .., ..]));
        if let Some(r) = &rev {
            y.slice_mut(s![.., .., h..])
                .assign(&r.hs().slice(s![1..;-1, .., ..]));
        }
        if let Some(m) = mask {
            y *= &m.insert_axis(Axis(2));
        }
        Output::Sequence(y)
    } else {
        // y = [h→_{T−1}, h←_0]: the final state of each run
        let mut y = Array2::zeros((b, spec.output_size()));
        y.slice_mut(s![.., ..h])
            .assign(&fwd.hs().index_axis(Axis(0), t_len));
        if let Some(r) = &rev {
            y.slice_mut(s![.., h..])
                .assign(&r.hs().index_axis(Axis(0), t_len));
        }
        Output::Last(y)
    };
    let cache = RecurrentCache {
        forward: fwd,
        reverse: rev,
        mask: mask.map(|m| m.to_owned()),
    };
    (out, cache)
}

/// Backward: consumes the cache, takes dL/dy (the shape of the output) and returns the
/// layer's gradients and dL/dx (T, B, I).
pub fn backward<F: Real>(
    spec: &RecurrentSpec,
    w: &Recurrent<F>,
    cache: RecurrentCache<F>,
    dy: Output<F>,
    threads: usize,
) -> (Recurrent<F>, Array3<F>) {
    let RecurrentCache {
        forward: fwd,
        reverse: rev,
        mask,
    } = cache;
    let h = spec.units;
    // dL/dh_t arriving from above for each run, in the run's own time order, for the last
    // T_out steps (see `cell::backward`): (T, B, H) for a sequence output, (1, B, H) for the
    // last state only.
    let (dh_fwd, dh_rev) = match dy {
        Output::Sequence(mut dy) => {
            // forward was y_t = m_t · [h→_t, h←_t], so dh→_t = m_t·dy_t[:H], dh←_t = m_t·dy_t[H:]
            if let Some(m) = &mask {
                dy *= &m.view().insert_axis(Axis(2));
            }
            let own = |v: ArrayView3<F>| v.as_standard_layout().into_owned();
            let dh_rev = rev.as_ref().map(|_| own(dy.slice(s![..;-1, .., h..])));
            (own(dy.slice(s![.., .., ..h])), dh_rev)
        }
        Output::Last(dy) => {
            // forward was y = [h→_{T−1}, h←_0] (each run's last state)
            let last = |cols| dy.slice(cols).to_owned().insert_axis(Axis(0));
            let dh_rev = rev.as_ref().map(|_| last(s![.., h..]));
            (last(s![.., ..h]), dh_rev)
        }
    };
    let how = |threads| Backward {
        threads,
        input_grad: true,
    };
    let back = |p: &LayerParams<F>, c: Cache<F>, dh: &Array3<F>, threads| {
        cell::backward(p, c, dh.view(), how(threads))
    };
    let (g_fwd, g_rev) = match (rev, &w.reverse, &dh_rev) {
        (Some(rc), Some(rp), Some(dr)) if threads >= 2 => {
            let (f, r) = cell::join(
                || back(&w.forward, fwd, &dh_fwd, threads / 2),
                || back(rp, rc, dr, threads - threads / 2),
            );
            (f, Some(r))
        }
        (Some(rc), Some(rp), Some(dr)) => {
            (back(&w.forward, fwd, &dh_fwd, 1), Some(back(rp, rc, dr, 1)))
        }
        _ => (back(&w.forward, fwd, &dh_fwd, threads), None),
    };
    let mut dx = g_fwd.dx.expect("input gradient asked for");
    let reverse = g_rev.map(|g| {
        // the reverse run read x reversed: its dx comes back reversed
        dx += &g
            .dx
            .as_ref()
            .expect("input gradient asked for")
            .slice(s![..;-1, .., ..]);
        g.params
    });
    let grads = Recurrent {
        forward: g_fwd.params,
        reverse,
    };
    (grads, dx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{Init, init_params};
    use crate::seq::MASKED_CELLS;
    use ndarray::Array3;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A bidirectional layer on two threads (one direction each, `cell::join`) computes
    /// exactly what it computes on one: outputs, ∂L/∂x and every weight gradient, in f32 with
    /// a mask, for every cell.
    #[test]
    fn both_directions_side_by_side_are_bit_identical() {
        for cell in MASKED_CELLS {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let mut layer = || {
                let seed = rng.random();
                init_params::<f32>(
                    cell,
                    3,
                    5,
                    1,
                    &Init::default(),
                    &mut ChaCha8Rng::seed_from_u64(seed),
                )
                .layer
            };
            let w = Recurrent {
                forward: layer(),
                reverse: Some(layer()),
            };
            let x = Array3::from_shape_fn((7, 4, 3), |(t, b, i)| {
                ((t * 12 + b * 3 + i) as f32 * 0.41).sin()
            });
            let m = Array2::from_shape_fn((7, 4), |(t, b)| f32::from(t + b >= 2));
            let spec = RecurrentSpec {
                cell,
                units: 5,
                bidirectional: true,
                return_sequences: true,
            };
            let run = |threads| {
                let (y, cache) = forward(&spec, &w, x.view(), Some(m.view()), threads);
                let Output::Sequence(y) = y else {
                    unreachable!()
                };
                let dy = y.mapv(|v| v * 0.5 - 0.1);
                let (grads, dx) = backward(&spec, &w, cache, Output::Sequence(dy), threads);
                (y, grads, dx)
            };
            let (one, two) = (run(1), run(2));
            assert_eq!(one.0, two.0, "{cell}: outputs");
            assert_eq!(one.1, two.1, "{cell}: weight gradients");
            assert_eq!(one.2, two.2, "{cell}: input gradient");
            assert!(
                one.1
                    .reverse
                    .is_some_and(|g| g.weight_hh.iter().any(|&v| v != 0.0))
            );
        }
    }

    /// The same 3 real steps, pre-padded and post-padded to T = 6, give the same final
    /// states in both directions, and the same outputs at the real steps (shifted); masked
    /// steps output zeros and pass no gradient to their inputs.
    #[test]
    fn pre_and_post_padding_give_the_same_result() {
        for cell in MASKED_CELLS {
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let mut layer = || {
                init_params::<f64>(
                    cell,
                    2,
                    3,
                    1,
                    &Init::default(),
                    &mut ChaCha8Rng::seed_from_u64(rng.random()),
                )
                .layer
            };
            let w = Recurrent {
                forward: layer(),
                reverse: Some(layer()),
            };
            let real = Array3::from_shape_fn((3, 1, 2), |(t, _, i)| {
                (t as f64 - 1.0) * 0.7 + i as f64 * 0.3
            });
            let mut pre = Array3::from_elem((6, 1, 2), 5.0); // padding steps hold garbage
            let mut post = pre.clone();
            pre.slice_mut(s![3.., .., ..]).assign(&real);
            post.slice_mut(s![..3, .., ..]).assign(&real);
            let m_pre = Array2::from_shape_fn((6, 1), |(t, _)| f64::from(t >= 3));
            let m_post = Array2::from_shape_fn((6, 1), |(t, _)| f64::from(t < 3));
            for return_sequences in [false, true] {
                let spec = RecurrentSpec {
                    cell,
                    units: 3,
                    bidirectional: true,
                    return_sequences,
                };
                let run = |x: &Array3<f64>, m: &Array2<f64>, threads| {
                    forward(&spec, &w, x.view(), Some(m.view()), threads)
                };
                let ((y_pre, c_pre), (y_post, _)) = (run(&pre, &m_pre, 1), run(&post, &m_post, 2));
                match (&y_pre, &y_post) {
                    (Output::Last(a), Output::Last(b)) => {
                        assert!(
                            (a - b).iter().all(|d| d.abs() < 1e-12),
                            "{cell}: {a} vs {b}"
                        )
                    }
                    (Output::Sequence(a), Output::Sequence(b)) => {
                        let d = &a.slice(s![3.., .., ..]) - &b.slice(s![..3, .., ..]);
                        assert!(d.iter().all(|d| d.abs() < 1e-12), "{cell}");
                        assert!(a.slice(s![..3, .., ..]).iter().all(|&v| v == 0.0));
                        assert!(b.slice(s![3.., .., ..]).iter().all(|&v| v == 0.0));
                    }
                    _ => unreachable!(),
                }
                let dy = match y_pre {
                    Output::Last(y) => Output::Last(y.mapv(|_| 1.0)),
                    Output::Sequence(y) => Output::Sequence(y.mapv(|_| 1.0)),
                };
                let (_, dx) = backward(&spec, &w, c_pre, dy, 1);
                assert!(
                    dx.slice(s![..3, .., ..]).iter().all(|&v| v == 0.0),
                    "{cell}"
                );
                assert!(
                    dx.slice(s![3.., .., ..]).iter().any(|&v| v != 0.0),
                    "{cell}"
                );
            }
        }
    }
}
