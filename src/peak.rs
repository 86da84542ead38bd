//! The machine's measured f32 FMA peak, the ceiling to quote CPU GFLOP/s against.
//!
//! Hand-written because nothing else measures it: no crate times a register-resident FMA loop
//! (BLAS crates report their own kernels, not the ceiling), and a peak computed from a table
//! of clock × FMA units × lanes is only as good as the table and ignores the clock a loaded
//! chip actually runs at. So: `ACC` independent FMA chains per thread, each in its own vector
//! register (enough to hide FMA latency × FMA units per cycle: 4–6 cycles × 2 units on current
//! x86 cores), no loads or stores in the loop, on `threads` threads at once, ~0.2 s per try,
//! best of 3.
//!
//! The paths, picked at run time:
//! * x86-64 with AVX-512F: 16 lanes. Inline assembly rather than `_mm512_fmadd_ps`: written
//!   when this crate's `rust-version` was 1.87, before the AVX-512 intrinsics were stable
//!   (1.89); it names exactly the instruction it times, so it stays.
//! * x86-64 with AVX2 and FMA: 8 lanes (`_mm256_fmadd_ps`).
//! * anything else: scalar chains of `f32::mul_add` (one lane), or of `a * b + c` where that
//!   would be a library call (x86 without FMA): a lower bound only, as it uses none of the
//!   chip's SIMD width.
//!
//! Each FMA lane counts 2 flops. On a busy machine the figure is what the threads got, not what
//! the silicon can do; best of 3 trims, but cannot undo, other load.

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Independent accumulator chains (vector registers) per thread.
const ACC: usize = 12;
/// Wall time one try aims at.
const TRY: Duration = Duration::from_millis(200);
/// Tries; the best counts.
const TRIES: usize = 3;

/// `acc ← acc·A + B` keeps every chain near B / (1 − A) = 1: no overflow, no denormals.
const A: f32 = 0.999;
const B: f32 = 1.0e-3;

/// The kernel the CPU can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    Scalar,
}

impl Path {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Path::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Path::Avx2Fma;
            }
        }
        Path::Scalar
    }

    fn lanes(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => 16,
            #[cfg(target_arch = "x86_64")]
            Path::Avx2Fma => 8,
            Path::Scalar => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => "avx512f",
            #[cfg(target_arch = "x86_64")]
            Path::Avx2Fma => "avx2+fma",
            Path::Scalar => "scalar",
        }
    }

    /// `iters` rounds of one FMA on each of the `ACC` chains; returns a value derived from
    /// every chain so that none is dead code.
    fn run(self, iters: u64) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() saw AVX-512F.
            Path::Avx512 => unsafe { x86::avx512(iters) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() saw AVX2 and FMA.
            Path::Avx2Fma => unsafe { x86::avx2_fma(iters) },
            Path::Scalar => scalar(iters),
        }
    }
}

/// The instruction set [`cpu_fma_peak_gflops`] measures with here: `"avx512f"`, `"avx2+fma"`
/// or `"scalar"` (a lower bound).
pub fn fma_isa() -> &'static str {
    Path::detect().name()
}

/// Measured f32 FMA peak of `threads` threads together, in GFLOP/s (2 flops per FMA lane):
/// register-resident FMA chains on every thread at once for ~0.2 s, best of 3. Takes about
/// 0.7 s. `threads` 0 counts as 1. See the module docs for the paths and their caveats.
pub fn cpu_fma_peak_gflops(threads: usize) -> f64 {
    let threads = threads.max(1);
    let path = Path::detect();
    let iters = calibrate(path);
    let flops = 2.0 * (threads as u64 * iters * (ACC * path.lanes()) as u64) as f64;
    (0..TRIES)
        .map(|_| flops / timed(path, threads, iters).as_secs_f64().max(1e-9) / 1e9)
        .fold(0.0, f64::max)
}

/// Iterations that take about [`TRY`] on one thread.
fn calibrate(path: Path) -> u64 {
    let mut iters = 1u64 << 12;
    loop {
        let t = Instant::now();
        std::hint::black_box(path.run(std::hint::black_box(iters)));
        let dt = t.elapsed();
        if dt >= Duration::from_millis(20) || iters >= 1 << 40 {
            let scale = TRY.as_secs_f64() / dt.as_secs_f64().max(1e-9);
            return ((iters as f64 * scale) as u64).max(1);
        }
        iters *= 4;
    }
}

/// Wall time from a common start until the last of `threads` threads has run `iters`.
fn timed(path: Path, threads: usize, iters: u64) -> Duration {
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                std::hint::black_box(path.run(std::hint::black_box(iters)));
            });
        }
        start.wait();
        Instant::now()
    })
    .elapsed()
}

/// One lane per chain. `mul_add` is one instruction where the target has a fused multiply-add
/// (aarch64, x86 built with `fma`); on x86 without it, a library call, so `a * b + c` there.
fn scalar(iters: u64) -> f32 {
    #[inline(always)]
    fn step(acc: f32, a: f32, b: f32) -> f32 {
        if cfg!(any(
            not(any(target_arch = "x86", target_arch = "x86_64")),
            target_feature = "fma"
        )) {
            acc.mul_add(a, b)
        } else {
            acc * a + b
        }
    }
    let (a, b) = (std::hint::black_box(A), std::hint::black_box(B));
    let mut acc = [0.0f32; ACC];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = step(*x, a, b);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{A, ACC, B};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// `iters` × 12 `vfmadd213ps` on zmm0–zmm11 (zmm14 = A, zmm15 = B in every lane).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    pub(super) unsafe fn avx512(iters: u64) -> f32 {
        const _: () = assert!(ACC == 12, "the assembly below names 12 accumulators");
        if iters == 0 {
            return 0.0;
        }
        let ab = [A, B];
        let mut out = [0.0f32; 16];
        // SAFETY: reads `ab`, writes `out` (16 floats); every vector register it touches is
        // caller-saved, declared by clobber_abi("C"), and vzeroupper leaves the upper halves
        // clean for SSE code afterwards.
        unsafe {
            asm!(
                "vbroadcastss zmm14, dword ptr [{ab}]",
                "vbroadcastss zmm15, dword ptr [{ab} + 4]",
                "vxorps xmm0, xmm0, xmm0",
                "vmovaps zmm1, zmm0", "vmovaps zmm2, zmm0", "vmovaps zmm3, zmm0",
                "vmovaps zmm4, zmm0", "vmovaps zmm5, zmm0", "vmovaps zmm6, zmm0",
                "vmovaps zmm7, zmm0", "vmovaps zmm8, zmm0", "vmovaps zmm9, zmm0",
                "vmovaps zmm10, zmm0", "vmovaps zmm11, zmm0",
                ".p2align 5",
                "2:",
                "vfmadd213ps zmm0, zmm14, zmm15",
                "vfmadd213ps zmm1, zmm14, zmm15",
                "vfmadd213ps zmm2, zmm14, zmm15",
                "vfmadd213ps zmm3, zmm14, zmm15",
                "vfmadd213ps zmm4, zmm14, zmm15",
                "vfmadd213ps zmm5, zmm14, zmm15",
                "vfmadd213ps zmm6, zmm14, zmm15",
                "vfmadd213ps zmm7, zmm14, zmm15",
                "vfmadd213ps zmm8, zmm14, zmm15",
                "vfmadd213ps zmm9, zmm14, zmm15",
                "vfmadd213ps zmm10, zmm14, zmm15",
                "vfmadd213ps zmm11, zmm14, zmm15",
                "dec rcx",
                "jnz 2b",
                "vaddps zmm0, zmm0, zmm1", "vaddps zmm2, zmm2, zmm3", "vaddps zmm4, zmm4, zmm5",
                "vaddps zmm6, zmm6, zmm7", "vaddps zmm8, zmm8, zmm9", "vaddps zmm10, zmm10, zmm11",
                "vaddps zmm0, zmm0, zmm2", "vaddps zmm4, zmm4, zmm6", "vaddps zmm8, zmm8, zmm10",
                "vaddps zmm0, zmm0, zmm4", "vaddps zmm0, zmm0, zmm8",
                "vmovups zmmword ptr [{out}], zmm0",
                "vzeroupper",
                ab = in(reg) ab.as_ptr(),
                out = in(reg) out.as_mut_ptr(),
                inout("rcx") iters => _,
                clobber_abi("C"),
                options(nostack),
            );
        }
        out.iter().sum()
    }

    /// `iters` × 12 `_mm256_fmadd_ps` on 12 accumulators.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2_fma(iters: u64) -> f32 {
        let a = _mm256_set1_ps(A);
        let b = _mm256_set1_ps(B);
        let z = _mm256_setzero_ps();
        let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) = (z, z, z, z, z, z);
        let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) = (z, z, z, z, z, z);
        for _ in 0..iters {
            c0 = _mm256_fmadd_ps(c0, a, b);
            c1 = _mm256_fmadd_ps(c1, a, b);
            c2 = _mm256_fmadd_ps(c2, a, b);
            c3 = _mm256_fmadd_ps(c3, a, b);
            c4 = _mm256_fmadd_ps(c4, a, b);
            c5 = _mm256_fmadd_ps(c5, a, b);
            c6 = _mm256_fmadd_ps(c6, a, b);
            c7 = _mm256_fmadd_ps(c7, a, b);
            c8 = _mm256_fmadd_ps(c8, a, b);
            c9 = _mm256_fmadd_ps(c9, a, b);
            c10 = _mm256_fmadd_ps(c10, a, b);
            c11 = _mm256_fmadd_ps(c11, a, b);
        }
        let s = _mm256_add_ps(
            _mm256_add_ps(
                _mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)),
            ),
            _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)),
        );
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), s);
        out.iter().sum()
    }
}

/// The CPU's name: the first "model name" in /proc/cpuinfo, else the architecture
/// (`std::env::consts::ARCH`).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_is_positive_and_finite() {
        for threads in [1, 2] {
            let g = cpu_fma_peak_gflops(threads);
            assert!(g.is_finite() && g > 0.0, "{threads} threads: {g} GFLOP/s");
        }
    }

    #[test]
    fn every_path_runs_and_stays_near_one() {
        // acc → B / (1 − A) = 1 from 0: after 10⁵ rounds within 1e-3 of it, in every lane.
        let path = Path::detect();
        let per_chain = path.run(100_000) / (ACC * path.lanes()) as f32;
        assert!(
            (per_chain - 1.0).abs() < 1e-3,
            "{} {per_chain}",
            path.name()
        );
        let per_chain = scalar(100_000) / ACC as f32;
        assert!((per_chain - 1.0).abs() < 1e-3, "scalar {per_chain}");
        assert_eq!(path.run(0), 0.0);
    }

    #[test]
    fn cpu_model_is_not_empty() {
        assert!(!cpu_model().is_empty());
        assert!(["avx512f", "avx2+fma", "scalar"].contains(&fma_isa()));
    }
}
