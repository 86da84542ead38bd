//! Fast twin of `shaders/batchnorm.wgsl` over channels-last x\[R,C\] (R = B·P rows, P rows a
//! sample), writing into the backend's buffers.
//!
//! Every pass walks whole samples: a sample's P·C values are contiguous and its label decides
//! for all of them whether they count (padding samples count nowhere), so there is no test
//! per element and no index arithmetic per element. Each sweep is split over the backend's
//! threads by samples, and its inner loop (a row of C channels against C per-channel
//! coefficients or accumulators) runs inside `pulp`'s dispatch, so it is compiled for
//! AVX-512 / AVX2+FMA where the CPU has them (plain loops build for baseline SSE2).
//!
//! * `apply` and `input_grad` compute each element with the twin's expression, in its order
//!   of operations (no fused multiply-add): bit-identical to [`crate::cpu::batchnorm`].
//! * The reductions (`stats`' sum and squared deviations, `backward`'s Σdy·x̂ and Σdy in one
//!   pass) split the samples of a large x into [`RUNS`] contiguous runs shared out over the
//!   threads; each run adds its rows in row order into per-channel f32 partial sums, and the
//!   partials are added in run order. That is another summation order than the twin's single
//!   running sum, with the same bound (Higham's γ_n for a sum of n terms in any order, which
//!   the oracle's tolerances in `oracle/batchnorm.rs` are written with), and the same split
//!   and order for any thread count, so a run is reproducible on every machine. A small x
//!   (under 2·`PAR_MIN` values) is one run: the twin's order, its bits. The variance keeps the
//!   twin's two passes (squared deviations around the final mean), never E[x²] − mean².

use crate::ops::BatchNormSpec;
use pulp::Arch;
use rayon::prelude::*;

/// Values below which a sweep stays on the calling thread.
const PAR_MIN: usize = super::PAR_MIN;

fn valid(labels: &[u32], spec: &BatchNormSpec, b: usize) -> bool {
    (labels[b] as usize) < spec.classes
}

/// Runs a reduction's samples are split into when it is large enough to share out.
pub const RUNS: usize = 8;

/// (runs, samples per run) of a reduction: [`RUNS`] contiguous runs of samples (fewer with
/// fewer samples) once x holds at least 2·[`PAR_MIN`] values, else one. The same for any
/// thread count, so the sums' order (and so their bits) never depend on the machine.
fn runs(spec: &BatchNormSpec) -> (usize, usize) {
    let parts = if spec.len() < 2 * PAR_MIN {
        1
    } else {
        RUNS.min(spec.batch).max(1)
    };
    let per = spec.batch.div_ceil(parts).max(1);
    (spec.batch.div_ceil(per).max(1), per)
}

/// `acc[ch] += row[ch]` for every row of `xs` (whole rows of C).
#[inline(always)]
fn add_rows(xs: &[f32], acc: &mut [f32]) {
    for row in xs.chunks_exact(acc.len()) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// `acc[ch] += (row[ch] − mean[ch])²` for every row of `xs`.
#[inline(always)]
fn add_sq_rows(xs: &[f32], mean: &[f32], acc: &mut [f32]) {
    for row in xs.chunks_exact(acc.len()) {
        for ((a, &v), &m) in acc.iter_mut().zip(row).zip(mean) {
            let d = v - m;
            *a += d * d;
        }
    }
}

/// Per-channel sums over the valid samples, `f(sample values, acc)` adding one sample's rows:
/// one partial per run of samples, added in run order into `out`.
fn reduce(
    spec: &BatchNormSpec,
    labels: &[u32],
    width: usize,
    out: &mut [f32],
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let (parts, per) = runs(spec);
    let partial = |p: usize| {
        let mut acc = vec![0.0f32; width];
        for b in p * per..((p + 1) * per).min(spec.batch) {
            if valid(labels, spec, b) {
                f(b, &mut acc);
            }
        }
        acc
    };
    out[..width].fill(0.0);
    if parts == 1 {
        out[..width].copy_from_slice(&partial(0));
        return;
    }
    let partials: Vec<Vec<f32>> = (0..parts).into_par_iter().map(partial).collect();
    for part in &partials {
        for (o, &v) in out[..width].iter_mut().zip(part) {
            *o += v;
        }
    }
}

/// See [`crate::cpu::batchnorm::batchnorm_stats`].
pub fn stats(
    x: &[f32],
    labels: &[u32],
    spec: &BatchNormSpec,
    running: &mut [f32],
    stats: &mut [f32],
) {
    let (c, image) = (spec.c, spec.per_sample * spec.c);
    let n = (0..spec.batch).filter(|&b| valid(labels, spec, b)).count() * spec.per_sample;
    let nf = n as f32;
    stats[2 * c] = nf;
    if n == 0 {
        for ch in 0..c {
            stats[ch] = 0.0;
            stats[c + ch] = 1.0 / spec.eps.sqrt();
        }
        return;
    }
    let (mean, istd) = stats[..2 * c].split_at_mut(c);
    reduce(spec, labels, c, mean, |b, acc| {
        let xs = &x[b * image..][..image];
        Arch::new().dispatch(|| add_rows(xs, acc))
    });
    mean.iter_mut().for_each(|s| *s /= nf);
    let m: &[f32] = mean;
    reduce(spec, labels, c, istd, |b, acc| {
        let xs = &x[b * image..][..image];
        Arch::new().dispatch(|| add_sq_rows(xs, m, acc))
    });
    let mo = spec.momentum;
    for ch in 0..c {
        let var = istd[ch] / nf;
        istd[ch] = 1.0 / (var + spec.eps).sqrt();
        let unbiased = if n > 1 { var * (nf / (nf - 1.0)) } else { var };
        running[ch] = (1.0 - mo) * running[ch] + mo * mean[ch];
        running[c + ch] = (1.0 - mo) * running[c + ch] + mo * unbiased;
    }
    running[2 * c] += 1.0;
}

/// See [`crate::cpu::batchnorm::batchnorm_eval_stats`].
pub fn eval_stats(running: &[f32], spec: &BatchNormSpec, stats: &mut [f32]) {
    let c = spec.c;
    for ch in 0..c {
        stats[ch] = running[ch];
        stats[c + ch] = 1.0 / (running[c + ch] + spec.eps).sqrt();
    }
    stats[2 * c] = 0.0;
}

/// Samples per task of an element-wise sweep: enough that a task streams at least
/// [`PAR_MIN`] values.
fn samples_per_task(image: usize) -> usize {
    (PAR_MIN / image.max(1)).max(1)
}

/// See [`crate::cpu::batchnorm::batchnorm_apply`].
pub fn apply(x: &[f32], stats: &[f32], w: &[f32], b: &[f32], spec: &BatchNormSpec, y: &mut [f32]) {
    let (c, image) = (spec.c, spec.per_sample * spec.c);
    if image == 0 {
        return;
    }
    let (mean, istd, w, b) = (&stats[..c], &stats[c..2 * c], &w[..c], &b[..c]);
    let relu = spec.relu;
    let per = samples_per_task(image) * image;
    y[..spec.len()]
        .par_chunks_mut(per)
        .enumerate()
        .for_each(|(t, out)| {
            let xs = &x[t * per..][..out.len()];
            Arch::new().dispatch(|| {
                for (o, xr) in out.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
                    for (((((o, &v), &m), &s), &g), &be) in
                        o.iter_mut().zip(xr).zip(mean).zip(istd).zip(w).zip(b)
                    {
                        let v = (v - m) * s * g + be;
                        *o = if !relu || v > 0.0 { v } else { 0.0 };
                    }
                }
            })
        });
}

/// `dw[ch] += dy·((x − mean)·istd)`, `db[ch] += dy` for every row (`acc` = [dw C | db C]).
#[inline(always)]
fn add_grad_rows(xs: &[f32], dys: &[f32], mean: &[f32], istd: &[f32], acc: &mut [f32]) {
    let c = mean.len();
    let (dw, db) = acc.split_at_mut(c);
    for (xr, gr) in xs.chunks_exact(c).zip(dys.chunks_exact(c)) {
        for (((((sw, sb), &v), &g), &m), &s) in dw
            .iter_mut()
            .zip(db.iter_mut())
            .zip(xr)
            .zip(gr)
            .zip(mean)
            .zip(istd)
        {
            *sw += g * ((v - m) * s);
            *sb += g;
        }
    }
}

/// See [`crate::cpu::batchnorm::batchnorm_backward`]: (dγ, dβ, coef) written in place, both
/// sums in one pass over x and dy.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    labels: &[u32],
    stats: &[f32],
    w: &[f32],
    dy: &[f32],
    spec: &BatchNormSpec,
    dw: &mut [f32],
    db: &mut [f32],
    coef: &mut [f32],
) {
    let (c, image) = (spec.c, spec.per_sample * spec.c);
    let (mean, istd, n) = (&stats[..c], &stats[c..2 * c], stats[2 * c]);
    let mut sums = vec![0.0f32; 2 * c];
    reduce(spec, labels, 2 * c, &mut sums, |b, acc| {
        let (xs, dys) = (&x[b * image..][..image], &dy[b * image..][..image]);
        Arch::new().dispatch(|| add_grad_rows(xs, dys, mean, istd, acc))
    });
    dw[..c].copy_from_slice(&sums[..c]);
    db[..c].copy_from_slice(&sums[c..]);
    for ch in 0..c {
        coef[ch] = w[ch] * istd[ch];
        let (a, b) = if n > 0.0 {
            (db[ch] / n, dw[ch] / n)
        } else {
            (0.0, 0.0)
        };
        coef[c + ch] = a;
        coef[2 * c + ch] = b;
    }
}

/// See [`crate::cpu::batchnorm::batchnorm_input_grad`].
#[allow(clippy::too_many_arguments)]
pub fn input_grad(
    x: &[f32],
    labels: &[u32],
    stats: &[f32],
    coef: &[f32],
    dy: &[f32],
    mask: Option<&[f32]>,
    spec: &BatchNormSpec,
    dx: &mut [f32],
) {
    let (c, image) = (spec.c, spec.per_sample * spec.c);
    if image == 0 {
        return;
    }
    let (mean, istd) = (&stats[..c], &stats[c..2 * c]);
    let (c0, c1, c2) = (&coef[..c], &coef[c..2 * c], &coef[2 * c..3 * c]);
    let spt = samples_per_task(image);
    dx[..spec.len()]
        .par_chunks_mut(spt * image)
        .enumerate()
        .for_each(|(t, out)| {
            for (j, out) in out.chunks_mut(image).enumerate() {
                let b = t * spt + j;
                if !valid(labels, spec, b) {
                    out.fill(0.0);
                    continue;
                }
                let (xs, dys) = (&x[b * image..][..image], &dy[b * image..][..image]);
                let ms = mask.map(|m| &m[b * image..][..image]);
                Arch::new().dispatch(|| {
                    let rows = out
                        .chunks_exact_mut(c)
                        .zip(xs.chunks_exact(c))
                        .zip(dys.chunks_exact(c));
                    match ms {
                        None => {
                            for ((o, xr), gr) in rows {
                                grad_row(o, xr, gr, mean, istd, c0, c1, c2);
                            }
                        }
                        Some(ms) => {
                            for (((o, xr), gr), mr) in rows.zip(ms.chunks_exact(c)) {
                                grad_row(o, xr, gr, mean, istd, c0, c1, c2);
                                for (o, &m) in o.iter_mut().zip(mr) {
                                    *o = if m > 0.0 { *o } else { 0.0 };
                                }
                            }
                        }
                    }
                })
            }
        });
}

/// One row of [`input_grad`]: the twin's c0·(dy − c1 − x̂·c2), x̂ = (x − mean)·istd.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn grad_row(
    o: &mut [f32],
    xr: &[f32],
    gr: &[f32],
    mean: &[f32],
    istd: &[f32],
    c0: &[f32],
    c1: &[f32],
    c2: &[f32],
) {
    for (((((((o, &v), &g), &m), &s), &a), &b), &d) in o
        .iter_mut()
        .zip(xr)
        .zip(gr)
        .zip(mean)
        .zip(istd)
        .zip(c0)
        .zip(c1)
        .zip(c2)
    {
        let xhat = (v - m) * s;
        *o = a * (g - b - xhat * d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BatchNormSpec {
        // 13 samples of 400 rows × 8 channels: past 2·PAR_MIN, so the sums split into runs.
        BatchNormSpec {
            batch: 13,
            per_sample: 400,
            c: 8,
            classes: 10,
            momentum: 0.1,
            eps: 1e-5,
            relu: false,
        }
    }

    /// stats, running and (dγ, dβ, coef) of [`spec`] on seeded inputs, on a pool of `threads`.
    fn sums(threads: usize) -> Vec<u32> {
        let s = spec();
        // Seeded here, not with the verify harness's inputs: the runtime's modules never
        // import the harness, tests included (tests/layering.rs).
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut uniform = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(lo..hi)).collect()
        };
        let x: Vec<f32> = uniform(s.len(), -1.0, 1.0)
            .into_iter()
            .map(|v| v + 2.5)
            .collect();
        let dy = uniform(s.len(), -1.0, 1.0);
        let mut labels = vec![3u32; s.batch];
        labels[4] = 10; // a padding sample inside a run
        let w = uniform(s.c, 0.5, 1.5);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut running = vec![0.5f32; s.stats_len()];
            let mut st = vec![f32::NAN; s.stats_len()];
            stats(&x, &labels, &s, &mut running, &mut st);
            let (mut dw, mut db, mut coef) = (vec![0.0; s.c], vec![0.0; s.c], vec![0.0; 3 * s.c]);
            backward(&x, &labels, &st, &w, &dy, &s, &mut dw, &mut db, &mut coef);
            [st, running, dw, db, coef]
                .concat()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
    }

    #[test]
    fn the_split_sums_are_the_same_bits_on_one_two_and_three_threads() {
        assert!(spec().len() >= 2 * PAR_MIN && runs(&spec()).0 > 1);
        let one = sums(1);
        assert!(one.iter().all(|b| f32::from_bits(*b).is_finite()));
        assert_eq!(one, sums(2));
        assert_eq!(one, sums(3));
    }
}
