//! Fast twin of `shaders/metrics.wgsl`.

use crate::ops::MetricsAcc;

/// acc += (Σ loss, #correct, #rows) over rows whose label is < C; the prediction is the first
/// maximum of the row's scores; a non-finite loss sum counts in `nonfinite`.
pub fn accumulate(
    acc: &mut MetricsAcc,
    scores: &[f32],
    labels: &[u32],
    loss: &[f32],
    classes: usize,
) {
    let mut sum = 0.0f32;
    for (r, &y) in labels.iter().enumerate() {
        if (y as usize) >= classes {
            continue;
        }
        let row = &scores[r * classes..(r + 1) * classes];
        let mut best = 0;
        for (c, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = c;
            }
        }
        sum += loss[r];
        acc.seen += 1;
        acc.correct += (best == y as usize) as u32;
    }
    if !sum.is_finite() {
        acc.nonfinite += 1;
    }
    acc.loss_sum += sum;
}
