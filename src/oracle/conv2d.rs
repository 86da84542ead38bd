//! im2col (exact), col2im (γ of its terms) and whole convolution layers.

use super::compare::{compare, f64s, Check};
use super::tolerance::gamma;
use super::{Family, Inputs};
use crate::cpu;
use crate::ops::{col2im_terms, Conv2dSpec};
use ndarray::Array2;

/// x and dcols uniform in [-1, 1], and a mask like a ReLU output (about half exact zeros).
pub fn conv2d_inputs(inp: &mut Inputs, spec: &Conv2dSpec) -> [Vec<f32>; 3] {
    let n_in = spec.input_len();
    let x = inp.uniform(n_in, -1.0, 1.0);
    let dcols = inp.uniform(spec.col_rows() * spec.col_cols(), -1.0, 1.0);
    let mask: Vec<f32> = inp
        .uniform(n_in, -1.0, 1.0)
        .iter()
        .map(|v| v.max(0.0))
        .collect();
    [x, dcols, mask]
}

/// "label BxHxWxC kK sS pP".
pub fn conv2d_shape(spec: &Conv2dSpec, label: &str) -> String {
    format!(
        "{label}{}x{}x{}x{} k{} s{} p{}",
        spec.batch, spec.h, spec.w, spec.c_in, spec.k, spec.stride, spec.pad
    )
}

/// im2col exactly; col2im and masked col2im within γ_n·Σ|terms|, n = ⌈K/s⌉² terms at most per
/// element (any order of summation).
pub fn conv2d_compare(
    spec: &Conv2dSpec,
    [x, dcols, mask]: [&[f32]; 3],
    [cols, dx, dxm]: [&[f32]; 3],
    shape: String,
) -> Vec<Check> {
    let want_cols = cpu::conv2d::im2col(&f64s(x), spec);
    let d64 =
        Array2::from_shape_vec((spec.col_rows(), spec.col_cols()), f64s(dcols)).expect("shape");
    let m64 = f64s(mask);
    let want_dx = cpu::conv2d::col2im(d64.view(), spec, None);
    let want_dxm = cpu::conv2d::col2im(d64.view(), spec, Some(&m64));
    let abs_sum = cpu::conv2d::col2im(d64.mapv(f64::abs).view(), spec, None);
    let g = gamma(col2im_terms(spec));
    vec![
        compare(
            Family::Conv2d,
            "im2col",
            shape.clone(),
            cols,
            want_cols.as_slice().expect("standard layout"),
            |_| (0.0, 0.0),
        ),
        compare(Family::Conv2d, "col2im", shape.clone(), dx, &want_dx, |i| {
            (g * abs_sum[i], 0.0)
        }),
        compare(
            Family::Conv2d,
            "col2im masked",
            shape,
            dxm,
            &want_dxm,
            |i| (g * abs_sum[i], 0.0),
        ),
    ]
}

/// A whole convolution layer as training runs it (im2col, y = ReLU(cols·Wᵀ + b), dW = dYᵀ·cols,
/// dcols = dY·W, dx = col2im(dcols) masked) against the same in f64: each output within
/// γ_n·(the same computation on absolute values), n its terms in any order: C·K² + 1 for y
/// (the bias), B·OH·OW for dW, O plus col2im's terms for dx. `inf` marks inputs holding +∞
/// (named in the kernel column).
pub fn conv_layer_compare(
    spec: &Conv2dSpec,
    [x, w, bias, dy, mask]: [&[f32]; 5],
    [got_y, got_dw, got_dx]: [&[f32]; 3],
    inf: bool,
    shape: String,
) -> Vec<Check> {
    let (rows, width, o) = (spec.col_rows(), spec.col_cols(), spec.c_out);
    // The oracle in f64, and the same computation on absolute values for the bounds (0·∞
    // taken as 0 there: the padding's zeros are exact).
    let c64 = cpu::conv2d::im2col(&f64s(x), spec);
    let w64 = Array2::from_shape_vec((o, width), f64s(w)).expect("shape");
    let dy64 = Array2::from_shape_vec((rows, o), f64s(dy)).expect("shape");
    let b64 = ndarray::Array1::from(f64s(bias));
    let y_pre = c64.dot(&w64.t()) + &b64;
    let y = y_pre.mapv(|v| if v > 0.0 { v } else { 0.0 });
    let abs = |a: &Array2<f64>| a.mapv(|v| if v.is_finite() { v.abs() } else { 0.0 });
    let y_abs = abs(&c64).dot(&abs(&w64).t()) + &b64.mapv(f64::abs);
    let dw = dy64.t().dot(&c64);
    let dw_abs = abs(&dy64).t().dot(&abs(&c64));
    let dcols64 = dy64.dot(&w64);
    let m64 = f64s(mask);
    let dx = cpu::conv2d::col2im(dcols64.view(), spec, Some(&m64));
    let dx_abs = cpu::conv2d::col2im(abs(&dy64).dot(&abs(&w64)).view(), spec, None);
    let (gy, gw) = (gamma(width + 1), gamma(rows));
    let gx = gamma(o + col2im_terms(spec));
    let std = |a: &Array2<f64>| a.iter().copied().collect::<Vec<f64>>();
    let (y, y_abs, dw, dw_abs) = (std(&y), std(&y_abs), std(&dw), std(&dw_abs));
    let mut out = vec![
        compare(
            Family::Conv2d,
            "conv layer y",
            shape.clone(),
            got_y,
            &y,
            |i| (gy * y_abs[i], 0.0),
        ),
        compare(
            Family::Conv2d,
            "conv layer dW",
            shape.clone(),
            got_dw,
            &dw,
            |i| (gw * dw_abs[i], 0.0),
        ),
        compare(
            Family::Conv2d,
            "conv layer dx",
            shape.clone(),
            got_dx,
            &dx,
            |i| (gx * dx_abs[i], 0.0),
        ),
    ];
    if inf {
        for c in &mut out {
            c.kernel.push_str(" (∞ input)");
        }
    }
    out
}
