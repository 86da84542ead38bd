//! Fast twin of `shaders/avgpool.wgsl`: KH×KW average pooling with stride (KH, KW) over
//! channels-last x\[B,H,W,C\], images split over threads.
//!
//! Each output row is accumulated in y itself, window row by window row and column by
//! column, a C-run of channels at a time (contiguous, so it vectorises); every output still
//! adds its window's terms in the twin's row-major (ky, kx) order starting from zero, so the
//! result is bit-identical to [`crate::cpu::avgpool`].

use super::PAR_MIN;
use crate::ops::AvgPool2dSpec;
use rayon::prelude::*;

/// Images per rayon task: enough that a task streams at least [`PAR_MIN`] inputs.
fn images_per_task(image: usize) -> usize {
    (PAR_MIN / image.max(1)).max(1)
}

/// One image: y\[OH,OW,C\] from x\[H,W,C\].
fn forward_image(x: &[f32], spec: &AvgPool2dSpec, y: &mut [f32]) {
    let (oh, ow, c, w) = (spec.out_h(), spec.out_w(), spec.c, spec.w);
    let n = spec.window() as f32;
    for oy in 0..oh {
        let yrow = &mut y[oy * ow * c..][..ow * c];
        yrow.fill(0.0);
        for ky in 0..spec.kh {
            let xrow = &x[(oy * spec.kh + ky) * w * c..][..ow * spec.kw * c];
            for kx in 0..spec.kw {
                for ox in 0..ow {
                    let px = &xrow[(ox * spec.kw + kx) * c..][..c];
                    for (acc, &v) in yrow[ox * c..][..c].iter_mut().zip(px) {
                        *acc += v;
                    }
                }
            }
        }
        yrow.iter_mut().for_each(|v| *v /= n);
    }
}

/// One image: dx\[H,W,C\] from dy\[OH,OW,C\].
fn backward_image(dy: &[f32], spec: &AvgPool2dSpec, mask: Option<&[f32]>, dx: &mut [f32]) {
    let (oh, ow, c, w) = (spec.out_h(), spec.out_w(), spec.c, spec.w);
    let n = spec.window() as f32;
    for iy in 0..oh * spec.kh {
        let start = iy * w * c;
        let drow = &mut dx[start..][..w * c];
        let dyrow = &dy[(iy / spec.kh) * ow * c..][..ow * c];
        for ix in 0..ow * spec.kw {
            let (d, g) = (&mut drow[ix * c..][..c], &dyrow[(ix / spec.kw) * c..][..c]);
            match mask {
                None => d.iter_mut().zip(g).for_each(|(d, &g)| *d = g / n),
                Some(m) => {
                    let m = &m[start + ix * c..][..c];
                    for ((d, &g), &m) in d.iter_mut().zip(g).zip(m) {
                        *d = if m > 0.0 { g / n } else { 0.0 };
                    }
                }
            }
        }
        drow[ow * spec.kw * c..].fill(0.0);
    }
    dx[oh * spec.kh * w * c..].fill(0.0);
}

/// y\[B,OH,OW,C\]: the mean of each window.
pub fn forward(x: &[f32], spec: &AvgPool2dSpec, y: &mut [f32]) {
    let (per_image, image) = (
        spec.out_h() * spec.out_w() * spec.c,
        spec.h * spec.w * spec.c,
    );
    if per_image == 0 {
        return;
    }
    let ipt = images_per_task(image);
    y[..spec.output_len()]
        .par_chunks_mut(per_image * ipt)
        .enumerate()
        .for_each(|(t, ys)| {
            for (j, y) in ys.chunks_mut(per_image).enumerate() {
                let base = (t * ipt + j) * image;
                forward_image(&x[base..][..image], spec, y);
            }
        });
}

/// dx\[B,H,W,C\] = dy of the element's window / (KH·KW), 0 past OH·KH, OW·KW; 0 wherever
/// `mask` is not > 0.
pub fn backward(dy: &[f32], spec: &AvgPool2dSpec, mask: Option<&[f32]>, dx: &mut [f32]) {
    let (per_image, image) = (
        spec.out_h() * spec.out_w() * spec.c,
        spec.h * spec.w * spec.c,
    );
    if image == 0 {
        return;
    }
    let ipt = images_per_task(image);
    dx[..spec.input_len()]
        .par_chunks_mut(image * ipt)
        .enumerate()
        .for_each(|(t, dxs)| {
            for (j, dx) in dxs.chunks_mut(image).enumerate() {
                let b = t * ipt + j;
                let m = mask.map(|m| &m[b * image..][..image]);
                backward_image(&dy[b * per_image..][..per_image], spec, m, dx);
            }
        });
}
