//! Fast twin of `shaders/maxpool.wgsl`: K×K max-pooling with stride K over channels-last
//! x\[B,H,W,C\], images split over threads.
//!
//! Each image runs one body written once (`forward_image`, `backward_image`) with the
//! channel count C as an argument; for the counts the presets use it is instantiated with C
//! a compile-time constant (`specialise`), so the per-window channel loops unroll into a
//! few vector instructions instead of a short run-time loop (measured: ~3× on LeNet-5's
//! C = 6 pool, see BENCHMARKS.md).

use super::PAR_MIN;
use crate::ops::Pool2dSpec;
use rayon::prelude::*;

/// Images per rayon task: enough that a task streams at least [`PAR_MIN`] inputs.
fn images_per_task(image: usize) -> usize {
    (PAR_MIN / image.max(1)).max(1)
}

/// Picks `$body::<C>` for the channel counts of the presets' pools, else `$body::<0>` (C at
/// run time: the bodies take `if C == 0 { c } else { C }`).
macro_rules! specialise {
    ($body:ident, $c:expr) => {
        match $c {
            1 => $body::<1>,
            6 => $body::<6>,
            16 => $body::<16>,
            32 => $body::<32>,
            64 => $body::<64>,
            _ => $body::<0>,
        }
    };
}

/// One image b: y\[OH,OW,C\] and idx (flat index into the whole x, so offset by `base` = the
/// image's first element) of each window's first maximum; NaN wins. Windows are scanned in
/// row-major (ky, kx) order, one C-run of channels at a time, compared branch-free (random
/// data mispredicts a branch half the time): a larger value, or the first NaN, replaces.
#[inline(always)]
fn forward_image<const C: usize>(
    x: &[f32],
    spec: &Pool2dSpec,
    base: usize,
    y: &mut [f32],
    idx: &mut [u32],
) {
    let c = if C == 0 { spec.c } else { C };
    let (oh, ow, k, w) = (spec.out_h(), spec.out_w(), spec.k, spec.w);
    for oy in 0..oh {
        let (yrow, irow) = (
            &mut y[oy * ow * c..][..ow * c],
            &mut idx[oy * ow * c..][..ow * c],
        );
        for ky in 0..k {
            let start = (oy * k + ky) * w * c;
            let xrow = &x[start..][..ow * k * c];
            for kx in 0..k {
                for ox in 0..ow {
                    let at = (ox * k + kx) * c;
                    let px = &xrow[at..][..c];
                    let (best, bi) = (&mut yrow[ox * c..][..c], &mut irow[ox * c..][..c]);
                    let first = (base + start + at) as u32;
                    if ky == 0 && kx == 0 {
                        best.copy_from_slice(px);
                        for (ch, i) in bi.iter_mut().enumerate() {
                            *i = first + ch as u32;
                        }
                        continue;
                    }
                    for ch in 0..c {
                        let (v, b) = (px[ch], best[ch]);
                        let take = (v > b) | (v.is_nan() & !b.is_nan());
                        best[ch] = if take { v } else { b };
                        bi[ch] = if take { first + ch as u32 } else { bi[ch] };
                    }
                }
            }
        }
    }
}

/// One image's dx\[H,W,C\] (flat index of its first element: `base`): dy of an element's
/// window where that window's idx names the element, else 0; 0 wherever `mask` is not > 0,
/// and in the rows and columns past OH·K, OW·K that no window covers. Windows do not overlap,
/// so every covered element is written once, from its own window (a gather: no scatter,
/// no zero-fill pass, no check that idx lies inside the window).
#[inline(always)]
fn backward_image<const C: usize>(
    dy: &[f32],
    idx: &[u32],
    spec: &Pool2dSpec,
    base: usize,
    gate: Gate<'_>,
    dx: &mut [f32],
) {
    let c = if C == 0 { spec.c } else { C };
    let (oh, ow, k, w) = (spec.out_h(), spec.out_w(), spec.k, spec.w);
    let mut gated = vec![
        0.0f32;
        if matches!(gate, Gate::Maxima(_)) {
            ow * c
        } else {
            0
        }
    ];
    for iy in 0..oh * k {
        let start = iy * w * c;
        let (drow, mrow) = (
            &mut dx[start..][..w * c],
            match gate {
                Gate::Mask(m) => Some(&m[start..][..w * c]),
                _ => None,
            },
        );
        let o_row = (iy / k) * ow * c;
        let (mut dyrow, irow) = (&dy[o_row..][..ow * c], &idx[o_row..][..ow * c]);
        if let Gate::Maxima(y) = gate {
            // The masked element of a window is its maximum: dy where that is > 0.
            if iy % k == 0 {
                for ((d, &g), &m) in gated.iter_mut().zip(dyrow).zip(&y[o_row..][..ow * c]) {
                    *d = if m > 0.0 { g } else { 0.0 };
                }
            }
            dyrow = &gated;
        }
        for ox in 0..ow {
            let (g, gi) = (&dyrow[ox * c..][..c], &irow[ox * c..][..c]);
            for kx in 0..k {
                let at = (ox * k + kx) * c;
                let d = &mut drow[at..][..c];
                let first = (base + start + at) as u32;
                match mrow {
                    None => {
                        for ch in 0..c {
                            d[ch] = if gi[ch] == first + ch as u32 {
                                g[ch]
                            } else {
                                0.0
                            };
                        }
                    }
                    Some(m) => {
                        let m = &m[at..][..c];
                        for ch in 0..c {
                            let hit = (gi[ch] == first + ch as u32) & (m[ch] > 0.0);
                            d[ch] = if hit { g[ch] } else { 0.0 };
                        }
                    }
                }
            }
        }
        drow[ow * k * c..].fill(0.0);
    }
    dx[oh * k * w * c..].fill(0.0);
}

/// y\[B,OH,OW,C\] and idx (flat index into x of each window's first maximum; NaN wins).
pub fn forward(x: &[f32], spec: &Pool2dSpec, y: &mut [f32], idx: &mut [u32]) {
    let (per_image, image) = (
        spec.out_h() * spec.out_w() * spec.c,
        spec.h * spec.w * spec.c,
    );
    if per_image == 0 {
        return;
    }
    let body = specialise!(forward_image, spec.c);
    let n = spec.output_len();
    let ipt = images_per_task(image);
    y[..n]
        .par_chunks_mut(per_image * ipt)
        .zip(idx[..n].par_chunks_mut(per_image * ipt))
        .enumerate()
        .for_each(|(t, (ys, is))| {
            let images = ys.chunks_mut(per_image).zip(is.chunks_mut(per_image));
            for (j, (y, idx)) in images.enumerate() {
                let base = (t * ipt + j) * image;
                body(&x[base..][..image], spec, base, y, idx);
            }
        });
}

/// What gates a max-pooling backward pass besides the recorded maxima.
#[derive(Clone, Copy)]
pub enum Gate<'a> {
    /// Nothing.
    None,
    /// 0 wherever the mask \[B,H,W,C\] is not > 0.
    Mask(&'a [f32]),
    /// The forward pass's output y\[B,OH,OW,C\], when the mask is the forward pass's input x
    /// (a ReLU's output, the usual case): the only element of a window that can receive dy is
    /// its recorded maximum, whose mask value is x\[idx\] = y, so the gradient is dy where
    /// y > 0 — the same values, without reading the input-sized mask.
    Maxima(&'a [f32]),
}

/// dx\[B,H,W,C\] = dy at each window's recorded maximum, else 0 (also 0 past OH·K, OW·K); 0
/// wherever `mask` is not > 0.
pub fn backward(dy: &[f32], idx: &[u32], spec: &Pool2dSpec, mask: Option<&[f32]>, dx: &mut [f32]) {
    backward_gated(dy, idx, spec, mask.map_or(Gate::None, Gate::Mask), dx)
}

/// [`backward`] with any [`Gate`].
pub fn backward_gated(dy: &[f32], idx: &[u32], spec: &Pool2dSpec, gate: Gate<'_>, dx: &mut [f32]) {
    let (per_image, image) = (
        spec.out_h() * spec.out_w() * spec.c,
        spec.h * spec.w * spec.c,
    );
    if image == 0 {
        return;
    }
    let body = specialise!(backward_image, spec.c);
    let ipt = images_per_task(image);
    dx[..spec.input_len()]
        .par_chunks_mut(image * ipt)
        .enumerate()
        .for_each(|(t, dxs)| {
            for (j, dx) in dxs.chunks_mut(image).enumerate() {
                let b = t * ipt + j;
                let (base, o) = (b * image, b * per_image);
                let g = match gate {
                    Gate::None => Gate::None,
                    Gate::Mask(m) => Gate::Mask(&m[base..][..image]),
                    Gate::Maxima(y) => Gate::Maxima(&y[o..][..per_image]),
                };
                body(
                    &dy[o..][..per_image],
                    &idx[o..][..per_image],
                    spec,
                    base,
                    g,
                    dx,
                );
            }
        });
}
