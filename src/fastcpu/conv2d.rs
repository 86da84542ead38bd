//! Fast twin of `shaders/conv2d.wgsl`: im2col and col2im over channels-last activations,
//! rows (im2col) or images (col2im) split over threads.
//!
//! The CPU engine also runs parts of a convolution without the cols buffers, where the
//! backend can fuse the ops into them (`backend/cpu.rs`) and they measure faster
//! (BENCHMARKS.md): a direct kernel for the forward pass and weight gradient of a
//! one-channel, stride-1 convolution ([`forward`], [`weight_grad`]), and the input gradient
//! of any convolution one image at a time, its dcols product in cache between the product
//! and col2im ([`input_grad`]).
//!
//! Layouts as in [`crate::cpu::conv2d`]: x\[B,H,W,C\]; cols[B·OH·OW, C·K·K] with row
//! (b·OH + oy)·OW + ox and column c·K·K + ky·K + kx.

use super::matmul::matmul_local;
use crate::ops::{Conv2dSpec, Epilogue, MatmulSpec};
use pulp::{Arch, Simd, WithSimd};
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
/// blocks of one output row (b, oy) (`im2col_row`), split over threads.
pub fn im2col(x: &[f32], spec: &Conv2dSpec, cols: &mut [f32]) {
    let (oh, ow, width) = (spec.out_h(), spec.out_w(), spec.col_cols());
    if width == 0 || ow == 0 || oh == 0 {
        return;
    }
    let cols = &mut cols[..spec.col_rows() * width];
    cols.par_chunks_mut(ow * width)
        .enumerate()
        .for_each(|(blk, block)| im2col_row(x, spec, blk, block));
}

/// The OW rows of cols for output row `blk` = b·OH + oy, into `block` [OW, C·K·K]; the row
/// index is never divided per cols row. Per row and kernel row ky, the K·C inputs under the
/// kernel are one contiguous run of x, read once and spread over the C column groups.
fn im2col_row(x: &[f32], spec: &Conv2dSpec, blk: usize, block: &mut [f32]) {
    let (oh, k, c_in, width) = (spec.out_h(), spec.k, spec.c_in, spec.col_cols());
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
}

/// dx = col2im(dcols): each element the sum, in row order, of the dcols entries im2col copied
/// from it (within one row every element receives at most one entry, so the loop order inside
/// a row does not change any sum); 0 wherever `mask` is not > 0.
pub fn col2im(dcols: &[f32], spec: &Conv2dSpec, mask: Option<&[f32]>, dx: &mut [f32]) {
    let image = spec.h * spec.w * spec.c_in;
    if image == 0 {
        return;
    }
    let per_image = spec.out_h() * spec.out_w() * spec.col_cols();
    dx[..spec.input_len()]
        .par_chunks_mut(image)
        .enumerate()
        .for_each(|(b, dx)| {
            let m = mask.map(|m| &m[b * image..(b + 1) * image]);
            col2im_image(&dcols[b * per_image..][..per_image], spec, m, dx)
        });
}

/// One image's dx\[H,W,C\] from its dcols rows [OH·OW, C·K·K] (and mask\[H,W,C\]).
fn col2im_image(dcols: &[f32], spec: &Conv2dSpec, mask: Option<&[f32]>, dx: &mut [f32]) {
    let (oh, ow, k, c_in) = (spec.out_h(), spec.out_w(), spec.k, spec.c_in);
    let width = spec.col_cols();
    dx.fill(0.0);
    for oy in 0..oh {
        let (ylo, yhi, iy0) = valid(oy, spec, spec.h);
        for ox in 0..ow {
            let (xlo, xhi, ix0) = valid(ox, spec, spec.w);
            if xlo == xhi {
                continue;
            }
            let row = &dcols[(oy * ow + ox) * width..][..width];
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
        for (d, &m) in dx.iter_mut().zip(m) {
            *d = if m > 0.0 { *d } else { 0.0 };
        }
    }
}

/// Whether [`forward`] and [`weight_grad`] run `spec` directly: one input channel and stride
/// 1, the first layer of an image network. There im2col + GEMM is at its worst — each cols
/// row holds only K² values, so the products are long and thin (78,400×6×25 for lenet5) and
/// the cols buffer is 25× the input — while a direct kernel reads each padded input row as
/// a vector along OW for every tap.
pub fn direct(spec: &Conv2dSpec) -> bool {
    spec.c_in == 1 && spec.stride == 1
}

/// Lanes of the direct kernels' vectors along OW (one AVX-512 register, two AVX2 ones).
const LANES: usize = 16;

/// Row stride of a padded image: OW rounded up to whole vectors, plus the K − 1 columns the
/// last taps reach (at least W + 2·pad, so every input column fits).
fn padded_width(spec: &Conv2dSpec) -> usize {
    spec.out_w().div_ceil(LANES) * LANES + spec.k - 1
}

/// `xp` = image `x` [H, W] (one channel) with `pad` zeros above and left, zeros to the
/// padded width on the right and `pad` rows below: [H + 2·pad, padded_width].
fn pad_image(x: &[f32], spec: &Conv2dSpec, xp: &mut Vec<f32>) {
    let pw = padded_width(spec);
    xp.clear();
    xp.resize((spec.h + 2 * spec.pad) * pw, 0.0);
    for (iy, row) in x.chunks_exact(spec.w).enumerate() {
        xp[(iy + spec.pad) * pw + spec.pad..][..spec.w].copy_from_slice(row);
    }
}

/// y[B·OH·OW, O] = epilogue(im2col(x)·Wᵀ) with W [O, K²] and `bias` \[O\]: what `Im2col` +
/// `Matmul` (trans_b, a bias epilogue or none) compute, for a [`direct`] convolution, images
/// split over threads. Each output is the sum over taps in the cols column order
/// (ky·K + kx), then the bias, as in the product (zero padding adds exact zeros).
pub fn forward(
    x: &[f32],
    spec: &Conv2dSpec,
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    y: &mut [f32],
) {
    assert!(
        direct(spec),
        "conv2d::forward runs direct convolutions only"
    );
    let (image, per_image) = (spec.h * spec.w, spec.out_h() * spec.out_w() * spec.c_out);
    if per_image == 0 {
        return;
    }
    let relu = epilogue == Epilogue::BiasRelu;
    let taps = grouped_taps(w, spec);
    y[..spec.output_len()]
        .par_chunks_mut(per_image)
        .enumerate()
        .for_each_init(Vec::new, |xp, (b, y)| {
            pad_image(&x[b * image..][..image], spec, xp);
            Arch::new().dispatch(ForwardImage {
                xp,
                spec,
                taps: &taps,
                bias,
                relu,
                y,
            });
        });
}

/// Output channels computed together by the direct kernels: [`GROUP`] independent vector
/// sums, so the additions of one do not wait on each other (a single running sum is bound
/// by the adder's latency, not its throughput).
const GROUP: usize = 8;

/// W [O, K²] as [O/GROUP groups, K², GROUP] (zeros for the channels past O): the GROUP
/// weights of one tap together.
fn grouped_taps(w: &[f32], spec: &Conv2dSpec) -> Vec<f32> {
    let (o, kk) = (spec.c_out, spec.k * spec.k);
    let mut out = vec![0.0; o.div_ceil(GROUP) * kk * GROUP];
    for (ch, taps) in w[..o * kk].chunks_exact(kk).enumerate() {
        for (t, &v) in taps.iter().enumerate() {
            out[((ch / GROUP) * kk + t) * GROUP + ch % GROUP] = v;
        }
    }
    out
}

/// One image of [`forward`] from its padded image and [`grouped_taps`]: per output row, a
/// vector of OW positions at a time, [`GROUP`] channels' sums are built in registers over
/// all K² taps, then written channels-last with the bias and ReLU. Vectors through `pulp`
/// (the SIMD layer the `gemm` crate is built on): AVX-512, AVX2+FMA or NEON picked at run
/// time, where plain loops would be compiled for baseline SSE2.
struct ForwardImage<'a> {
    xp: &'a [f32],
    spec: &'a Conv2dSpec,
    taps: &'a [f32],
    bias: Option<&'a [f32]>,
    relu: bool,
    y: &'a mut [f32],
}

impl WithSimd for ForwardImage<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let ForwardImage {
            xp,
            spec,
            taps,
            bias,
            relu,
            y,
        } = self;
        let (oh, ow, k, o) = (spec.out_h(), spec.out_w(), spec.k, spec.c_out);
        let (pw, kk, lanes) = (padded_width(spec), k * k, S::F32_LANES);
        let mut out = [0.0f32; LANES];
        for oy in 0..oh {
            for v in 0..ow.div_ceil(lanes) {
                for (grp, taps) in taps.chunks_exact(kk * GROUP).enumerate() {
                    let mut a = [simd.splat_f32s(0.0); GROUP];
                    for ky in 0..k {
                        let xrow = &xp[(oy + ky) * pw + v * lanes..][..lanes + k - 1];
                        for kx in 0..k {
                            let xs = load::<S>(&xrow[kx..]);
                            let t = &taps[(ky * k + kx) * GROUP..][..GROUP];
                            for j in 0..GROUP {
                                a[j] = simd.mul_add_e_f32s(simd.splat_f32s(t[j]), xs, a[j]);
                            }
                        }
                    }
                    let c0 = grp * GROUP;
                    let valid = lanes.min(ow - v * lanes);
                    for (j, a) in a.iter().enumerate().take(o - c0) {
                        simd.partial_store_f32s(&mut out[..lanes], *a);
                        let b = bias.map_or(0.0, |b| b[c0 + j]);
                        for (l, &s) in out[..valid].iter().enumerate() {
                            let s = s + b;
                            y[(oy * ow + v * lanes + l) * o + c0 + j] =
                                if !relu || s > 0.0 { s } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}

/// A whole vector from the start of `xs` (at least one vector long).
#[inline(always)]
fn load<S: Simd>(xs: &[f32]) -> S::f32s {
    bytemuck::pod_read_unaligned(bytemuck::cast_slice(&xs[..S::F32_LANES]))
}

/// dW[O, K²] = dYᵀ·im2col(x) (dY [B·OH·OW, O]) for a [`direct`] convolution: what `Matmul`
/// (trans_a) on the cols buffer computes. The images are split into one contiguous run per
/// thread; each image's contribution to each weight is a vector of partial sums along OW,
/// added across its rows and then across lanes, and added to its thread's partial dW in image
/// order; the partials are added in thread order. The same split and order for a given thread
/// count, so a run is reproducible (another summation order than the product's, within the
/// same γ bound over B·OH·OW terms).
pub fn weight_grad(
    x: &[f32],
    spec: &Conv2dSpec,
    dy: &[f32],
    dw: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    assert!(
        direct(spec),
        "conv2d::weight_grad runs direct convolutions only"
    );
    let (kk, o) = (spec.k * spec.k, spec.c_out);
    let (image, per_image) = (spec.h * spec.w, spec.out_h() * spec.out_w() * o);
    let parts = rayon::current_num_threads().min(spec.batch).max(1);
    let per_part = spec.batch.div_ceil(parts);
    scratch.clear();
    scratch.resize(parts * o * kk, 0.0);
    scratch
        .par_chunks_mut(o * kk)
        .enumerate()
        .for_each(|(p, part)| {
            let (mut xp, mut dyt) = (Vec::new(), Vec::new());
            for b in p * per_part..((p + 1) * per_part).min(spec.batch) {
                pad_image(&x[b * image..][..image], spec, &mut xp);
                let dy = &dy[b * per_image..][..per_image];
                Arch::new().dispatch(WeightGradImage {
                    xp: &xp,
                    spec,
                    dy,
                    dyt: &mut dyt,
                    part,
                });
            }
        });
    for (i, d) in dw[..o * kk].iter_mut().enumerate() {
        *d = (0..parts).map(|p| scratch[p * o * kk + i]).sum();
    }
}

/// One image of [`weight_grad`], added to `part` [O, K²]: for [`GROUP`] channels at a time
/// and each tap, GROUP vector sums along OW run over the image's rows, then each is summed
/// across its lanes. `dyt` is scratch for the image's gradient, rearranged channel-major.
struct WeightGradImage<'a> {
    xp: &'a [f32],
    spec: &'a Conv2dSpec,
    dy: &'a [f32],
    dyt: &'a mut Vec<f32>,
    part: &'a mut [f32],
}

impl WithSimd for WeightGradImage<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let WeightGradImage {
            xp,
            spec,
            dy,
            dyt,
            part,
        } = self;
        let (oh, ow, k, o) = (spec.out_h(), spec.out_w(), spec.k, spec.c_out);
        let (pw, kk, lanes) = (padded_width(spec), k * k, S::F32_LANES);
        let vw = ow.div_ceil(LANES) * LANES;
        // dyt[O/GROUP, OH, GROUP, vw]: each channel's row of gradients contiguous, zero past
        // OW and past O.
        dyt.clear();
        dyt.resize(o.div_ceil(GROUP) * oh * GROUP * vw, 0.0);
        for (oy, row) in dy[..oh * ow * o].chunks_exact(ow * o).enumerate() {
            for (ox, g) in row.chunks_exact(o).enumerate() {
                for (ch, &v) in g.iter().enumerate() {
                    dyt[((ch / GROUP * oh + oy) * GROUP + ch % GROUP) * vw + ox] = v;
                }
            }
        }
        // Lanes past OW read input columns that no output of a tap covers; their gradient is
        // zero, so their terms vanish — unless the input is infinite or NaN there (0·∞ is
        // NaN where the product has no term): then those lanes are loaded as zeros instead,
        // a slower masked load.
        let finite = xp.iter().all(|v| v.is_finite());
        for (grp, grads) in dyt.chunks_exact(oh * GROUP * vw).enumerate() {
            for ky in 0..k {
                for kx in 0..k {
                    let mut a = [simd.splat_f32s(0.0); GROUP];
                    for oy in 0..oh {
                        let xrow = &xp[(oy + ky) * pw + kx..][..vw];
                        let rows = &grads[oy * GROUP * vw..][..GROUP * vw];
                        for v in 0..ow.div_ceil(lanes) {
                            let valid = lanes.min(ow - v * lanes);
                            let xs = if finite || valid == lanes {
                                load::<S>(&xrow[v * lanes..])
                            } else {
                                simd.partial_load_f32s(&xrow[v * lanes..][..valid])
                            };
                            for (j, a) in a.iter_mut().enumerate() {
                                let gs = load::<S>(&rows[j * vw + v * lanes..]);
                                *a = simd.mul_add_e_f32s(gs, xs, *a);
                            }
                        }
                    }
                    let c0 = grp * GROUP;
                    for (j, a) in a.iter().enumerate().take(o - c0) {
                        part[(c0 + j) * kk + ky * k + kx] += simd.reduce_sum_f32s(*a);
                    }
                }
            }
        }
    }
}

/// dx\[B,H,W,C\] = col2im(dY·W) (zero where `mask` ≤ 0): what `Matmul` into the dcols buffer +
/// `Col2im` compute, one image at a time (an image's dcols stay in cache between the two).
/// The product runs on W with its columns reordered tap-major, (ky·K + kx)·C + c, so each
/// dcols row holds, per kernel row, one contiguous run in x's channels-last order and col2im
/// adds whole runs instead of gathering every C-th value. Every dx element still receives
/// its terms in dcols row order, as in [`col2im`].
pub fn input_grad(dy: &[f32], spec: &Conv2dSpec, w: &[f32], mask: Option<&[f32]>, dx: &mut [f32]) {
    let (per_image, o) = (spec.out_h() * spec.out_w(), spec.c_out);
    let (image, width) = (spec.h * spec.w * spec.c_in, spec.col_cols());
    if image == 0 {
        return;
    }
    let wt = tap_major(w, spec);
    dx[..spec.input_len()]
        .par_chunks_mut(image)
        .enumerate()
        .for_each_init(Vec::new, |tile, (b, dx)| {
            tile.resize(per_image * width, 0.0);
            let mm = MatmulSpec::new(per_image, width, o);
            let dy = &dy[b * per_image * o..][..per_image * o];
            matmul_local(&mm, dy, &wt, None, tile);
            let m = mask.map(|m| &m[b * image..(b + 1) * image]);
            col2im_image_tap_major(tile, spec, m, dx);
        });
}

/// [`col2im_image`] from dcols rows whose columns are tap-major ((ky·K + kx)·C + c).
fn col2im_image_tap_major(dcols: &[f32], spec: &Conv2dSpec, mask: Option<&[f32]>, dx: &mut [f32]) {
    let (oh, ow, k, c_in) = (spec.out_h(), spec.out_w(), spec.k, spec.c_in);
    let width = spec.col_cols();
    dx.fill(0.0);
    for oy in 0..oh {
        let (ylo, yhi, iy0) = valid(oy, spec, spec.h);
        for ox in 0..ow {
            let (xlo, xhi, ix0) = valid(ox, spec, spec.w);
            if xlo == xhi {
                continue;
            }
            let row = &dcols[(oy * ow + ox) * width..][..width];
            let n = (xhi - xlo) * c_in;
            for ky in ylo..yhi {
                let iy = iy0 + ky - ylo;
                let run = &mut dx[(iy * spec.w + ix0) * c_in..][..n];
                let src = &row[(ky * k + xlo) * c_in..][..n];
                for (d, &v) in run.iter_mut().zip(src) {
                    *d += v;
                }
            }
        }
    }
    if let Some(m) = mask {
        for (d, &m) in dx.iter_mut().zip(m) {
            *d = if m > 0.0 { *d } else { 0.0 };
        }
    }
}

/// W [O, C·K·K] with each row's columns reordered tap-major: (ky·K + kx)·C + c.
fn tap_major(w: &[f32], spec: &Conv2dSpec) -> Vec<f32> {
    let (width, kk, c_in) = (spec.col_cols(), spec.k * spec.k, spec.c_in);
    let mut wt = vec![0.0; spec.c_out * width];
    for (dst, src) in wt.chunks_exact_mut(width).zip(w.chunks_exact(width)) {
        for (c, taps) in src.chunks_exact(kk).enumerate() {
            for (t, &v) in taps.iter().enumerate() {
                dst[t * c_in + c] = v;
            }
        }
    }
    wt
}

/// cols[B·OH·OW, K·K·C] = im2col(x) with tap-major columns ((ky·K + kx)·C + c): per cols row
/// and kernel row, the inputs under the kernel are one contiguous run of channels-last x,
/// copied whole (the op's column order, c-major, needs a gather of every C-th value).
pub fn im2col_tap_major(x: &[f32], spec: &Conv2dSpec, cols: &mut [f32]) {
    let (oh, ow, k, c_in) = (spec.out_h(), spec.out_w(), spec.k, spec.c_in);
    let width = spec.col_cols();
    if width == 0 || ow == 0 || oh == 0 {
        return;
    }
    let image = spec.h * spec.w * c_in;
    cols[..spec.col_rows() * width]
        .par_chunks_mut(ow * width)
        .enumerate()
        .for_each(|(blk, block)| {
            let (b, oy) = (blk / oh, blk % oh);
            let (ylo, yhi, iy0) = valid(oy, spec, spec.h);
            let img = &x[b * image..][..image];
            for (ox, row) in block.chunks_exact_mut(width).enumerate() {
                let (xlo, xhi, ix0) = valid(ox, spec, spec.w);
                if ylo > 0 || yhi < k || xlo > 0 || xhi < k {
                    row.fill(0.0);
                }
                let n = (xhi - xlo) * c_in;
                for ky in ylo..yhi {
                    let iy = iy0 + ky - ylo;
                    row[(ky * k + xlo) * c_in..][..n]
                        .copy_from_slice(&img[(iy * spec.w + ix0) * c_in..][..n]);
                }
            }
        });
}

/// y = epilogue(im2col(x)·Wᵀ) for any convolution, through a tap-major cols buffer
/// ([`im2col_tap_major`], left in `cols` for [`weight_grad_tap_major`]) and W reordered to
/// match: the same products and sums as `Im2col` + `Matmul`, in the same order per row.
#[allow(clippy::too_many_arguments)]
pub fn forward_tap_major(
    x: &[f32],
    spec: &Conv2dSpec,
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    cols: &mut [f32],
    y: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    im2col_tap_major(x, spec, cols);
    let mm = MatmulSpec {
        trans_b: true,
        epilogue,
        ..MatmulSpec::new(spec.col_rows(), spec.c_out, spec.col_cols())
    };
    super::matmul::matmul(&mm, cols, &tap_major(w, spec), bias, y, scratch);
}

/// dW = dYᵀ·im2col(x) from the tap-major `cols` that [`forward_tap_major`] left, reordered
/// back to W's layout.
pub fn weight_grad_tap_major(
    cols: &[f32],
    spec: &Conv2dSpec,
    dy: &[f32],
    dw: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (width, kk, c_in, o) = (spec.col_cols(), spec.k * spec.k, spec.c_in, spec.c_out);
    let mm = MatmulSpec {
        trans_a: true,
        ..MatmulSpec::new(o, width, spec.col_rows())
    };
    let mut dwt = vec![0.0; o * width];
    super::matmul::matmul(&mm, dy, cols, None, &mut dwt, scratch);
    for (dst, src) in dw[..o * width]
        .chunks_exact_mut(width)
        .zip(dwt.chunks_exact(width))
    {
        for (c, taps) in dst.chunks_exact_mut(kk).enumerate() {
            for (t, v) in taps.iter_mut().enumerate() {
                *v = src[t * c_in + c];
            }
        }
    }
}
