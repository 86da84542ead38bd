//! Fast twin of `shaders/conv2d.wgsl`: im2col and col2im over channels-last activations,
//! rows (im2col) or images (col2im) split over threads.
//!
//! Layouts as in [`crate::cpu::conv2d`]: x[B,H,W,C]; cols[B·OH·OW, C·K·K] with row
//! (b·OH + oy)·OW + ox and column c·K·K + ky·K + kx.

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

/// `dst.copy_from_slice(src)` for the few values of one kernel row: with the length known at
/// compile time for the common kernel sizes the copy is a couple of vector moves instead of a
/// call to `memcpy` (one per kernel row of every im2col row: 390,000 per lenet5 step).
fn copy_short(dst: &mut [f32], src: &[f32]) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
        let d: &mut [f32; N] = dst.try_into().expect("length checked");
        *d = src.try_into().expect("length checked");
    }
    match dst.len() {
        3 => fixed::<3>(dst, src),
        5 => fixed::<5>(dst, src),
        7 => fixed::<7>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// cols = im2col(x): every column of every row written (zeros in the padding). Work goes by
/// blocks of one output row (b, oy), so the row index is never divided per im2col row; per
/// row and kernel row ky, the K·C inputs under the kernel are one contiguous run of x, read
/// once and spread over the C column groups of the row.
pub fn im2col(x: &[f32], spec: &Conv2dSpec, cols: &mut [f32]) {
    let (oh, ow, k, c_in) = (spec.out_h(), spec.out_w(), spec.k, spec.c_in);
    let width = spec.col_cols();
    if width == 0 || ow == 0 || oh == 0 {
        return;
    }
    let cols = &mut cols[..spec.col_rows() * width];
    cols.par_chunks_mut(ow * width)
        .enumerate()
        .for_each(|(blk, block)| {
            let (b, oy) = (blk / oh, blk % oh);
            let (ylo, yhi, iy0) = valid(oy, spec, spec.h);
            let image = &x[b * spec.h * spec.w * c_in..][..spec.h * spec.w * c_in];
            for (ox, row) in block.chunks_exact_mut(width).enumerate() {
                let (xlo, xhi, ix0) = valid(ox, spec, spec.w);
                if ylo > 0 || yhi < k || xlo > 0 || xhi < k {
                    row.fill(0.0);
                }
                if xlo == xhi {
                    continue;
                }
                for ky in ylo..yhi {
                    let iy = iy0 + ky - ylo;
                    let run = &image[(iy * spec.w + ix0) * c_in..][..(xhi - xlo) * c_in];
                    if c_in == 1 {
                        copy_short(&mut row[ky * k + xlo..ky * k + xhi], run);
                        continue;
                    }
                    for (c, group) in row.chunks_exact_mut(k * k).enumerate() {
                        let dst = &mut group[ky * k + xlo..ky * k + xhi];
                        for (d, &v) in dst.iter_mut().zip(run[c..].iter().step_by(c_in)) {
                            *d = v;
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
                    for (c, group) in row.chunks_exact(k * k).enumerate() {
                        let src = &group[ky * k + xlo..ky * k + xhi];
                        for (d, &v) in run[c..].iter_mut().step_by(c_in).zip(src) {
                            *d += v;
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
