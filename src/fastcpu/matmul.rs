//! Fast twin of `shaders/matmul.wgsl`: C = op(A)·op(B) through the `gemm` crate, then
//! the epilogue on each row of C.

use super::PAR_MIN;
use crate::ops::{Epilogue, MatmulSpec};
use rayon::prelude::*;

/// C\[M,N\] = epilogue(op(A)·op(B)) (+ C when `spec.accumulate`). A is stored \[M,K\] (or \[K,M\]
/// with `trans_a`), B \[K,N\] (or \[N,K\] with `trans_b`); `aux` is the bias \[N\] or the mask \[M,N\].
/// `scratch` holds the partial products of a split K (see [`split_k`]), grown once. Runs on
/// the current rayon pool's threads.
pub fn matmul(
    spec: &MatmulSpec,
    a: &[f32],
    b: &[f32],
    aux: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    matmul_on(spec, a, b, aux, c, scratch, rayon::current_num_threads())
}

/// [`matmul`] on the calling thread alone: for a block of a larger job that is already
/// split over the pool (the fused convolutions of [`super::conv2d`]).
pub fn matmul_local(spec: &MatmulSpec, a: &[f32], b: &[f32], aux: Option<&[f32]>, c: &mut [f32]) {
    matmul_on(spec, a, b, aux, c, &mut Vec::new(), 1)
}

fn matmul_on(
    spec: &MatmulSpec,
    a: &[f32],
    b: &[f32],
    aux: Option<&[f32]>,
    c: &mut [f32],
    scratch: &mut Vec<f32>,
    threads: usize,
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
        // C += epilogue(A·B): no layer asks for it; the product is finished apart first.
        let mut p = vec![0.0; m * n];
        product(spec, a, b, 0.0, &mut p, scratch, threads);
        epilogue(spec, aux, &mut p, threads);
        c.iter_mut().zip(&p).for_each(|(c, p)| *c += p);
    } else {
        product(
            spec,
            a,
            b,
            if spec.accumulate { 1.0 } else { 0.0 },
            c,
            scratch,
            threads,
        );
        epilogue(spec, aux, c, threads);
    }
}

/// Parts to split K into: one per thread when K dwarfs both sides of C — a convolution's
/// weight gradient, dW[O, C·K·K] = dYᵀ·cols with K = B·OH·OW in the tens of thousands — where
/// sharing out C's few rows or columns keeps the threads waiting on each other, and K is long
/// enough that each part's product outweighs adding up the parts.
pub fn split_k(spec: &MatmulSpec, threads: usize) -> usize {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    if threads > 1 && k >= 4096 && k >= 8 * m.max(n) {
        threads.min(k / 2048)
    } else {
        1
    }
}

/// C = op(A)·op(B) + beta·C, splitting K over the pool's threads where [`split_k`] says so:
/// each part is a single-threaded product into `scratch`, and the parts are added in order
/// (a different summation order than one product, within the same γ_K bound).
fn product(
    spec: &MatmulSpec,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
    scratch: &mut Vec<f32>,
    threads: usize,
) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let parts = split_k(spec, threads);
    if parts <= 1 {
        return gemm(spec, a, b, beta, c, threads > 1);
    }
    // Element offsets of one step along K in the stored A and B.
    let a_step = if spec.trans_a { m } else { 1 };
    let b_step = if spec.trans_b { 1 } else { n };
    scratch.clear();
    scratch.resize(parts * m * n, 0.0);
    let per = k.div_ceil(parts);
    scratch
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(p, out)| {
            let (k0, k1) = (p * per, ((p + 1) * per).min(k));
            let part = MatmulSpec {
                k: k1 - k0,
                ..*spec
            };
            gemm_strided(
                &part,
                &a[k0 * a_step..],
                &b[k0 * b_step..],
                (m, n, k),
                0.0,
                out,
                false,
            );
        });
    for (i, c) in c.iter_mut().enumerate() {
        let mut s = if beta == 0.0 { 0.0 } else { beta * *c };
        for p in 0..parts {
            s += scratch[p * m * n + i];
        }
        *c = s;
    }
}

/// C = op(A)·op(B) + beta·C (beta 0: C's old contents, NaN included, are never read), on the
/// current rayon pool's threads when `threaded`.
fn gemm(spec: &MatmulSpec, a: &[f32], b: &[f32], beta: f32, c: &mut [f32], threaded: bool) {
    gemm_strided(spec, a, b, (spec.m, spec.n, spec.k), beta, c, threaded)
}

/// [`gemm`] on operands stored with the leading dimensions of a `full` (M, N, K) product (a
/// K-slice of it).
fn gemm_strided(
    spec: &MatmulSpec,
    a: &[f32],
    b: &[f32],
    full: (usize, usize, usize),
    beta: f32,
    c: &mut [f32],
    threaded: bool,
) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (full_m, full_n, full_k) = full;
    if k == 0 {
        // An empty sum: the product is zero.
        c.iter_mut().for_each(|v| *v *= beta);
        if beta == 0.0 {
            c.fill(0.0);
        }
        return;
    }
    let (rsa, csa) = if spec.trans_a {
        (1, full_m as isize)
    } else {
        (full_k as isize, 1)
    };
    let (rsb, csb) = if spec.trans_b {
        (1, full_k as isize)
    } else {
        (full_n as isize, 1)
    };
    let threads = rayon::current_num_threads();
    let parallelism = if threaded && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the strides address the m·k, k·n and m·n elements of a product (or a K-slice of
    // one, starting at the slices given) whose presence `matmul` asserted, and C does not
    // overlap A or B (distinct slices).
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

/// The epilogue, row by row (rows split over threads when C is large and `threads` > 1), in
/// the twin's order: one rounded addition of the bias, then max(·, 0) with NaN → 0; or zero
/// where mask ≤ 0.
fn epilogue(spec: &MatmulSpec, aux: Option<&[f32]>, c: &mut [f32], threads: usize) {
    let n = spec.n;
    let rows_per_task = if threads > 1 {
        (PAR_MIN / n).max(1)
    } else {
        c.len() / n
    };
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
                        *v = if m > 0.0 { *v } else { 0.0 };
                    }
                });
        }
    }
}
