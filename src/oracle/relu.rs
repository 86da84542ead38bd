//! ReLU forward and backward: exact.

use super::compare::{compare, to64, Check};
use super::Family;
use crate::cpu;
use ndarray::Array2;

/// relu_forward's y and relu_backward's dx (through the tested y), both exact.
pub fn relu_compare(
    x: &Array2<f32>,
    dy: &Array2<f32>,
    y: &[f32],
    dx: &[f32],
    shape: String,
) -> Vec<Check> {
    let want_y = cpu::relu::relu_forward(to64(x).view());
    let want_dx = cpu::relu::relu_backward(want_y.view(), to64(dy).view());
    vec![
        compare(
            Family::Relu,
            "relu_forward",
            shape.clone(),
            y,
            want_y.as_slice().unwrap(),
            |_| (0.0, 0.0),
        ),
        compare(
            Family::Relu,
            "relu_backward",
            shape,
            dx,
            want_dx.as_slice().unwrap(),
            |_| (0.0, 0.0),
        ),
    ]
}
