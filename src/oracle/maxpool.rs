//! Max-pooling forward (y and idx) and backward: exact, NaN matching NaN.

use super::compare::{compare_exact, compare_u32, f64s, Check};
use super::{Family, Inputs};
use crate::cpu;
use crate::ops::Pool2dSpec;

/// What a maxpool check feeds in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolInput {
    /// Uniform in [-1, 1]: ties are rare.
    Uniform,
    /// Five levels {-1, -0.5, 0, 0.5, 1}: ties in most windows (the first maximum must win).
    Quantised,
    /// max(u, 0) as after a ReLU: windows of zeros.
    Relu,
    /// Uniform with about one in six elements NaN, some ±∞ (NaN must propagate).
    Nan,
}

/// x as `input` says, dy uniform in [-1, 1], a ReLU-like mask.
pub fn maxpool_inputs(inp: &mut Inputs, spec: &Pool2dSpec, input: PoolInput) -> [Vec<f32>; 3] {
    let (n_in, n_out) = (spec.input_len(), spec.output_len());
    let mut x = inp.uniform(n_in, -1.0, 1.0);
    match input {
        PoolInput::Uniform => {}
        PoolInput::Quantised => x.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0),
        PoolInput::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        PoolInput::Nan => {
            for v in x.iter_mut() {
                match inp.next_u64() % 12 {
                    0 | 1 => *v = f32::NAN,
                    2 => *v = f32::INFINITY,
                    3 => *v = f32::NEG_INFINITY,
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

/// "label BxHxWxC kK Input".
pub fn maxpool_shape(spec: &Pool2dSpec, input: PoolInput, label: &str) -> String {
    format!(
        "{label}{}x{}x{}x{} k{} {input:?}",
        spec.batch, spec.h, spec.w, spec.c, spec.k
    )
}

/// Forward y and idx, and backward without and with the mask, all exact (NaN matches NaN).
pub fn maxpool_compare(
    spec: &Pool2dSpec,
    [x, dy, mask]: [&[f32]; 3],
    y: &[f32],
    idx: &[u32],
    [dx, dxm]: [&[f32]; 2],
    shape: String,
) -> Vec<Check> {
    let (want_y, want_idx) = cpu::maxpool::maxpool_forward(&f64s(x), spec);
    let dy64 = f64s(dy);
    let want_dx = cpu::maxpool::maxpool_backward(&dy64, &want_idx, spec, None);
    let want_dxm = cpu::maxpool::maxpool_backward(&dy64, &want_idx, spec, Some(&f64s(mask)));
    vec![
        compare_exact(
            Family::Maxpool,
            "maxpool_forward y",
            shape.clone(),
            y,
            &want_y,
        ),
        compare_u32(
            Family::Maxpool,
            "maxpool_forward idx",
            shape.clone(),
            idx,
            &want_idx,
        ),
        compare_exact(
            Family::Maxpool,
            "maxpool_backward",
            shape.clone(),
            dx,
            &want_dx,
        ),
        compare_exact(
            Family::Maxpool,
            "maxpool_backward masked",
            shape,
            dxm,
            &want_dxm,
        ),
    ]
}
