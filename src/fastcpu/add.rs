//! Fast twin of `shaders/add.wgsl`: the twin's element-wise sweeps ([`crate::cpu::add`])
//! written into the backend's buffers, split over threads in chunks; each element is the same
//! single addition (or copy) as in the twin, so the result is bit-identical.

use super::PAR_MIN;
use rayon::prelude::*;

/// y = a + b, then max(0, ·) when `relu`.
pub fn forward(a: &[f32], b: &[f32], relu: bool, y: &mut [f32]) {
    let n = y.len();
    y.par_chunks_mut(PAR_MIN).enumerate().for_each(|(c, out)| {
        let at = c * PAR_MIN;
        for (k, o) in out.iter_mut().enumerate() {
            let s = a[at + k] + b[at + k];
            *o = if relu { s.max(0.0) } else { s };
        }
    });
    debug_assert!(a.len() >= n && b.len() >= n);
}

/// dx = dy where `mask` > 0 (everywhere without one), else 0; `dx +=` that when `accumulate`.
pub fn backward(dy: &[f32], mask: Option<&[f32]>, accumulate: bool, dx: &mut [f32]) {
    dx.par_chunks_mut(PAR_MIN).enumerate().for_each(|(c, out)| {
        let at = c * PAR_MIN;
        for (k, o) in out.iter_mut().enumerate() {
            let i = at + k;
            let d = if mask.is_none_or(|m| m[i] > 0.0) {
                dy[i]
            } else {
                0.0
            };
            *o = if accumulate { *o + d } else { d };
        }
    });
}
