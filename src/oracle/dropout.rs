//! Dropout forward and backward against the f64 twin.
//!
//! The mask is integer arithmetic ([`crate::ops::dropout_keep`]), so every backend must draw
//! exactly the twin's: a dropped element must be exactly 0 (tolerance 0), a kept one is one
//! product x·scale, correctly rounded on every backend (WGSL's `*` included), so within
//! u·|y| of the f64 product. The backward pass is the same product with dy (and exactly 0
//! where the mask of the ReLU below is not > 0).

use super::compare::{compare, Check};
use super::tolerance::U;
use super::{Family, Inputs};
use crate::cpu;
use crate::ops::DropoutSpec;

/// x and dy uniform in [-1, 1], a ReLU-like mask, and a training step.
pub fn dropout_inputs(inp: &mut Inputs, spec: &DropoutSpec) -> ([Vec<f32>; 3], u32) {
    let n = spec.len();
    let x = inp.uniform(n, -1.0, 1.0);
    let dy = inp.uniform(n, -1.0, 1.0);
    let mask = inp
        .uniform(n, -1.0, 1.0)
        .iter()
        .map(|v| v.max(0.0))
        .collect();
    ([x, dy, mask], inp.next_u64() as u32)
}

/// "label BxF pP row0 R step S".
pub fn dropout_shape(spec: &DropoutSpec, step: u32, label: &str) -> String {
    format!(
        "{label}{}x{} p{} row0 {} layer {} step {step}",
        spec.rows, spec.cols, spec.p, spec.row0, spec.layer
    )
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Forward y, and backward without and with the mask.
pub fn dropout_compare(
    spec: &DropoutSpec,
    step: u32,
    [x, dy, mask]: [&[f32]; 3],
    y: &[f32],
    [dx, dxm]: [&[f32]; 2],
    shape: String,
) -> Vec<Check> {
    let want_y = cpu::dropout::dropout_forward(&f64s(x), spec, step);
    let dy64 = f64s(dy);
    let want_dx = cpu::dropout::dropout_backward(&dy64, spec, step, None);
    let want_dxm = cpu::dropout::dropout_backward(&dy64, spec, step, Some(&f64s(mask)));
    let tol = |_| (0.0, U);
    vec![
        compare(
            Family::Dropout,
            "dropout_forward",
            shape.clone(),
            y,
            &want_y,
            tol,
        ),
        compare(
            Family::Dropout,
            "dropout_backward",
            shape.clone(),
            dx,
            &want_dx,
            tol,
        ),
        compare(
            Family::Dropout,
            "dropout_backward masked",
            shape,
            dxm,
            &want_dxm,
            tol,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs, step, y and the two dx of one twin run.
    type Run = ([Vec<f32>; 3], u32, Vec<f32>, [Vec<f32>; 2]);

    const SPEC: DropoutSpec = DropoutSpec {
        rows: 7,
        cols: 300,
        p: 0.3,
        seed: 11,
        layer: 2,
        row0: 5,
    };

    fn run(spec: &DropoutSpec) -> Run {
        let mut inp = Inputs::new(7);
        let (data, step) = dropout_inputs(&mut inp, spec);
        let y = cpu::dropout::dropout_forward(&data[0], spec, step);
        let dx = cpu::dropout::dropout_backward(&data[1], spec, step, None);
        let dxm = cpu::dropout::dropout_backward(&data[1], spec, step, Some(&data[2]));
        (data, step, y, [dx, dxm])
    }

    fn checks(spec: &DropoutSpec, r: &Run) -> Vec<Check> {
        let (data, step, y, d) = r;
        dropout_compare(
            spec,
            *step,
            [&data[0], &data[1], &data[2]],
            y,
            [&d[0], &d[1]],
            String::new(),
        )
    }

    #[test]
    fn the_f32_twin_passes_and_drops_about_p() {
        let r = run(&SPEC);
        for c in checks(&SPEC, &r) {
            assert!(c.pass(), "{}: {c:?}", c.kernel);
        }
        let dropped = r.2.iter().filter(|&&v| v == 0.0).count() as f64 / SPEC.len() as f64;
        // 2100 Bernoulli(0.3) draws: standard deviation 0.01.
        assert!((dropped - 0.3).abs() < 0.04, "dropped {dropped}");
    }

    #[test]
    fn p_zero_is_the_identity() {
        let spec = DropoutSpec { p: 0.0, ..SPEC };
        let (data, _, y, _) = run(&spec);
        assert_eq!(y, data[0]);
    }

    #[test]
    fn another_mask_a_lost_scale_or_an_unmasked_gradient_fails() {
        let r = run(&SPEC);
        // The mask of another step, another row offset or another layer.
        for other in [
            DropoutSpec { row0: 6, ..SPEC },
            DropoutSpec { layer: 3, ..SPEC },
            DropoutSpec { seed: 12, ..SPEC },
        ] {
            let y = cpu::dropout::dropout_forward(&r.0[0], &other, r.1);
            let c = &dropout_compare(
                &SPEC,
                r.1,
                [&r.0[0], &r.0[1], &r.0[2]],
                &y,
                [&r.3[0], &r.3[1]],
                String::new(),
            )[0];
            assert!(!c.pass(), "{other:?}");
        }
        let y = cpu::dropout::dropout_forward(&r.0[0], &SPEC, r.1 ^ 1);
        let c = &dropout_compare(
            &SPEC,
            r.1,
            [&r.0[0], &r.0[1], &r.0[2]],
            &y,
            [&r.3[0], &r.3[1]],
            String::new(),
        )[0];
        assert!(!c.pass(), "the mask of the next step");
        let mut bad = r.clone();
        let at = bad.2.iter().position(|&v| v != 0.0).unwrap();
        bad.2[at] = bad.0[0][at];
        assert!(!checks(&SPEC, &bad)[0].pass(), "a survivor not scaled");
        let mut bad = r.clone();
        bad.3[1] = bad.3[0].clone();
        assert!(!checks(&SPEC, &bad)[2].pass(), "the mask ignored");
    }
}
