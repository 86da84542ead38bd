//! Twin of `shaders/dropout.wgsl`: inverted dropout over x\[B,F\] with the mask of
//! [`DropoutSpec::keep`] (a counter-based hash, the same integer operations as the shader, so
//! the masks agree bit for bit), and its gradient.

use crate::ops::DropoutSpec;
use ndarray::NdFloat;

/// y = x·scale where element i is kept at training step `step`, else 0.
pub fn dropout_forward<F: NdFloat>(x: &[F], spec: &DropoutSpec, step: u32) -> Vec<F> {
    assert_eq!(
        x.len(),
        spec.len(),
        "dropout_forward: x has the wrong length"
    );
    let scale = F::from(spec.scale()).expect("f32 is a float");
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if spec.keep(step, i) {
                v * scale
            } else {
                F::zero()
            }
        })
        .collect()
}

/// dx = dy·scale where the forward pass kept the element, else 0; with `mask`, 0 wherever
/// the mask is not > 0 (the ReLU below).
pub fn dropout_backward<F: NdFloat>(
    dy: &[F],
    spec: &DropoutSpec,
    step: u32,
    mask: Option<&[F]>,
) -> Vec<F> {
    assert_eq!(
        dy.len(),
        spec.len(),
        "dropout_backward: dy has the wrong length"
    );
    let scale = F::from(spec.scale()).expect("f32 is a float");
    dy.iter()
        .enumerate()
        .map(|(i, &g)| {
            let live = mask.is_none_or(|m| m[i] > F::zero());
            if live && spec.keep(step, i) {
                g * scale
            } else {
                F::zero()
            }
        })
        .collect()
}
