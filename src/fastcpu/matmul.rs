//! Fast twin of `shaders/matmul.wgsl`: C = op(A)·op(B) through the `gemm` crate, then
//! the epilogue on each row of C.

use super::PAR_MIN;
use crate::ops::{Epilogue, MatmulSpec};
use rayon::prelude::*;

/// C[M,N] = epilogue(op(A)·op(B)) (+ C when `spec.accumulate`). A is stored [M,K] (or [K,M]
/// with `trans_a`), B [K,N] (or [N,K] with `trans_b`); `aux` is the bias [N] or the mask [M,N].
/// `scratch` holds the product when it must be finished before it is added to C.
pub fn matmul(
    spec: &MatmulSpec,
    a: &[f32],
    b: &[f32],
    aux: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "matmul {m}x{n}x{k}: operand too short"
    );
    let c = &mut c[..m * n];
    if m == 0 || n == 0 {
        return;
    }
    if spec.accumulate && spec.epilogue != Epilogue::None {
        scratch.clear();
        scratch.resize(m * n, 0.0);
        gemm(spec, a, b, 0.0, scratch);
        epilogue(spec, aux, scratch);
        c.iter_mut().zip(scratch.iter()).for_each(|(c, s)| *c += s);
    } else {
        gemm(spec, a, b, if spec.accumulate { 1.0 } else { 0.0 }, c);
        epilogue(spec, aux, c);
    }
}

/// C = op(A)·op(B) + beta·C (beta 0: C's old contents, NaN included, are never read), on the
/// current rayon pool's threads.
fn gemm(spec: &MatmulSpec, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    if k == 0 {
        // An empty sum: the product is zero.
        c.iter_mut().for_each(|v| *v *= beta);
        if beta == 0.0 {
            c.fill(0.0);
        }
        return;
    }
    let (rsa, csa) = if spec.trans_a {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (rsb, csb) = if spec.trans_b {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the strides address exactly the m·k, k·n and m·n elements whose presence
    // `matmul` asserted, and C does not overlap A or B (distinct slices).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.as_ptr(),
            csa,
            rsa,
            b.as_ptr(),
            csb,
            rsb,
            beta,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The epilogue, row by row (rows split over threads when C is large), in the twin's order:
/// one rounded addition of the bias, then max(·, 0) with NaN → 0; or zero where mask ≤ 0.
fn epilogue(spec: &MatmulSpec, aux: Option<&[f32]>, c: &mut [f32]) {
    let n = spec.n;
    let rows_per_task = (PAR_MIN / n).max(1);
    match spec.epilogue {
        Epilogue::None => {}
        Epilogue::Bias | Epilogue::BiasRelu => {
            let bias = &aux.expect("bias epilogue needs a bias")[..n];
            let relu = spec.epilogue == Epilogue::BiasRelu;
            let row = |row: &mut [f32]| {
                for (v, &b) in row.iter_mut().zip(bias) {
                    let s = *v + b;
                    *v = if !relu || s > 0.0 { s } else { 0.0 };
                }
            };
            c.par_chunks_mut(n * rows_per_task)
                .for_each(|block| block.chunks_exact_mut(n).for_each(row));
        }
        Epilogue::ReluMask => {
            let mask = &aux.expect("mask epilogue needs a mask")[..c.len()];
            c.par_chunks_mut(n * rows_per_task)
                .zip(mask.par_chunks(n * rows_per_task))
                .for_each(|(c, m)| {
                    for (v, &m) in c.iter_mut().zip(m) {
                        if m <= 0.0 || m.is_nan() {
                            *v = 0.0;
                        }
                    }
                });
        }
    }
}
