//! Fast twin of `shaders/batchnorm.wgsl`: the twin's ([`crate::cpu::batchnorm`]) arithmetic in
//! row-major sweeps over channels-last x\[R,C\] (a row of C contiguous values at a time,
//! per-channel accumulators), writing into the backend's buffers. Every channel's sums still
//! add its rows in row order from zero with the twin's expressions, so the results are
//! bit-identical to the twin; the element-wise passes are split over threads by rows.

use super::PAR_MIN;
use crate::ops::BatchNormSpec;
use rayon::prelude::*;

fn valid(labels: &[u32], spec: &BatchNormSpec, r: usize) -> bool {
    (labels[r / spec.per_sample] as usize) < spec.classes
}

/// Rows per rayon task: enough that a task streams at least [`PAR_MIN`] values.
fn rows_per_task(c: usize) -> usize {
    (PAR_MIN / c.max(1)).max(1)
}

/// See [`crate::cpu::batchnorm::batchnorm_stats`].
pub fn stats(
    x: &[f32],
    labels: &[u32],
    spec: &BatchNormSpec,
    running: &mut [f32],
    stats: &mut [f32],
) {
    let (rows, c) = (spec.rows(), spec.c);
    let live: Vec<usize> = (0..rows).filter(|&r| valid(labels, spec, r)).collect();
    let n = live.len();
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
    mean.fill(0.0);
    for &r in &live {
        for (s, &v) in mean.iter_mut().zip(&x[r * c..][..c]) {
            *s += v;
        }
    }
    mean.iter_mut().for_each(|s| *s /= nf);
    istd.fill(0.0);
    for &r in &live {
        for ((s, &v), &m) in istd.iter_mut().zip(&x[r * c..][..c]).zip(mean.iter()) {
            let d = v - m;
            *s += d * d;
        }
    }
    let m = spec.momentum;
    for ch in 0..c {
        let var = istd[ch] / nf;
        istd[ch] = 1.0 / (var + spec.eps).sqrt();
        let unbiased = if n > 1 { var * (nf / (nf - 1.0)) } else { var };
        running[ch] = (1.0 - m) * running[ch] + m * mean[ch];
        running[c + ch] = (1.0 - m) * running[c + ch] + m * unbiased;
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

/// See [`crate::cpu::batchnorm::batchnorm_apply`].
pub fn apply(x: &[f32], stats: &[f32], w: &[f32], b: &[f32], spec: &BatchNormSpec, y: &mut [f32]) {
    let c = spec.c;
    let (mean, istd) = (&stats[..c], &stats[c..2 * c]);
    y[..spec.len()]
        .par_chunks_mut(rows_per_task(c) * c)
        .enumerate()
        .for_each(|(t, out)| {
            let at = t * rows_per_task(c) * c;
            for (k, o) in out.iter_mut().enumerate() {
                let ch = k % c;
                let v = (x[at + k] - mean[ch]) * istd[ch] * w[ch] + b[ch];
                *o = if !spec.relu || v > 0.0 { v } else { 0.0 };
            }
        });
}

/// See [`crate::cpu::batchnorm::batchnorm_backward`]: (dγ, dβ, coef) written in place.
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
    let (rows, c) = (spec.rows(), spec.c);
    let (mean, istd, n) = (&stats[..c], &stats[c..2 * c], stats[2 * c]);
    dw[..c].fill(0.0);
    db[..c].fill(0.0);
    for r in (0..rows).filter(|&r| valid(labels, spec, r)) {
        let (xr, gr) = (&x[r * c..][..c], &dy[r * c..][..c]);
        for ch in 0..c {
            let g = gr[ch];
            dw[ch] += g * ((xr[ch] - mean[ch]) * istd[ch]);
            db[ch] += g;
        }
    }
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
    let c = spec.c;
    let per = rows_per_task(c);
    dx[..spec.len()]
        .par_chunks_mut(per * c)
        .enumerate()
        .for_each(|(t, out)| {
            for (k, o) in out.iter_mut().enumerate() {
                let i = t * per * c + k;
                let (r, ch) = (i / c, i % c);
                let live = mask.is_none_or(|m| m[i] > 0.0);
                *o = if !live || !valid(labels, spec, r) {
                    0.0
                } else {
                    let xhat = (x[i] - stats[ch]) * stats[c + ch];
                    coef[ch] * (dy[i] - coef[c + ch] - xhat * coef[2 * c + ch])
                };
            }
        });
}
