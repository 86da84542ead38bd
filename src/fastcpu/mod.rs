//! The fast CPU kernels behind [`crate::backend::cpu::CpuBackend`], one file per op family
//! under the same name as its WGSL shader and its simple twin in [`crate::cpu`].
//!
//! What makes them fast, and nothing else differs from the twins:
//! * no allocation: every kernel writes into a buffer the backend allocated once per run;
//! * one pass over the data: bias + ReLU (or the ReLU mask) is applied to each product row
//!   while it is hot, softmax, loss and their gradient are each one sweep of a row, the
//!   momentum and Adam updates one sweep of the parameters;
//! * the matrix products go to the `gemm` crate's packed, vectorised f32 kernels (AVX-512
//!   where the CPU has it, via its `x86-v4` feature; AVX2+FMA otherwise) on the backend's
//!   rayon pool, transposes as strides, never copies (chosen by measurement over
//!   `matrixmultiply` and PyTorch's own products: BENCHMARKS.md);
//! * convolutions skip the cols buffers where the backend can fuse a layer's ops
//!   ([`conv2d`]): direct SIMD kernels for one-channel stride-1 layers, tap-major im2col /
//!   col2im (contiguous copies) for the others, the input gradient one image at a time;
//! * element-wise work large enough to pay for it is split over the backend's rayon pool by
//!   rows or images, so each output element is still produced by one thread in the twin's
//!   order of operations.
//!
//! The kernels are checked against the twins on random inputs by `wgtrain verify --device cpu`
//! and the test suite, with the same tolerances as a GPU adapter.

pub mod adam;
pub mod add;
pub mod avgpool;
pub mod batchnorm;
pub mod bias;
pub mod conv2d;
pub mod conv2d_implicit;
pub mod dropout;
pub mod gather;
pub mod matmul;
pub mod maxpool;
pub mod metrics;
pub mod sgd;
pub mod softmax_xent;

/// Elements below which splitting a sweep over threads costs more than it saves (a rayon
/// task costs a few microseconds; 16 Ki f32 take about as long to stream).
pub const PAR_MIN: usize = 1 << 14;

/// Runs `f` on the current worker of a rayon pool while every other worker of the pool polls
/// for work instead of going to sleep between the kernels' parallel sections, so a kernel's
/// first split starts at once rather than after waking a sleeping thread. Measured on the
/// Intel Xeon of BENCHMARKS.md (2 threads, 300 µs of serial work between products): the
/// small products of a minibatch took 10–15 % longer without it (100×512×512 NN 0.166 →
/// 0.194 ms); seed-large's whole step 2.30 → 2.24 ms (medians of 18 chunks, alternating).
/// The pollers keep their cores while `f` runs, which is what a training step
/// wants of the threads it was given, but yield them to the OS between polls, so other
/// runnable threads are not starved; outside a pool, or with one thread, `f` just runs.
pub fn with_spinning_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    let others = rayon::current_num_threads().saturating_sub(1);
    if others == 0 || rayon::current_thread_index().is_none() {
        return f();
    }
    /// Stops the pollers when dropped, also when `f` panics.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let stop = AtomicBool::new(false);
    rayon::scope(|s| {
        for _ in 0..others {
            s.spawn(|_| {
                while !stop.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        // To the OS, not a busy spin: on a machine with more runnable
                        // threads than cores (tests in parallel) the poller gives way.
                        std::thread::yield_now();
                    }
                }
            });
        }
        let _stop = Stop(&stop);
        f()
    })
}
