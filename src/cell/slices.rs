//! Dynamic scheduling of a batch's time loop over threads: chunks of rows, handed out a few
//! timesteps at a time.
//!
//! Sequences of a batch never interact inside the recurrence, so a time loop over a block of
//! rows can stop after any step and be carried on later, by any thread: its whole state (h, c,
//! the running gradients) lives in that block's views. Splitting the batch into exactly one
//! block per thread makes a step as slow as its slowest core, and the two cores of a shared VM
//! are often not equally fast (measured on the project's machine: one vCPU ran the same
//! single-threaded LSTM H = 256 step in 50 ms, the other in 74 ms, each alone). So the batch is
//! cut into more chunks than threads (`chunk_rows`) and every thread repeatedly takes the
//! free chunk that is furthest behind and advances it by [`SLICE`] steps: a faster core simply
//! takes more slices, all chunks finish at about the same time, and the idle time at the end
//! is at most a slice or two. Each thread has chunks of its own (one even run of them: with
//! two threads, the calling thread the first half of the batch's rows, the helper the
//! second) and takes those first while they are at most a slice ahead of the furthest
//! behind: on equal cores a chunk's rows (its h, c and running gradients, and what it writes
//! into the caches, which the backward pass and the weight-gradient product read again) then
//! stay in one core's caches instead of moving to the other core every few slices. Against
//! always taking the furthest behind (alternating runs, order alternated, 8 pairs, two
//! threads, medians of the pairs), twice in a slow phase of the host: RNN H = 64 0.986 and
//! 0.990, H = 128 0.959 and 0.994, LSTM H = 64 0.969 and 0.977, H = 128 0.989 and 1.007,
//! B = 128 0.974, T = 400 0.977, H = 256 1.001 and 0.993, GRU 0.984 and 0.960; in a fast
//! phase all eight standard configurations 0.982–1.004 (noise).
//!
//! The weight-gradient product after the loop is scheduled the same way (`grad_product`):
//! its chunks are pieces of the sum over T·B (each a range of the batch's rows at every
//! timestep: with two threads, the rows each thread's own chunks of the time loops hold;
//! with groups of columns when there are more threads than pieces), its "steps" the
//! 256-deep blocks of a piece.
//!
//! Which thread runs which slice varies from run to run, but no number depends on it: each
//! row's arithmetic is the same whatever chunk it is in and whoever advances it, so results
//! stay bit-identical for every thread count (tested in `tests/fast_vs_reference.rs`).

use std::ops::Range;
use std::sync::Mutex;

/// Timesteps a thread advances a chunk by before it picks the next chunk.
pub const SLICE: usize = 8;

/// Rows per chunk for a batch of `batch` rows on `threads` threads: the whole batch for one
/// thread; otherwise about two chunks per thread, each a multiple of [`super::gemm::MR`] rows
/// (the products' register tiles stay full).
pub(crate) fn chunk_rows(batch: usize, threads: usize) -> usize {
    if threads <= 1 {
        batch.max(1)
    } else {
        super::block_rows(batch, 2 * threads)
    }
}

/// Runs `work(chunk, steps)` so that every chunk sees the step ranges 0..SLICE, SLICE..2·SLICE,
/// …, up to `steps`, in order, on up to `threads` threads (the caller's and its
/// [`super::team`]). One thread or one chunk: every chunk in one call, on the caller's thread.
pub(crate) fn run<C: Send>(
    chunks: Vec<C>,
    steps: usize,
    threads: usize,
    work: impl Fn(&mut C, Range<usize>) + Sync,
) {
    if threads <= 1 || chunks.len() <= 1 {
        for mut c in chunks {
            work(&mut c, 0..steps);
        }
        return;
    }
    // Each slot: the chunk (None while a thread works on it) and how many steps it has done.
    let n = chunks.len();
    let slots: Mutex<Vec<(Option<C>, usize)>> =
        Mutex::new(chunks.into_iter().map(|c| (Some(c), 0)).collect());
    let worker = || {
        let _flush = crate::fpu::FlushSubnormals::new(); // as on the caller's thread
        // this thread's own chunks: the home-th of `threads` even runs of them
        let home = super::team::member() % threads;
        let mut held: Option<(usize, C)> = None;
        loop {
            let (i, mut chunk, range) = {
                let mut slots = slots.lock().expect("no worker panicked");
                if let Some((i, c)) = held.take() {
                    slots[i].0 = Some(c);
                }
                let free = slots
                    .iter()
                    .enumerate()
                    .filter(|(_, (c, done))| c.is_some() && *done < steps)
                    .map(|(i, (_, done))| (i, *done));
                // the free, unfinished chunk furthest behind (ties: the lowest index), unless
                // one of this thread's own is at most a slice ahead of it
                let Some(behind) = free.clone().min_by_key(|&(_, done)| done) else {
                    return; // all done, or the rest in other threads' hands
                };
                let own = free
                    .filter(|&(i, done)| owner(i, n, threads) == home && done <= behind.1 + SLICE)
                    .min_by_key(|&(_, done)| done);
                let (i, done) = own.unwrap_or(behind);
                let end = (done + SLICE).min(steps);
                slots[i].1 = end;
                (i, slots[i].0.take().expect("free chunk"), done..end)
            };
            work(&mut chunk, range);
            held = Some((i, chunk));
        }
    };
    super::team::workers(threads, &worker);
}

/// The thread whose own chunk `i` of `n` is: the chunks cut into `threads` even runs, thread
/// j owning run j (so that, with the batch's rows in order, a thread owns one range of rows,
/// whose part of the weight-gradient sum it computes after the loop).
pub(crate) fn owner(i: usize, n: usize, threads: usize) -> usize {
    i * threads / n.max(1)
}

/// [`run`] walking time backwards: every chunk sees the step ranges (steps−SLICE)..steps,
/// (steps−2·SLICE)..(steps−SLICE), …, down to 0 (each range to be walked downwards), as the
/// backward passes need them.
pub(crate) fn run_backward<C: Send>(
    chunks: Vec<C>,
    steps: usize,
    threads: usize,
    work: impl Fn(&mut C, Range<usize>) + Sync,
) {
    // a chunk that has done `done` steps of the walk has reached t = steps − done.end
    run(chunks, steps, threads, |c, done| {
        work(c, steps - done.end..steps - done.start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk sees every step exactly once, in order, whatever the thread count.
    #[test]
    fn every_chunk_gets_every_step_in_order() {
        for threads in [1, 2, 3] {
            for steps in [1, SLICE, 3 * SLICE + 5] {
                let chunks: Vec<(usize, Vec<usize>)> = (0..5).map(|i| (i, Vec::new())).collect();
                let finished = Mutex::new(Vec::new());
                run(chunks, steps, threads, |(i, seen), r| {
                    seen.extend(r);
                    if seen.len() >= steps {
                        finished.lock().unwrap().push((*i, seen.clone()));
                    }
                });
                let mut finished = finished.into_inner().unwrap();
                finished.sort();
                let want: Vec<_> = (0..5).map(|i| (i, (0..steps).collect())).collect();
                assert_eq!(finished, want, "threads {threads}, steps {steps}");
            }
        }
    }

    /// Backwards, every chunk sees every step once, from the last down to 0.
    #[test]
    fn backward_walks_every_step_down() {
        for threads in [1, 2, 3] {
            let steps = 3 * SLICE + 5;
            let chunks: Vec<(usize, Vec<usize>)> = (0..4).map(|i| (i, Vec::new())).collect();
            let finished = Mutex::new(Vec::new());
            run_backward(chunks, steps, threads, |(i, seen), r| {
                seen.extend(r.rev());
                if seen.len() >= steps {
                    finished.lock().unwrap().push((*i, seen.clone()));
                }
            });
            let mut finished = finished.into_inner().unwrap();
            finished.sort();
            let want: Vec<_> = (0..4).map(|i| (i, (0..steps).rev().collect())).collect();
            assert_eq!(finished, want, "threads {threads}");
        }
    }

    /// A thread keeps to its own chunks only while they are at most a slice ahead: when the
    /// calling thread is slow (it sleeps in every slice), the helper takes over its chunks.
    #[test]
    fn a_fast_thread_takes_the_slow_ones_chunks() {
        let steps = 5 * SLICE;
        let chunks: Vec<usize> = (0..4).collect();
        let ran_by = Mutex::new(Vec::new());
        run(chunks, steps, 2, |_, _| {
            let member = super::super::team::member();
            if member == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            ran_by.lock().unwrap().push(member);
        });
        let ran_by = ran_by.into_inner().unwrap();
        assert_eq!(ran_by.len(), 4 * 5, "every slice once");
        let helper = ran_by.iter().filter(|&&m| m != 0).count();
        // its own chunks alone would be 10 slices
        assert!(
            helper >= 14,
            "the helper ran {helper} slices of 20: {ran_by:?}"
        );
    }

    #[test]
    fn chunks_are_whole_tiles() {
        assert_eq!(chunk_rows(64, 1), 64);
        assert_eq!(chunk_rows(64, 2), 16);
        assert_eq!(chunk_rows(128, 2), 32);
        assert_eq!(chunk_rows(5, 2), 8);
    }
}
