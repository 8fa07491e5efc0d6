//! Compiling the elementwise kernels for the vector units the CPU actually has.
//!
//! The crate is built for plain x86-64 (SSE2), so a loop over the gates would use 4-lane
//! vectors at best. `multiversion!` compiles one `#[inline(always)]` body three times,
//! for AVX-512, for AVX2 and for the baseline, and calls the best one the CPU supports
//! (detected once). The body is ordinary scalar Rust written so that it vectorises: slices
//! zipped to equal length, no branches, [`crate::real::exp_f32`] instead of a library call.
//! The three builds compute exactly the same operations in the same order (no fused
//! multiply-add is introduced without an explicit `mul_add`), so the result does not depend on
//! the CPU.

/// Units processed together in the fused elementwise passes (one AVX-512 vector of f32).
/// A pass copies LANES units of each operand into local arrays, computes on those and
/// copies the results back: nothing can alias a local array, so the unit loop vectorises
/// (written as one loop over the units of a row through several slices, the GRU's backward
/// pass compiled to scalar instructions). The loop over a row's blocks of LANES units is
/// written out in each pass on purpose: a helper taking the block's work as a closure
/// compiles that closure without the pass's target features, and the gate math leaves the
/// AVX-512 registers (seen in the disassembly).
pub const LANES: usize = 16;

/// Units `r` (at most [`LANES`]) of each slice, copied into local arrays (zero past
/// `r.len()`): what a pass's unit loop computes on.
#[inline(always)]
pub fn load_lanes<F: Copy + num_traits::Zero, const N: usize>(
    srcs: [&[F]; N],
    r: std::ops::Range<usize>,
) -> [[F; LANES]; N] {
    let mut u = [[F::zero(); LANES]; N];
    for (dst, src) in u.iter_mut().zip(srcs) {
        dst[..r.len()].copy_from_slice(&src[r.clone()]);
    }
    u
}

/// The first `r.len()` entries of each local array back into units `r` of its slice (the
/// inverse of [`load_lanes`]).
#[inline(always)]
pub fn store_lanes<'a, F: Copy + 'a>(
    dsts: impl IntoIterator<Item = &'a mut [F]>,
    r: std::ops::Range<usize>,
    u: &[[F; LANES]],
) {
    for (dst, src) in dsts.into_iter().zip(u) {
        dst[r.clone()].copy_from_slice(&src[..r.len()]);
    }
}

/// The widest vector extension usable on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Baseline,
    Avx2,
    Avx512,
}

/// Detected once. `RNNLAB_NO_AVX512=1` in the environment caps it at AVX2 (for comparisons).
pub fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            if super::gemm::has_avx512() {
                Level::Avx512
            } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            {
                Level::Avx2
            } else {
                Level::Baseline
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Level::Baseline
    }
}

/// `multiversion!(pub fn name<F: Real>(a: A, b: B) => body);` defines `name`, which calls
/// the generic `#[inline(always)] fn body<F: Real>(a: A, b: B)` compiled for the best
/// [`Level`] of this CPU. Attributes before `fn` (`#[doc(hidden)]`, say) go onto `name`.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident<F: Real>($($arg:ident : $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<F: $crate::real::Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512<F: $crate::real::Real>($($arg: $ty),*) {
                    $body::<F>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<F: $crate::real::Real>($($arg: $ty),*) {
                    $body::<F>($($arg),*)
                }
                match $crate::cell::simd::level() {
                    // SAFETY: the CPU has the features these builds were compiled for.
                    $crate::cell::simd::Level::Avx512 => return unsafe { avx512::<F>($($arg),*) },
                    $crate::cell::simd::Level::Avx2 => return unsafe { avx2::<F>($($arg),*) },
                    $crate::cell::simd::Level::Baseline => {}
                }
            }
            $body::<F>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Σ v² over a slice, widened to and accumulated in f64 (entries far back in time are below
/// 1e−19, whose squares underflow in f32). Eight interleaved partial sums, combined in a fixed
/// order: vectorises, and the result depends only on the values.
#[inline(always)]
pub fn sum_sq_f64<F: crate::real::Real>(v: &[F]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            let x = x.f64();
            *a += x * x;
        }
    }
    for (a, x) in acc.iter_mut().zip(tail) {
        let x = x.f64();
        *a += x * x;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Asks the CPU to bring the cache lines of `len` elements from `p` into L1: a hint, which
/// never faults whatever the address and does nothing off x86-64.
///
/// The caches of a time loop (gates, states) are far larger than L2, so the first write of
/// a step's rows, and the first read of them backward, would wait on memory for every line
/// (the hardware prefetchers do not cross 4 KiB pages). The cells fetch the rows of the step
/// they do next while they do the gate math of this one.
#[inline(always)]
pub fn prefetch<F>(p: *const F, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        if len == 0 {
            return;
        }
        let last = p.wrapping_add(len - 1);
        if len * std::mem::size_of::<F>() <= 64 {
            // At most 64 bytes (a block of a gate pass), so at most two lines: those of the
            // first and the last element, with no loop. (The loop below cost the GRU's
            // forward pass ~17 cycles per 16 units alone, ~88 against ~66 without any
            // fetch, once the pass stopped waiting on its own latency: the kernel bench
            // `gate_pass_forward_gru`, BENCHMARKS.md.)
            // SAFETY: prefetching is a hint; it never faults and has no visible effect.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(last as *const i8);
            }
            return;
        }
        // every line from p's to that of the last element, each once
        let (first, last) = (p as usize & !63, last as usize & !63);
        for line in (first..=last).step_by(64) {
            // SAFETY: prefetching is a hint; it never faults and has no visible effect.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// [`prefetch`] for the units `j … j+n−1` of the rows a step will touch next: each of `rows`
/// shifted by its entry of `next` (in elements; typically ± a cache's stride along time).
/// Nothing when `next` is None. A pass calls it with each block of units it works on, so
/// that the fetches spread over the row's gate math: issued all at the start of a row (96
/// lines for an LSTM row at H = 256), they held up the gate math behind them (perf put 30%
/// of the LSTM's forward gate pass on them), and spreading them made LSTM and GRU steps
/// 1–2% faster (BENCHMARKS.md).
#[inline(always)]
pub fn prefetch_units<F, const N: usize>(
    rows: [&[F]; N],
    next: Option<[isize; N]>,
    j: usize,
    n: usize,
) {
    if let Some(next) = next {
        for (row, off) in rows.into_iter().zip(next) {
            prefetch(row[j..].as_ptr().wrapping_offset(off), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{prefetch, prefetch_units};

    /// A prefetch is only a hint: addresses outside any allocation (past the end of a
    /// buffer, as the cells' last step would name, or null) must not fault.
    #[test]
    fn prefetch_never_faults() {
        let v = vec![1.0f32; 100];
        prefetch(v.as_ptr(), v.len());
        prefetch(v.as_ptr().wrapping_add(1 << 30), 4096);
        prefetch(std::ptr::null::<f64>(), 64);
        prefetch(std::ptr::null::<f32>(), 16); // (the path for at most 64 bytes)
        prefetch(v.as_ptr(), 0);
        // (the next step's rows of the last step lie past the end of the cache)
        prefetch_units([&v[..50], &v[50..]], Some([1 << 20, -(1 << 40)]), 48, 2);
        prefetch_units([&v[..]], None, 99, 1);
        assert_eq!(v.iter().sum::<f32>(), 100.0);
    }
}
