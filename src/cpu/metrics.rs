//! Twin of `shaders/metrics.wgsl`.

use crate::ops::MetricsAcc;
use ndarray::{Array1, ArrayView1, ArrayView2};

/// pred\[B\] = argmax_C scores\[B,C\], the first maximum winning.
pub fn argmax(scores: ArrayView2<f32>) -> Array1<u32> {
    scores
        .rows()
        .into_iter()
        .map(|row| {
            let mut best = 0;
            for (c, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = c;
                }
            }
            best as u32
        })
        .collect()
}

/// acc += (Σ loss, #correct, #rows) over rows whose label is < C.
pub fn accumulate_metrics(
    acc: &mut MetricsAcc,
    scores: ArrayView2<f32>,
    labels: ArrayView1<u32>,
    loss: ArrayView1<f32>,
) {
    let classes = scores.ncols() as u32;
    let pred = argmax(scores);
    let mut sum = 0.0f32;
    for r in 0..labels.len() {
        if labels[r] < classes {
            sum += loss[r];
            acc.seen += 1;
            acc.correct += (pred[r] == labels[r]) as u32;
        }
    }
    if !sum.is_finite() {
        acc.nonfinite += 1;
    }
    acc.loss_sum += sum;
}
