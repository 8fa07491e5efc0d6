//! A team of helper threads that spin between the parallel regions of a training step.
//!
//! A two-thread training step has four parallel regions (forward, backward, building
//! [h | x | 1] and the weight-gradient product) with short serial parts between them (head,
//! loss, transposes, optimizer). On rayon's pool (used before this team) the calling thread
//! slept while a region ran, and the pool's workers parked a few microseconds after they ran
//! out of work, so every region began with a parked worker being woken and ended with the
//! caller being woken. On this
//! project's VM a perf timeline per thread showed the workers idle for 0.6 ms of an 8 ms
//! LSTM H = 64 step outside the serial parts, in gaps of 100–200 µs at the region boundaries
//! (BENCHMARKS.md). Here the calling thread works as one member of the team, and the helpers
//! spin for up to [`SPIN`] after a region before they park, so the next region starts within
//! a microsecond. Spinning only ever uses a core the run asked for (`--threads`); a sweep's
//! single-threaded runs never start a team. When more threads are asked for than the machine
//! has cores, nobody spins (a spinning thread would take the core from one that works: LSTM
//! H = 64 on 3 threads on this 2-core machine took 12.0 ms a step with spinning, 4.2 ms on 2):
//! helpers park right after a region and the caller yields while it waits.
//!
//! [`workers`] runs the same worker function on several threads at once; the workers share
//! their work through their own state (a queue of chunks, say) and must not wait for each
//! other: when the team is busy (a worker that itself asks for a team) the call simply runs
//! one worker on the calling thread, which then does all the work.
//!
//! `cell::join` runs the two directions of a bidirectional layer on the same team.
//!
//! Each calling thread has its own team (thread-local), created on first use and grown to
//! the largest thread count asked for; its helpers end when that thread ends.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a helper, or the caller waiting for the helpers, spins before it sleeps.
pub const SPIN: Duration = Duration::from_millis(2);

/// Most helpers of one team (a team of more threads runs with this many).
pub const MAX_HELPERS: usize = 255;

/// The worker of the current region, with its lifetime erased: valid while the caller waits
/// in [`workers`] for every helper to report back.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn() + Sync));

// SAFETY: the closure behind the pointer is Sync, and [`workers`] keeps it alive until every
// helper that reads the pointer has finished with it.
unsafe impl Send for Job {}

/// What the caller and its helpers share.
struct Shared {
    /// The current region: its number times ([`MAX_HELPERS`] + 1) plus how many helpers take
    /// part (helpers 0..active), in one word so that a helper reads both at once. Set by the
    /// caller after `job`.
    region: AtomicUsize,
    /// Helpers that have finished the current region.
    done: AtomicUsize,
    job: Mutex<Option<Job>>,
    /// A helper's worker panicked in the current region.
    panicked: AtomicBool,
    /// The owning thread has ended.
    shutdown: AtomicBool,
    /// Whether waiting threads spin (false when the team has more threads than the machine
    /// has cores).
    spin: AtomicBool,
}

/// One calling thread's helpers.
struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for h in self.helpers.drain(..) {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

thread_local! {
    /// This thread's place in the team it works for: 0 for a calling thread, i + 1 for
    /// helper i.
    static MEMBER: Cell<usize> = const { Cell::new(0) };
    static TEAM: RefCell<Team> = RefCell::new(Team {
        shared: Arc::new(Shared {
            region: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            job: Mutex::new(None),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            spin: AtomicBool::new(true),
        }),
        helpers: Vec::new(),
    });
}

/// The calling thread's place in its team: 0 on a thread that runs [`workers`] (or none),
/// i + 1 on helper i. The same for the whole life of the thread, so a worker can tell which
/// work it did in the region before (see `slices`).
pub fn member() -> usize {
    MEMBER.with(Cell::get)
}

/// Runs `worker` on `threads` threads at once, the calling thread included, and returns when
/// all have returned. One thread, or a team already busy on this thread: `worker` once, on
/// the calling thread. A panic in a helper's worker is raised again here.
pub fn workers(threads: usize, worker: &(dyn Fn() + Sync)) {
    if threads <= 1 {
        worker();
        return;
    }
    TEAM.with(|team| {
        let Ok(mut team) = team.try_borrow_mut() else {
            worker(); // a worker asking for a team of its own: it does the work alone
            return;
        };
        team.run((threads - 1).min(MAX_HELPERS), worker);
    });
}

impl Team {
    /// Runs `worker` on the calling thread and on `helpers` helpers.
    fn run(&mut self, helpers: usize, worker: &(dyn Fn() + Sync)) {
        while self.helpers.len() < helpers {
            let (shared, index) = (Arc::clone(&self.shared), self.helpers.len());
            let handle = thread::Builder::new()
                .name(format!("rnnlab-team-{index}"))
                .spawn(move || helper(&shared, index))
                .expect("could not start a helper thread");
            self.helpers.push(handle);
        }
        let s = &*self.shared;
        // SAFETY (of the erased lifetime): this function does not return before every active
        // helper has counted itself done, after its last use of the pointer.
        let job: Job = Job(unsafe {
            std::mem::transmute::<&(dyn Fn() + Sync), &'static (dyn Fn() + Sync)>(worker)
        });
        *s.job.lock().expect("no helper panicked holding the lock") = Some(job);
        let spin = helpers < cores();
        s.spin.store(spin, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        let number = s.region.load(Ordering::Relaxed) / (MAX_HELPERS + 1) + 1;
        s.region
            .store(number * (MAX_HELPERS + 1) + helpers, Ordering::Release);
        for h in &self.helpers[..helpers] {
            h.thread().unpark(); // a spinning helper: one atomic operation, no system call
        }
        let mine = catch_unwind(AssertUnwindSafe(worker));
        wait(spin, || s.done.load(Ordering::Acquire) == helpers);
        *s.job.lock().expect("no helper panicked holding the lock") = None;
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a worker on a helper thread panicked");
        }
    }
}

/// The cores this process may use.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Spins (if `spin`) until `ready()`, then yields between checks (for the rare long wait, or
/// more threads than cores).
fn wait(spin: bool, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        if spin && start.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

/// A helper's life: wait for a region (spin, then park), run the worker if it is one of the
/// region's helpers, report back.
fn helper(s: &Shared, index: usize) {
    MEMBER.with(|m| m.set(index + 1));
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let region = loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let region = s.region.load(Ordering::Acquire);
            if region != seen {
                break region;
            }
            if s.spin.load(Ordering::Relaxed) && start.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                thread::park(); // unparked by the next region or the shutdown
            }
        };
        seen = region;
        // (a region this helper is not part of may end before the helper sees it; the caller
        // never waits for it then, and the next region has another number)
        if index >= region % (MAX_HELPERS + 1) {
            continue;
        }
        let job = s
            .job
            .lock()
            .expect("the caller does not panic holding the lock")
            .expect("a region has a job");
        // SAFETY: see `Job`; the caller waits for our `done` below.
        let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)() }));
        if result.is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every member runs the worker once per region, over many regions and thread counts,
    /// and the workers see each other's writes after the call.
    #[test]
    fn every_member_runs_once_per_region() {
        for threads in [1, 2, 3, 2, 1, 4] {
            for _ in 0..50 {
                let runs = AtomicUsize::new(0);
                workers(threads, &|| {
                    runs.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(runs.into_inner(), threads);
            }
        }
    }

    /// A worker that asks for a team of its own does its work alone.
    #[test]
    fn nested_teams_run_on_the_calling_thread() {
        let inner = AtomicUsize::new(0);
        workers(2, &|| {
            workers(2, &|| {
                inner.fetch_add(1, Ordering::Relaxed);
            })
        });
        // the outer caller's worker nests on the busy team (1 run); the helper's own team
        // runs 2
        assert_eq!(inner.into_inner(), 3);
    }

    #[test]
    fn a_helper_panic_reaches_the_caller() {
        let first = AtomicBool::new(true);
        let r = catch_unwind(AssertUnwindSafe(|| {
            workers(2, &|| {
                if !first.swap(false, Ordering::Relaxed) {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        // and the team still works afterwards
        let runs = AtomicUsize::new(0);
        workers(2, &|| {
            runs.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(runs.into_inner(), 2);
    }
}
