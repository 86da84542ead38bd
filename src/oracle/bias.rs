//! The bias gradient (column sums, within γ of the longest chain of additions).

use super::compare::{compare, to64, Check};
use super::tolerance::gamma;
use super::Family;
use crate::cpu;
use ndarray::Array2;

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
