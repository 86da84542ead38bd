//! Fast twin of `shaders/gather.wgsl`: the minibatch straight from the byte images.

use super::PAR_MIN;
use crate::ops::{
    augment_draw, normalized, AugmentDraw, FeatureType, GatherAugment, PADDING_LABEL,
};
use rayon::prelude::*;

/// x\[B,P\] = images[order[start + b]] / 255, y\[B\] = labels[order[start + b]]; rows past the end
/// of `order` are zeros with the padding label. B = `y.len()`. `f32` features are taken as
/// they are. With `augment` = (what, training step), each sample is cropped and flipped as
/// [`GatherAugment::source`] says (the twin's bits exactly). With `normalize` (C means, then C
/// reciprocal standard deviations), each sample row is then normalised as the twin does.
#[allow(clippy::too_many_arguments)]
pub fn gather(
    images: &[u8],
    kind: FeatureType,
    labels: &[u32],
    pixels: usize,
    order: &[u32],
    start: usize,
    x: &mut [f32],
    y: &mut [u32],
    augment: Option<(&GatherAugment, u32)>,
    normalize: Option<&[f32]>,
) {
    let rows = y.len();
    let x = &mut x[..rows * pixels];
    let per_task = (PAR_MIN / pixels.max(1)).max(1);
    x.par_chunks_mut(pixels.max(1) * per_task)
        .zip(y.par_chunks_mut(per_task))
        .enumerate()
        .for_each(|(t, (xs, ys))| {
            for (i, (row, label)) in xs.chunks_exact_mut(pixels.max(1)).zip(ys).enumerate() {
                match order.get(start + t * per_task + i) {
                    Some(&s) if augment.is_some() => {
                        let (a, step) = augment.expect("augmenting");
                        let d = augment_draw(a.augment, a.seed, step, s);
                        augmented(images, kind, s as usize * pixels, a, d, row);
                        *label = labels[s as usize];
                    }
                    Some(&s) => {
                        let s = s as usize;
                        match kind {
                            FeatureType::U8 => {
                                let src = &images[s * pixels..(s + 1) * pixels];
                                for (v, &p) in row.iter_mut().zip(src) {
                                    *v = p as f32 / 255.0;
                                }
                            }
                            FeatureType::F32 => {
                                let src = &images[4 * s * pixels..4 * (s + 1) * pixels];
                                for (v, b) in row.iter_mut().zip(src.chunks_exact(4)) {
                                    *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                                }
                            }
                        }
                        *label = labels[s];
                    }
                    None => {
                        row.fill(0.0);
                        *label = PADDING_LABEL;
                        continue;
                    }
                }
                if let Some(t) = normalize {
                    let c = t.len() / 2;
                    let (mean, inv) = t.split_at(c);
                    if c == 1 {
                        for v in row.iter_mut() {
                            *v = normalized(*v, mean[0], inv[0]);
                        }
                    } else {
                        for px in row.chunks_exact_mut(c) {
                            for ((v, &m), &s) in px.iter_mut().zip(mean).zip(inv) {
                                *v = normalized(*v, m, s);
                            }
                        }
                    }
                }
            }
        });
}

/// Feature `i` of the dataset as the gather reads it: a byte / 255, or an f32 as it is.
#[inline(always)]
fn value(images: &[u8], kind: FeatureType, i: usize) -> f32 {
    match kind {
        FeatureType::U8 => images[i] as f32 / 255.0,
        FeatureType::F32 => f32::from_le_bytes([
            images[4 * i],
            images[4 * i + 1],
            images[4 * i + 2],
            images[4 * i + 3],
        ]),
    }
}

/// One augmented sample row\[H,W,C\] from the sample whose first feature is `base`: what
/// [`GatherAugment::source`] says for each value (the same values), found a row and a pixel at
/// a time instead of by dividing every index: a shifted-out row or column is zeros, a pixel
/// inside copies its C channels.
fn augmented(
    images: &[u8],
    kind: FeatureType,
    base: usize,
    a: &GatherAugment,
    d: AugmentDraw,
    row: &mut [f32],
) {
    let (h, w, c) = (a.h as i64, a.w, a.c);
    for (y, out) in row.chunks_exact_mut(w * c).enumerate() {
        let sy = y as i64 + d.dy as i64;
        if sy < 0 || sy >= h {
            out.fill(0.0);
            continue;
        }
        for (x, px) in out.chunks_exact_mut(c).enumerate() {
            let xs = if d.flip { w - 1 - x } else { x };
            let sx = xs as i64 + d.dx as i64;
            if sx < 0 || sx >= w as i64 {
                px.fill(0.0);
                continue;
            }
            let at = base + (sy as usize * w + sx as usize) * c;
            for (ch, v) in px.iter_mut().enumerate() {
                *v = value(images, kind, at + ch);
            }
        }
    }
}
