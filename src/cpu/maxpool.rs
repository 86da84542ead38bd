//! Twin of `shaders/maxpool.wgsl`: K×K max-pooling with stride K over channels-last
//! x\[B,H,W,C\] → y\[B,OH,OW,C\] (OH = H/K, floor), and its gradient.

use crate::ops::Pool2dSpec;
use ndarray::NdFloat;

/// Whether `v` replaces `best` as a window's maximum: a larger value, or the first NaN. The
/// window is scanned in row-major (ky, kx) order, so on ties the first maximum wins and a NaN
/// propagates as in PyTorch (which keeps the *last* NaN's index where a window holds several;
/// the gradient through a NaN is meaningless either way).
fn replaces<F: NdFloat>(v: F, best: F) -> bool {
    !best.is_nan() && (v.is_nan() || v > best)
}

/// y\[B,OH,OW,C\] and idx\[B,OH,OW,C\], the flat index into x of each window's maximum.
pub fn maxpool_forward<F: NdFloat>(x: &[F], spec: &Pool2dSpec) -> (Vec<F>, Vec<u32>) {
    let (oh, ow, k, c) = (spec.out_h(), spec.out_w(), spec.k, spec.c);
    assert_eq!(
        x.len(),
        spec.input_len(),
        "maxpool_forward: x has the wrong length"
    );
    let mut y = Vec::with_capacity(spec.output_len());
    let mut idx = Vec::with_capacity(spec.output_len());
    for b in 0..spec.batch {
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
                            if replaces(x[i], best) {
                                best = x[i];
                                best_i = i;
                            }
                        }
                    }
                    y.push(best);
                    idx.push(best_i as u32);
                }
            }
        }
    }
    (y, idx)
}

/// dx\[B,H,W,C\]: dy of an element's window where that window's idx is the element, else 0
/// (also 0 in the rows and columns past OH·K, OW·K that no window covers). With `mask`, dx is
/// 0 wherever the mask is not > 0.
pub fn maxpool_backward<F: NdFloat>(
    dy: &[F],
    idx: &[u32],
    spec: &Pool2dSpec,
    mask: Option<&[F]>,
) -> Vec<F> {
    let (oh, ow, k, c) = (spec.out_h(), spec.out_w(), spec.k, spec.c);
    assert_eq!(
        dy.len(),
        spec.output_len(),
        "maxpool_backward: dy has the wrong length"
    );
    assert_eq!(
        idx.len(),
        spec.output_len(),
        "maxpool_backward: idx has the wrong length"
    );
    let mut dx = vec![F::zero(); spec.input_len()];
    for b in 0..spec.batch {
        for iy in 0..oh * k {
            for ix in 0..ow * k {
                for ch in 0..c {
                    let i = ((b * spec.h + iy) * spec.w + ix) * c + ch;
                    let o = ((b * oh + iy / k) * ow + ix / k) * c + ch;
                    if idx[o] as usize == i {
                        dx[i] = dy[o];
                    }
                }
            }
        }
    }
    if let Some(m) = mask {
        assert_eq!(
            m.len(),
            dx.len(),
            "maxpool_backward: mask has the wrong length"
        );
        for (d, &m) in dx.iter_mut().zip(m) {
            *d = if m > F::zero() { *d } else { F::zero() };
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(batch: usize, c: usize, h: usize, w: usize, k: usize) -> Pool2dSpec {
        Pool2dSpec { batch, c, h, w, k }
    }

    #[test]
    fn first_maximum_wins_ties_and_nan_propagates() {
        // One 2×2 window, one channel.
        let s = spec(1, 1, 2, 2, 2);
        assert_eq!(maxpool_forward(&[1.0f32, 3.0, 3.0, 2.0], &s).1, vec![1]);
        assert_eq!(maxpool_forward(&[0.0f32, 0.0, 0.0, 0.0], &s).1, vec![0]);
        let (y, i) = maxpool_forward(&[1.0f32, f32::NAN, 5.0, f32::NAN], &s);
        assert!(y[0].is_nan());
        assert_eq!(i, vec![1]);
        let (y, i) = maxpool_forward(&[f32::NEG_INFINITY; 4], &s);
        assert_eq!((y[0], i[0]), (f32::NEG_INFINITY, 0));
    }

    #[test]
    fn channels_last_windows_and_floor() {
        // 5×5 input, K = 2: rows/cols 4 are dropped; two channels hold x and −x.
        let s = spec(1, 2, 5, 5, 2);
        let x: Vec<f64> = (0..25).flat_map(|i| [i as f64, -(i as f64)]).collect();
        let (y, idx) = maxpool_forward(&x, &s);
        assert_eq!(y.len(), 2 * 2 * 2);
        // Window (0,0): elements 0,1,5,6 → max 6 in channel 0, −0 (element 0) in channel 1.
        assert_eq!((y[0], idx[0]), (6.0, 12));
        assert_eq!((y[1], idx[1]), (0.0, 1));
        let dy = vec![1.0f64; y.len()];
        let dx = maxpool_backward(&dy, &idx, &s, None);
        assert_eq!(dx.iter().sum::<f64>(), y.len() as f64);
        for (o, &i) in idx.iter().enumerate() {
            assert_eq!(dx[i as usize], dy[o]);
        }
        // The dropped last row and column never get a gradient.
        assert!((0..5).all(|j| dx[(4 * 5 + j) * 2] == 0.0 && dx[(j * 5 + 4) * 2] == 0.0));
        let mask: Vec<f64> = (0..x.len()).map(|i| (i % 2) as f64).collect();
        let masked = maxpool_backward(&dy, &idx, &s, Some(&mask));
        assert!(masked.iter().step_by(2).all(|&d| d == 0.0));
        assert_eq!(masked.iter().sum::<f64>(), y.len() as f64 / 2.0);
    }
}
