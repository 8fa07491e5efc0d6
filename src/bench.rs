//! `rnnlab bench`: training-step throughput for the standard configurations, against the
//! matrix-multiply peak of the same machine, and the peak memory of a long LSTM.
//!
//! A *training step* is exactly the work of `train`'s loop: forward over T steps, MSE on the
//! last output, backward (probes included, ∂L/∂x not), global-norm clipping (max 1) and an
//! Adam update (lr 1e-3) — the step `shared/reference/torch_ref.py` times in PyTorch, on the
//! same adding-task inputs (I = 2, O = 1), one fixed batch sampled once. Reported per
//! configuration: the median wall time over `--steps` steps after `--warmup` steps, its spread
//! (the interquartile range over the median: how much the shared host's speed moved during
//! the measurement), sequences per second, the achieved GFLOP/s with the count of
//! [`step_flops`], and with two or more threads the one-way latency between two threads right
//! after ([`handoff_ns`]: how far apart the host put the cores, which the small
//! configurations feel).
//!
//! The peak: the same products the step consists of, timed alone at the same shapes — the
//! per-step recurrent product (B, H)·(H, G·H) and the weight-gradient product
//! (H + I + 1, T·B)·(T·B, G·H) — with the cells' kernel ([`crate::cell::gemm`], the recurrent
//! weights both read in place and packed) and ndarray's `general_mat_mul`, keeping the
//! fastest, on as many threads as the run uses (independent products side by side, timed
//! from their common start to the last one's end). `% of peak` is the time those products
//! alone would take at that peak divided by the measured step time: 100% would mean the
//! elementwise work, the head, the optimizer and all overheads were free.
//!
//! Memory: an LSTM with T = 1000, H = 128, B = 64; the peak heap growth during one training
//! step against the theoretical BPTT cache (see [`lstm_cache_bytes`]). It is measured by
//! [`CountingAlloc`] when the binary installs it as its global allocator, else from the peak
//! resident set (`VmHWM` in /proc/self/status, coarser).
//!
//! Nothing here is used by training; the clap type lives here so that `cli.rs` only lists it.

use crate::batch::Batch;
use crate::cell::gemm;
use crate::model::Model;
use crate::optim::{Clip, Optimizer, OptimizerKind, clip};
use crate::params::CellKind;
use crate::tasks::{Adding, Task};
use crate::train::{TrainConfig, new_model};
use anyhow::{Context, Result, anyhow, bail};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The configurations of the reference table (shared/reference/README.md), in its order.
pub const STANDARD_CONFIGS: &str = "rnn:64:64:100,lstm:64:64:100,rnn:128:64:100,lstm:128:64:100,lstm:128:128:100,lstm:256:64:100,lstm:128:64:400,gru:128:64:100";

/// `rnnlab bench`: training-step throughput of the standard configurations.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Configurations as MODEL:HIDDEN:BATCH:SEQ_LEN, comma-separated (the syntax of
    /// torch_ref.py's --configs)
    #[arg(long, default_value = STANDARD_CONFIGS)]
    pub configs: String,
    /// Timed training steps per configuration (the median is reported)
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps before timing
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Threads one run may use (the batch is split across them; results are identical)
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Also write the table as CSV to this file
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// A CSV printed by shared/reference/torch_ref.py: adds PyTorch's ms/step and the speed-up
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// Skip the matrix-multiply peak measurement
    #[arg(long)]
    pub no_peak: bool,
    /// Skip the memory measurement (LSTM, T = 1000, H = 128, B = 64)
    #[arg(long)]
    pub no_memory: bool,
    /// Also measure a sweep: --threads single-threaded runs of this configuration side by side
    /// against one alone, in five back-to-back pairs (MODEL:HIDDEN:BATCH:SEQ_LEN; "none" to
    /// skip)
    #[arg(long, default_value = "lstm:64:64:100")]
    pub sweep: String,
    /// Classifier preset timed at batch 32, length 100 against Keras' 334 ms/step (the seed
    /// text classifier; "none" to skip)
    #[arg(long, default_value = "keras-lstm", value_name = "PRESET")]
    pub classifier: String,
}

/// One configuration: cell, H, B, T.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchConfig {
    pub cell: CellKind,
    pub hidden: usize,
    pub batch: usize,
    pub seq_len: usize,
}

/// Input size of the adding task.
const INPUT: usize = 2;
/// Output size of the adding task.
const OUTPUT: usize = 1;

impl BenchConfig {
    /// Parses `MODEL:HIDDEN:BATCH:SEQ_LEN`, e.g. `lstm:128:64:100`.
    pub fn parse(s: &str) -> Result<BenchConfig> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let [model, hidden, batch, seq_len] = parts[..] else {
            bail!("`{s}` is invalid: expected MODEL:HIDDEN:BATCH:SEQ_LEN, e.g. lstm:128:64:100");
        };
        let cell = CellKind::parse(model).ok_or_else(|| {
            let names: Vec<_> = CellKind::ALL.iter().map(|k| k.name()).collect();
            anyhow!(
                "`{s}`: unknown model `{model}`, expected one of {}",
                names.join(", ")
            )
        })?;
        let num = |v: &str, what: &str, min: usize| -> Result<usize> {
            match v.parse::<usize>() {
                Ok(n) if n >= min => Ok(n),
                _ => bail!("`{s}`: {what} `{v}` is invalid: it must be an integer ≥ {min}"),
            }
        };
        Ok(BenchConfig {
            cell,
            hidden: num(hidden, "HIDDEN", 1)?,
            batch: num(batch, "BATCH", 1)?,
            seq_len: num(seq_len, "SEQ_LEN", 2)?,
        })
    }

    /// Parses a comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<BenchConfig>> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| BenchConfig::parse(p).map_err(|e| anyhow!("--configs entry {e}")))
            .collect()
    }

    /// G·H, the rows of the stacked gate weights.
    fn gate_rows(&self) -> usize {
        self.cell.gates() * self.hidden
    }
}

/// Floating-point operations of one training step (a multiply-add counts 2):
///
/// ```text
/// forward  = 2·B·(I + H)·G·H·T  +  2·B·H·O          (input and recurrent products, head)
/// step     = 3 · forward                            (backward ≈ 2 × forward: dh_{t−1} and dW)
/// ```
/// with G = gate blocks (1 RNN, 3 GRU, 4 LSTM), I = 2 and O = 1 for the adding task. Elementwise
/// work, the loss and the optimizer are not counted (they are O(B·G·H·T) and O(parameters)).
/// The same count PyTorch's figures in shared/reference/README.md use.
pub fn step_flops(c: &BenchConfig) -> f64 {
    let (b, h, t, g) = (
        c.batch as f64,
        c.hidden as f64,
        c.seq_len as f64,
        c.cell.gates() as f64,
    );
    let forward = 2.0 * b * (INPUT as f64 + h) * g * h * t + 2.0 * b * h * OUTPUT as f64;
    3.0 * forward
}

/// Bytes of the theoretical BPTT cache of an LSTM: what backward must keep from forward,
///
/// ```text
/// 4 bytes · (T·B·I  +  T·B·4H  +  2·(T+1)·B·H)
///            inputs   gates i,f,g,o   h_t and c_t (with h₀, c₀)
/// ```
/// (f32). tanh(c_t) is recomputed in backward, not stored.
pub fn lstm_cache_bytes(t: usize, b: usize, h: usize, i: usize) -> usize {
    4 * (t * b * i + t * b * 4 * h + 2 * (t + 1) * b * h)
}

/// One measured configuration.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub config: BenchConfig,
    pub threads: usize,
    /// Median ms per training step.
    pub ms_per_step: f64,
    /// The first and third quartiles of the step times (ms): how much the host moved.
    pub ms_quartiles: (f64, f64),
    pub seq_per_s: f64,
    /// Achieved GFLOP/s ([`step_flops`] / median time).
    pub gflops: f64,
    /// The products' peak for this step (see the module docs), GFLOP/s; None with --no-peak.
    pub peak_gflops: Option<f64>,
    /// PyTorch's ms per step from --compare, if the configuration is there.
    pub torch_ms: Option<f64>,
    /// [`handoff_ns`] right after the step was timed (runs on two or more threads).
    pub handoff_ns: Option<f64>,
}

impl BenchRow {
    /// Share of the products' peak reached by the whole step (0–1).
    pub fn peak_fraction(&self) -> Option<f64> {
        self.peak_gflops.map(|p| self.gflops / p)
    }

    /// The interquartile range of the step times over their median (0 when steady).
    pub fn spread(&self) -> f64 {
        (self.ms_quartiles.1 - self.ms_quartiles.0) / self.ms_per_step
    }

    /// PyTorch's time over ours.
    pub fn speedup(&self) -> Option<f64> {
        self.torch_ms.map(|t| t / self.ms_per_step)
    }
}

/// A model, a fixed batch and an optimizer: everything one timed training step touches.
pub struct StepBench {
    model: Model<f32>,
    batch: Batch,
    opt: Optimizer,
    threads: usize,
}

impl StepBench {
    /// A fresh model (init seed 0) and one adding-task batch (data seed 0).
    pub fn new(config: &BenchConfig, threads: usize) -> StepBench {
        let task = Adding {
            seq_len: config.seq_len,
        };
        let cfg = TrainConfig {
            cell: config.cell,
            hidden: config.hidden,
            batch: config.batch,
            ..TrainConfig::default()
        };
        let model = new_model(&task, &cfg);
        let batch = task.sample(&mut ChaCha8Rng::seed_from_u64(0), config.batch);
        let mut opt = Optimizer::new(
            OptimizerKind::by_name("adam", 0.0).expect("adam exists"),
            1e-3,
        );
        opt.threads = threads;
        StepBench {
            model,
            batch,
            opt,
            threads,
        }
    }

    /// One training step, as in `train`'s loop. Returns the loss.
    pub fn step(&mut self) -> f64 {
        let state0 = self.model.zero_state(self.batch.dim().1);
        let (loss, mut grads, _probes) = self.model.train_grads(
            self.batch.x.view(),
            &self.batch.target,
            &state0,
            self.threads,
        );
        clip(&mut grads, Clip::Norm { max: 1.0 });
        self.opt.step(&mut self.model.params, &grads);
        loss
    }
}

/// Median wall time in ms of `steps` calls of `f` after `warmup` untimed ones.
pub(crate) fn median_ms(warmup: usize, steps: usize, f: impl FnMut()) -> f64 {
    quantile(&step_times(warmup, steps, f), 0.5)
}

/// Wall times in ms of `steps` calls of `f` (at least one) after `warmup` untimed ones,
/// sorted.
fn step_times(warmup: usize, steps: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..steps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// The `p`-quantile (0 ≤ p ≤ 1) of a sorted, non-empty list, interpolated linearly between
/// neighbours: p = 0.5 is the median (the mean of the middle two for an even length).
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let h = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

/// Times training steps of one configuration.
pub fn measure(config: &BenchConfig, threads: usize, warmup: usize, steps: usize) -> BenchRow {
    let _flush = crate::fpu::FlushSubnormals::new(); // as in training
    let mut bench = StepBench::new(config, threads);
    let times = step_times(warmup, steps, || {
        bench.step();
    });
    let ms = quantile(&times, 0.5);
    BenchRow {
        config: *config,
        threads,
        ms_per_step: ms,
        ms_quartiles: (quantile(&times, 0.25), quantile(&times, 0.75)),
        seq_per_s: config.batch as f64 / (ms / 1e3),
        gflops: step_flops(config) / (ms / 1e3) / 1e9,
        peak_gflops: None,
        handoff_ns: None,
        torch_ms: None,
    }
}

/// GFLOP/s of C (m, n) = A (m, k)·B (k, n) with A given transposed when `a_transposed`
/// (as the weight-gradient product reads it), on `threads` independent products side by
/// side; the best of the cells' kernel with B read in place, the same with B packed once
/// ([`gemm::PackedB`], as the cells multiply by the recurrent weights) and ndarray's
/// `general_mat_mul`.
pub fn matmul_gflops(m: usize, n: usize, k: usize, a_transposed: bool, threads: usize) -> f64 {
    let flops = 2.0 * (m * n * k) as f64;
    let reps = ((3e8 / flops) as usize).clamp(2, 2000);
    #[derive(Clone, Copy, PartialEq)]
    enum Kernel {
        InPlace,
        Packed,
        Ndarray,
    }
    const ROUNDS: usize = 8; // the first is a warm-up
    let threads = threads.max(1);
    let run = |kernel: Kernel| -> f64 {
        // Each thread times every round from the moment all are ready (a barrier) to its last
        // product; a round takes from the earliest start to the latest end, so threads that
        // did not really run side by side (more threads than cores) do not count twice.
        let barrier = std::sync::Barrier::new(threads);
        let one = || {
            let a = if a_transposed {
                Array2::<f32>::from_shape_fn((k, m), |(i, j)| ((i * 7 + j) % 13) as f32 * 0.1)
            } else {
                Array2::<f32>::from_shape_fn((m, k), |(i, j)| ((i * 7 + j) % 13) as f32 * 0.1)
            };
            let a = if a_transposed { a.reversed_axes() } else { a };
            let b = Array2::<f32>::from_shape_fn((k, n), |(i, j)| ((i + 3 * j) % 11) as f32 * 0.1);
            let packed = gemm::PackedB::new(b.view(), 1);
            let mut c = Array2::<f32>::zeros((m, n));
            (0..ROUNDS)
                .map(|_| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..reps {
                        match kernel {
                            Kernel::InPlace => {
                                gemm::mat_mul(&a.view(), &b.view(), false, &mut c.view_mut())
                            }
                            Kernel::Packed => {
                                gemm::mat_mul_packed(&a.view(), &packed, false, &mut c.view_mut())
                            }
                            Kernel::Ndarray => {
                                ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c)
                            }
                        }
                    }
                    (start, Instant::now())
                })
                .collect::<Vec<_>>()
        };
        let spans: Vec<Vec<(Instant, Instant)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(one)).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("matmul thread"))
                .collect()
        });
        // The best round: a peak is what the machine can do, not its average.
        let ms = (1..ROUNDS)
            .map(|r| {
                let start = spans.iter().map(|t| t[r].0).min().expect("a thread");
                let end = spans.iter().map(|t| t[r].1).max().expect("a thread");
                (end - start).as_secs_f64() * 1e3 / reps as f64
            })
            .fold(f64::INFINITY, f64::min);
        threads as f64 * flops / (ms / 1e3) / 1e9
    };
    let mut kernels = vec![Kernel::InPlace, Kernel::Ndarray];
    if !a_transposed {
        kernels.push(Kernel::Packed);
    }
    kernels.into_iter().map(run).fold(0.0, f64::max)
}

/// The products' peak of one configuration's step: two thirds of its flops run at the
/// recurrent product's rate, one third at the weight-gradient product's (harmonic mix).
pub fn step_peak_gflops(c: &BenchConfig, threads: usize) -> f64 {
    let (b, h, gh, tb) = (c.batch, c.hidden, c.gate_rows(), c.seq_len * c.batch);
    // Each thread runs the recurrence on its share of the batch.
    let rows = b.div_ceil(threads.max(1));
    let recurrent = matmul_gflops(rows, gh, h, false, threads);
    let wgrad = matmul_gflops(h + INPUT + 1, gh, tb, true, 1) * threads.max(1) as f64;
    1.0 / ((2.0 / 3.0) / recurrent + (1.0 / 3.0) / wgrad)
}

/// One-way handoff latency between two threads, in ns: two threads, pinned to two different
/// CPUs of the process where the system lets them be (Linux), pass a counter back and forth
/// through one atomic, both spinning, and half a round trip is reported (the median of
/// [`HANDOFF_ROUNDS`] rounds of up to [`HANDOFF_TRIPS`] round trips, each round stopped after
/// 20 ms). It is the least a join between the threads of one run costs, and it tells where the
/// host put the two cores: on this project's VM it read 25–40 ns when the two vCPUs were
/// close and 170–210 ns when they were far apart — when the threads' caches are that far
/// apart, whatever one thread reads of what the other wrote comes slowly too (reading 4 MiB
/// the other thread had just written: 36–45 GB/s against 110–125), and the small
/// configurations' steps take up to ~30% longer (BENCHMARKS.md). Unpinned threads read
/// 100–500 ns there even on a quiet host (the scheduler moves them), and a thread that has to
/// wait for a core (more threads busy than cores) reads as microseconds or more.
pub fn handoff_ns() -> f64 {
    // (after a training step the team's helpers spin for a while: let them park first, or
    // three threads share the two cores)
    std::thread::sleep(3 * crate::cell::team::SPIN);
    let cpus = allowed_cpus();
    let pin = |i: usize| {
        if let [first, second, ..] = cpus[..] {
            pin_to([first, second][i]);
        }
    };
    let counter = AtomicUsize::new(0);
    let stop = usize::MAX;
    let round = || -> f64 {
        counter.store(0, Ordering::SeqCst);
        // (both ends on threads of their own, so that pinning them leaves the caller's
        // thread, and the helpers it starts later, free to run anywhere)
        std::thread::scope(|s| {
            // the partner answers every odd value with the next even one
            s.spawn(|| {
                pin(1);
                let mut seen = 0;
                loop {
                    let v = counter.load(Ordering::Acquire);
                    if v == stop {
                        return;
                    }
                    if v != seen && v % 2 == 1 {
                        counter.store(v + 1, Ordering::Release);
                        seen = v;
                    }
                    std::hint::spin_loop();
                }
            });
            let ns = s.spawn(|| {
                pin(0);
                let start = Instant::now();
                let mut trips = 0;
                while trips < HANDOFF_TRIPS {
                    let v = 2 * trips + 1;
                    counter.store(v, Ordering::Release);
                    while counter.load(Ordering::Acquire) != v + 1 {
                        std::hint::spin_loop();
                    }
                    trips += 1;
                    if trips % 64 == 0 && start.elapsed().as_millis() >= 20 {
                        break;
                    }
                }
                let ns = start.elapsed().as_secs_f64() * 1e9 / trips as f64 / 2.0;
                counter.store(stop, Ordering::Release);
                ns
            });
            ns.join().expect("handoff thread")
        })
    };
    let mut rounds: Vec<f64> = (0..HANDOFF_ROUNDS).map(|_| round()).collect();
    rounds.sort_by(f64::total_cmp);
    rounds[HANDOFF_ROUNDS / 2]
}

/// The CPUs this process may run on (Linux; elsewhere none are known).
fn allowed_cpus() -> Vec<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, and sched_getaffinity writes at most
        // its size into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) == 0 {
                return (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &set))
                    .collect();
            }
        }
    }
    Vec::new()
}

/// Pins the calling thread to CPU `cpu` (Linux; elsewhere nothing happens).
fn pin_to(cpu: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: as in `allowed_cpus`; the set names one CPU, and a failure leaves the thread as
    // it was.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = cpu;
}

/// Rounds [`handoff_ns`] times.
pub const HANDOFF_ROUNDS: usize = 5;
/// Round trips in one round of [`handoff_ns`] at most.
pub const HANDOFF_TRIPS: usize = 20_000;

/// Back-to-back pairs [`sweep_efficiency`] measures.
pub const SWEEP_PAIRS: usize = 5;

/// What [`sweep_efficiency`] measured.
#[derive(Clone, Copy, Debug)]
pub struct Sweep {
    /// Median ms per step of one run alone.
    pub alone_ms: f64,
    /// Median ms per step of the runs side by side (mean over the runs).
    pub together_ms: f64,
    /// Median over the pairs of side-by-side throughput / (threads × alone).
    pub efficiency: f64,
    /// The lowest and highest efficiency of a pair.
    pub range: (f64, f64),
}

/// How well independent runs share the machine: `threads` single-threaded training loops of
/// `config` side by side (as a sweep runs them), against one alone. The host's speed drifts
/// within seconds, so the two are measured in [`SWEEP_PAIRS`] back-to-back pairs (one alone,
/// then the runs side by side), each pair giving its own efficiency.
pub fn sweep_efficiency(
    config: &BenchConfig,
    threads: usize,
    warmup: usize,
    steps: usize,
) -> Sweep {
    let (mut alone, mut together, mut efficiency) = (vec![], vec![], vec![]);
    for _ in 0..SWEEP_PAIRS {
        let a = measure(config, 1, warmup, steps).ms_per_step;
        let t = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|_| s.spawn(|| measure(config, 1, warmup, steps).ms_per_step))
                .collect();
            let ms: Vec<f64> = handles
                .into_iter()
                .map(|h| h.join().expect("sweep thread"))
                .collect();
            ms.iter().sum::<f64>() / ms.len() as f64
        });
        alone.push(a);
        together.push(t);
        efficiency.push(a / t);
    }
    let range = efficiency
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &e| {
            (lo.min(e), hi.max(e))
        });
    Sweep {
        alone_ms: median(alone),
        together_ms: median(together),
        efficiency: median(efficiency),
        range,
    }
}

// ------------------------------------------------------------------------------ memory

/// A global allocator that counts live heap bytes and their peak, around the system
/// allocator. Install it in a binary with
/// `#[global_allocator] static ALLOC: rnnlab::bench::CountingAlloc = rnnlab::bench::CountingAlloc;`
/// (costs two atomic additions per allocation).
pub struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

impl CountingAlloc {
    /// True if this allocator is the process's global allocator (it has seen allocations).
    pub fn installed() -> bool {
        let before = LIVE.load(Ordering::Relaxed);
        let probe = std::hint::black_box(vec![0u8; 4096]);
        let during = LIVE.load(Ordering::Relaxed);
        drop(probe);
        during >= before + 4096
    }

    /// Live heap bytes now.
    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }

    /// Starts a new peak from the current live size.
    pub fn reset_peak() {
        PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Highest live heap size since the last [`CountingAlloc::reset_peak`].
    pub fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }
}

/// One field of /proc/self/status in bytes (Linux; None elsewhere).
fn proc_status_bytes(field: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak memory of one training step.
#[derive(Clone, Debug)]
pub struct MemoryReport {
    pub config: BenchConfig,
    /// Peak growth during one step, bytes.
    pub peak_bytes: usize,
    /// [`lstm_cache_bytes`] of the configuration.
    pub cache_bytes: usize,
    /// "heap (counting allocator)" or "peak RSS (VmHWM)".
    pub method: &'static str,
}

/// Peak memory growth of one LSTM training step at T = `seq_len`, H = `hidden`, B = `batch`
/// (model, batch and optimizer state exist before the measurement starts).
pub fn measure_memory(config: &BenchConfig, threads: usize) -> MemoryReport {
    let mut bench = StepBench::new(config, threads);
    bench
        .opt
        .step(&mut bench.model.params.clone(), &bench.model.params); // allocate Adam state
    let cache_bytes = lstm_cache_bytes(config.seq_len, config.batch, config.hidden, INPUT);
    crate::cell::pool::clear(); // the step's buffers count, even those a pool would keep
    if CountingAlloc::installed() {
        CountingAlloc::reset_peak();
        let base = CountingAlloc::live();
        bench.step();
        MemoryReport {
            config: *config,
            peak_bytes: CountingAlloc::peak() - base,
            cache_bytes,
            method: "heap (counting allocator)",
        }
    } else {
        let base = proc_status_bytes("VmRSS").unwrap_or(0);
        bench.step();
        let hwm = proc_status_bytes("VmHWM").unwrap_or(0);
        MemoryReport {
            config: *config,
            peak_bytes: hwm.saturating_sub(base),
            cache_bytes,
            method: "peak RSS (VmHWM; includes earlier peaks of this process)",
        }
    }
}

// ------------------------------------------------------------------------------ command

/// PyTorch's ms per step by (model, hidden, batch, seq_len) from torch_ref.py's CSV.
fn read_torch_csv(path: &std::path::Path) -> Result<Vec<(BenchConfig, f64)>> {
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("--compare {}: cannot read", path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            anyhow!(
                "--compare {}: no `{name}` column (expected torch_ref.py's output)",
                path.display()
            )
        })
    };
    let (m, h, b, t, ms) = (
        col("model")?,
        col("hidden")?,
        col("batch")?,
        col("seq_len")?,
        col("ms_per_step")?,
    );
    let mut out = Vec::new();
    for rec in reader.records() {
        let rec = rec?;
        let spec = format!("{}:{}:{}:{}", &rec[m], &rec[h], &rec[b], &rec[t]);
        // Models rnnlab does not have (yet) are skipped.
        if let (Ok(c), Ok(v)) = (BenchConfig::parse(&spec), rec[ms].parse::<f64>()) {
            out.push((c, v));
        }
    }
    Ok(out)
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "".to_string(), f)
}

/// `rnnlab bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let configs = BenchConfig::parse_list(&args.configs).map_err(crate::commands::usage)?;
    if configs.is_empty() {
        return Err(crate::commands::usage(anyhow!(
            "--configs is empty: give at least one MODEL:HIDDEN:BATCH:SEQ_LEN"
        )));
    }
    if args.threads == 0 || args.steps == 0 {
        return Err(crate::commands::usage(anyhow!(
            "--threads and --steps must be at least 1"
        )));
    }
    let torch = match &args.compare {
        Some(p) => read_torch_csv(p).map_err(crate::commands::usage)?,
        None => Vec::new(),
    };
    // Everything else that can be wrong is found now, not after minutes of measuring.
    let sweep = (args.sweep != "none")
        .then(|| BenchConfig::parse(&args.sweep).map_err(|e| anyhow!("--sweep {e}")))
        .transpose()
        .map_err(crate::commands::usage)?;
    let classifier = (args.classifier != "none")
        .then(|| crate::seq::bench::load(&args.classifier))
        .transpose()
        .map_err(|e| crate::commands::usage(e.context("--classifier")))?;
    if let Some(path) = &args.csv {
        crate::fsutil::check_writable(path)
            .map_err(|e| crate::commands::usage(e.context("--csv")))?;
    }
    println!(
        "rnnlab bench: {} threads, median of {} steps after {} warm-up (spread: their interquartile range over the median; large when the host was busy; handoff: the one-way latency between two threads, large when the host put the cores far apart); CPU: AVX-512 kernels {}",
        args.threads,
        args.steps,
        args.warmup,
        if gemm::has_avx512() {
            "on"
        } else {
            "off (ndarray's products)"
        }
    );

    // Memory first, while the process is small (matters for the VmHWM fallback).
    let memory = (!args.no_memory).then(|| {
        let c = BenchConfig {
            cell: CellKind::Lstm,
            hidden: 128,
            batch: 64,
            seq_len: 1000,
        };
        measure_memory(&c, args.threads)
    });

    let mut rows = Vec::new();
    println!(
        "{:<5} {:>4} {:>4} {:>5} {:>9} {:>7} {:>9} {:>8} {:>8} {:>7} {:>9} {:>8} {:>8}",
        "model",
        "H",
        "B",
        "T",
        "ms/step",
        "spread",
        "seq/s",
        "GFLOP/s",
        "peak",
        "%peak",
        "torch ms",
        "speedup",
        "handoff"
    );
    for c in &configs {
        let mut row = measure(c, args.threads, args.warmup, args.steps);
        if !args.no_peak {
            row.peak_gflops = Some(step_peak_gflops(c, args.threads));
        }
        row.torch_ms = torch.iter().find(|(tc, _)| tc == c).map(|(_, ms)| *ms);
        row.handoff_ns = (args.threads >= 2).then(handoff_ns);
        println!(
            "{:<5} {:>4} {:>4} {:>5} {:>9.2} {:>7} {:>9.0} {:>8.1} {:>8} {:>7} {:>9} {:>8} {:>8}",
            c.cell.name(),
            c.hidden,
            c.batch,
            c.seq_len,
            row.ms_per_step,
            format!("{:.0}%", 100.0 * row.spread()),
            row.seq_per_s,
            row.gflops,
            fmt_opt(row.peak_gflops, |v| format!("{v:.0}")),
            // (one decimal: the target is 70%, and 69.6% must not print as 70%)
            fmt_opt(row.peak_fraction(), |v| format!("{:.1}%", 100.0 * v)),
            fmt_opt(row.torch_ms, |v| format!("{v:.2}")),
            fmt_opt(row.speedup(), |v| format!("{v:.2}×")),
            fmt_opt(row.handoff_ns, |v| format!("{v:.0} ns")),
        );
        rows.push(row);
    }
    if let Some(c) = &sweep {
        let w = sweep_efficiency(c, args.threads, args.warmup, args.steps);
        println!(
            "sweep: {} {}:{}:{}: {:.0}% of {}× the single-run rate ({} back-to-back pairs of one run alone and {} side by side: {:.0}–{:.0}%; medians {:.2} and {:.2} ms/step)",
            c.cell.name(),
            c.hidden,
            c.batch,
            c.seq_len,
            100.0 * w.efficiency,
            args.threads,
            SWEEP_PAIRS,
            args.threads,
            100.0 * w.range.0,
            100.0 * w.range.1,
            w.alone_ms,
            w.together_ms,
        );
    }
    if let Some(file) = &classifier {
        let name = &args.classifier;
        crate::seq::bench::report(name, file, args.threads, args.warmup, args.steps);
    }
    if let Some(m) = &memory {
        println!(
            "memory: lstm H={} B={} T={}: peak {:.1} MiB during one step; BPTT cache (theory) {:.1} MiB; ratio {:.2} [{}]",
            m.config.hidden,
            m.config.batch,
            m.config.seq_len,
            m.peak_bytes as f64 / (1 << 20) as f64,
            m.cache_bytes as f64 / (1 << 20) as f64,
            m.peak_bytes as f64 / m.cache_bytes as f64,
            m.method
        );
    }
    if let Some(path) = &args.csv {
        write_csv(path, &rows)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes the rows; the first seven column names are those of torch_ref.py's output.
pub fn write_csv(path: &std::path::Path, rows: &[BenchRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "framework",
        "model",
        "hidden",
        "batch",
        "seq_len",
        "ms_per_step",
        "seq_per_s",
        "gflops",
        "threads",
        "peak_gflops",
        "pct_of_peak",
        "torch_ms_per_step",
        "speedup_vs_torch",
        "ms_q1",
        "ms_q3",
        "handoff_ns",
    ])?;
    for r in rows {
        let c = &r.config;
        w.write_record([
            format!("rnnlab-{}", env!("CARGO_PKG_VERSION")),
            c.cell.name().to_string(),
            c.hidden.to_string(),
            c.batch.to_string(),
            c.seq_len.to_string(),
            format!("{:.3}", r.ms_per_step),
            format!("{:.0}", r.seq_per_s),
            format!("{:.2}", r.gflops),
            r.threads.to_string(),
            fmt_opt(r.peak_gflops, |v| format!("{v:.2}")),
            fmt_opt(r.peak_fraction(), |v| format!("{:.1}", 100.0 * v)),
            fmt_opt(r.torch_ms, |v| format!("{v:.3}")),
            fmt_opt(r.speedup(), |v| format!("{v:.3}")),
            format!("{:.3}", r.ms_quartiles.0),
            format!("{:.3}", r.ms_quartiles.1),
            fmt_opt(r.handoff_ns, |v| format!("{v:.1}")),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow!("{}", e.error()))?;
    crate::fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_and_reject_with_a_clear_message() {
        let all = BenchConfig::parse_list(STANDARD_CONFIGS).unwrap();
        assert_eq!(all.len(), 8);
        assert_eq!(
            all[3],
            BenchConfig {
                cell: CellKind::Lstm,
                hidden: 128,
                batch: 64,
                seq_len: 100
            }
        );
        let e = BenchConfig::parse("tcn:128:64:100")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown model `tcn`"), "{e}");
        let e = BenchConfig::parse("lstm:128:0:100")
            .unwrap_err()
            .to_string();
        assert!(e.contains("BATCH `0`"), "{e}");
        assert!(BenchConfig::parse("lstm:128:64").is_err());
    }

    /// The sweep's figure is the median pair's, inside the range of the pairs, and every
    /// figure is a real, positive time or ratio (timings themselves are not asserted).
    #[test]
    fn sweep_reports_the_median_pair_within_its_range() {
        let c = BenchConfig::parse("rnn:4:2:3").unwrap();
        let w = sweep_efficiency(&c, 2, 1, 3);
        assert!(w.alone_ms > 0.0 && w.together_ms > 0.0, "{w:?}");
        assert!(w.range.0 > 0.0 && w.range.1.is_finite(), "{w:?}");
        assert!(
            w.range.0 <= w.efficiency && w.efficiency <= w.range.1,
            "{w:?}"
        );
    }

    /// A measured row has its median between its quartiles, and the CSV written from it
    /// carries them and reads back through `--compare` (the shared columns come first).
    #[test]
    fn rows_carry_quartiles_and_the_csv_reads_back() {
        let c = BenchConfig::parse("lstm:4:2:3").unwrap();
        let row = measure(&c, 1, 1, 5);
        let (q1, q3) = row.ms_quartiles;
        assert!(
            0.0 < q1 && q1 <= row.ms_per_step && row.ms_per_step <= q3,
            "{q1} {q3}"
        );
        assert!(row.spread() >= 0.0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.csv");
        let ms = row.ms_per_step;
        write_csv(&path, &[row]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("framework,model,hidden,batch,seq_len,ms_per_step,"));
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with(",ms_q1,ms_q3,handoff_ns"),
            "{text}"
        );
        let back = read_torch_csv(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, c);
        assert!((back[0].1 - ms).abs() < 1e-3, "{} against {ms}", back[0].1); // 3 decimals
    }

    /// The handoff probe ends (also when the partner thread cannot run at once) and reads a
    /// latency: more than nothing, less than the 20 ms a round may take.
    #[test]
    fn handoff_is_a_latency() {
        let ns = handoff_ns();
        assert!(ns > 0.0 && ns < 2e7, "{ns} ns");
    }

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
        // quartiles interpolate between neighbours: h = p·(n − 1)
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!((quantile(&v, 0.25), quantile(&v, 0.75)), (2.0, 4.0));
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!((quantile(&v, 0.25), quantile(&v, 0.75)), (1.75, 3.25));
        assert_eq!((quantile(&v, 0.0), quantile(&v, 1.0)), (1.0, 4.0));
    }

    /// The formula of the docs, by hand for the README's example: LSTM H=128, B=64, T=100
    /// is ~2.6 GFLOP per step.
    #[test]
    fn flop_count_matches_the_reference_figure() {
        let c = BenchConfig::parse("lstm:128:64:100").unwrap();
        let forward = 2.0 * 64.0 * 130.0 * 512.0 * 100.0 + 2.0 * 64.0 * 128.0;
        assert_eq!(step_flops(&c), 3.0 * forward);
        assert!((step_flops(&c) / 1e9 - 2.56).abs() < 0.01);
        assert_eq!(lstm_cache_bytes(10, 2, 3, 2), 4 * (40 + 240 + 132));
    }

    /// A bench step is a real training step: the loss falls on a fixed batch, and the
    /// thread count does not change a single bit.
    #[test]
    fn bench_step_trains_and_is_thread_independent() {
        let c = BenchConfig::parse("lstm:16:24:12").unwrap();
        let (mut one, mut two) = (StepBench::new(&c, 1), StepBench::new(&c, 2));
        let l1: Vec<f64> = (0..30).map(|_| one.step()).collect();
        let l2: Vec<f64> = (0..30).map(|_| two.step()).collect();
        assert_eq!(l1, l2);
        assert_eq!(one.model.params, two.model.params);
        assert!(l1[29] < l1[0], "{l1:?}");
    }
}
