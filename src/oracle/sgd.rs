//! SGD with momentum and L2 (and Nesterov momentum): first-order bounds of five roundings
//! (eight with Nesterov's extra product and sum); AdamW's decoupled decay: one rounding.

use super::compare::{compare, f64s, Check};
use super::tolerance::U;
use super::{Family, Inputs};
use crate::ops::SgdParams;

/// SGD hyperparameters: a weight's (the kernel checks use this one), a bias's without L2,
/// plain SGD without momentum, and Nesterov momentum with and without L2.
pub const SGD_PARAMS: [SgdParams; 5] = [
    SgdParams {
        lr: 0.05,
        momentum: 0.9,
        l2: 1e-3,
        nesterov: false,
    },
    SgdParams {
        lr: 0.01,
        momentum: 0.9,
        l2: 0.0,
        nesterov: false,
    },
    SgdParams {
        lr: 0.1,
        momentum: 0.0,
        l2: 0.0,
        nesterov: false,
    },
    SgdParams {
        lr: 0.05,
        momentum: 0.9,
        l2: 5e-4,
        nesterov: true,
    },
    SgdParams {
        lr: 0.2,
        momentum: 0.5,
        l2: 0.0,
        nesterov: true,
    },
];

/// w, g, v uniform in [-1, 1].
pub fn sgd_inputs(inp: &mut Inputs, n: usize) -> [Vec<f32>; 3] {
    let w = inp.uniform(n, -1.0, 1.0);
    let g = inp.uniform(n, -1.0, 1.0);
    let v = inp.uniform(n, -1.0, 1.0);
    [w, g, v]
}

/// Updated w and v against the exact (f64) update of the same f32 inputs and constants,
/// within the first-order bounds of the module documentation: 3u·(μ|v| + |g| + λ|w|) for v,
/// u·|w| + 5u·α·(μ|v| + |g| + λ|w|) for w, times 1 + 64u for the higher-order terms.
/// With Nesterov the step is d = g' + μ·v' (g' = g + λw, v' the new v): g' (u·|g'|), v'
/// (3u·V, V = μ|v| + |g'|), μ·v' (u·μV) and the sum (u·D) with D = |g'| + μ·V, all ≤ D, and
/// v's error scaled by μ ≤ 3u·D: at most 6u·D; then α·d and the subtraction: u·|w| + 8u·α·D.
pub fn sgd_compare(
    hp: SgdParams,
    [w, g, v]: [&[f32]; 3],
    w_got: &[f32],
    v_got: &[f32],
    shape: String,
) -> Vec<Check> {
    let (lr, mu, l2) = (hp.lr as f64, hp.momentum as f64, hp.l2 as f64);
    let (w, g, v) = (f64s(w), f64s(g), f64s(v));
    let v_want: Vec<f64> = (0..w.len())
        .map(|i| mu * v[i] + (g[i] + l2 * w[i]))
        .collect();
    let v_mag = |i: usize| mu * v[i].abs() + g[i].abs() + l2 * w[i].abs();
    let g_mag = |i: usize| g[i].abs() + l2 * w[i].abs();
    let w_want: Vec<f64> = (0..w.len())
        .map(|i| {
            if hp.nesterov {
                w[i] - lr * ((g[i] + l2 * w[i]) + mu * v_want[i])
            } else {
                w[i] - lr * v_want[i]
            }
        })
        .collect();
    let w_step = |i: usize| {
        if hp.nesterov {
            8.0 * U * lr * (g_mag(i) + mu * v_mag(i))
        } else {
            5.0 * U * lr * v_mag(i)
        }
    };
    let slack = 1.0 + 64.0 * U;
    vec![
        compare(
            Family::Sgd,
            "sgd_update v",
            shape.clone(),
            v_got,
            &v_want,
            |i| (3.0 * U * v_mag(i) * slack, 0.0),
        ),
        compare(Family::Sgd, "sgd_update w", shape, w_got, &w_want, |i| {
            ((U * w[i].abs() + w_step(i)) * slack, 0.0)
        }),
    ]
}

/// AdamW's decoupled decay w·f against the exact product: one f32 multiplication, correctly
/// rounded on every backend (WGSL's `*` included), so the result must be the exact product
/// rounded to f32, bit for bit.
pub fn decay_compare(w: &[f32], f: f32, w_got: &[f32], shape: String) -> Check {
    // The f64 product of two f32s is exact (48 significant bits), so one rounding to f32
    // gives the correctly rounded f32 product.
    let want: Vec<f64> = w
        .iter()
        .map(|&w| (w as f64 * f as f64) as f32 as f64)
        .collect();
    super::compare::compare_exact(Family::Adam, "decay_update w", shape, w_got, &want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_compare_holds_each_element_to_the_documented_first_order_bound() {
        // Every term of the bound matters here (λ|w| and μ|v| as large as |g|), so a bound
        // with a term dropped, flipped or loosened reports another error/tolerance ratio.
        let hp = crate::ops::SgdParams {
            lr: 0.5,
            momentum: 0.9,
            l2: 0.25,
            nesterov: false,
        };
        let (w, g, v) = ([0.75f32, -0.5], [-0.5f32, 0.125], [0.25f32, -1.0]);
        let (lr, mu, l2) = (0.5f64, 0.9f32 as f64, 0.25f64);
        let f = |x: &[f32]| x.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let (wd, gd, vd) = (f(&w), f(&g), f(&v));
        let v_want: Vec<f64> = (0..2).map(|i| mu * vd[i] + gd[i] + l2 * wd[i]).collect();
        let w_want: Vec<f64> = (0..2).map(|i| wd[i] - lr * v_want[i]).collect();
        // The exact updates rounded to f32 and moved 2 ulps: a non-zero error near the bound.
        let nudge = |x: f64| f32::from_bits((x as f32).to_bits() + 2);
        let v_got: Vec<f32> = v_want.iter().map(|&x| nudge(x)).collect();
        let w_got: Vec<f32> = w_want.iter().map(|&x| nudge(x)).collect();
        let slack = 1.0 + 64.0 * U;
        let mag = |i: usize| mu * vd[i].abs() + gd[i].abs() + l2 * wd[i].abs();
        let ratio = |got: &[f32], want: &[f64], tol: &dyn Fn(usize) -> f64| {
            (0..2)
                .map(|i| (got[i] as f64 - want[i]).abs() / tol(i))
                .fold(0.0, f64::max)
        };
        let want_v = ratio(&v_got, &v_want, &|i| 3.0 * U * mag(i) * slack);
        let want_w = ratio(&w_got, &w_want, &|i| {
            (U * wd[i].abs() + 5.0 * U * lr * mag(i)) * slack
        });
        let c = sgd_compare(hp, [&w, &g, &v], &w_got, &v_got, "2".into());
        for (c, want) in c.iter().zip([want_v, want_w]) {
            assert!(want > 0.05, "{}: a ratio to compare ({want})", c.kernel);
            assert!(
                (c.worst - want).abs() <= 1e-12 * want,
                "{}: error/tolerance {} where the documented bound gives {want}",
                c.kernel,
                c.worst
            );
        }
    }
}
