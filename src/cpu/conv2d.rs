//! Twin of `shaders/conv2d.wgsl` (im2col / col2im over channels-last activations), plus a
//! direct convolution in PyTorch's NCHW layout with its gradient, the reference for whole-layer
//! tests.
//!
//! Layouts: x\[B,H,W,C\] channels-last; cols[B·OH·OW, C·K·K] with row (b·OH + oy)·OW + ox and
//! column c·K·K + ky·K + kx; PyTorch tensors x\[B,C,H,W\], w\[O,C,K,K\], y\[B,O,OH,OW\].

use crate::ops::Conv2dSpec;
use ndarray::{Array2, ArrayView2, NdFloat};

/// The input position (iy, ix) that output (oy, ox) reads at kernel offset (ky, kx), or `None`
/// in the zero padding.
fn source(spec: &Conv2dSpec, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * spec.stride + ky).checked_sub(spec.pad)?;
    let ix = (ox * spec.stride + kx).checked_sub(spec.pad)?;
    (iy < spec.h && ix < spec.w).then_some((iy, ix))
}

/// cols[B·OH·OW, C·K·K]: row (b, oy, ox), column (c, ky, kx) holds x[b, oy·s + ky − pad,
/// ox·s + kx − pad, c], or 0 in the padding.
pub fn im2col<F: NdFloat>(x: &[F], spec: &Conv2dSpec) -> Array2<F> {
    let (oh, ow, k, c_in) = (spec.out_h(), spec.out_w(), spec.k, spec.c_in);
    assert_eq!(x.len(), spec.input_len(), "im2col: x has the wrong length");
    let mut cols = Array2::zeros((spec.col_rows(), spec.col_cols()));
    for b in 0..spec.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                let r = (b * oh + oy) * ow + ox;
                for c in 0..c_in {
                    for ky in 0..k {
                        for kx in 0..k {
                            if let Some((iy, ix)) = source(spec, oy, ox, ky, kx) {
                                cols[[r, (c * k + ky) * k + kx]] =
                                    x[((b * spec.h + iy) * spec.w + ix) * c_in + c];
                            }
                        }
                    }
                }
            }
        }
    }
    cols
}

/// The adjoint of [`im2col`]: dx\[B,H,W,C\] accumulates every dcols entry that im2col copied
/// from that element (a scatter here; the shader gathers). With `mask` (x's shape, e.g. the
/// ReLU output below), dx is 0 wherever the mask is not > 0.
pub fn col2im<F: NdFloat>(dcols: ArrayView2<F>, spec: &Conv2dSpec, mask: Option<&[F]>) -> Vec<F> {
    let (oh, ow, k, c_in) = (spec.out_h(), spec.out_w(), spec.k, spec.c_in);
    assert_eq!(
        dcols.dim(),
        (spec.col_rows(), spec.col_cols()),
        "col2im: dcols has the wrong shape"
    );
    let mut dx = vec![F::zero(); spec.input_len()];
    for b in 0..spec.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                let r = (b * oh + oy) * ow + ox;
                for c in 0..c_in {
                    for ky in 0..k {
                        for kx in 0..k {
                            if let Some((iy, ix)) = source(spec, oy, ox, ky, kx) {
                                dx[((b * spec.h + iy) * spec.w + ix) * c_in + c] +=
                                    dcols[[r, (c * k + ky) * k + kx]];
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(m) = mask {
        assert_eq!(m.len(), dx.len(), "col2im: mask has the wrong length");
        for (d, &m) in dx.iter_mut().zip(m) {
            *d = if m > F::zero() { *d } else { F::zero() };
        }
    }
    dx
}

/// Direct convolution in NCHW: y\[b,o,oy,ox\] = bias\[o\] + Σ_{c,ky,kx} x\[b,c,iy,ix\]·w\[o,c,ky,kx\]
/// with iy = oy·s + ky − pad (zero padding), like `torch.nn.functional.conv2d`.
pub fn conv2d_nchw<F: NdFloat>(x: &[F], w: &[F], bias: &[F], spec: &Conv2dSpec) -> Vec<F> {
    let (oh, ow, k) = (spec.out_h(), spec.out_w(), spec.k);
    let (cin, cout) = (spec.c_in, spec.c_out);
    assert_eq!(x.len(), spec.input_len(), "conv2d_nchw: x");
    assert_eq!(w.len(), cout * cin * k * k, "conv2d_nchw: w");
    assert_eq!(bias.len(), cout, "conv2d_nchw: bias");
    let mut y = vec![F::zero(); spec.batch * cout * oh * ow];
    for b in 0..spec.batch {
        for o in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias[o];
                    for c in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                if let Some((iy, ix)) = source(spec, oy, ox, ky, kx) {
                                    s += x[((b * cin + c) * spec.h + iy) * spec.w + ix]
                                        * w[((o * cin + c) * k + ky) * k + kx];
                                }
                            }
                        }
                    }
                    y[((b * cout + o) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
    y
}

/// Gradients of [`conv2d_nchw`] given dy\[B,O,OH,OW\]: (dx\[B,C,H,W\], dw\[O,C,K,K\], db\[O\]).
pub fn conv2d_nchw_backward<F: NdFloat>(
    x: &[F],
    w: &[F],
    dy: &[F],
    spec: &Conv2dSpec,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let (oh, ow, k) = (spec.out_h(), spec.out_w(), spec.k);
    let (cin, cout) = (spec.c_in, spec.c_out);
    assert_eq!(x.len(), spec.input_len(), "conv2d_nchw_backward: x");
    assert_eq!(w.len(), cout * cin * k * k, "conv2d_nchw_backward: w");
    assert_eq!(
        dy.len(),
        spec.batch * cout * oh * ow,
        "conv2d_nchw_backward: dy"
    );
    let mut dx = vec![F::zero(); x.len()];
    let mut dw = vec![F::zero(); w.len()];
    let mut db = vec![F::zero(); cout];
    for b in 0..spec.batch {
        for o in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((b * cout + o) * oh + oy) * ow + ox];
                    db[o] += d;
                    for c in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                if let Some((iy, ix)) = source(spec, oy, ox, ky, kx) {
                                    let xi = ((b * cin + c) * spec.h + iy) * spec.w + ix;
                                    let wi = ((o * cin + c) * k + ky) * k + kx;
                                    dx[xi] += d * w[wi];
                                    dw[wi] += d * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

/// x\[B,H,W,C\] → x\[B,C,H,W\].
pub fn nhwc_to_nchw<F: Copy>(x: &[F], b: usize, h: usize, w: usize, c: usize) -> Vec<F> {
    assert_eq!(x.len(), b * h * w * c, "nhwc_to_nchw: length");
    let mut out = Vec::with_capacity(x.len());
    for bi in 0..b {
        for ci in 0..c {
            for yi in 0..h {
                for xi in 0..w {
                    out.push(x[((bi * h + yi) * w + xi) * c + ci]);
                }
            }
        }
    }
    out
}

/// x\[B,C,H,W\] → x\[B,H,W,C\] (dimensions named as for [`nhwc_to_nchw`]).
pub fn nchw_to_nhwc<F: Copy>(x: &[F], b: usize, h: usize, w: usize, c: usize) -> Vec<F> {
    assert_eq!(x.len(), b * h * w * c, "nchw_to_nhwc: length");
    let mut out = Vec::with_capacity(x.len());
    for bi in 0..b {
        for yi in 0..h {
            for xi in 0..w {
                for ci in 0..c {
                    out.push(x[((bi * c + ci) * h + yi) * w + xi]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;

    /// A small deterministic pseudo-random stream in [-1, 1] (no rand dependency needed).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn spec(
        batch: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Conv2dSpec {
        Conv2dSpec {
            batch,
            c_in,
            h,
            w,
            c_out,
            k,
            stride,
            pad,
        }
    }

    /// Shapes with padding, stride, odd sizes, a 1×1 kernel and one as large as the padded
    /// input.
    fn specs() -> Vec<Conv2dSpec> {
        vec![
            spec(1, 1, 5, 5, 1, 3, 1, 0),
            spec(2, 3, 7, 6, 4, 3, 2, 1),
            spec(1, 2, 6, 5, 3, 5, 1, 2),
            spec(2, 1, 4, 4, 2, 1, 1, 0),
            spec(1, 2, 3, 3, 2, 5, 1, 1),
            spec(1, 3, 9, 8, 2, 4, 3, 2),
            spec(3, 2, 5, 7, 2, 2, 2, 0),
        ]
    }

    #[test]
    fn im2col_and_col2im_are_adjoint() {
        for (i, s) in specs().into_iter().enumerate() {
            let x = values(s.input_len(), 1 + i as u64);
            let d = Array1::from(values(s.col_rows() * s.col_cols(), 100 + i as u64))
                .into_shape_with_order((s.col_rows(), s.col_cols()))
                .unwrap();
            let cols = im2col(&x, &s);
            let lhs: f64 = (&cols * &d).sum();
            let dx = col2im(d.view(), &s, None);
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!(
                (lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()),
                "{s:?}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn col2im_mask_zeroes_where_mask_is_not_positive() {
        let s = spec(1, 2, 4, 4, 1, 3, 1, 1);
        let d = Array2::from_elem((s.col_rows(), s.col_cols()), 1.0f64);
        let mask: Vec<f64> = (0..s.input_len()).map(|i| (i % 3) as f64 - 1.0).collect();
        let plain = col2im(d.view(), &s, None);
        let masked = col2im(d.view(), &s, Some(&mask));
        for i in 0..mask.len() {
            assert_eq!(masked[i], if mask[i] > 0.0 { plain[i] } else { 0.0 });
        }
    }

    #[test]
    fn im2col_matmul_equals_direct_nchw_convolution() {
        for (i, s) in specs().into_iter().enumerate() {
            let x_nhwc = values(s.input_len(), 7 + i as u64);
            let w = values(s.c_out * s.col_cols(), 70 + i as u64);
            let bias = values(s.c_out, 700 + i as u64);
            // y[B·OH·OW, O] = cols·wᵀ + bias, channels-last.
            let cols = im2col(&x_nhwc, &s);
            let wm = Array1::from(w.clone())
                .into_shape_with_order((s.c_out, s.col_cols()))
                .unwrap();
            let y = cols.dot(&wm.t()) + Array1::from(bias.clone());
            let y_nhwc: Vec<f64> = y.iter().copied().collect();
            let (oh, ow) = (s.out_h(), s.out_w());
            let got = nhwc_to_nchw(&y_nhwc, s.batch, oh, ow, s.c_out);
            let x_nchw = nhwc_to_nchw(&x_nhwc, s.batch, s.h, s.w, s.c_in);
            let want = conv2d_nchw(&x_nchw, &w, &bias, &s);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "{s:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn layout_conversions_round_trip() {
        let x: Vec<u32> = (0..2 * 3 * 4 * 5).collect();
        let nchw = nhwc_to_nchw(&x, 2, 3, 4, 5);
        assert_eq!(
            nchw[1], 5,
            "next along W in NCHW is C elements away in NHWC"
        );
        assert_eq!(nchw_to_nhwc(&nchw, 2, 3, 4, 5), x);
    }

    #[test]
    fn conv2d_nchw_backward_matches_central_differences() {
        let s = spec(2, 2, 4, 5, 3, 3, 2, 1);
        let x = values(s.input_len(), 11);
        let w = values(s.c_out * s.col_cols(), 12);
        let bias = values(s.c_out, 13);
        let dy = values(s.batch * s.c_out * s.out_h() * s.out_w(), 14);
        // L = ⟨conv(x, w, b), dy⟩, so ∂L/∂θ is what backward returns for this dy.
        let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
            conv2d_nchw(x, w, b, &s)
                .iter()
                .zip(&dy)
                .map(|(y, d)| y * d)
                .sum()
        };
        let (dx, dw, db) = conv2d_nchw_backward(&x, &w, &dy, &s);
        let h = 1e-6;
        let fd = |which: usize, i: usize| {
            let (mut xp, mut wp, mut bp) = (x.clone(), w.clone(), bias.clone());
            let (mut xm, mut wm, mut bm) = (x.clone(), w.clone(), bias.clone());
            match which {
                0 => {
                    xp[i] += h;
                    xm[i] -= h;
                }
                1 => {
                    wp[i] += h;
                    wm[i] -= h;
                }
                _ => {
                    bp[i] += h;
                    bm[i] -= h;
                }
            }
            (loss(&xp, &wp, &bp) - loss(&xm, &wm, &bm)) / (2.0 * h)
        };
        for (which, grad) in [(0, &dx), (1, &dw), (2, &db)] {
            for (i, &g) in grad.iter().enumerate() {
                let n = fd(which, i);
                assert!(
                    (g - n).abs() < 1e-7,
                    "param set {which}, element {i}: {g} vs {n}"
                );
            }
        }
    }
}
