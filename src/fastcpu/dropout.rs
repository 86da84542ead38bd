//! Fast twin of `shaders/dropout.wgsl`: the twin's element-wise sweep ([`crate::cpu::dropout`])
//! written into the backend's buffer, split over threads in chunks; each element is the same
//! single product (or 0) as in the twin, so the result is bit-identical.
//!
//! The mask is the twin's hash ([`crate::ops::dropout_keep`]), with the part every element of
//! the layer shares at a step ([`dropout_key`]) computed once per call and the element's global
//! index counted up (row0·F + i, wrapping, which is (row0 + r)·F + j for i = r·F + j), and the
//! loop compiled through `pulp`'s dispatch, so the integer hash runs on AVX-512 / AVX2 vectors
//! where the CPU has them.

use super::PAR_MIN;
use crate::ops::{dropout_keep_keyed, dropout_key, DropoutSpec};
use pulp::Arch;
use rayon::prelude::*;

/// (key, global index of element 0, threshold) of `spec` at `step`.
fn hash_parts(spec: &DropoutSpec, step: u32) -> (u32, u32, u32) {
    (
        dropout_key(spec.seed, step, spec.layer),
        (spec.row0 as u32).wrapping_mul(spec.cols as u32),
        spec.threshold(),
    )
}

/// y = x·scale where kept, else 0.
pub fn forward(x: &[f32], spec: &DropoutSpec, step: u32, y: &mut [f32]) {
    let (n, scale) = (spec.len(), spec.scale());
    let (key, g0, thr) = hash_parts(spec, step);
    y[..n]
        .par_chunks_mut(PAR_MIN)
        .enumerate()
        .for_each(|(c, out)| {
            let at = c * PAR_MIN;
            let xs = &x[at..][..out.len()];
            let base = g0.wrapping_add(at as u32);
            Arch::new().dispatch(|| {
                for (k, (o, &v)) in out.iter_mut().zip(xs).enumerate() {
                    let keep = dropout_keep_keyed(key, base.wrapping_add(k as u32), thr);
                    *o = if keep { v * scale } else { 0.0 };
                }
            })
        });
}

/// dx = dy·scale where kept, else 0; 0 where `mask` is not > 0.
pub fn backward(dy: &[f32], spec: &DropoutSpec, step: u32, mask: Option<&[f32]>, dx: &mut [f32]) {
    let (n, scale) = (spec.len(), spec.scale());
    let (key, g0, thr) = hash_parts(spec, step);
    dx[..n]
        .par_chunks_mut(PAR_MIN)
        .enumerate()
        .for_each(|(c, out)| {
            let at = c * PAR_MIN;
            let dys = &dy[at..][..out.len()];
            let base = g0.wrapping_add(at as u32);
            let ms = mask.map(|m| &m[at..][..out.len()]);
            Arch::new().dispatch(|| match ms {
                None => {
                    for (k, (o, &g)) in out.iter_mut().zip(dys).enumerate() {
                        let keep = dropout_keep_keyed(key, base.wrapping_add(k as u32), thr);
                        *o = if keep { g * scale } else { 0.0 };
                    }
                }
                Some(ms) => {
                    for (k, ((o, &g), &m)) in out.iter_mut().zip(dys).zip(ms).enumerate() {
                        let keep = dropout_keep_keyed(key, base.wrapping_add(k as u32), thr);
                        *o = if keep && m > 0.0 { g * scale } else { 0.0 };
                    }
                }
            })
        });
}
