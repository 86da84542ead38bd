//! Fast twin of `shaders/conv2d.wgsl`: im2col and col2im over channels-last activations,
//! rows (im2col) or images (col2im) split over threads.
//!
//! Layouts as in [`crate::cpu::conv2d`]: x[B,H,W,C]; cols[B·OH·OW, C·K·K] with row
//! (b·OH + oy)·OW + ox and column c·K·K + ky·K + kx.

use super::PAR_MIN;
use crate::ops::Conv2dSpec;
use rayon::prelude::*;

/// Input coordinate `o·stride + kk − pad` along a side of length `side`, or `None` in the
/// padding.
fn src(o: usize, kk: usize, spec: &Conv2dSpec, side: usize) -> Option<usize> {
    (o * spec.stride + kk)
        .checked_sub(spec.pad)
        .filter(|&i| i < side)
}

/// cols = im2col(x): every column of every row written (zeros in the padding).
pub fn im2col(x: &[f32], spec: &Conv2dSpec, cols: &mut [f32]) {
    let (oh, ow, k, c_in) = (spec.out_h(), spec.out_w(), spec.k, spec.c_in);
    let width = spec.col_cols();
    if width == 0 {
        return;
    }
    let cols = &mut cols[..spec.col_rows() * width];
    let rows_per_task = (PAR_MIN / width).max(1);
    cols.par_chunks_mut(width * rows_per_task)
        .enumerate()
        .for_each(|(t, block)| {
            for (i, row) in block.chunks_exact_mut(width).enumerate() {
                let r = t * rows_per_task + i;
                let (b, oy, ox) = (r / (oh * ow), r / ow % oh, r % ow);
                for ky in 0..k {
                    let iy = src(oy, ky, spec, spec.h);
                    for kx in 0..k {
                        let at = iy
                            .zip(src(ox, kx, spec, spec.w))
                            .map(|(iy, ix)| ((b * spec.h + iy) * spec.w + ix) * c_in);
                        for c in 0..c_in {
                            row[(c * k + ky) * k + kx] = at.map_or(0.0, |at| x[at + c]);
                        }
                    }
                }
            }
        });
}

/// dx = col2im(dcols): each element the sum, in row order, of the dcols entries im2col copied
/// from it; 0 wherever `mask` is not > 0.
pub fn col2im(dcols: &[f32], spec: &Conv2dSpec, mask: Option<&[f32]>, dx: &mut [f32]) {
    let (oh, ow, k, c_in) = (spec.out_h(), spec.out_w(), spec.k, spec.c_in);
    let width = spec.col_cols();
    let image = spec.h * spec.w * c_in;
    if image == 0 {
        return;
    }
    let dx = &mut dx[..spec.input_len()];
    dx.par_chunks_mut(image).enumerate().for_each(|(b, dx)| {
        dx.fill(0.0);
        for oy in 0..oh {
            for ox in 0..ow {
                let row = &dcols[((b * oh + oy) * ow + ox) * width..][..width];
                for c in 0..c_in {
                    for ky in 0..k {
                        let Some(iy) = src(oy, ky, spec, spec.h) else {
                            continue;
                        };
                        for kx in 0..k {
                            if let Some(ix) = src(ox, kx, spec, spec.w) {
                                dx[(iy * spec.w + ix) * c_in + c] += row[(c * k + ky) * k + kx];
                            }
                        }
                    }
                }
            }
        }
        if let Some(m) = mask {
            let m = &m[b * image..(b + 1) * image];
            for (d, &m) in dx.iter_mut().zip(m) {
                if !(m > 0.0) {
                    *d = 0.0;
                }
            }
        }
    });
}
