//! Fast twin of `shaders/maxpool.wgsl`: K×K max-pooling with stride K over channels-last
//! x[B,H,W,C], images split over threads.

use crate::ops::Pool2dSpec;
use rayon::prelude::*;

/// y[B,OH,OW,C] and idx (flat index into x of each window's first maximum; NaN wins).
pub fn forward(x: &[f32], spec: &Pool2dSpec, y: &mut [f32], idx: &mut [u32]) {
    let (oh, ow, k, c) = (spec.out_h(), spec.out_w(), spec.k, spec.c);
    let per_image = oh * ow * c;
    if per_image == 0 {
        return;
    }
    let n = spec.output_len();
    y[..n]
        .par_chunks_mut(per_image)
        .zip(idx[..n].par_chunks_mut(per_image))
        .enumerate()
        .for_each(|(b, (y, idx))| {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let at = |ky: usize, kx: usize| {
                            ((b * spec.h + oy * k + ky) * spec.w + ox * k + kx) * c + ch
                        };
                        let mut best_i = at(0, 0);
                        let mut best = x[best_i];
                        for ky in 0..k {
                            for kx in 0..k {
                                let i = at(ky, kx);
                                let v = x[i];
                                if !best.is_nan() && (v.is_nan() || v > best) {
                                    best = v;
                                    best_i = i;
                                }
                            }
                        }
                        let o = (oy * ow + ox) * c + ch;
                        y[o] = best;
                        idx[o] = best_i as u32;
                    }
                }
            }
        });
}

/// dx[B,H,W,C] = dy at each window's recorded maximum, else 0 (also 0 past OH·K, OW·K); 0
/// wherever `mask` is not > 0. An idx outside its own window routes no gradient.
pub fn backward(dy: &[f32], idx: &[u32], spec: &Pool2dSpec, mask: Option<&[f32]>, dx: &mut [f32]) {
    let (oh, ow, k, c) = (spec.out_h(), spec.out_w(), spec.k, spec.c);
    let image = spec.h * spec.w * c;
    if image == 0 {
        return;
    }
    dx[..spec.input_len()]
        .par_chunks_mut(image)
        .enumerate()
        .for_each(|(b, dx)| {
            dx.fill(0.0);
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let o = ((b * oh + oy) * ow + ox) * c + ch;
                        let at = idx[o] as usize;
                        for ky in 0..k {
                            for kx in 0..k {
                                let i = ((oy * k + ky) * spec.w + ox * k + kx) * c + ch;
                                if b * image + i == at {
                                    dx[i] = dy[o];
                                }
                            }
                        }
                    }
                }
            }
            if let Some(m) = mask {
                for (d, &m) in dx.iter_mut().zip(&m[b * image..(b + 1) * image]) {
                    if !(m > 0.0) {
                        *d = 0.0;
                    }
                }
            }
        });
}
