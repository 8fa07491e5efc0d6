//! The fast cells (`rnnlab::cell::{rnn, lstm, gru}`, the RNN with tanh and with ReLU: AVX-512
//! products, fused vectorised gate math, f32 polynomial exp, batch split over threads) against
//! the plain reference implementation (`rnnlab::cell::reference`), on every output of forward
//! and backward: hidden and cell states, every parameter gradient, ∂L/∂x, ∂L/∂h₀, ∂L/∂c₀ and
//! the probes.
//!
//! - f64 fast vs f64 reference: the same mathematics in a different order of summation, so
//!   they agree to round-off (1e-12 relative to each tensor's largest entry).
//! - f32 fast vs f64 reference: within 1e-4 of each tensor's largest entry (f32 round-off
//!   over T steps and the polynomial exp).
//! - Threads: 1, 2 and 3 threads give bit-identical results, in f32 and f64.
//!
//! Shapes are chosen to hit every edge: H not a multiple of the 16-lane vectors, B not a
//! multiple of the 8-row register tiles nor of the thread count, and the standard adding-task
//! shape (I = 2, H = B = 64).

use ndarray::{Array2, Array3, ArrayD, ArrayView3};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnnlab::cell::rnn::Activation;
use rnnlab::cell::{self, Backward, LayerGrads, State, reference};
use rnnlab::init::{Init, init_params};
use rnnlab::params::{CellKind, LayerParams};
use rnnlab::real::Real;

/// (I, H, B, T)
const SHAPES: [(usize, usize, usize, usize); 7] = [
    (3, 37, 13, 9),
    (2, 64, 64, 20),
    (5, 16, 1, 4),
    (2, 20, 70, 6),   // row blocks of uneven size for 2 and 3 threads
    (2, 24, 40, 27),  // 3 and 5 chunks of rows, T not a multiple of the slice length
    (3, 40, 48, 50),  // T·B = 2400: the weight-gradient product cut along T·B between threads
    (2, 130, 20, 12), // H ≥ 128: each step prefetches the next step's rows of the caches
];

struct Problem {
    params: LayerParams<f64>,
    x: Array3<f64>,
    state0: State<f64>,
    dh_out: Array3<f64>,
}

fn problem(cell: CellKind, (i, h, b, t): (usize, usize, usize, usize), seed: u64) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = init_params::<f64>(cell, i, h, 1, &Init::default(), &mut rng).layer;
    let mut u = |lo: f64, hi: f64| rng.random_range(lo..hi);
    let x = Array3::from_shape_simple_fn((t, b, i), || u(-1.0, 1.0));
    let state0 = State {
        h: Array2::from_shape_simple_fn((b, h), || u(-0.8, 0.8)),
        c: cell
            .has_cell_state()
            .then(|| Array2::from_shape_simple_fn((b, h), || u(-1.5, 1.5))),
    };
    let dh_out = Array3::from_shape_simple_fn((t, b, h), || u(-0.5, 0.5));
    Problem {
        params,
        x,
        state0,
        dh_out,
    }
}

/// Everything one forward + backward produces, as named f64 tensors.
fn outputs<F: Real>(
    cache_hs: &Array3<F>,
    cache_cs: Option<&Array3<F>>,
    g: &LayerGrads<F>,
) -> Vec<(&'static str, ArrayD<f64>)> {
    let wide = |a: ArrayD<F>| a.mapv(|v| v.f64());
    let mut out = vec![
        ("hs", wide(cache_hs.clone().into_dyn())),
        ("weight_ih", wide(g.params.weight_ih.clone().into_dyn())),
        ("weight_hh", wide(g.params.weight_hh.clone().into_dyn())),
        ("bias_ih", wide(g.params.bias_ih.clone().into_dyn())),
        ("bias_hh", wide(g.params.bias_hh.clone().into_dyn())),
        ("dx", wide(g.dx.clone().expect("dx asked for").into_dyn())),
        ("dh0", wide(g.dstate0.h.clone().into_dyn())),
        (
            "dh_norm",
            ndarray::Array1::from(g.probes.dh_norm.clone()).into_dyn(),
        ),
    ];
    if let Some(cs) = cache_cs {
        out.push(("cs", wide(cs.clone().into_dyn())));
        let dc0 = g.dstate0.c.clone().expect("LSTM has dc0");
        out.push(("dc0", wide(dc0.into_dyn())));
        let dc_norm = g.probes.dc_norm.clone().expect("LSTM has dc probes");
        out.push(("dc_norm", ndarray::Array1::from(dc_norm).into_dyn()));
    }
    out
}

fn run_fast<F: Real>(
    cell: CellKind,
    p: &Problem,
    threads: usize,
) -> Vec<(&'static str, ArrayD<f64>)> {
    run_fast_masked::<F>(cell, p, None, threads)
}

/// [`run_fast`] with a mask (T, B) of skipped steps.
fn run_fast_masked<F: Real>(
    cell: CellKind,
    p: &Problem,
    mask: Option<&Array2<f64>>,
    threads: usize,
) -> Vec<(&'static str, ArrayD<f64>)> {
    let params = LayerParams {
        weight_ih: p.params.weight_ih.mapv(F::of),
        weight_hh: p.params.weight_hh.mapv(F::of),
        bias_ih: p.params.bias_ih.mapv(F::of),
        bias_hh: p.params.bias_hh.mapv(F::of),
    };
    let x = p.x.mapv(F::of);
    let state0 = State {
        h: p.state0.h.mapv(F::of),
        c: p.state0.c.as_ref().map(|c| c.mapv(F::of)),
    };
    let dh_out = p.dh_out.mapv(F::of);
    let mask = mask.map(|m| m.mapv(F::of));
    let mask = mask.as_ref().map(|m| m.view());
    let cache = cell::forward_masked(cell, &params, x.view(), mask, &state0, threads);
    let hs = cache.hs().clone();
    let cs = match &cache {
        cell::Cache::Lstm(c) => Some(c.cs.clone()),
        cell::Cache::Rnn(_) | cell::Cache::Gru(_) => None,
    };
    let how = Backward {
        threads,
        input_grad: true,
    };
    let g = cell::backward(&params, cache, dh_out.view(), how);
    outputs(&hs, cs.as_ref(), &g)
}

fn run_reference(cell: CellKind, p: &Problem) -> Vec<(&'static str, ArrayD<f64>)> {
    let dh: ArrayView3<f64> = p.dh_out.view();
    match cell {
        CellKind::Rnn | CellKind::RnnRelu => {
            let act = match cell {
                CellKind::RnnRelu => Activation::Relu,
                _ => Activation::Tanh,
            };
            let c = reference::rnn_forward(&p.params, p.x.view(), p.state0.h.view(), act);
            let hs = c.hs.clone();
            let g = reference::rnn_backward(&p.params, c, dh);
            outputs(&hs, None, &g)
        }
        CellKind::Gru => {
            let c = reference::gru_forward(&p.params, p.x.view(), p.state0.h.view());
            let hs = c.hs.clone();
            let g = reference::gru_backward(&p.params, c, dh);
            outputs(&hs, None, &g)
        }
        CellKind::Lstm => {
            let c0 = p.state0.c.as_ref().unwrap();
            let c = reference::lstm_forward(&p.params, p.x.view(), p.state0.h.view(), c0.view());
            let (hs, cs) = (c.hs.clone(), c.cs.clone());
            let g = reference::lstm_backward(&p.params, c, dh);
            outputs(&hs, Some(&cs), &g)
        }
    }
}

/// Every tensor within `tol` × (its largest reference entry).
fn assert_close(
    what: &str,
    got: &[(&'static str, ArrayD<f64>)],
    want: &[(&'static str, ArrayD<f64>)],
    tol: f64,
) {
    assert_eq!(got.len(), want.len());
    for ((name, g), (name2, w)) in got.iter().zip(want) {
        assert_eq!(name, name2);
        assert_eq!(g.shape(), w.shape(), "{what}: {name} shape");
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            scale > 0.0,
            "{what}: {name} is all zeros, the check proves nothing"
        );
        let err = g
            .iter()
            .zip(w)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= tol * scale,
            "{what}: {name} differs by {err:e} (scale {scale:e}, tolerance {tol:e})"
        );
    }
}

#[test]
fn f64_fast_matches_reference_to_round_off() {
    for cell in CellKind::ALL {
        for (k, shape) in SHAPES.into_iter().enumerate() {
            let p = problem(cell, shape, k as u64);
            let want = run_reference(cell, &p);
            let got = run_fast::<f64>(cell, &p, 1);
            assert_close(&format!("{cell} f64 {shape:?}"), &got, &want, 1e-12);
        }
    }
}

#[test]
fn f32_fast_matches_f64_reference() {
    for cell in CellKind::ALL {
        for (k, shape) in SHAPES.into_iter().enumerate() {
            let p = problem(cell, shape, 10 + k as u64);
            let want = run_reference(cell, &p);
            let got = run_fast::<f32>(cell, &p, 1);
            assert_close(&format!("{cell} f32 {shape:?}"), &got, &want, 1e-4);
        }
    }
}

#[test]
fn thread_count_does_not_change_a_bit() {
    for cell in CellKind::ALL {
        for (k, shape) in SHAPES.into_iter().enumerate() {
            let p = problem(cell, shape, 20 + k as u64);
            let one32 = run_fast::<f32>(cell, &p, 1);
            let one64 = run_fast::<f64>(cell, &p, 1);
            for threads in [2, 3] {
                assert_eq!(
                    one32,
                    run_fast::<f32>(cell, &p, threads),
                    "{cell} f32 {shape:?} {threads} threads"
                );
                assert_eq!(
                    one64,
                    run_fast::<f64>(cell, &p, threads),
                    "{cell} f64 {shape:?} {threads} threads"
                );
            }
        }
    }
}

/// A mask (T, B) with about 30% of the steps skipped.
fn random_mask(t: usize, b: usize, seed: u64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((t, b), || if rng.random_bool(0.3) { 0.0 } else { 1.0 })
}

/// The same with a mask: skipped steps carry state and gradient through the slices of time
/// that different threads run.
#[test]
fn thread_count_does_not_change_a_bit_with_a_mask() {
    for cell in CellKind::ALL {
        for (k, shape) in SHAPES.into_iter().enumerate() {
            let p = problem(cell, shape, 40 + k as u64);
            let (_, _, b, t) = shape;
            let mask = random_mask(t, b, 50 + k as u64);
            let one = run_fast_masked::<f32>(cell, &p, Some(&mask), 1);
            assert_ne!(
                one,
                run_fast::<f32>(cell, &p, 1),
                "the mask changes something"
            );
            for threads in [2, 3] {
                let got = run_fast_masked::<f32>(cell, &p, Some(&mask), threads);
                assert_eq!(one, got, "{cell} {shape:?} {threads} threads");
            }
        }
    }
}

/// Training does not ask for ∂L/∂x, and then none is computed; everything else is the same.
#[test]
fn input_gradient_is_skipped_when_not_asked_for() {
    let cell = CellKind::Lstm;
    let p = problem(cell, SHAPES[0], 30);
    let (params, x, s0) = (&p.params, p.x.view(), &p.state0);
    let with = cell::backward(
        params,
        cell::forward(cell, params, x, s0, 1),
        p.dh_out.view(),
        Backward::default(),
    );
    let how = Backward {
        threads: 1,
        input_grad: false,
    };
    let without = cell::backward(
        params,
        cell::forward(cell, params, x, s0, 1),
        p.dh_out.view(),
        how,
    );
    assert!(without.dx.is_none());
    assert_eq!(with.params, without.params);
    assert_eq!(with.probes, without.probes);
}

/// ∂L/∂h from above given for the last T_out steps only (as the head gives it when it reads
/// only the last state) is the same as the full (T, B, H) array with zeros before: bit for
/// bit, in f32 and f64, with and without a mask, on 1 and 2 threads.
#[test]
fn gradient_from_above_for_the_last_steps_only_is_zero_before() {
    for cell in CellKind::ALL {
        for (k, shape) in SHAPES.into_iter().enumerate() {
            let (_, _, b, t) = shape;
            let mut padded = problem(cell, shape, 60 + k as u64);
            let mask = random_mask(t, b, 70 + k as u64);
            for t_out in [1, t.div_ceil(2), t] {
                padded
                    .dh_out
                    .slice_mut(ndarray::s![..t - t_out, .., ..])
                    .fill(0.0);
                let short = Problem {
                    params: padded.params.clone(),
                    x: padded.x.clone(),
                    state0: padded.state0.clone(),
                    dh_out: padded
                        .dh_out
                        .slice(ndarray::s![t - t_out.., .., ..])
                        .to_owned(),
                };
                for (threads, mask) in [(1, None), (2, None), (2, Some(&mask))] {
                    let what = format!("{cell} {shape:?} T_out = {t_out}, {threads} threads");
                    assert_eq!(
                        run_fast_masked::<f32>(cell, &short, mask, threads),
                        run_fast_masked::<f32>(cell, &padded, mask, threads),
                        "{what} f32"
                    );
                    assert_eq!(
                        run_fast_masked::<f64>(cell, &short, mask, threads),
                        run_fast_masked::<f64>(cell, &padded, mask, threads),
                        "{what} f64"
                    );
                }
            }
        }
    }
}
