//! The Adam update: bounds from its handful of roundings, propagated per element in f64.

use super::compare::{compare, f64s, Check};
use super::tolerance::U;
use super::{Family, Inputs};
use crate::cpu;
use crate::ops::AdamParams;

/// One Adam configuration: parameter count, update number t (1-based; beyond the schedule's
/// length the kernel must use its last entry), L2, and hyperparameters.
#[derive(Clone, Copy, Debug)]
pub struct AdamCase {
    /// Parameters.
    pub n: usize,
    /// The update number, 1-based.
    pub t: usize,
    /// Hyperparameters (L2 included).
    pub hp: AdamParams,
}

/// Entries in the schedule the adam checks upload.
pub const ADAM_SCHEDULE_LEN: usize = 20;

/// Error bounds (m, v, w) of one element of an Adam update computed in f32 with the given
/// relative accuracies of sqrt and division, from the exact intermediate values (see the
/// module documentation for the derivation).
#[allow(clippy::too_many_arguments)]
pub fn adam_bounds(
    w: f64,
    g: f64,
    m: f64,
    v: f64,
    hp: AdamParams,
    sched: [f32; 2],
    sqrt_rel: f64,
    div_rel: f64,
) -> (f64, f64, f64) {
    let (l2, eps) = (hp.l2 as f64, hp.eps as f64);
    let a = (1.0f32 - hp.beta1) as f64;
    let (b2, c2) = (hp.beta2 as f64, (1.0f32 - hp.beta2) as f64);
    let (step, bc) = (sched[0] as f64, sched[1] as f64);
    let gp = g + l2 * w;
    let e_g = 2.0 * U * (g.abs() + l2 * w.abs());
    let d = gp.abs() + m.abs() + e_g;
    let e_m = if a.abs() < 0.5 {
        a * e_g + 4.0 * U * (m.abs() + a * d)
    } else {
        (2.0 - a) * e_g + 4.0 * U * (gp.abs() + e_g + (1.0 - a) * d)
    };
    let mp = if a.abs() < 0.5 {
        m + a * (gp - m)
    } else {
        gp - (gp - m) * (1.0 - a)
    };
    let vp = b2 * v + c2 * gp * gp;
    let e_v = 4.0 * U * (b2 * v.abs() + c2 * gp * gp) + c2 * (2.0 * gp.abs() * e_g + e_g * e_g);
    let s = vp.max(0.0).sqrt();
    let e_s = if vp > 0.0 {
        (e_v / s).min(e_v.sqrt())
    } else {
        e_v.sqrt()
    } + sqrt_rel * (vp.abs() + e_v).sqrt();
    let q = s / bc;
    let e_q = e_s / bc + div_rel * (s + e_s) / bc;
    let den = q + eps;
    let e_den = e_q + U * (q + e_q + eps);
    let r = mp / den;
    let e_r0 = (e_m + r.abs() * e_den) / (den - e_den).max(den * 0.5);
    let e_r = e_r0 + div_rel * (r.abs() + e_r0);
    let upd = step * (r.abs() + e_r);
    let e_w = step * e_r + U * upd + U * (w.abs() + upd);
    (e_m, e_v, e_w)
}

/// The exact (f64) Adam update of one element on f32 inputs and f32 constants, in the
/// kernel's formula.
pub fn adam_exact(w: f64, g: f64, m: f64, v: f64, hp: AdamParams, sched: [f32; 2]) -> [f64; 3] {
    let a = (1.0f32 - hp.beta1) as f64;
    let c2 = (1.0f32 - hp.beta2) as f64;
    let gp = g + hp.l2 as f64 * w;
    let mp = if a.abs() < 0.5 {
        m + a * (gp - m)
    } else {
        gp - (gp - m) * (1.0 - a)
    };
    let vp = hp.beta2 as f64 * v + c2 * gp * gp;
    let den = vp.sqrt() / sched[1] as f64 + hp.eps as f64;
    [mp, vp, w - sched[0] as f64 * (mp / den)]
}

/// `n` values uniform in [lo, hi], each then zeroed (one in 16) or scaled by 10⁻ᵈ with d
/// uniform in 0..decades, so magnitudes span several decades.
fn spread(inp: &mut Inputs, n: usize, lo: f32, hi: f32, decades: u64) -> Vec<f32> {
    inp.uniform(n, lo, hi)
        .into_iter()
        .map(|u| {
            let r = inp.next_u64();
            if r.is_multiple_of(16) {
                0.0
            } else {
                u * 10f32.powi(-(((r >> 8) % decades) as i32))
            }
        })
        .collect()
}

/// Adam inputs (w, g, m, v) for `n` parameters: w uniform in [-1, 1], gradients over seven
/// decades with one in sixteen exactly zero, m in [-0.1, 0.1], v ≥ 0 over eight decades with
/// one in sixteen zero (so some denominators are ε alone).
pub fn adam_inputs(inp: &mut Inputs, n: usize) -> [Vec<f32>; 4] {
    let w = inp.uniform(n, -1.0, 1.0);
    let g = spread(inp, n, -1.0, 1.0, 7);
    let m = inp.uniform(n, -0.1, 0.1);
    let v = spread(inp, n, 0.0, 1e-2, 8);
    [w, g, m, v]
}

/// The schedule the adam checks upload: [`AdamParams::schedule`] of updates
/// 1..=[`ADAM_SCHEDULE_LEN`], flattened.
pub fn adam_schedule_table(hp: AdamParams) -> Vec<f32> {
    (1..=ADAM_SCHEDULE_LEN)
        .flat_map(|t| hp.schedule(t))
        .collect()
}

/// "n t=… λ=… β1=…".
pub fn adam_shape(case: &AdamCase) -> String {
    format!(
        "{} t={} λ={} β1={}",
        case.n, case.t, case.hp.l2, case.hp.beta1
    )
}

/// Updated m, v and w against the exact (f64) update at the bounds of [`adam_bounds`] with
/// WGSL's sqrt and division accuracy (conservative for correctly rounded ones), and against
/// the f32 twin at that plus the twin's own bound.
pub fn adam_compare(
    case: &AdamCase,
    [w, g, m, v]: [&[f32]; 4],
    [w_got, m_got, v_got]: [&[f32]; 3],
    shape: &str,
) -> Vec<Check> {
    let (n, hp) = (case.n, case.hp);
    let pair = hp.schedule(case.t.min(ADAM_SCHEDULE_LEN));
    let (mut w32, mut m32, mut v32) = (w.to_vec(), m.to_vec(), v.to_vec());
    cpu::adam::adam_update(&mut w32, g, &mut m32, &mut v32, hp, pair);
    let mut exact = [Vec::new(), Vec::new(), Vec::new()];
    let mut gpu_tol = [Vec::new(), Vec::new(), Vec::new()];
    let mut twin_tol = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..n {
        let (wi, gi, mi, vi) = (w[i] as f64, g[i] as f64, m[i] as f64, v[i] as f64);
        let e = adam_exact(wi, gi, mi, vi, hp, pair);
        let b_gpu = adam_bounds(wi, gi, mi, vi, hp, pair, 9.0 * U, 5.0 * U);
        let b_twin = adam_bounds(wi, gi, mi, vi, hp, pair, U, U);
        let bg = [b_gpu.0, b_gpu.1, b_gpu.2];
        let bt = [b_twin.0, b_twin.1, b_twin.2];
        for k in 0..3 {
            exact[k].push(e[k]);
            gpu_tol[k].push(bg[k]);
            twin_tol[k].push(bg[k] + bt[k]);
        }
    }
    let mut out = Vec::new();
    for (k, (name, got, twin)) in [("m", m_got, &m32), ("v", v_got, &v32), ("w", w_got, &w32)]
        .into_iter()
        .enumerate()
    {
        out.push(compare(
            Family::Adam,
            &format!("adam_update {name}"),
            shape.to_string(),
            got,
            &exact[k],
            |i| (gpu_tol[k][i], 0.0),
        ));
        out.push(compare(
            Family::Adam,
            &format!("adam_update {name} vs f32 twin"),
            shape.to_string(),
            got,
            &f64s(twin),
            |i| (twin_tol[k][i], 0.0),
        ));
    }
    out
}
