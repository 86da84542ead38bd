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
        let beta = if spec.accumulate { 1.0 } else { 0.0 };
        if split_k(spec, threads) <= 1 && split_n(spec, threads) > 1 {
            // Each column block's epilogue right after its product, in that thread's cache.
            return gemm_columns(spec, a, b, beta, aux, c, threads);
        }
        product(spec, a, b, beta, c, scratch, threads);
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

/// C = epilogue(op(A)·op(B) + beta·C) by blocks of C's columns, one single-threaded product
/// per thread followed by the epilogue on its block (see [`split_n`]).
fn gemm_columns(
    spec: &MatmulSpec,
    a: &[f32],
    b: &[f32],
    beta: f32,
    aux: Option<&[f32]>,
    c: &mut [f32],
    threads: usize,
) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let parts = split_n(spec, threads);
    let per = n.div_ceil(parts).next_multiple_of(16);
    let dst = SharedDst(c.as_mut_ptr());
    (0..parts).into_par_iter().for_each(|p| {
        let (n0, n1) = ((p * per).min(n), ((p + 1) * per).min(n));
        if n0 == n1 {
            return;
        }
        // Columns n0..n1 of op(B): rows n0..n1 of a transposed B, columns of a plain one.
        let b_at = if spec.trans_b { n0 * k } else { n0 };
        let part = MatmulSpec {
            n: n1 - n0,
            ..*spec
        };
        // SAFETY: as in `gemm_strided`; each part writes only columns n0..n1 of C (row
        // stride n), disjoint from every other part's, and reads nothing another part writes.
        unsafe {
            gemm_raw(
                &part,
                a.as_ptr(),
                b.as_ptr().add(b_at),
                (m, n, k),
                beta,
                dst.at(n0),
                false,
            );
            for i in 0..m {
                let row = std::slice::from_raw_parts_mut(dst.at(i * n + n0), n1 - n0);
                epilogue_row(spec, aux, i, n0, row);
            }
        }
    });
}

/// C's storage shared by the column blocks of [`gemm`], each writing only its own columns.
struct SharedDst(*mut f32);
// SAFETY: the parts of [`gemm`] write disjoint columns of C.
unsafe impl Sync for SharedDst {}
impl SharedDst {
    /// The address of column `j` of C's first row.
    fn at(&self, j: usize) -> *mut f32 {
        // SAFETY: j < n, inside C.
        unsafe { self.0.add(j) }
    }
}

/// Parts to split C's columns into, each a single-threaded product on one thread, where the
/// `gemm` crate's own threading pays less: products with few rows (a minibatch of 100).
/// Measured on an Intel Xeon, 2 threads (BENCHMARKS.md): with B stored transposed ([N, K], a
/// dense layer's forward y = x·Wᵀ) its two threads took as long as one (100×1024×3136: 5.8 →
/// 3.2 ms split; 100×512×784: 0.43 → 0.28 ms), and the plain products gain too (100×512×512
/// NN: 0.20 → 0.15 ms); each thread packs and multiplies its own half of op(B).
pub fn split_n(spec: &MatmulSpec, threads: usize) -> usize {
    let (m, n) = (spec.m, spec.n);
    if threads > 1 && m <= 1024 && n >= 32 * threads {
        threads
    } else {
        1
    }
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
    // SAFETY: the strides address the m·k, k·n and m·n elements of a product (or a K-slice of
    // one, starting at the slices given) whose presence `matmul` asserted, and C does not
    // overlap A or B (distinct slices).
    unsafe {
        gemm_raw(
            spec,
            a.as_ptr(),
            b.as_ptr(),
            full,
            beta,
            c.as_mut_ptr(),
            threaded,
        )
    }
}

/// The `gemm` crate's product C = op(A)·op(B) + beta·C with C's rows `full.1` apart.
///
/// # Safety
/// `a`, `b` and `c` address the m·k, k·n and m·n elements of the product with the strides
/// of the `full` (M, N, K) product, and C does not overlap A or B.
unsafe fn gemm_raw(
    spec: &MatmulSpec,
    a: *const f32,
    b: *const f32,
    full: (usize, usize, usize),
    beta: f32,
    c: *mut f32,
    threaded: bool,
) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (full_m, full_n, full_k) = full;
    if k == 0 {
        // An empty sum: the product is zero.
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) is inside C.
                let v = unsafe { &mut *c.add(i * full_n + j) };
                *v = if beta == 0.0 { 0.0 } else { *v * beta };
            }
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
    // SAFETY: the caller's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            full_n as isize,
            beta != 0.0,
            a,
            csa,
            rsa,
            b,
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
    if spec.epilogue == Epilogue::None {
        return;
    }
    let rows_per_task = if threads > 1 {
        (PAR_MIN / n).max(1)
    } else {
        c.len() / n
    };
    c.par_chunks_mut(n * rows_per_task)
        .enumerate()
        .for_each(|(t, block)| {
            for (r, row) in block.chunks_exact_mut(n).enumerate() {
                epilogue_row(spec, aux, t * rows_per_task + r, 0, row);
            }
        });
}

/// The epilogue on `row`: columns j0.. of C's row i.
fn epilogue_row(spec: &MatmulSpec, aux: Option<&[f32]>, i: usize, j0: usize, row: &mut [f32]) {
    let w = row.len();
    match spec.epilogue {
        Epilogue::None => {}
        Epilogue::Bias => {
            let bias = &aux.expect("bias epilogue needs a bias")[j0..j0 + w];
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
        Epilogue::BiasRelu => {
            let bias = &aux.expect("bias epilogue needs a bias")[j0..j0 + w];
            for (v, &b) in row.iter_mut().zip(bias) {
                let s = *v + b;
                *v = if s > 0.0 { s } else { 0.0 };
            }
        }
        Epilogue::ReluMask => {
            let mask = &aux.expect("mask epilogue needs a mask")[i * spec.n + j0..][..w];
            for (v, &m) in row.iter_mut().zip(mask) {
                *v = if m > 0.0 { *v } else { 0.0 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::tolerance::gamma;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    /// Every (transposes, epilogue, accumulate) on a product split by columns (two threads,
    /// N not a multiple of the 16-column block alignment) against the twin in f64, within
    /// γ_{K+2} of the sum of magnitudes; C starts NaN-poisoned where it is not accumulated.
    #[test]
    fn column_split_products_match_the_twin_for_every_variant() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (m, n, k) = (37, 131, 53);
        let seed = 23;
        println!("seed {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut rand =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let (a, b, bias, mask, c0) = (rand(m * k), rand(k * n), rand(n), rand(m * n), rand(m * n));
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for ep in [
                    Epilogue::None,
                    Epilogue::Bias,
                    Epilogue::BiasRelu,
                    Epilogue::ReluMask,
                ] {
                    for accumulate in [false, true] {
                        let spec = MatmulSpec {
                            trans_a,
                            trans_b,
                            epilogue: ep,
                            accumulate,
                            ..MatmulSpec::new(m, n, k)
                        };
                        assert_eq!(split_n(&spec, 2), 2, "{spec:?} must split");
                        let aux = match ep {
                            Epilogue::ReluMask => Some(&mask[..]),
                            Epilogue::None => None,
                            _ => Some(&bias[..]),
                        };
                        let mut c = if accumulate {
                            c0.clone()
                        } else {
                            vec![f32::NAN; m * n]
                        };
                        pool.install(|| matmul(&spec, &a, &b, aux, &mut c, &mut Vec::new()));
                        let to64 = |v: &[f32], r, cols| {
                            Array2::from_shape_vec((r, cols), v.iter().map(|&x| x as f64).collect())
                                .unwrap()
                        };
                        let (av, bv) = (
                            if trans_a {
                                to64(&a, k, m)
                            } else {
                                to64(&a, m, k)
                            },
                            if trans_b {
                                to64(&b, n, k)
                            } else {
                                to64(&b, k, n)
                            },
                        );
                        let mut want =
                            crate::cpu::matmul::matmul(av.view(), bv.view(), trans_a, trans_b);
                        let mag = crate::cpu::matmul::matmul(
                            av.mapv(f64::abs).view(),
                            bv.mapv(f64::abs).view(),
                            trans_a,
                            trans_b,
                        );
                        let bias64 = ndarray::Array1::from_iter(bias.iter().map(|&x| x as f64));
                        let mask64 = to64(&mask, m, n);
                        crate::cpu::matmul::epilogue(
                            &mut want,
                            ep,
                            Some(bias64.view()),
                            Some(mask64.view()),
                        );
                        for i in 0..m {
                            for j in 0..n {
                                let mut w = want[[i, j]];
                                let mut bound = gamma(k + 2) * (mag[[i, j]] + bias64[j].abs());
                                if accumulate {
                                    w += c0[i * n + j] as f64;
                                    bound += gamma(k + 3)
                                        * (mag[[i, j]]
                                            + c0[i * n + j].abs() as f64
                                            + bias64[j].abs());
                                }
                                let got = c[i * n + j] as f64;
                                assert!(
                                    (got - w).abs() <= bound,
                                    "{spec:?} C[{i},{j}] = {got}, twin {w}, bound {bound:e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
