//! Kernel benchmarks (divan): the pieces of a training step in isolation, fast against
//! reference, so a regression in one kernel shows up by name. `cargo bench` runs them all;
//! `cargo bench -- lstm` filters. Shapes are those of the standard configuration
//! LSTM H = 128, B = 64, T = 100 (adding task: I = 2), unless a name says otherwise.
//! Whole training steps are measured by `rnnlab bench`, not here.

use divan::{Bencher, black_box};
use ndarray::{Array2, Array3};
use rnnlab::cell::rnn::Activation;
use rnnlab::cell::{self, Backward, State, gemm, reference};
use rnnlab::params::{CellKind, LayerParams};
use rnnlab::real::exp_f32;

fn main() {
    divan::main();
}

const T: usize = 100;
const B: usize = 64;
const I: usize = 2;

fn matrix(m: usize, n: usize, seed: f32) -> Array2<f32> {
    Array2::from_shape_fn((m, n), |(i, j)| {
        ((i * 131 + j * 71) as f32 * seed).sin() * 0.3
    })
}

fn layer(cell: CellKind, h: usize) -> LayerParams<f32> {
    let gh = cell.gates() * h;
    LayerParams {
        weight_ih: matrix(gh, I, 0.1),
        weight_hh: matrix(gh, h, 0.2),
        bias_ih: matrix(1, gh, 0.3).into_shape_with_order(gh).unwrap(),
        bias_hh: matrix(1, gh, 0.4).into_shape_with_order(gh).unwrap(),
    }
}

fn inputs() -> Array3<f32> {
    Array3::from_shape_fn((T, B, I), |(t, b, i)| {
        ((t * 7 + b * 3 + i) as f32 * 0.37).sin()
    })
}

/// The products of a step: (m, k)·(k, n), A transposed for the weight gradient
/// ([`gemm::mat_mul`] at every shape, ndarray's `general_mat_mul` for comparison).
const GEMM_SHAPES: [(&str, usize, usize, usize, bool); 5] = [
    ("recurrent (64,128)x(128,512)", 64, 128, 512, false),
    ("dh (64,512)x(512,128)", 64, 512, 128, false),
    ("weight grad (131,6400)x(6400,512)", 131, 6400, 512, true),
    ("recurrent B=128 (128,128)x(128,512)", 128, 128, 512, false),
    ("dh B=128 (128,512)x(512,128)", 128, 512, 128, false),
];

#[divan::bench(args = [0, 1, 2, 3, 4])]
fn gemm_kernel(bencher: Bencher, shape: usize) {
    let (_, m, k, n, tr) = GEMM_SHAPES[shape];
    let a = if tr {
        matrix(k, m, 0.3)
    } else {
        matrix(m, k, 0.3)
    };
    let a = if tr { a.reversed_axes() } else { a };
    let b = matrix(k, n, 0.7);
    let mut c = Array2::<f32>::zeros((m, n));
    bencher
        .counter(divan::counter::ItemsCount::new(2 * m * n * k))
        .bench_local(|| gemm::mat_mul(&a.view(), &b.view(), false, &mut c.view_mut()));
}

#[divan::bench(args = [0, 1, 2, 3, 4])]
fn gemm_ndarray(bencher: Bencher, shape: usize) {
    let (_, m, k, n, tr) = GEMM_SHAPES[shape];
    let a = if tr {
        matrix(k, m, 0.3)
    } else {
        matrix(m, k, 0.3)
    };
    let a = if tr { a.reversed_axes() } else { a };
    let b = matrix(k, n, 0.7);
    let mut c = Array2::<f32>::zeros((m, n));
    bencher
        .counter(divan::counter::ItemsCount::new(2 * m * n * k))
        .bench_local(|| ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c));
}

/// The per-step products with B packed once ([`gemm::PackedB`], as the cells use them), and
/// at half the batch (B = 32 rows: one thread's share with `--threads 2`).
const PER_STEP_SHAPES: [(&str, usize, usize, usize); 4] = [
    ("recurrent (64,128)x(128,512)", 64, 128, 512),
    ("dh (64,512)x(512,128)", 64, 512, 128),
    ("recurrent half batch (32,128)x(128,512)", 32, 128, 512),
    ("dh half batch (32,512)x(512,128)", 32, 512, 128),
];

#[divan::bench(args = [0, 1, 2, 3])]
fn gemm_per_step_in_place(bencher: Bencher, shape: usize) {
    let (_, m, k, n) = PER_STEP_SHAPES[shape];
    let (a, b) = (matrix(m, k, 0.3), matrix(k, n, 0.7));
    let mut c = Array2::<f32>::zeros((m, n));
    bencher
        .counter(divan::counter::ItemsCount::new(2 * m * n * k))
        .bench_local(|| gemm::mat_mul(&a.view(), &b.view(), false, &mut c.view_mut()));
}

#[divan::bench(args = [0, 1, 2, 3])]
fn gemm_per_step_packed(bencher: Bencher, shape: usize) {
    let (_, m, k, n) = PER_STEP_SHAPES[shape];
    let (a, b) = (matrix(m, k, 0.3), matrix(k, n, 0.7));
    let b = gemm::PackedB::new(b.view(), 1);
    let mut c = Array2::<f32>::zeros((m, n));
    bencher
        .counter(divan::counter::ItemsCount::new(2 * m * n * k))
        .bench_local(|| gemm::mat_mul_packed(&a.view(), &b, false, &mut c.view_mut()));
}

/// One step's pre-activations a = (b + x_t W_ihᵀ) + h_{t−1} W_hhᵀ for the whole batch
/// ((64, 2)·(2, 512) and (64, 128)·(128, 512)): the input projection computed inside the
/// product's tiles ([`gemm::mat_mul_packed_affine`], `fused`), or written by its own pass
/// and then accumulated into by the product (bit-identical).
#[divan::bench(args = [false, true])]
fn gemm_per_step_with_input_projection(bencher: Bencher, fused: bool) {
    let (m, k, n) = (B, 128, 512);
    let (x, w_ih_t, bias) = (matrix(m, I, 0.5), matrix(I, n, 0.1), matrix(1, n, 0.3));
    let (a, b) = (matrix(m, k, 0.3), matrix(k, n, 0.7));
    let b = gemm::PackedB::new(b.view(), 1);
    let affine = gemm::Affine {
        x: x.view(),
        w: w_ih_t.view(),
        bias: bias.row(0),
    };
    let mut c = Array2::<f32>::zeros((m, n));
    bencher
        .counter(divan::counter::ItemsCount::new(2 * m * n * (k + I)))
        .bench_local(|| {
            if fused {
                gemm::mat_mul_packed_affine(&affine, &a.view(), &b, &mut c.view_mut());
            } else {
                affine.write_to(&mut c.view_mut());
                gemm::mat_mul_packed(&a.view(), &b, true, &mut c.view_mut());
            }
        });
}

/// A (k, m) built into the weight-gradient product's layout, as the cells build [h | x | 1].
fn packed_at(a: &Array2<f32>) -> gemm::PackedAt<f32> {
    let (k, m) = a.dim();
    gemm::PackedAt::build(m, std::iter::once(0..k).collect(), 1, |p, dst| {
        dst.copy_from_slice(a.row(p).as_slice().expect("standard layout"))
    })
}

/// C = Aᵀ·B[.., ..C's columns] over all of A's rows (one piece), in calls of `piece` rows (a
/// multiple of KC) accumulated in order, as a thread advances its piece of the
/// weight-gradient product a slice of blocks at a time.
fn weight_grad_in_pieces(
    a: &gemm::PackedAt<f32>,
    b: &Array2<f32>,
    piece: usize,
    c: &mut Array2<f32>,
) {
    let (k, n) = (a.dim().0, c.ncols());
    let b = b.slice(ndarray::s![.., ..n]).insert_axis(ndarray::Axis(0));
    for k0 in (0..k).step_by(piece) {
        let ks = k0..(k0 + piece).min(k);
        gemm::mat_mul_at(a, ks, 0, &b, k0 > 0, &mut c.view_mut());
    }
}

/// The weight-gradient product (131, 6400)·(6400, 512) with [h | x | 1] prebuilt in the
/// kernel's layout ([`gemm::PackedAt`], as the cells use it; `gemm_kernel` shape 2 is the same
/// product with A read from a transposed view and packed inside), in one call and in calls of
/// 2048 rows (8 blocks, a slice of the threads' scheduler).
#[divan::bench(args = [false, true])]
fn gemm_weight_grad_packed_a(bencher: Bencher, cut: bool) {
    let (m, k, n) = (131, 6400, 512);
    let a = packed_at(&matrix(k, m, 0.3));
    let b = matrix(k, n, 0.7);
    let mut c = Array2::<f32>::zeros((m, n));
    let piece = if cut { 8 * gemm::KC } else { k };
    bencher
        .counter(divan::counter::ItemsCount::new(2 * m * n * k))
        .bench_local(|| weight_grad_in_pieces(&a, &b, piece, &mut c));
}

/// The weight-gradient product as one thread runs it in an LSTM H = 256 step: [h | x | 1]
/// prebuilt, (259, 6400)·(6400, 256) in 2048-row pieces, with da's rows `row` floats apart
/// (256: 4H at H = 64; 1024: 4H at H = 256). Each call takes the next of four copies of A and
/// da (in the buffer pool, so in huge pages as in a step), so that the operands come from L3
/// as they do after the backward loop, not from L2 as in `gemm_weight_grad_packed_a`.
#[divan::bench(args = [256, 1024])]
fn gemm_weight_grad_from_l3(bencher: Bencher, row: usize) {
    let (m, k, n) = (259, 6400, 256);
    let copies: Vec<(gemm::PackedAt<f32>, Array2<f32>)> = (0..4)
        .map(|c| {
            let a = packed_at(&matrix(k, m, 0.3 + c as f32));
            let mut b: Array2<f32> = cell::pool::zeros((k, row));
            b.assign(&matrix(k, row, 0.7 + c as f32));
            (a, b)
        })
        .collect();
    let mut c = Array2::<f32>::zeros((m, n));
    let mut next = 0;
    bencher
        .counter(divan::counter::ItemsCount::new(2 * m * n * k))
        .bench_local(|| {
            let (a, b) = &copies[next];
            next = (next + 1) % copies.len();
            weight_grad_in_pieces(a, b, 8 * gemm::KC, &mut c);
        });
}

/// The ceiling of every product: fused multiply-adds on registers only (16 independent
/// AVX-512 accumulators, no memory traffic), 32 flops each. The products' "peak" in
/// `rnnlab bench` is measured at the step's shapes and sits below this.
#[divan::bench]
fn fma_ceiling(bencher: Bencher) {
    const ROUNDS: usize = 100_000;
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        #[target_feature(enable = "avx512f")]
        fn fmas(rounds: usize) -> f32 {
            use std::arch::x86_64::*;
            let mut acc = [_mm512_set1_ps(0.0); 16];
            let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-3));
            for _ in 0..rounds {
                for v in acc.iter_mut() {
                    *v = _mm512_fmadd_ps(*v, a, b);
                }
            }
            _mm512_reduce_add_ps(
                acc.iter()
                    .fold(_mm512_set1_ps(0.0), |s, &v| _mm512_add_ps(s, v)),
            )
        }
        bencher
            .counter(divan::counter::ItemsCount::new(ROUNDS * 16 * 32))
            // SAFETY: AVX-512F was detected above
            .bench_local(|| unsafe { fmas(black_box(ROUNDS)) });
    }
}

/// Rows and units of the gate-pass benchmarks: one thread's chunk of a two-thread step at
/// H = 128 (every operand in L1, so that what is timed is the pass's own work).
const PASS_ROWS: usize = 16;
const PASS_H: usize = 128;

/// The GRU's forward gate pass alone over one chunk's step, counted in units (a block of 16
/// units is 16 items). `fetch`: also fetching "the next step's rows" (here its own, already
/// in L1: what the fetch instructions themselves cost).
#[divan::bench(args = [false, true])]
fn gate_pass_forward_gru(bencher: Bencher, fetch: bool) {
    let (b, h) = (PASS_ROWS, PASS_H);
    let ax = matrix(b, 3 * h, 0.3).into_raw_vec_and_offset().0;
    let ah = matrix(b, 3 * h, 0.7).into_raw_vec_and_offset().0;
    let b_hh = matrix(1, 3 * h, 0.4).into_raw_vec_and_offset().0;
    let h_prev = matrix(b, h, 0.9).into_raw_vec_and_offset().0;
    let (mut g, mut h_out) = (vec![0.0; b * 4 * h], vec![0.0; b * h]);
    let next = fetch.then_some([0, 0]);
    bencher
        .counter(divan::counter::ItemsCount::new(b * h))
        .bench_local(|| {
            cell::gru::gates_forward::<f32>(&ax, &ah, &b_hh, &h_prev, &mut g, &mut h_out, h, next)
        });
}

/// The LSTM's forward gate pass alone, as [`gate_pass_forward_gru`]. (It works in place on
/// the pre-activations, so every call starts from a copy of them; the copy is timed too.)
#[divan::bench(args = [false, true])]
fn gate_pass_forward_lstm(bencher: Bencher, fetch: bool) {
    let (b, h) = (PASS_ROWS, PASS_H);
    let a0 = matrix(b, 4 * h, 0.3).into_raw_vec_and_offset().0;
    let c_prev = matrix(b, h, 0.9).into_raw_vec_and_offset().0;
    let mut a = a0.clone();
    let (mut c, mut h_out) = (vec![0.0; b * h], vec![0.0; b * h]);
    let next = fetch.then_some([0, 0, 0]);
    bencher
        .counter(divan::counter::ItemsCount::new(b * h))
        .bench_local(|| {
            a.copy_from_slice(&a0);
            cell::lstm::gates_forward::<f32>(&mut a, &c_prev, &mut c, &mut h_out, h, next)
        });
}

#[divan::bench]
fn exp_fast_4096(bencher: Bencher) {
    let x: Vec<f32> = (0..4096).map(|k| (k as f32 - 2048.0) * 0.01).collect();
    let mut y = vec![0.0f32; 4096];
    bencher.bench_local(|| {
        for (y, &x) in y.iter_mut().zip(black_box(&x)) {
            *y = exp_f32(x);
        }
    });
}

#[divan::bench]
fn exp_libm_4096(bencher: Bencher) {
    let x: Vec<f32> = (0..4096).map(|k| (k as f32 - 2048.0) * 0.01).collect();
    let mut y = vec![0.0f32; 4096];
    bencher.bench_local(|| {
        for (y, &x) in y.iter_mut().zip(black_box(&x)) {
            *y = x.exp();
        }
    });
}

fn state(cell: CellKind, h: usize) -> State<f32> {
    State::zeros(cell, B, h)
}

#[divan::bench(args = [CellKind::Rnn, CellKind::Lstm], consts = [64, 128])]
fn forward<const H: usize>(bencher: Bencher, cell: CellKind) {
    let (p, x, s0) = (layer(cell, H), inputs(), state(cell, H));
    bencher.bench_local(|| cell::forward(cell, &p, x.view(), &s0, 1));
}

#[divan::bench(args = [CellKind::Rnn, CellKind::Lstm], consts = [64, 128])]
fn forward_2_threads<const H: usize>(bencher: Bencher, cell: CellKind) {
    let (p, x, s0) = (layer(cell, H), inputs(), state(cell, H));
    bencher.bench_local(|| cell::forward(cell, &p, x.view(), &s0, 2));
}

#[divan::bench(args = [CellKind::Rnn, CellKind::Lstm], consts = [64, 128])]
fn forward_backward<const H: usize>(bencher: Bencher, cell: CellKind) {
    let (p, x, s0) = (layer(cell, H), inputs(), state(cell, H));
    let dh = Array3::<f32>::from_elem((T, B, H), 0.01);
    let how = Backward {
        threads: 1,
        input_grad: false,
    };
    bencher.bench_local(|| {
        let cache = cell::forward(cell, &p, x.view(), &s0, 1);
        cell::backward(&p, cache, dh.view(), how)
    });
}

#[divan::bench(args = [CellKind::Rnn, CellKind::Lstm], consts = [64, 128])]
fn forward_backward_2_threads<const H: usize>(bencher: Bencher, cell: CellKind) {
    let (p, x, s0) = (layer(cell, H), inputs(), state(cell, H));
    let dh = Array3::<f32>::from_elem((T, B, H), 0.01);
    let how = Backward {
        threads: 2,
        input_grad: false,
    };
    bencher.bench_local(|| {
        let cache = cell::forward(cell, &p, x.view(), &s0, 2);
        cell::backward(&p, cache, dh.view(), how)
    });
}

/// The plain reference implementation, for comparison (not used in training).
#[divan::bench(args = [CellKind::Rnn, CellKind::Lstm], consts = [64, 128])]
fn reference_forward_backward<const H: usize>(bencher: Bencher, cell: CellKind) {
    let (p, x, s0) = (layer(cell, H), inputs(), state(cell, H));
    let dh = Array3::<f32>::from_elem((T, B, H), 0.01);
    bencher.bench_local(|| match cell {
        CellKind::Rnn | CellKind::RnnRelu => {
            let act = match cell {
                CellKind::RnnRelu => Activation::Relu,
                _ => Activation::Tanh,
            };
            let c = reference::rnn_forward(&p, x.view(), s0.h.view(), act);
            reference::rnn_backward(&p, c, dh.view())
        }
        CellKind::Lstm => {
            let c0 = s0.c.as_ref().unwrap();
            let c = reference::lstm_forward(&p, x.view(), s0.h.view(), c0.view());
            reference::lstm_backward(&p, c, dh.view())
        }
        CellKind::Gru => {
            let c = reference::gru_forward(&p, x.view(), s0.h.view());
            reference::gru_backward(&p, c, dh.view())
        }
    });
}
