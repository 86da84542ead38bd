//! Twin of `shaders/avgpool.wgsl`: KH×KW average pooling with stride (KH, KW) over
//! channels-last x\[B,H,W,C\] → y\[B,OH,OW,C\] (OH = H/KH, floor), and its gradient.

use crate::ops::AvgPool2dSpec;
use ndarray::NdFloat;

/// y\[B,OH,OW,C\]: each window's sum in row-major (ky, kx) order, divided by KH·KW.
pub fn avgpool_forward<F: NdFloat>(x: &[F], spec: &AvgPool2dSpec) -> Vec<F> {
    let (oh, ow, c) = (spec.out_h(), spec.out_w(), spec.c);
    assert_eq!(
        x.len(),
        spec.input_len(),
        "avgpool_forward: x has the wrong length"
    );
    let n = F::from(spec.window()).expect("a window size is a float");
    let mut y = Vec::with_capacity(spec.output_len());
    for b in 0..spec.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut sum = F::zero();
                    for ky in 0..spec.kh {
                        for kx in 0..spec.kw {
                            let (iy, ix) = (oy * spec.kh + ky, ox * spec.kw + kx);
                            sum += x[((b * spec.h + iy) * spec.w + ix) * c + ch];
                        }
                    }
                    y.push(sum / n);
                }
            }
        }
    }
    y
}

/// dx\[B,H,W,C\]: dy of the element's window divided by KH·KW (0 in the rows and columns past
/// OH·KH, OW·KW that no window covers). With `mask`, dx is 0 wherever the mask is not > 0.
pub fn avgpool_backward<F: NdFloat>(dy: &[F], spec: &AvgPool2dSpec, mask: Option<&[F]>) -> Vec<F> {
    let (oh, ow, c) = (spec.out_h(), spec.out_w(), spec.c);
    assert_eq!(
        dy.len(),
        spec.output_len(),
        "avgpool_backward: dy has the wrong length"
    );
    let n = F::from(spec.window()).expect("a window size is a float");
    let mut dx = vec![F::zero(); spec.input_len()];
    for b in 0..spec.batch {
        for iy in 0..oh * spec.kh {
            for ix in 0..ow * spec.kw {
                for ch in 0..c {
                    let i = ((b * spec.h + iy) * spec.w + ix) * c + ch;
                    let o = ((b * oh + iy / spec.kh) * ow + ix / spec.kw) * c + ch;
                    dx[i] = dy[o] / n;
                }
            }
        }
    }
    if let Some(m) = mask {
        assert_eq!(
            m.len(),
            dx.len(),
            "avgpool_backward: mask has the wrong length"
        );
        for (d, &mv) in dx.iter_mut().zip(m) {
            // Not `mv <= 0`: a NaN mask zeroes too, as in the shader.
            if mv.partial_cmp(&F::zero()) != Some(std::cmp::Ordering::Greater) {
                *d = F::zero();
            }
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(batch: usize, c: usize, h: usize, w: usize, kh: usize, kw: usize) -> AvgPool2dSpec {
        AvgPool2dSpec {
            batch,
            c,
            h,
            w,
            kh,
            kw,
        }
    }

    #[test]
    fn avgpool_forward_means_each_window_and_drops_the_ragged_edge() {
        // 1 image, 1 channel, 3x5 input, 2x2 windows: OH = 1, OW = 2; row 2 and column 4 unused.
        let x: Vec<f64> = (0..15).map(f64::from).collect();
        let y = avgpool_forward(&x, &spec(1, 1, 3, 5, 2, 2));
        assert_eq!(
            y,
            vec![(0.0 + 1.0 + 5.0 + 6.0) / 4.0, (2.0 + 3.0 + 7.0 + 8.0) / 4.0]
        );
    }

    #[test]
    fn global_avgpool_is_the_per_channel_mean() {
        // 2 channels interleaved (channels-last) over a 2x3 image.
        let x: Vec<f64> = (0..12).map(f64::from).collect();
        let y = avgpool_forward(&x, &spec(1, 2, 2, 3, 2, 3));
        assert_eq!(y, vec![5.0, 6.0]);
    }

    #[test]
    fn avgpool_backward_spreads_dy_over_the_window_and_masks() {
        let s = spec(1, 1, 3, 3, 2, 2);
        let dx = avgpool_backward(&[8.0f64], &s, None);
        assert_eq!(dx, vec![2.0, 2.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        let mask = [1.0, 0.0, 1.0, -1.0, 0.5, 1.0, 1.0, 1.0, 1.0];
        let dxm = avgpool_backward(&[8.0f64], &s, Some(&mask));
        assert_eq!(dxm, vec![2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
