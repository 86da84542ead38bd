//! The metrics accumulation: counts exact, the loss sum within γ of its depth.

use super::compare::{compare, compare_u32, Check};
use super::tolerance::gamma;
use super::{Family, Inputs};
use crate::cpu;
use crate::ops::MetricsAcc;
use ndarray::{Array1, Array2};

/// The accumulator the metrics checks start from.
pub const METRICS_START: MetricsAcc = MetricsAcc {
    loss_sum: 1.5,
    correct: 3,
    seen: 7,
    nonfinite: 0,
};

/// Scores uniform in [-1, 1], labels with about one in eight padding, losses in [0, 5].
pub fn metrics_inputs(
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> (Array2<f32>, Array1<u32>, Array1<f32>) {
    let mut scores = inp.matrix(rows, classes);
    let mut labels = inp.labels(rows, classes, true);
    let loss = Array1::from(inp.uniform(rows, 0.0, 5.0));
    // Every fifth row ties its maximum with another class and is labelled with the first of
    // the two: an argmax that let the last maximum win would count these rows wrong.
    if classes > 1 {
        for r in (0..rows).step_by(5) {
            let row = scores.row(r);
            let m = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            let j = (m + 1 + r % (classes - 1)) % classes;
            scores[[r, j]] = scores[[r, m]];
            if labels[r] < classes as u32 {
                labels[r] = m.min(j) as u32;
            }
        }
    }
    (scores, labels, loss)
}

/// The accumulator after one accumulation from `start`: counts exact, the loss sum within
/// γ_(depth+1)·Σ|terms| of the f64 sum, `depth` being the longest chain of additions over the
/// rows (one more adds into the accumulator).
pub fn metrics_compare(
    scores: &Array2<f32>,
    labels: &Array1<u32>,
    loss: &Array1<f32>,
    start: MetricsAcc,
    got: MetricsAcc,
    depth: usize,
    shape: String,
) -> Vec<Check> {
    let (rows, classes) = scores.dim();
    let mut want = start;
    cpu::metrics::accumulate_metrics(&mut want, scores.view(), labels.view(), loss.view());
    let abs_sum: f64 = loss.iter().map(|&l| l as f64).sum::<f64>() + start.loss_sum.abs() as f64;
    let exact = start.loss_sum as f64
        + (0..rows)
            .filter(|&r| labels[r] < classes as u32)
            .map(|r| loss[r] as f64)
            .sum::<f64>();
    vec![
        compare_u32(
            Family::Metrics,
            "accumulate_metrics counts",
            shape.clone(),
            &[got.correct, got.seen, got.nonfinite],
            &[want.correct, want.seen, want.nonfinite],
        ),
        compare(
            Family::Metrics,
            "accumulate_metrics loss",
            shape.clone(),
            &[got.loss_sum],
            // Exact reference: the f64 sum over the counted rows (the f32 twin sums serially).
            &[exact],
            |_| (gamma(depth + 1) * abs_sum, 0.0),
        ),
        // The twin, whose counts are the reference above, holds its own loss to the same sum
        // (a serial chain of `rows` additions, then one into the accumulator).
        compare(
            Family::Metrics,
            "accumulate_metrics twin loss",
            shape,
            &[want.loss_sum],
            &[exact],
            |_| (gamma(rows + 1) * abs_sum, 0.0),
        ),
    ]
}
