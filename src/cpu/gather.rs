//! Twin of `shaders/gather.wgsl`.

use crate::ops::{FeatureType, PADDING_LABEL};
use ndarray::{Array1, Array2};

/// x\[B,P\] = images[order[start + b]] / 255 (bytes) or as they are (`f32`),
/// y\[B\] = labels[order[start + b]]; rows past the end are zeros with the padding label.
pub fn gather(
    images: &[u8],
    kind: FeatureType,
    labels: &[u32],
    pixels: usize,
    order: &[u32],
    start: usize,
    rows: usize,
) -> (Array2<f32>, Array1<u32>) {
    let mut x = Array2::zeros((rows, pixels));
    let mut y = Array1::from_elem(rows, PADDING_LABEL);
    for b in 0..rows {
        let Some(&s) = order.get(start + b) else {
            continue;
        };
        let s = s as usize;
        for (f, v) in x.row_mut(b).iter_mut().enumerate() {
            let i = s * pixels + f;
            *v = match kind {
                FeatureType::U8 => images[i] as f32 / 255.0,
                FeatureType::F32 => {
                    f32::from_le_bytes(images[4 * i..4 * i + 4].try_into().expect("four bytes"))
                }
            };
        }
        y[b] = labels[s];
    }
    (x, y)
}
