//! The minibatch gather: x within WGSL's 2.5-ULP division, labels and the cursor exact.

use super::compare::{compare, compare_u32, f64s, Check};
use super::tolerance::U;
use super::{Family, Inputs};
use crate::cpu;
use crate::ops::FeatureType;

/// What the gather checks poison y with (u32::MAX is the padding label itself).
pub const GATHER_Y_POISON: u32 = 12345;

/// A random dataset of `samples` images of `pixels` bytes with labels 0–999, a shuffled order
/// of which the first `len` entries are in use (the rest are valid indices a kernel must not
/// read), and a cursor `rows / 2` before `len` so the minibatch runs into padding rows.
pub struct GatherData {
    /// `samples` images of `pixels` values, stored as `kind`.
    pub images: Vec<u8>,
    /// How the values are stored.
    pub kind: FeatureType,
    /// One label per sample.
    pub labels: Vec<u32>,
    /// A shuffled order of all samples.
    pub order: Vec<u32>,
    /// Entries of `order` in use.
    pub len: usize,
    /// Where the cursor starts.
    pub start: usize,
    /// The training augmentation and the step counter's value (None: off).
    pub augment: Option<(crate::ops::GatherAugment, u32)>,
    /// The normalisation table (C means, then C reciprocal standard deviations; None: off).
    pub normalize: Option<Vec<f32>>,
}

impl GatherData {
    /// Fresh data from `inp` (see [`GatherData`]).
    pub fn new(inp: &mut Inputs, samples: usize, pixels: usize, rows: usize, len: usize) -> Self {
        Self::of_kind(inp, samples, pixels, rows, len, FeatureType::U8)
    }

    /// As [`GatherData::new`], with values stored as `kind` (`f32` values: random bit
    /// patterns of finite numbers of every magnitude and sign, which a gather copies exactly).
    pub fn of_kind(
        inp: &mut Inputs,
        samples: usize,
        pixels: usize,
        rows: usize,
        len: usize,
        kind: FeatureType,
    ) -> Self {
        let images: Vec<u8> = match kind {
            FeatureType::U8 => (0..samples * pixels)
                .map(|_| inp.next_u64() as u8)
                .collect(),
            FeatureType::F32 => (0..samples * pixels)
                .flat_map(|_| {
                    let mut v = f32::from_bits(inp.next_u64() as u32);
                    if !v.is_finite() {
                        v = 1.5;
                    }
                    v.to_le_bytes()
                })
                .collect(),
        };
        // Labels beyond a byte: the dataset's labels are u32 end to end.
        let labels: Vec<u32> = (0..samples)
            .map(|_| (inp.next_u64() % 1000) as u32)
            .collect();
        let mut order: Vec<u32> = (0..samples as u32).collect();
        for i in (1..samples).rev() {
            order.swap(i, (inp.next_u64() % (i as u64 + 1)) as usize);
        }
        let start = len.saturating_sub(rows / 2);
        GatherData {
            images,
            kind,
            labels,
            order,
            len,
            start,
            augment: None,
            normalize: None,
        }
    }

    /// x (within WGSL's 2.5-ULP division, carried through the normalisation when on; the
    /// augmentation's zeros and the places it reads from exactly: a wrong byte is ≥ 1/255 off,
    /// ≥ s/255 after normalising), y exactly, and the cursor advanced by `rows`.
    pub fn compare(
        &self,
        pixels: usize,
        rows: usize,
        x: &[f32],
        y: &[u32],
        cursor: u32,
        shape: String,
    ) -> Vec<Check> {
        let (wx, wy) = cpu::gather::gather(
            &self.images,
            self.kind,
            &self.labels,
            pixels,
            &self.order[..self.len],
            self.start,
            rows,
            self.augment.as_ref().map(|(a, s)| (a, *s)),
            self.normalize.as_deref(),
        );
        let channels = self.normalize.as_ref().map_or(1, |t| t.len() / 2);
        vec![
            compare(
                Family::Gather,
                "gather x",
                shape.clone(),
                x,
                &f64s(wx.as_slice().unwrap()),
                // Bytes: the division by 255 within WGSL's 2.5 ULP; f32: copied exactly.
                // Normalised, (v − m)·s with the subtraction and the product correctly rounded
                // (WGSL's + and ×, no fusing): f32 values come out bit for bit; a byte's v
                // off by 2.5 ULP (≤ 2.5u·|v| ≤ 2.5u, v ≤ 1) is off by ≤ 2.5u·|s| after the
                // scaling by s, plus half an ULP for each of the two roundings near the result
                // (whose size the relative part covers) — close to zero after the subtraction
                // only the absolute part holds.
                |i| match (self.kind, &self.normalize) {
                    (FeatureType::U8, None) => (0.0, 5.0 * U),
                    (FeatureType::U8, Some(t)) => {
                        let s = t[channels + (i % pixels) % channels].abs() as f64;
                        (3.0 * U * s, 3.0 * U)
                    }
                    (FeatureType::F32, _) => (0.0, 0.0),
                },
            ),
            compare_u32(
                Family::Gather,
                "gather y",
                shape.clone(),
                y,
                wy.as_slice().unwrap(),
            ),
            compare_u32(
                Family::Gather,
                "advance",
                shape,
                &[cursor],
                &[(self.start + rows) as u32],
            ),
        ]
    }
}
