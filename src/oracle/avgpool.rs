//! Average pooling forward and backward against the f64 twin.
//!
//! * forward: each output is a serial f32 sum of n = KH·KW terms then one division, so the
//!   error is at most γ_n·Σ|x|/n (Higham's bound for recursive summation, scaled by the
//!   division) plus 5u·|y| (WGSL's division is accurate to 2.5 ULP; the CPU's is correctly
//!   rounded). Where the reference is not finite (an input NaN or ±∞) the output must be the
//!   same NaN or ∞.
//! * backward: dx = dy / n, one division: 5u·|dx|; masked and uncovered elements exactly 0.

use super::compare::{compare, Check};
use super::maxpool::PoolInput;
use super::tolerance::{gamma, U};
use super::{Family, Inputs};
use crate::cpu;
use crate::ops::AvgPool2dSpec;

/// x as `input` says (Quantised is read as Uniform: ties mean nothing to a mean), dy uniform
/// in [-1, 1], a ReLU-like mask.
pub fn avgpool_inputs(inp: &mut Inputs, spec: &AvgPool2dSpec, input: PoolInput) -> [Vec<f32>; 3] {
    let (n_in, n_out) = (spec.input_len(), spec.output_len());
    let mut x = inp.uniform(n_in, -1.0, 1.0);
    match input {
        PoolInput::Uniform | PoolInput::Quantised => {}
        PoolInput::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        PoolInput::Nan => {
            for v in x.iter_mut() {
                match inp.next_u64() % 24 {
                    0 => *v = f32::NAN,
                    1 => *v = f32::INFINITY,
                    2 => *v = f32::NEG_INFINITY,
                    _ => {}
                }
            }
        }
    }
    let dy = inp.uniform(n_out, -1.0, 1.0);
    let mask: Vec<f32> = inp
        .uniform(n_in, -1.0, 1.0)
        .iter()
        .map(|v| v.max(0.0))
        .collect();
    [x, dy, mask]
}

/// "label BxHxWxC kKHxKW Input".
pub fn avgpool_shape(spec: &AvgPool2dSpec, input: PoolInput, label: &str) -> String {
    format!(
        "{label}{}x{}x{}x{} k{}x{} {input:?}",
        spec.batch, spec.h, spec.w, spec.c, spec.kh, spec.kw
    )
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Forward y, and backward without and with the mask.
pub fn avgpool_compare(
    spec: &AvgPool2dSpec,
    [x, dy, mask]: [&[f32]; 3],
    y: &[f32],
    [dx, dxm]: [&[f32]; 2],
    shape: String,
) -> Vec<Check> {
    let x64 = f64s(x);
    let want_y = cpu::avgpool::avgpool_forward(&x64, spec);
    let abs: Vec<f64> = x64.iter().map(|v| v.abs()).collect();
    let mean_abs = cpu::avgpool::avgpool_forward(&abs, spec);
    let g = gamma(spec.window());
    // Non-finite references are compared exactly (NaN to NaN, ∞ to the same ∞); the rest
    // within the bound, with those elements taken out of the tolerance comparison.
    let finite: Vec<usize> = (0..want_y.len())
        .filter(|&i| want_y[i].is_finite())
        .collect();
    let mut fwd = compare(
        Family::Avgpool,
        "avgpool_forward",
        shape.clone(),
        &finite
            .iter()
            .map(|&i| y.get(i).copied().unwrap_or(f32::NAN))
            .collect::<Vec<_>>(),
        &finite.iter().map(|&i| want_y[i]).collect::<Vec<_>>(),
        |k| (g * mean_abs[finite[k]], 5.0 * U),
    );
    fwd.elements = want_y.len();
    if y.len() != want_y.len() {
        fwd.bad = want_y.len().max(1);
        fwd.worst = f64::INFINITY;
    } else {
        for (&got, &want) in y.iter().zip(&want_y) {
            let same = (want.is_nan() && got.is_nan()) || got as f64 == want;
            if !want.is_finite() && !same {
                fwd.bad += 1;
                fwd.worst = f64::INFINITY;
            }
        }
    }
    let dy64 = f64s(dy);
    let want_dx = cpu::avgpool::avgpool_backward(&dy64, spec, None);
    let want_dxm = cpu::avgpool::avgpool_backward(&dy64, spec, Some(&f64s(mask)));
    vec![
        fwd,
        compare(
            Family::Avgpool,
            "avgpool_backward",
            shape.clone(),
            dx,
            &want_dx,
            |_| (0.0, 5.0 * U),
        ),
        compare(
            Family::Avgpool,
            "avgpool_backward masked",
            shape,
            dxm,
            &want_dxm,
            |_| (0.0, 5.0 * U),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: AvgPool2dSpec = AvgPool2dSpec {
        batch: 2,
        c: 3,
        h: 5,
        w: 4,
        kh: 2,
        kw: 2,
    };

    fn run(input: PoolInput) -> ([Vec<f32>; 3], Vec<f32>, [Vec<f32>; 2]) {
        let mut inp = Inputs::new(7);
        let data = avgpool_inputs(&mut inp, &SPEC, input);
        let y = cpu::avgpool::avgpool_forward(&data[0], &SPEC);
        let dx = cpu::avgpool::avgpool_backward(&data[1], &SPEC, None);
        let dxm = cpu::avgpool::avgpool_backward(&data[1], &SPEC, Some(&data[2]));
        (data, y, [dx, dxm])
    }

    fn checks(data: &[Vec<f32>; 3], y: &[f32], d: &[Vec<f32>; 2]) -> Vec<Check> {
        avgpool_compare(
            &SPEC,
            [&data[0], &data[1], &data[2]],
            y,
            [&d[0], &d[1]],
            String::new(),
        )
    }

    #[test]
    fn the_f32_twin_passes_on_every_input_kind() {
        for input in [PoolInput::Uniform, PoolInput::Relu, PoolInput::Nan] {
            let (data, y, d) = run(input);
            assert!(y.iter().any(|v| !v.is_finite()) == (input == PoolInput::Nan));
            for c in checks(&data, &y, &d) {
                assert!(c.pass(), "{input:?} {}: {c:?}", c.kernel);
            }
        }
    }

    #[test]
    fn a_wrong_mean_a_lost_nan_or_an_unmasked_gradient_fails() {
        let (data, mut y, d) = run(PoolInput::Uniform);
        y[3] *= 1.0 + 64.0 * f32::EPSILON;
        assert!(!checks(&data, &y, &d)[0].pass(), "a mean off by 64 ulp");
        let (data, mut y, d) = run(PoolInput::Nan);
        let at = y.iter().position(|v| v.is_nan()).expect("a NaN window");
        y[at] = 0.0;
        assert!(!checks(&data, &y, &d)[0].pass(), "a NaN turned into 0");
        let (data, y, mut d) = run(PoolInput::Uniform);
        d[1] = d[0].clone();
        assert!(!checks(&data, &y, &d)[2].pass(), "the mask ignored");
        let (data, y, mut d) = run(PoolInput::Uniform);
        let last = d[0].len() - 1; // row 4 is past the last whole window: must stay 0
        d[0][last] = 0.25;
        assert!(
            !checks(&data, &y, &d)[1].pass(),
            "an uncovered element written"
        );
    }
}
