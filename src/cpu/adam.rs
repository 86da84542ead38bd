//! Twin of `shaders/adam.wgsl`: one step of PyTorch's `torch.optim.Adam` (foreach=False,
//! amsgrad=False, maximize=False), in f32 and in the same order of operations as the kernel.

use crate::ops::AdamParams;

/// PyTorch's `lerp` on CPU: start + weight·(end − start) for |weight| < 0.5, else
/// end − (end − start)·(1 − weight).
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    let diff = end - start;
    if weight.abs() < 0.5 {
        start + weight * diff
    } else {
        end - diff * (1.0 - weight)
    }
}

/// With `sched` = [step_size, bc2_sqrt] = [`AdamParams::schedule`]`(t)` for update number t:
/// g ← g + λ·w; m ← lerp(m, g, 1 − β1); v ← β2·v + (1 − β2)·g·g;
/// denom ← √v / bc2_sqrt + ε; w ← w − step_size·(m / denom).
pub fn adam_update(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    hp: AdamParams,
    sched: [f32; 2],
) {
    let n = w.len();
    assert!(
        g.len() == n && m.len() == n && v.len() == n,
        "adam_update: w, g, m, v must have the same length"
    );
    let [step_size, bc2_sqrt] = sched;
    for i in 0..n {
        let gi = g[i] + hp.l2 * w[i];
        m[i] = lerp(m[i], gi, 1.0 - hp.beta1);
        v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * gi * gi;
        let denom = v[i].sqrt() / bc2_sqrt + hp.eps;
        w[i] -= step_size * (m[i] / denom);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lerp_switches_formula_at_a_weight_of_one_half_as_pytorch_does() {
        // PyTorch takes start + w·(end − start) only for |w| < 0.5; at 0.5 exactly it takes
        // end − (end − start)·(1 − w), which rounds differently here (found by cargo-mutants:
        // `<` → `<=` passed every check, since Adam's weight 1 − β1 is 0.1).
        let (start, end) = (-1.092_173_2_f32, 31.334_517_f32);
        let second = end - (end - start) * 0.5;
        assert_ne!(
            second,
            start + 0.5 * (end - start),
            "the two formulas differ here"
        );
        assert_eq!(lerp(start, end, 0.5), second);
        assert_eq!(lerp(start, end, 0.25), start + 0.25 * (end - start));
    }

    #[test]
    fn first_step_moves_each_weight_by_about_lr_against_the_gradient() {
        // With m = v = 0 and λ = 0, step 1 gives m/(1−β1) = g, √(v/(1−β2)) = |g|, so each
        // weight moves by lr·g/(|g| + ε) ≈ ±lr.
        let hp = AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            l2: 0.0,
        };
        let mut w = vec![0.5f32, -0.25, 1.0];
        let g = [0.3f32, -2.0, 1e-3];
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        adam_update(&mut w, &g, &mut m, &mut v, hp, hp.schedule(1));
        for (i, want) in [0.5 - 1e-3, -0.25 + 1e-3, 1.0 - 1e-3]
            .into_iter()
            .enumerate()
        {
            assert!((w[i] - want).abs() < 1e-6, "{i}: {} vs {want}", w[i]);
        }
        assert!((m[0] - 0.03).abs() < 1e-7 && (v[1] - 0.004).abs() < 1e-7);
    }

    #[test]
    fn lerp_uses_pytorchs_two_forms() {
        assert_eq!(lerp(1.0, 3.0, 0.25), 1.5);
        assert_eq!(lerp(1.0, 3.0, 0.75), 2.5);
        assert_eq!(lerp(1.0, 3.0, 1.0), 3.0);
    }
}
