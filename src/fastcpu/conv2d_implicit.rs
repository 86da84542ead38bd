//! Implicit-GEMM kernels for stride-1 convolutions (`cnn`'s and `lenet5`'s layers): the
//! forward pass, the weight gradient (with the bias gradient in the same pass over dY) and
//! the input gradient, each straight from the channels-last activations, without the cols
//! buffer (63 MB per step for `cnn`'s conv 2) or its im2col / col2im passes. Where the
//! channels a kernel vectorises over are few (LeNet-5's 6), the backend keeps the direct
//! one-channel kernels or the per-image product of [`super::conv2d`] instead (see the `*_fits`
//! functions; BENCHMARKS.md has the measurements).
//!
//! One register-tiled kernel ([`Rows`]) computes R output pixels × NV vectors of output
//! channels: per tap and input channel, NV weight vectors are loaded and each of the R
//! pixels' input values is broadcast against them (R·NV fused multiply-adds in registers).
//! The pixels' inputs are read from a zero-padded copy of the image, so a tap's input for
//! every pixel is at a fixed offset from the pixel's base and the padding needs no test.
//! The forward pass runs it on x with W tap-major; the input gradient of a stride-1
//! convolution is the same correlation run on dY padded by K − 1 − pad with W flipped and
//! transposed, so it runs the same kernel (then the ReLU mask). The weight gradient is a
//! second kernel of the same shape, whose sum runs over the pixels instead ([`WeightGrad`]).
//! Vectors through `pulp`, so AVX-512 / AVX2+FMA / NEON are picked at run time.
//!
//! Rounding: each output is a sum of the same products as the op-by-op product, in another
//! order. The forward pass sums C·K² products then the bias (γ_{C·K²+1}), the weight gradient
//! B·OH·OW products (γ over those terms), as the twins' bounds allow for any order. For the
//! input gradient the twin sums O products per dcols entry, then at most K² entries per
//! element; the kernel keeps that depth: it sums each tap's O products apart and adds the
//! taps' sums (each product passes at most O + K² roundings).

use crate::ops::{Conv2dSpec, Epilogue};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Output channels are padded to a multiple of this (the widest vector: AVX-512's 16 f32).
const OPAD: usize = 16;

/// Whether the kernels can run `spec` at all: stride 1, padding below K (so the input
/// gradient's transposed padding K − 1 − pad is not negative), a non-empty output.
pub fn runs(spec: &Conv2dSpec) -> bool {
    spec.stride == 1
        && spec.c_in > 0
        && spec.pad < spec.k
        && spec.out_h() > 0
        && spec.out_w() > 0
        && spec.c_out > 0
}

/// Whether `n` channels fill whole vectors well enough: a multiple of 16, or enough that
/// padding to one wastes little (LeNet-5's 6 would run 16 lanes for 6).
fn fills_vectors(n: usize) -> bool {
    n % OPAD == 0 || n >= 3 * OPAD
}

/// Whether [`forward`] suits `spec`: it [`runs`] and the output channels fill vectors.
pub fn forward_fits(spec: &Conv2dSpec) -> bool {
    runs(spec) && fills_vectors(spec.c_out)
}

/// Whether [`input_grad`] suits `spec`: it [`runs`] and the input channels (its outputs)
/// fill vectors.
pub fn input_grad_fits(spec: &Conv2dSpec) -> bool {
    runs(spec) && fills_vectors(spec.c_in)
}

/// Whether a convolution with several input channels runs its forward pass and weight
/// gradient here, from x, so that it needs no cols buffer (one input channel goes to these
/// kernels or the direct ones of [`super::conv2d`], both from x).
pub fn supports(spec: &Conv2dSpec) -> bool {
    spec.c_in > 1 && forward_fits(spec)
}

/// `xp` = the [h, w, c] image `x` with `top` zero rows and `left` zero columns before it, in
/// a [rows, pw, c] buffer (zeros elsewhere).
#[allow(clippy::too_many_arguments)]
fn pad_into(
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    (top, left): (usize, usize),
    (rows, pw): (usize, usize),
    xp: &mut Vec<f32>,
) {
    xp.clear();
    xp.resize(rows * pw * c, 0.0);
    for (iy, row) in x[..h * w * c].chunks_exact(w * c).enumerate() {
        xp[((iy + top) * pw + left) * c..][..w * c].copy_from_slice(row);
    }
}

/// What a tile's outputs get before they are stored: the bias (and ReLU), or the ReLU mask.
#[derive(Clone, Copy)]
enum Post<'a> {
    Bias(Option<&'a [f32]>, bool),
    Mask(Option<&'a [f32]>),
}

/// One image's outputs y[P, O] = Σ_taps Σ_c xp[base_p + tap_off + c] · wt[tap, c, 0..O]
/// then the [`Post`]; `split` sums each tap apart (see the module docs).
struct Rows<'a> {
    xp: &'a [f32],
    bases: &'a [usize],
    taps: &'a [usize],
    cin: usize,
    /// [taps, cin, opad]
    wt: &'a [f32],
    o: usize,
    split: bool,
    post: Post<'a>,
    y: &'a mut [f32],
    /// The running sums [P, NV·lanes] between blocks of taps.
    tmp: &'a mut Vec<f32>,
}

/// Bytes of weights one block of taps may take, so that they stay in the L1 cache while every
/// pixel tile of an image passes over them (48 KiB on recent x86 cores).
const L1_WEIGHTS: usize = 24 << 10;

/// Bytes of dY rows one block of pixels of the weight gradient may take (in L1 with the
/// inputs under them).
const L1_GRADS: usize = 12 << 10;

impl WithSimd for Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(mut self, simd: S) {
        let opad = self.o.div_ceil(OPAD) * OPAD;
        let lanes = S::F32_LANES;
        let wide = lanes >= 16;
        let pixels = self.bases.len();
        let mut j0 = 0;
        while j0 < opad {
            let left = (opad - j0) / lanes;
            let nv = left.min(if wide { 4 } else { 2 });
            macro_rules! go {
                ($r:literal, $nv:literal) => {
                    if self.split {
                        rows_chunk::<S, $r, $nv, true>(simd, &mut self, j0)
                    } else {
                        rows_chunk::<S, { 2 * $r }, $nv, false>(simd, &mut self, j0)
                    }
                };
            }
            // Registers: R·NV sums (twice with `split`), NV weights and a broadcast; 32
            // vector registers with AVX-512, 16 with AVX2. One more row where that leaves
            // fewer pixels over (K = 5: 25 pixels or cols columns divide evenly).
            match (wide, nv) {
                (true, 4) => go!(3, 4),
                (true, 3) => go!(4, 3),
                (true, 2) => go!(6, 2),
                (true, _) if !self.split && pixels % 25 == 0 => {
                    rows_chunk::<S, 25, 1, false>(simd, &mut self, j0)
                }
                (true, _) => go!(12, 1),
                (false, 2) => go!(3, 2),
                (false, _) => go!(6, 1),
            }
            j0 += nv * lanes;
        }
    }
}

/// [`Rows`] for output channels j0 .. j0 + NV·lanes, R pixels at a time.
#[inline(always)]
fn rows_chunk<S: Simd, const R: usize, const NV: usize, const SPLIT: bool>(
    simd: S,
    k: &mut Rows<'_>,
    j0: usize,
) {
    let lanes = S::F32_LANES;
    let opad = k.o.div_ceil(OPAD) * OPAD;
    let (pixels, o) = (k.bases.len(), k.o);
    let need_x = k.bases.iter().max().copied().unwrap_or(0)
        + k.taps.iter().max().copied().unwrap_or(0)
        + k.cin;
    assert!(k.xp.len() >= need_x, "padded input too short");
    assert!(k.wt.len() >= k.taps.len() * k.cin * opad && j0 + NV * lanes <= opad);
    assert!(k.y.len() >= pixels * o);
    let mut out = [0.0f32; 64];
    let zero = simd.splat_f32s(0.0);
    let width = NV * lanes;
    // Blocks of taps whose weights stay in L1 over all pixel tiles; the running sums go
    // through `tmp` between blocks (stored and reloaded exactly: the same chain of additions
    // as one pass over all taps).
    let ntaps = k.taps.len();
    let per_block = (L1_WEIGHTS / (k.cin * width * 4).max(1)).clamp(1, ntaps.max(1));
    if per_block < ntaps {
        k.tmp.clear();
        k.tmp.resize(pixels * width, 0.0);
    }
    for t0 in (0..ntaps).step_by(per_block) {
        let t1 = (t0 + per_block).min(ntaps);
        for p0 in (0..pixels).step_by(R) {
            let n = R.min(pixels - p0);
            let b: [usize; R] = std::array::from_fn(|r| k.bases[p0 + r.min(n - 1)]);
            let mut acc = [[zero; NV]; R];
            if t0 > 0 {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let at = (p0 + r.min(n - 1)) * width;
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = load::<S>(&k.tmp[at + v * lanes..]);
                    }
                }
            }
            // SAFETY: every x read is at base + tap offset + c < need_x ≤ xp.len(), every weight
            // read at (tap·cin + c)·opad + j0 + v·lanes + lane < wt.len() (asserted above).
            unsafe {
                tile::<S, R, NV, SPLIT>(
                    simd,
                    k.xp.as_ptr(),
                    &b,
                    &k.taps[t0..t1],
                    k.cin,
                    k.wt.as_ptr().add(t0 * k.cin * opad + j0),
                    opad,
                    &mut acc,
                )
            };
            if t1 < ntaps {
                for (r, acc) in acc.iter().enumerate().take(n) {
                    for (v, a) in acc.iter().enumerate() {
                        store::<S>(&mut k.tmp[(p0 + r) * width + v * lanes..], *a);
                    }
                }
                continue;
            }
            for (r, acc) in acc.iter().enumerate().take(n) {
                let p = p0 + r;
                for (v, a) in acc.iter().enumerate() {
                    let c0 = j0 + v * lanes;
                    if c0 >= o {
                        break;
                    }
                    if c0 + lanes <= o {
                        // A whole vector: the same operations as below, lane-wise.
                        let at = p * o + c0;
                        let s = match k.post {
                            Post::Bias(bias, relu) => {
                                let s = match bias {
                                    Some(b) => simd.add_f32s(*a, load::<S>(&b[c0..])),
                                    None => *a,
                                };
                                if relu {
                                    simd.select_f32s(simd.greater_than_f32s(s, zero), s, zero)
                                } else {
                                    s
                                }
                            }
                            Post::Mask(Some(mk)) => {
                                let m = load::<S>(&mk[at..]);
                                simd.select_f32s(simd.greater_than_f32s(m, zero), *a, zero)
                            }
                            Post::Mask(None) => *a,
                        };
                        store::<S>(&mut k.y[at..], s);
                        continue;
                    }
                    simd.partial_store_f32s(&mut out[..lanes], *a);
                    let m = lanes.min(o - c0);
                    let dst = &mut k.y[p * o + c0..][..m];
                    match k.post {
                        Post::Bias(bias, relu) => {
                            for (l, d) in dst.iter_mut().enumerate() {
                                let s = out[l] + bias.map_or(0.0, |b| b[c0 + l]);
                                *d = if !relu || s > 0.0 { s } else { 0.0 };
                            }
                        }
                        Post::Mask(mask) => {
                            let mask = mask.map(|mk| &mk[p * o + c0..][..m]);
                            for (l, d) in dst.iter_mut().enumerate() {
                                let keep = mask.is_none_or(|mk| mk[l] > 0.0);
                                *d = if keep { out[l] } else { 0.0 };
                            }
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

/// A whole vector to the start of `ys` (at least one vector long).
#[inline(always)]
fn store<S: Simd>(ys: &mut [f32], v: S::f32s) {
    bytemuck::cast_slice_mut::<f32, u8>(&mut ys[..S::F32_LANES])
        .copy_from_slice(bytemuck::bytes_of(&v));
}

/// R pixels (input offsets `b`) × NV vectors of outputs: `acc` += Σ over taps and input
/// channels of x · w, in registers; with SPLIT each tap's sum is formed apart and then added.
///
/// # Safety
/// `xp + b[r] + taps[t] + c` and `wt + (t·cin + c)·opad + v·lanes .. + lanes` must be in bounds
/// for every r, t, c < cin, v < NV.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<S: Simd, const R: usize, const NV: usize, const SPLIT: bool>(
    simd: S,
    xp: *const f32,
    b: &[usize; R],
    taps: &[usize],
    cin: usize,
    wt: *const f32,
    opad: usize,
    acc: &mut [[S::f32s; NV]; R],
) {
    let lanes = S::F32_LANES;
    let zero = simd.splat_f32s(0.0);
    for (t, &off) in taps.iter().enumerate() {
        let wrow = wt.add(t * cin * opad);
        let xs: [*const f32; R] = std::array::from_fn(|r| xp.add(b[r] + off));
        let mut part = [[zero; NV]; R];
        for c in 0..cin {
            let mut w = [zero; NV];
            for (v, w) in w.iter_mut().enumerate() {
                *w = (wrow.add(c * opad + v * lanes) as *const S::f32s).read_unaligned();
            }
            for r in 0..R {
                let xv = simd.splat_f32s(*xs[r].add(c));
                for v in 0..NV {
                    if SPLIT {
                        part[r][v] = simd.mul_add_e_f32s(xv, w[v], part[r][v]);
                    } else {
                        acc[r][v] = simd.mul_add_e_f32s(xv, w[v], acc[r][v]);
                    }
                }
            }
        }
        if SPLIT {
            for r in 0..R {
                for v in 0..NV {
                    acc[r][v] = simd.add_f32s(acc[r][v], part[r][v]);
                }
            }
        }
    }
}

/// W [O, C·K·K] (column c·K² + ky·K + kx) as [K², C, opad], zeros past O; with `flip` the
/// taps reversed ((K−1−ky, K−1−kx)) and the roles of O and C swapped: [K², O, cpad], what the
/// input gradient's correlation over dY reads.
fn arrange(w: &[f32], spec: &Conv2dSpec, flip: bool) -> Vec<f32> {
    let (kk, c, o) = (spec.k * spec.k, spec.c_in, spec.c_out);
    let (rows, cols) = if flip { (o, c) } else { (c, o) };
    let pad = cols.div_ceil(OPAD) * OPAD;
    let mut out = vec![0.0; kk * rows * pad];
    for oc in 0..o {
        for ic in 0..c {
            for t in 0..kk {
                let v = w[(oc * c + ic) * kk + t];
                let (tt, r, col) = if flip {
                    (kk - 1 - t, oc, ic)
                } else {
                    (t, ic, oc)
                };
                out[(tt * rows + r) * pad + col] = v;
            }
        }
    }
    out
}

/// y[B·OH·OW, O] = epilogue(im2col(x)·Wᵀ + bias), what `Im2col` + the forward `Matmul`
/// compute, for a [`supports`]ed convolution; images split over threads.
pub fn forward(
    x: &[f32],
    spec: &Conv2dSpec,
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    y: &mut [f32],
) {
    assert!(runs(spec), "conv2d_implicit::forward: unsupported shape");
    let (oh, ow, c, k) = (spec.out_h(), spec.out_w(), spec.c_in, spec.k);
    let (ph, pw) = (spec.h + 2 * spec.pad, spec.w + 2 * spec.pad);
    let bases: Vec<usize> = (0..oh * ow).map(|p| (p / ow * pw + p % ow) * c).collect();
    let taps: Vec<usize> = (0..k * k).map(|t| (t / k * pw + t % k) * c).collect();
    let wt = arrange(w, spec, false);
    let (image, per_image) = (spec.h * spec.w * c, oh * ow * spec.c_out);
    let relu = epilogue == Epilogue::BiasRelu;
    let bias = match epilogue {
        Epilogue::None => None,
        _ => bias,
    };
    y[..spec.output_len()]
        .par_chunks_mut(per_image)
        .enumerate()
        .for_each_init(
            Default::default,
            |(xp, tmp): &mut (Vec<f32>, Vec<f32>), (b, y)| {
                pad_into(
                    &x[b * image..][..image],
                    (spec.h, spec.w, c),
                    (spec.pad, spec.pad),
                    (ph, pw),
                    xp,
                );
                Arch::new().dispatch(Rows {
                    xp,
                    bases: &bases,
                    taps: &taps,
                    cin: c,
                    wt: &wt,
                    o: spec.c_out,
                    split: false,
                    post: Post::Bias(bias, relu),
                    y,
                    tmp,
                });
            },
        );
}

/// dx\[B,H,W,C\] = col2im(dY·W), zero where `mask` ≤ 0: what the dcols `Matmul` + `Col2im`
/// compute, for a [`supports`]ed convolution. dx is the correlation of dY, padded by
/// K − 1 − pad on every side, with W flipped and its channel roles swapped; images split
/// over threads.
pub fn input_grad(dy: &[f32], spec: &Conv2dSpec, w: &[f32], mask: Option<&[f32]>, dx: &mut [f32]) {
    assert!(runs(spec), "conv2d_implicit::input_grad: unsupported shape");
    let (oh, ow, c, o, k) = (spec.out_h(), spec.out_w(), spec.c_in, spec.c_out, spec.k);
    let q = k - 1 - spec.pad;
    let (ph, pw) = (oh + 2 * q, ow + 2 * q);
    let (h, wd) = (spec.h, spec.w);
    let bases: Vec<usize> = (0..h * wd).map(|p| (p / wd * pw + p % wd) * o).collect();
    let taps: Vec<usize> = (0..k * k).map(|t| (t / k * pw + t % k) * o).collect();
    let wf = arrange(w, spec, true);
    let (image, per_image) = (h * wd * c, oh * ow * o);
    dx[..spec.input_len()]
        .par_chunks_mut(image)
        .enumerate()
        .for_each_init(
            Default::default,
            |(gp, tmp): &mut (Vec<f32>, Vec<f32>), (b, dx)| {
                pad_into(
                    &dy[b * per_image..][..per_image],
                    (oh, ow, o),
                    (q, q),
                    (ph, pw),
                    gp,
                );
                Arch::new().dispatch(Rows {
                    xp: gp,
                    bases: &bases,
                    taps: &taps,
                    cin: o,
                    wt: &wf,
                    o: c,
                    split: true,
                    post: Post::Mask(mask.map(|m| &m[b * image..][..image])),
                    y: dx,
                    tmp,
                });
            },
        );
}

/// dW[O, C·K·K] = dYᵀ·im2col(x) (and db\[O\] = Σ rows of dY when asked), what the weight
/// gradient `Matmul` (and `BiasBackward`) compute, for a [`supports`]ed convolution. The
/// images are split into one contiguous run per thread; each thread's partial is one running
/// sum per element over its images' pixels in order, and the partials are added in thread
/// order (for a given thread count, the same order every run).
pub fn weight_grad(
    x: &[f32],
    spec: &Conv2dSpec,
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    scratch: &mut Vec<f32>,
) {
    assert!(
        runs(spec),
        "conv2d_implicit::weight_grad: unsupported shape"
    );
    let (oh, ow, c, o, k) = (spec.out_h(), spec.out_w(), spec.c_in, spec.c_out, spec.k);
    let (ph, pw) = (spec.h + 2 * spec.pad, spec.w + 2 * spec.pad);
    let opad = o.div_ceil(OPAD) * OPAD;
    let bases: Vec<usize> = (0..oh * ow).map(|p| (p / ow * pw + p % ow) * c).collect();
    // Input offset of every cols column, tap-major: (ky·K + kx)·C + ci.
    let cols: Vec<usize> = (0..k * k * c)
        .map(|t| {
            let (tap, ci) = (t / c, t % c);
            (tap / k * pw + tap % k) * c + ci
        })
        .collect();
    let (image, per_image) = (spec.h * spec.w * c, oh * ow * o);
    let width = k * k * c;
    let part_len = width * opad + opad;
    let parts = rayon::current_num_threads().min(spec.batch).max(1);
    let per_part = spec.batch.div_ceil(parts);
    scratch.clear();
    scratch.resize(parts * part_len, 0.0);
    let want_db = db.is_some();
    scratch
        .par_chunks_mut(part_len)
        .enumerate()
        .for_each(|(p, part)| {
            let (mut xp, mut g) = (Vec::new(), Vec::new());
            for b in p * per_part..((p + 1) * per_part).min(spec.batch) {
                pad_into(
                    &x[b * image..][..image],
                    (spec.h, spec.w, c),
                    (spec.pad, spec.pad),
                    (ph, pw),
                    &mut xp,
                );
                let dy = &dy[b * per_image..][..per_image];
                // dY rows with a stride of whole vectors.
                let g: &[f32] = if o == opad {
                    dy
                } else {
                    g.clear();
                    g.resize(oh * ow * opad, 0.0);
                    for (dst, src) in g.chunks_exact_mut(opad).zip(dy.chunks_exact(o)) {
                        dst[..o].copy_from_slice(src);
                    }
                    &g
                };
                let (dwt, dbp) = part.split_at_mut(width * opad);
                Arch::new().dispatch(WeightGrad {
                    xp: &xp,
                    bases: &bases,
                    cols: &cols,
                    g,
                    opad,
                    dwt,
                });
                if want_db {
                    for row in g.chunks_exact(opad) {
                        for (d, &v) in dbp.iter_mut().zip(row) {
                            *d += v;
                        }
                    }
                }
            }
        });
    // dw[oc, ci·K² + tap] from the partials' [tap·C + ci, opad], added in thread order.
    let kk = k * k;
    for (oc, row) in dw[..o * width].chunks_exact_mut(width).enumerate() {
        for (col, d) in row.iter_mut().enumerate() {
            let (ci, tap) = (col / kk, col % kk);
            let at = (tap * c + ci) * opad + oc;
            *d = (0..parts).map(|p| scratch[p * part_len + at]).sum();
        }
    }
    if let Some(db) = db {
        for (oc, d) in db[..o].iter_mut().enumerate() {
            *d = (0..parts)
                .map(|p| scratch[p * part_len + width * opad + oc])
                .sum();
        }
    }
}

/// One image's dWᵀ[tap·C + ci, opad] += Σ_p xp[base_p + cols[t]] · g[p, ·], for R cols
/// columns × NV vectors of output channels at a time, the running sums in registers over a
/// block of pixels (one chain per element over the thread's images and pixels).
struct WeightGrad<'a> {
    xp: &'a [f32],
    bases: &'a [usize],
    cols: &'a [usize],
    g: &'a [f32],
    opad: usize,
    dwt: &'a mut [f32],
}

impl WithSimd for WeightGrad<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(mut self, simd: S) {
        let lanes = S::F32_LANES;
        let wide = lanes >= 16;
        let mut j0 = 0;
        while j0 < self.opad {
            let nv = ((self.opad - j0) / lanes).min(if wide { 4 } else { 2 });
            let width = self.cols.len();
            let over = |r: usize| width.div_ceil(r) * r - width;
            match (wide, nv) {
                (true, 4) => wgrad_chunk::<S, 6, 4>(simd, &mut self, j0),
                (true, 3) => wgrad_chunk::<S, 8, 3>(simd, &mut self, j0),
                (true, 2) if over(13) < over(12) => wgrad_chunk::<S, 13, 2>(simd, &mut self, j0),
                (true, 2) => wgrad_chunk::<S, 12, 2>(simd, &mut self, j0),
                (true, _) if over(25) < over(24) => wgrad_chunk::<S, 25, 1>(simd, &mut self, j0),
                (true, _) => wgrad_chunk::<S, 24, 1>(simd, &mut self, j0),
                (false, 2) => wgrad_chunk::<S, 6, 2>(simd, &mut self, j0),
                (false, _) => wgrad_chunk::<S, 12, 1>(simd, &mut self, j0),
            }
            j0 += nv * lanes;
        }
    }
}

#[inline(always)]
fn wgrad_chunk<S: Simd, const R: usize, const NV: usize>(
    simd: S,
    k: &mut WeightGrad<'_>,
    j0: usize,
) {
    let lanes = S::F32_LANES;
    let (pixels, width, opad) = (k.bases.len(), k.cols.len(), k.opad);
    let need_x =
        k.bases.iter().max().copied().unwrap_or(0) + k.cols.iter().max().copied().unwrap_or(0) + 1;
    assert!(k.xp.len() >= need_x, "padded input too short");
    assert!(k.g.len() >= pixels * opad && j0 + NV * lanes <= opad);
    assert!(k.dwt.len() >= width * opad);
    // Blocks of pixels whose dY rows stay in L1 over all the column tiles; each tile's sums
    // continue from the partial (the same chain of additions as one pass).
    let per_block = (L1_GRADS / (opad * 4)).max(1);
    let zero = simd.splat_f32s(0.0);
    for p0 in (0..pixels).step_by(per_block) {
        let p1 = (p0 + per_block).min(pixels);
        for t0 in (0..width).step_by(R) {
            let n = R.min(width - t0);
            let cols: [usize; R] = std::array::from_fn(|r| k.cols[t0 + r.min(n - 1)]);
            let mut acc = [[zero; NV]; R];
            for (r, acc) in acc.iter_mut().enumerate() {
                let at = (t0 + r.min(n - 1)) * opad + j0;
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = load::<S>(&k.dwt[at + v * lanes..]);
                }
            }
            for (p, &base) in k.bases.iter().enumerate().take(p1).skip(p0) {
                // SAFETY: g has pixels·opad values and j0 + NV·lanes ≤ opad; every x read is at
                // base + cols[t] < need_x ≤ xp.len() (asserted above).
                unsafe {
                    let gp = k.g.as_ptr().add(p * opad + j0);
                    let mut g = [zero; NV];
                    for (v, g) in g.iter_mut().enumerate() {
                        *g = (gp.add(v * lanes) as *const S::f32s).read_unaligned();
                    }
                    let xb = k.xp.as_ptr().add(base);
                    for r in 0..R {
                        let xv = simd.splat_f32s(*xb.add(cols[r]));
                        for v in 0..NV {
                            acc[r][v] = simd.mul_add_e_f32s(xv, g[v], acc[r][v]);
                        }
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(n) {
                for (v, a) in acc.iter().enumerate() {
                    store::<S>(&mut k.dwt[(t0 + r) * opad + j0 + v * lanes..], *a);
                }
            }
        }
    }
}
