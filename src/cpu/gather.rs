//! Twin of `shaders/gather.wgsl`.

use crate::ops::{augment_draw, normalized, FeatureType, GatherAugment, PADDING_LABEL};
use ndarray::{Array1, Array2};

/// x\[B,P\] = images[order[start + b]] / 255 (bytes) or as they are (`f32`),
/// y\[B\] = labels[order[start + b]]; rows past the end are zeros with the padding label.
/// With `augment` = (what, training step), each sample is cropped and flipped as
/// [`GatherAugment::source`] says for its [`augment_draw`]. With `normalize` (the table of
/// [`crate::ops::Normalize::table`]: C means, then C reciprocal standard deviations), every
/// value of a sample row, the augmentation's zeros included, becomes [`normalized`] with its
/// channel's pair (channel f mod C); padding rows stay zeros.
#[allow(clippy::too_many_arguments)]
pub fn gather(
    images: &[u8],
    kind: FeatureType,
    labels: &[u32],
    pixels: usize,
    order: &[u32],
    start: usize,
    rows: usize,
    augment: Option<(&GatherAugment, u32)>,
    normalize: Option<&[f32]>,
) -> (Array2<f32>, Array1<u32>) {
    let mut x = Array2::zeros((rows, pixels));
    let mut y = Array1::from_elem(rows, PADDING_LABEL);
    for b in 0..rows {
        let Some(&s) = order.get(start + b) else {
            continue;
        };
        let draw = augment.map(|(a, step)| (a, augment_draw(a.augment, a.seed, step, s)));
        let s = s as usize;
        for (f, v) in x.row_mut(b).iter_mut().enumerate() {
            let from = match draw {
                Some((a, d)) => match a.source(d, f) {
                    Some(g) => g,
                    None => {
                        *v = 0.0;
                        continue;
                    }
                },
                None => f,
            };
            let i = s * pixels + from;
            *v = match kind {
                FeatureType::U8 => images[i] as f32 / 255.0,
                FeatureType::F32 => {
                    f32::from_le_bytes(images[4 * i..4 * i + 4].try_into().expect("four bytes"))
                }
            };
        }
        y[b] = labels[s];
        if let Some(t) = normalize {
            let c = t.len() / 2;
            for (f, v) in x.row_mut(b).iter_mut().enumerate() {
                *v = normalized(*v, t[f % c], t[c + f % c]);
            }
        }
    }
    (x, y)
}
