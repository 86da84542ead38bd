//! Batch normalisation's five ops, each against the f64 twin on the same f32 inputs (each op
//! checked on its own inputs, so each bound covers only its own roundings). n rows per channel
//! (padding rows excluded), u = 2⁻²⁴, γ_n Higham's bound for a sum of n terms in any order:
//!
//! * stats: mean = Σx/n: γ_n·Σ|x|/n + 5u·|mean| (WGSL division 2.5 ULP). var from the terms
//!   (x − m̂)² around the computed mean m̂ = mean + δ: Σ(x − m̂)² = Σ(x − mean)² + nδ², each
//!   term 3u relative, the sum γ_n, the division 5u: (8u + γ_n)·(var + δ²) + δ² (δ the mean's
//!   bound). istd = 1/√(var + ε): half the relative error of var + ε (plus u for the + ε),
//!   plus 9u for √ and 5u for the division (see [`super::adam`]). The running statistics:
//!   m·(error of the batch value) + 4u·((1 − m)|old| + m|batch value|) (1 − m, two products,
//!   a sum), the unbiased variance adding n/(n − 1) times var's error and 4u. The batch
//!   count and n are exact.
//! * eval stats: the mean copied exactly; istd of var + ε as above with var exact.
//! * apply: ((x − mean)·istd)·γ + β, four roundings: 4u·(|x̂·γ| + |β|) (+ WGSL's possible
//!   fused multiply-add only removes roundings); the ReLU is 1-Lipschitz.
//! * backward: dγ = Σ dy·x̂ with x̂ = (x − mean)·istd (2u) and the product (u) per term:
//!   (3u + γ_n)·Σ|dy·x̂|; dβ = Σ dy: γ_n·Σ|dy|; coef = [γ·istd (u) | dβ/n | dγ/n] (their
//!   sums' bounds / n + 5u).
//! * input gradient: c0·(dy − c1 − x̂·c2): x̂ 2u, the product 3u, two subtractions and the
//!   last product: 6u·|c0|·(|dy| + |c1| + |x̂·c2|) + u·|dx|. Padding rows and masked
//!   elements exactly 0.

use super::compare::{compare, Check};
use super::tolerance::{gamma, U};
use super::{Family, Inputs};
use crate::cpu::batchnorm as twin;
use crate::ops::BatchNormSpec;

/// Inputs of one check: x (uniform around an offset, so the two-pass variance matters),
/// labels with padding, running statistics, γ, β, dy, a ReLU mask, stats and coef to feed the
/// later ops on their own.
pub struct BatchNormData {
    /// x\[R,C\].
    pub x: Vec<f32>,
    /// labels\[B\] (about one in eight padding).
    pub labels: Vec<u32>,
    /// [mean C | var C | batches].
    pub running: Vec<f32>,
    /// γ\[C\].
    pub w: Vec<f32>,
    /// β\[C\].
    pub b: Vec<f32>,
    /// dy\[R,C\].
    pub dy: Vec<f32>,
    /// \[R,C\] ReLU-like mask.
    pub mask: Vec<f32>,
    /// [mean C | istd C | n] for apply / backward / input gradient.
    pub stats: Vec<f32>,
    /// [γ·istd | dβ/n | dγ/n] for the input gradient.
    pub coef: Vec<f32>,
}

/// Seeded inputs for `spec`.
pub fn batchnorm_inputs(inp: &mut Inputs, spec: &BatchNormSpec) -> BatchNormData {
    let (n, c) = (spec.len(), spec.c);
    let offset = inp.uniform(1, -3.0, 3.0)[0];
    let x = inp
        .uniform(n, -1.0, 1.0)
        .into_iter()
        .map(|v| v + offset)
        .collect();
    let labels = inp.labels(spec.batch, spec.classes, true).to_vec();
    let mut running = inp.uniform(c, -1.0, 1.0);
    running.extend(inp.uniform(c, 0.25, 2.0));
    running.push((inp.next_u64() % 1000) as f32);
    let w = inp.uniform(c, 0.5, 1.5);
    let b = inp.uniform(c, -0.5, 0.5);
    let dy = inp.uniform(n, -1.0, 1.0);
    let mask = inp
        .uniform(n, -1.0, 1.0)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let mut stats = inp.uniform(c, -1.0, 1.0);
    stats.extend(inp.uniform(c, 0.5, 3.0));
    stats.push((1 + inp.next_u64() % spec.rows().max(1) as u64) as f32);
    let mut coef = inp.uniform(c, 0.5, 3.0);
    coef.extend(inp.uniform(2 * c, -0.2, 0.2));
    BatchNormData {
        x,
        labels,
        running,
        w,
        b,
        dy,
        mask,
        stats,
        coef,
    }
}

/// "label BxPxC classes K relu".
pub fn batchnorm_shape(spec: &BatchNormSpec, label: &str) -> String {
    format!(
        "{label}{}x{}x{} classes {}{}",
        spec.batch,
        spec.per_sample,
        spec.c,
        spec.classes,
        if spec.relu { " relu" } else { "" }
    )
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// The outputs of the five ops, each run on [`BatchNormData`]'s inputs.
pub struct BatchNormOutputs {
    /// Training stats.
    pub stats: Vec<f32>,
    /// Running statistics after the training stats op.
    pub running: Vec<f32>,
    /// Evaluation stats (from the input running statistics).
    pub eval_stats: Vec<f32>,
    /// y with the given stats.
    pub y: Vec<f32>,
    /// dγ, dβ, coef with the given stats.
    pub dw: Vec<f32>,
    /// dβ.
    pub db: Vec<f32>,
    /// coef.
    pub coef: Vec<f32>,
    /// dx with the given stats and coef, without and with the mask.
    pub dx: Vec<f32>,
    /// dx masked.
    pub dxm: Vec<f32>,
}

/// Every output against the f64 twin (see the module docs for the bounds).
pub fn batchnorm_compare(
    spec: &BatchNormSpec,
    d: &BatchNormData,
    got: &BatchNormOutputs,
    shape: String,
) -> Vec<Check> {
    let (rows, c) = (spec.rows(), spec.c);
    let valid = |r: usize| (d.labels[r / spec.per_sample] as usize) < spec.classes;
    let live: Vec<usize> = (0..rows).filter(|&r| valid(r)).collect();
    let n = live.len();
    let gn = gamma(n.max(1));
    let x = f64s(&d.x);
    let fam = Family::Batchnorm;

    // Training statistics.
    let mut want_running = f64s(&d.running);
    let want_stats = twin::batchnorm_stats(&x, &d.labels, spec, &mut want_running);
    let (eps, m) = (spec.eps as f64, spec.momentum as f64);
    let mut tol_stats = vec![0.0; spec.stats_len()];
    let mut tol_running = vec![0.0; spec.stats_len()];
    for ch in 0..c {
        if n == 0 {
            tol_stats[c + ch] = 14.0 * U * want_stats[c + ch];
            continue;
        }
        let nf = n as f64;
        let s1: f64 = live.iter().map(|&r| x[r * c + ch].abs()).sum();
        let mean = want_stats[ch];
        let e_mean = gn * s1 / nf + 5.0 * U * mean.abs();
        let var = 1.0 / (want_stats[c + ch] * want_stats[c + ch]) - eps;
        let e_var = (8.0 * U + gn) * (var + e_mean * e_mean) * 1.01 + e_mean * e_mean;
        let rel_istd = 0.5 * (e_var + U * (var + eps)) / (var + eps) + 14.0 * U;
        tol_stats[ch] = e_mean;
        tol_stats[c + ch] = rel_istd * want_stats[c + ch] * 1.01;
        let (old_m, old_v) = (d.running[ch] as f64, d.running[c + ch] as f64);
        tol_running[ch] = m * e_mean + 4.0 * U * ((1.0 - m) * old_m.abs() + m * mean.abs());
        let k = if n > 1 { nf / (nf - 1.0) } else { 1.0 };
        let ub = var * k;
        let e_ub = k * e_var + 4.0 * U * ub;
        tol_running[c + ch] = m * e_ub + 4.0 * U * ((1.0 - m) * old_v.abs() + m * ub);
    }
    let mut out = vec![
        compare(
            fam,
            "batchnorm_stats",
            shape.clone(),
            &got.stats,
            &want_stats,
            |i| (tol_stats[i], 0.0),
        ),
        compare(
            fam,
            "batchnorm_stats running",
            shape.clone(),
            &got.running,
            &want_running,
            |i| (tol_running[i], 0.0),
        ),
    ];

    // Evaluation statistics.
    let running = f64s(&d.running);
    let want_eval = twin::batchnorm_eval_stats(&running, spec);
    out.push(compare(
        fam,
        "batchnorm_eval_stats",
        shape.clone(),
        &got.eval_stats,
        &want_eval,
        |i| {
            if (c..2 * c).contains(&i) {
                (0.0, 15.0 * U)
            } else {
                (0.0, 0.0)
            }
        },
    ));

    // Apply, with the given stats.
    let stats = f64s(&d.stats);
    let (w, b) = (f64s(&d.w), f64s(&d.b));
    let want_y = twin::batchnorm_apply(&x, &stats, &w, &b, spec);
    let xhat = |i: usize| (x[i] - stats[i % c]) * stats[c + i % c];
    out.push(compare(
        fam,
        "batchnorm_apply",
        shape.clone(),
        &got.y,
        &want_y,
        |i| {
            let ch = i % c;
            (4.0 * U * ((xhat(i) * w[ch]).abs() + b[ch].abs()), 0.0)
        },
    ));

    // Backward, with the given stats.
    let dy = f64s(&d.dy);
    let (want_dw, want_db, want_coef) =
        twin::batchnorm_backward(&x, &d.labels, &stats, &w, &dy, spec);
    let s_dyx: Vec<f64> = (0..c)
        .map(|ch| {
            live.iter()
                .map(|&r| (dy[r * c + ch] * xhat(r * c + ch)).abs())
                .sum()
        })
        .collect();
    let s_dy: Vec<f64> = (0..c)
        .map(|ch| live.iter().map(|&r| dy[r * c + ch].abs()).sum())
        .collect();
    let e_dw: Vec<f64> = s_dyx.iter().map(|s| (3.0 * U + gn) * s * 1.01).collect();
    let e_db: Vec<f64> = s_dy.iter().map(|s| gn * s).collect();
    let nn = stats[2 * c];
    out.push(compare(
        fam,
        "batchnorm_backward dw",
        shape.clone(),
        &got.dw,
        &want_dw,
        |i| (e_dw[i], 0.0),
    ));
    out.push(compare(
        fam,
        "batchnorm_backward db",
        shape.clone(),
        &got.db,
        &want_db,
        |i| (e_db[i], 0.0),
    ));
    out.push(compare(
        fam,
        "batchnorm_backward coef",
        shape.clone(),
        &got.coef,
        &want_coef,
        |i| match i / c {
            0 => (0.0, U),
            1 => (e_db[i % c] / nn, 5.0 * U),
            _ => (e_dw[i % c] / nn, 5.0 * U),
        },
    ));

    // Input gradient, with the given stats and coef.
    let coef = f64s(&d.coef);
    let mask = f64s(&d.mask);
    let tol_dx = |i: usize, masked: bool| {
        let (r, ch) = (i / c, i % c);
        let live = !masked || mask[i] > 0.0;
        if !valid(r) || !live {
            return (0.0, 0.0);
        }
        let t = dy[i].abs() + coef[c + ch].abs() + (xhat(i) * coef[2 * c + ch]).abs();
        (6.0 * U * coef[ch].abs() * t, U)
    };
    let want_dx = twin::batchnorm_input_grad(&x, &d.labels, &stats, &coef, &dy, None, spec);
    let want_dxm = twin::batchnorm_input_grad(&x, &d.labels, &stats, &coef, &dy, Some(&mask), spec);
    out.push(compare(
        fam,
        "batchnorm_input_grad",
        shape.clone(),
        &got.dx,
        &want_dx,
        |i| tol_dx(i, false),
    ));
    out.push(compare(
        fam,
        "batchnorm_input_grad masked",
        shape,
        &got.dxm,
        &want_dxm,
        |i| tol_dx(i, true),
    ));
    out
}

/// The f32 twin's outputs on `d` (what a backend must come close to; used by the tests).
pub fn batchnorm_twin_outputs(spec: &BatchNormSpec, d: &BatchNormData) -> BatchNormOutputs {
    let mut running = d.running.clone();
    let stats = twin::batchnorm_stats(&d.x, &d.labels, spec, &mut running);
    let eval_stats = twin::batchnorm_eval_stats(&d.running, spec);
    let y = twin::batchnorm_apply(&d.x, &d.stats, &d.w, &d.b, spec);
    let (dw, db, coef) = twin::batchnorm_backward(&d.x, &d.labels, &d.stats, &d.w, &d.dy, spec);
    let dx = twin::batchnorm_input_grad(&d.x, &d.labels, &d.stats, &d.coef, &d.dy, None, spec);
    let dxm = twin::batchnorm_input_grad(
        &d.x,
        &d.labels,
        &d.stats,
        &d.coef,
        &d.dy,
        Some(&d.mask),
        spec,
    );
    BatchNormOutputs {
        stats,
        running,
        eval_stats,
        y,
        dw,
        db,
        coef,
        dx,
        dxm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(batch: usize, per_sample: usize, c: usize, relu: bool) -> BatchNormSpec {
        BatchNormSpec {
            batch,
            per_sample,
            c,
            classes: 10,
            momentum: 0.1,
            eps: 1e-5,
            relu,
        }
    }

    #[test]
    fn the_f32_twin_passes_on_dense_and_conv_shapes() {
        let mut inp = Inputs::new(3);
        for s in [
            spec(7, 1, 5, false),
            spec(4, 49, 3, true),
            spec(1, 1, 2, false),
        ] {
            let d = batchnorm_inputs(&mut inp, &s);
            let got = batchnorm_twin_outputs(&s, &d);
            for c in batchnorm_compare(&s, &d, &got, String::new()) {
                assert!(c.pass(), "{s:?} {}: {c:?}", c.kernel);
            }
        }
    }

    #[test]
    fn padding_counted_a_biased_running_variance_or_a_padding_gradient_fails() {
        let s = spec(16, 3, 4, false);
        let mut inp = Inputs::new(5);
        let mut d = batchnorm_inputs(&mut inp, &s);
        d.labels[0] = 10; // at least one padding sample
        let good = batchnorm_twin_outputs(&s, &d);
        // Statistics with the padding rows counted.
        let mut all = d.labels.clone();
        all.iter_mut().for_each(|l| *l %= 10);
        let mut r = d.running.clone();
        let counted = twin::batchnorm_stats(&d.x, &all, &s, &mut r);
        let bad = BatchNormOutputs {
            stats: counted,
            ..batchnorm_twin_outputs(&s, &d)
        };
        assert!(!batchnorm_compare(&s, &d, &bad, String::new())[0].pass());
        // The biased variance in the running statistics.
        let mut bad = batchnorm_twin_outputs(&s, &d);
        for ch in 0..s.c {
            let istd = good.stats[s.c + ch];
            let biased = 1.0 / (istd * istd) - 1e-5;
            bad.running[s.c + ch] = 0.9 * d.running[s.c + ch] + 0.1 * biased;
        }
        assert!(!batchnorm_compare(&s, &d, &bad, String::new())[1].pass());
        // A gradient on a padding row.
        let mut bad = batchnorm_twin_outputs(&s, &d);
        bad.dx[0] = 0.5;
        assert!(!batchnorm_compare(&s, &d, &bad, String::new())[7].pass());
    }
}
