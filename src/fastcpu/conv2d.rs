//! Fast twin of `shaders/conv2d.wgsl`: im2col and col2im over channels-last activations,
//! rows (im2col) or images (col2im) split over threads.
//!
//! Layouts as in [`crate::cpu::conv2d`]: x[B,H,W,C]; cols[B·OH·OW, C·K·K] with row
//! (b·OH + oy)·OW + ox and column c·K·K + ky·K + kx.

use super::PAR_MIN;
use crate::ops::Conv2dSpec;
use rayon::prelude::*;

/// The kernel offsets kk in `lo..hi` whose input coordinate `o·stride + kk − pad` falls inside
/// a side of length `side` (the rest read the zero padding), and the coordinate of `lo`.
fn valid(o: usize, spec: &Conv2dSpec, side: usize) -> (usize, usize, usize) {
    let first = o * spec.stride; // input coordinate + pad of kk = 0
    let lo = spec.pad.saturating_sub(first).min(spec.k);
    let hi = (side + spec.pad).saturating_sub(first).min(spec.k).max(lo);
    (lo, hi, (first + lo).saturating_sub(spec.pad))
}

/// cols = im2col(x): every column of every row written (zeros in the padding). Per row and
/// kernel row ky, the K·C inputs under the kernel are one contiguous run of x.
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
                let (ylo, yhi, iy0) = valid(oy, spec, spec.h);
                let (xlo, xhi, ix0) = valid(ox, spec, spec.w);
                if ylo > 0 || yhi < k || xlo > 0 || xhi < k {
                    row.fill(0.0);
                }
                if xlo == xhi {
                    continue;
                }
                let run = |ky: usize| {
                    let iy = iy0 + ky - ylo;
                    &x[((b * spec.h + iy) * spec.w + ix0) * c_in..][..(xhi - xlo) * c_in]
                };
                if c_in == 1 {
                    for ky in ylo..yhi {
                        row[ky * k + xlo..ky * k + xhi].copy_from_slice(run(ky));
                    }
                    continue;
                }
                // Contiguous writes along the row; the reads stay within K·C inputs (in L1).
                for c in 0..c_in {
                    for ky in ylo..yhi {
                        let dst = &mut row[(c * k + ky) * k + xlo..(c * k + ky) * k + xhi];
                        for (d, px) in dst.iter_mut().zip(run(ky).chunks_exact(c_in)) {
                            *d = px[c];
                        }
                    }
                }
            }
        });
}

/// dx = col2im(dcols): each element the sum, in row order, of the dcols entries im2col copied
/// from it (within one row every element receives at most one entry, so the loop order inside
/// a row does not change any sum); 0 wherever `mask` is not > 0.
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
            let (ylo, yhi, iy0) = valid(oy, spec, spec.h);
            for ox in 0..ow {
                let (xlo, xhi, ix0) = valid(ox, spec, spec.w);
                if xlo == xhi {
                    continue;
                }
                let row = &dcols[((b * oh + oy) * ow + ox) * width..][..width];
                for ky in ylo..yhi {
                    let iy = iy0 + ky - ylo;
                    let run = &mut dx[(iy * spec.w + ix0) * c_in..][..(xhi - xlo) * c_in];
                    for (j, px) in run.chunks_exact_mut(c_in).enumerate() {
                        for (c, d) in px.iter_mut().enumerate() {
                            *d += row[(c * k + ky) * k + xlo + j];
                        }
                    }
                }
            }
        }
        if let Some(m) = mask {
            let m = &m[b * image..(b + 1) * image];
            for (d, &m) in dx.iter_mut().zip(m) {
                *d = if m > 0.0 { *d } else { 0.0 };
            }
        }
    });
}
