//! Bias add and its gradient (column sums, within γ of the longest chain of additions).

use super::compare::{compare, to64, Check};
use super::tolerance::{gamma, U};
use super::Family;
use crate::cpu;
use ndarray::{Array1, Array2};

/// y = x + b (one correctly rounded addition: u relative) against the f64 sum.
pub fn bias_add_compare(x: &Array2<f32>, b: &Array1<f32>, got: &[f32], shape: String) -> Check {
    let want_y = cpu::bias::bias_add(to64(x).view(), b.mapv(|v| v as f64).view());
    compare(
        Family::Bias,
        "bias_add",
        shape,
        got,
        want_y.as_slice().unwrap(),
        |_| (0.0, U),
    )
}

/// Column sums `got` of dy[B, O] against the f64 sums, within γ_depth·Σ|dy| where `depth` is
/// the longest chain of additions behind one sum (B for any order).
pub fn bias_backward_compare(dy: &Array2<f32>, got: &[f32], depth: usize, shape: String) -> Check {
    let dy = to64(dy);
    let want = cpu::bias::bias_backward(dy.view());
    let abs_sum = cpu::bias::bias_backward(dy.mapv(f64::abs).view());
    compare(
        Family::Bias,
        "bias_backward",
        shape,
        got,
        want.as_slice().unwrap(),
        |i| (gamma(depth) * abs_sum[i], 0.0),
    )
}
