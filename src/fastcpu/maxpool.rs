//! Fast twin of `shaders/maxpool.wgsl`: K×K max-pooling with stride K over channels-last
//! x[B,H,W,C], images split over threads.

use super::PAR_MIN;
use crate::ops::Pool2dSpec;
use rayon::prelude::*;

/// Images per rayon task: enough that a task streams at least [`PAR_MIN`] inputs.
fn images_per_task(image: usize) -> usize {
    (PAR_MIN / image.max(1)).max(1)
}

/// y[B,OH,OW,C] and idx (flat index into x of each window's first maximum; NaN wins). Each
/// window position is a contiguous run of C channels, compared channel-wise.
pub fn forward(x: &[f32], spec: &Pool2dSpec, y: &mut [f32], idx: &mut [u32]) {
    let (oh, ow, k, c) = (spec.out_h(), spec.out_w(), spec.k, spec.c);
    let per_image = oh * ow * c;
    if per_image == 0 {
        return;
    }
    let n = spec.output_len();
    let ipt = images_per_task(spec.h * spec.w * c);
    y[..n]
        .par_chunks_mut(per_image * ipt)
        .zip(idx[..n].par_chunks_mut(per_image * ipt))
        .enumerate()
        .flat_map_iter(|(t, (ys, is))| {
            ys.chunks_mut(per_image)
                .zip(is.chunks_mut(per_image))
                .enumerate()
                .map(move |(j, yi)| (t * ipt + j, yi))
        })
        .for_each(|(b, (y, idx))| {
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = (oy * ow + ox) * c;
                    let (y, idx) = (&mut y[o..o + c], &mut idx[o..o + c]);
                    // Start below every value at the window's first element: the first
                    // position then wins unless a later one is larger (or the first NaN),
                    // exactly as when starting from it.
                    let first = ((b * spec.h + oy * k) * spec.w + ox * k) * c;
                    y.fill(f32::NEG_INFINITY);
                    for (ch, i) in idx.iter_mut().enumerate() {
                        *i = (first + ch) as u32;
                    }
                    for ky in 0..k {
                        for kx in 0..k {
                            let at = ((b * spec.h + oy * k + ky) * spec.w + ox * k + kx) * c;
                            let px = &x[at..at + c];
                            for (ch, (&v, (best, i))) in
                                px.iter().zip(y.iter_mut().zip(idx.iter_mut())).enumerate()
                            {
                                // Branch-free (random data mispredicts a branch half the
                                // time): a larger value, or the first NaN, replaces.
                                let take = (v > *best) | (v.is_nan() & !best.is_nan());
                                *best = if take { v } else { *best };
                                *i = if take { (at + ch) as u32 } else { *i };
                            }
                        }
                    }
                }
            }
        });
}

/// dx[B,H,W,C] = dy at each window's recorded maximum, else 0 (also 0 past OH·K, OW·K); 0
/// wherever `mask` is not > 0. A scatter: each output sends its gradient to the element its
/// idx names, if that element lies in its own window (else nowhere) and passes the mask.
pub fn backward(dy: &[f32], idx: &[u32], spec: &Pool2dSpec, mask: Option<&[f32]>, dx: &mut [f32]) {
    let (oh, ow, k, c) = (spec.out_h(), spec.out_w(), spec.k, spec.c);
    let image = spec.h * spec.w * c;
    if image == 0 {
        return;
    }
    let ipt = images_per_task(image);
    dx[..spec.input_len()]
        .par_chunks_mut(image * ipt)
        .enumerate()
        .flat_map_iter(|(t, dxs)| {
            dxs.chunks_mut(image)
                .enumerate()
                .map(move |(j, dx)| (t * ipt + j, dx))
        })
        .for_each(|(b, dx)| {
            dx.fill(0.0);
            let base = b * image;
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let o = ((b * oh + oy) * ow + ox) * c + ch;
                        let Some(i) = (idx[o] as usize).checked_sub(base) else {
                            continue;
                        };
                        // Inside this output's own window? K² compares, no divisions.
                        let corner = ((oy * k) * spec.w + ox * k) * c + ch;
                        let mut inside = false;
                        for ky in 0..k {
                            let row = corner + ky * spec.w * c;
                            for kx in 0..k {
                                inside |= row + kx * c == i;
                            }
                        }
                        if inside && mask.is_none_or(|m| m[base + i] > 0.0) {
                            dx[i] = dy[o];
                        }
                    }
                }
            }
        });
}
