//! Fast twin of `shaders/dropout.wgsl`: the twin's element-wise sweep ([`crate::cpu::dropout`])
//! written into the backend's buffer, split over threads in chunks; each element is the same
//! single product (or 0) as in the twin, so the result is bit-identical.

use super::PAR_MIN;
use crate::ops::DropoutSpec;
use rayon::prelude::*;

/// y = x·scale where kept, else 0.
pub fn forward(x: &[f32], spec: &DropoutSpec, step: u32, y: &mut [f32]) {
    let (n, scale) = (spec.len(), spec.scale());
    y[..n]
        .par_chunks_mut(PAR_MIN)
        .enumerate()
        .for_each(|(c, out)| {
            let at = c * PAR_MIN;
            for (k, o) in out.iter_mut().enumerate() {
                let i = at + k;
                *o = if spec.keep(step, i) {
                    x[i] * scale
                } else {
                    0.0
                };
            }
        });
}

/// dx = dy·scale where kept, else 0; 0 where `mask` is not > 0.
pub fn backward(dy: &[f32], spec: &DropoutSpec, step: u32, mask: Option<&[f32]>, dx: &mut [f32]) {
    let (n, scale) = (spec.len(), spec.scale());
    dx[..n]
        .par_chunks_mut(PAR_MIN)
        .enumerate()
        .for_each(|(c, out)| {
            let at = c * PAR_MIN;
            for (k, o) in out.iter_mut().enumerate() {
                let i = at + k;
                let live = mask.is_none_or(|m| m[i] > 0.0);
                *o = if live && spec.keep(step, i) {
                    dy[i] * scale
                } else {
                    0.0
                };
            }
        });
}
