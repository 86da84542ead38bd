//! Twin of `shaders/batchnorm.wgsl`: batch normalisation over x\[R,C\] (R = B·P rows, P rows
//! per sample) per channel, PyTorch's `BatchNorm2d`/`BatchNorm1d` semantics (see
//! [`BatchNormSpec`]). Sums run over the rows in order, one channel at a time; rows of a
//! sample whose label is ≥ `classes` (padding) count nowhere.

use crate::ops::BatchNormSpec;
use ndarray::NdFloat;

fn valid(labels: &[u32], spec: &BatchNormSpec, r: usize) -> bool {
    (labels[r / spec.per_sample] as usize) < spec.classes
}

fn f<F: NdFloat>(v: f32) -> F {
    F::from(v).expect("f32 is a float")
}

/// Training statistics: stats = [mean C | 1/√(var + ε) C | n] (biased variance, two passes),
/// and `running` = [mean C | var C | batches] moved by the momentum towards the batch mean and
/// the unbiased variance var·n/(n − 1) (var when n = 1); with n = 0 stats are [0 | 1/√ε | 0]
/// and `running` is left as it is.
pub fn batchnorm_stats<F: NdFloat>(
    x: &[F],
    labels: &[u32],
    spec: &BatchNormSpec,
    running: &mut [F],
) -> Vec<F> {
    let (rows, c) = (spec.rows(), spec.c);
    assert_eq!(
        x.len(),
        spec.len(),
        "batchnorm_stats: x has the wrong length"
    );
    assert_eq!(running.len(), spec.stats_len(), "batchnorm_stats: running");
    let n = (0..rows).filter(|&r| valid(labels, spec, r)).count();
    let nf = F::from(n).expect("a count is a float");
    let eps = f::<F>(spec.eps);
    let m = f::<F>(spec.momentum);
    let mut stats = vec![F::zero(); spec.stats_len()];
    stats[2 * c] = nf;
    for ch in 0..c {
        if n == 0 {
            stats[c + ch] = F::one() / eps.sqrt();
            continue;
        }
        let mut sum = F::zero();
        for r in (0..rows).filter(|&r| valid(labels, spec, r)) {
            sum += x[r * c + ch];
        }
        let mean = sum / nf;
        let mut sq = F::zero();
        for r in (0..rows).filter(|&r| valid(labels, spec, r)) {
            let d = x[r * c + ch] - mean;
            sq += d * d;
        }
        let var = sq / nf;
        stats[ch] = mean;
        stats[c + ch] = F::one() / (var + eps).sqrt();
        let unbiased = if n > 1 {
            var * (nf / (nf - F::one()))
        } else {
            var
        };
        running[ch] = (F::one() - m) * running[ch] + m * mean;
        running[c + ch] = (F::one() - m) * running[c + ch] + m * unbiased;
    }
    if n > 0 {
        running[2 * c] += F::one();
    }
    stats
}

/// Evaluation statistics from the running ones: [mean | 1/√(var + ε) | 0].
pub fn batchnorm_eval_stats<F: NdFloat>(running: &[F], spec: &BatchNormSpec) -> Vec<F> {
    let c = spec.c;
    let eps = f::<F>(spec.eps);
    let mut stats = vec![F::zero(); spec.stats_len()];
    for ch in 0..c {
        stats[ch] = running[ch];
        stats[c + ch] = F::one() / (running[c + ch] + eps).sqrt();
    }
    stats
}

/// y = ((x − mean)·istd)·γ + β, then max(·, 0) when `spec.relu`.
pub fn batchnorm_apply<F: NdFloat>(
    x: &[F],
    stats: &[F],
    w: &[F],
    b: &[F],
    spec: &BatchNormSpec,
) -> Vec<F> {
    let c = spec.c;
    assert_eq!(
        x.len(),
        spec.len(),
        "batchnorm_apply: x has the wrong length"
    );
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = i % c;
            let y = (v - stats[ch]) * stats[c + ch] * w[ch] + b[ch];
            if !spec.relu || y > F::zero() {
                y
            } else {
                F::zero()
            }
        })
        .collect()
}

/// (dγ, dβ, coef): dγ = Σ dy·x̂ and dβ = Σ dy over non-padding rows in row order, x̂ = (x −
/// mean)·istd; coef = [γ·istd | dβ/n | dγ/n] (0 for the last two when n = 0).
pub fn batchnorm_backward<F: NdFloat>(
    x: &[F],
    labels: &[u32],
    stats: &[F],
    w: &[F],
    dy: &[F],
    spec: &BatchNormSpec,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let (rows, c) = (spec.rows(), spec.c);
    let n = stats[2 * c];
    let (mut dw, mut db, mut coef) = (
        vec![F::zero(); c],
        vec![F::zero(); c],
        vec![F::zero(); 3 * c],
    );
    for ch in 0..c {
        let (mean, istd) = (stats[ch], stats[c + ch]);
        let (mut sg, mut sb) = (F::zero(), F::zero());
        for r in (0..rows).filter(|&r| valid(labels, spec, r)) {
            let g = dy[r * c + ch];
            sg += g * ((x[r * c + ch] - mean) * istd);
            sb += g;
        }
        dw[ch] = sg;
        db[ch] = sb;
        coef[ch] = w[ch] * istd;
        if n > F::zero() {
            coef[c + ch] = sb / n;
            coef[2 * c + ch] = sg / n;
        }
    }
    (dw, db, coef)
}

/// dx = γ·istd·(dy − dβ/n − x̂·dγ/n) on non-padding rows, 0 on padding rows and wherever
/// `mask` is not > 0.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_input_grad<F: NdFloat>(
    x: &[F],
    labels: &[u32],
    stats: &[F],
    coef: &[F],
    dy: &[F],
    mask: Option<&[F]>,
    spec: &BatchNormSpec,
) -> Vec<F> {
    let c = spec.c;
    (0..spec.len())
        .map(|i| {
            let (r, ch) = (i / c, i % c);
            let live = mask.is_none_or(|m| m[i] > F::zero());
            if !live || !valid(labels, spec, r) {
                return F::zero();
            }
            let xhat = (x[i] - stats[ch]) * stats[c + ch];
            coef[ch] * (dy[i] - coef[c + ch] - xhat * coef[2 * c + ch])
        })
        .collect()
}
