//! Softmax with cross-entropy: relative bounds per term, the row sum and the division; the loss
//! within the sum's error, `log`'s and two roundings (see the [parent module](super)).

use super::compare::{compare, to64, Check};
use super::tolerance::{gamma, U};
use super::{Family, Inputs};
use crate::cpu;
use ndarray::{Array1, Array2};

/// Results below the smallest normal f32 may be flushed to zero (WGSL allows it).
const SOFTMAX_ATOL: f64 = 1.1754943508222875e-38;

/// Relative error of one term e = exp(z − max z) of a row: the subtraction's rounding
/// (u·|x|, x = z − max z, carried through exp) plus WGSL's exp, (3 + 2|x|) ULP = (6 + 4|x|)·u.
fn exp_term_rel(x: f64) -> f64 {
    (6.0 + 5.0 * x.abs()) * U
}

/// Arguments below which exp underflows to 0 in f32 (in the kernel and the f64 oracle alike
/// the term is then 0 or subnormal and adds nothing to the sum's relative error).
const EXP_UNDERFLOW: f64 = 104.0;

/// The softmax and loss bounds of each row (the module documentation has the argument).
struct SoftmaxBounds {
    /// Relative error of each row's sum s: γ_C (C positive terms, summed in any order) plus
    /// the largest relative error of a term that does not underflow.
    sum_rel: Vec<f64>,
    /// ln s of each row (f64).
    ln_s: Vec<f64>,
    rowmax: Vec<f64>,
}

impl SoftmaxBounds {
    fn new(z: &Array2<f64>, rowmax: &[f64]) -> Self {
        let classes = z.ncols();
        let (mut sum_rel, mut ln_s) = (Vec::new(), Vec::new());
        for (row, &m) in z.rows().into_iter().zip(rowmax) {
            let worst = row
                .iter()
                .map(|&v| (v - m).abs())
                .filter(|x| *x < EXP_UNDERFLOW)
                .fold(0.0, |a: f64, x| a.max(exp_term_rel(x)));
            sum_rel.push(gamma(classes) + worst);
            ln_s.push(row.iter().map(|&v| (v - m).exp()).sum::<f64>().ln());
        }
        SoftmaxBounds {
            sum_rel,
            ln_s,
            rowmax: rowmax.to_vec(),
        }
    }

    /// p = e·(1/s): the term's error, the sum's, and 1/s (2.5 ULP) times e (one rounding):
    /// 6u — all relative, so a probability far below the row's largest keeps its digits.
    fn p_rel(&self, row: usize, z: f64) -> f64 {
        let x = (z - self.rowmax[row]).abs();
        let term = if x < EXP_UNDERFLOW {
            exp_term_rel(x)
        } else {
            0.0
        };
        (term + self.sum_rel[row] + 6.0 * U) * (1.0 + 64.0 * U)
    }

    /// loss = log s + (max z − z_y): ln of the computed s is off by its relative error, WGSL's
    /// log adds 2⁻²¹ absolute for s in [0.5, 2] and 3 ULP (6u relative) elsewhere, then the
    /// subtraction and the addition round once each (≤ u·(|loss| + |ln s|) and u·|loss|, as
    /// 0 ≤ max z − z_y ≤ loss + |ln s|). No term grows with |max z|.
    fn loss_abs(&self, row: usize, loss: f64) -> f64 {
        let ln_s = self.ln_s[row];
        let log_err = if ln_s.abs() <= std::f64::consts::LN_2 {
            2f64.powi(-21)
        } else {
            6.0 * U * ln_s.abs()
        };
        (self.sum_rel[row] + log_err + U * (2.0 * loss.abs() + ln_s.abs())) * (1.0 + 64.0 * U)
    }
}

/// probs, loss and dlogits (computed from the tested probs) against the f64 softmax and
/// cross-entropy of the same logits (tolerances in the module documentation), with label
/// smoothing ε (0: none). With ε > 0 the loss is (1 − ε)·ℓ_y + (ε/C)·Σ_c ℓ_c: each ℓ_c within
/// the plain loss's bound, the sum of C terms γ_C of Σ|ℓ_c|, and 1 − ε, ε/C, the two products
/// and the final sum one rounding each (5u of the terms' magnitude); the gradient's target
/// (1 − ε)·[c = y] + ε/C rounds three times (3u of the target, times the scale).
#[allow(clippy::too_many_arguments)]
pub fn softmax_compare(
    logits: &Array2<f32>,
    labels: &Array1<u32>,
    scale: f32,
    smoothing: f32,
    p: &[f32],
    loss: &[f32],
    d: &[f32],
    shape: String,
) -> Vec<Check> {
    let classes = logits.ncols();
    let z64 = to64(logits);
    let eps = smoothing as f64;
    let (want_p, want_loss) =
        cpu::softmax_xent::softmax_xent_forward(z64.view(), labels.view(), eps);
    let want_d =
        cpu::softmax_xent::softmax_xent_backward(want_p.view(), labels.view(), scale as f64, eps);
    let rowmax: Vec<f64> = z64
        .rows()
        .into_iter()
        .map(|r| r.fold(f64::NEG_INFINITY, |a, &b| a.max(b)))
        .collect();
    let bounds = SoftmaxBounds::new(&z64, &rowmax);
    let p_tol = |i: usize| {
        let (r, c) = (i / classes, i % classes);
        (SOFTMAX_ATOL, bounds.p_rel(r, z64[[r, c]]))
    };
    // ℓ_c = ln s + (max z − z_c) of row r, in f64.
    let ell = |r: usize, c: usize| bounds.ln_s[r] + (rowmax[r] - z64[[r, c]]);
    let loss_tol = |r: usize| {
        if smoothing == 0.0 {
            return (bounds.loss_abs(r, want_loss[r]), 0.0);
        }
        let y = labels[r] as usize;
        if y >= classes {
            return (0.0, 0.0);
        }
        let k = eps / classes as f64;
        let (mut err, mut all) = (0.0, 0.0);
        for c in 0..classes {
            err += k * bounds.loss_abs(r, ell(r, c));
            all += ell(r, c).abs();
        }
        let mag = (1.0 - eps) * ell(r, y).abs() + k * all;
        let tol = (1.0 - eps) * bounds.loss_abs(r, ell(r, y))
            + err
            + gamma(classes) * k * all
            + 5.0 * U * mag;
        (tol * (1.0 + 64.0 * U), 0.0)
    };
    let target = |i: usize| {
        let (r, c) = (i / classes, i % classes);
        let y = labels[r] as usize;
        if y >= classes {
            0.0
        } else if smoothing == 0.0 {
            (c == y) as u8 as f64
        } else {
            (c == y) as u8 as f64 * (1.0 - eps) + eps / classes as f64
        }
    };
    vec![
        compare(
            Family::SoftmaxXent,
            "softmax_xent_forward probs",
            shape.clone(),
            p,
            want_p.as_slice().unwrap(),
            p_tol,
        ),
        compare(
            Family::SoftmaxXent,
            "softmax_xent_forward loss",
            shape.clone(),
            loss,
            want_loss.as_slice().unwrap(),
            loss_tol,
        ),
        compare(
            Family::SoftmaxXent,
            "softmax_xent_backward",
            shape,
            d,
            want_d.as_slice().unwrap(),
            // d = (p − target)·scale: p's error times scale, the target's roundings (none
            // without smoothing), one rounding of the subtraction (≤ u·|d|/scale) and one of
            // the product (≤ u·|d|).
            |i| {
                let (a, r) = p_tol(i);
                let pi = want_p.as_slice().unwrap()[i];
                let t = if smoothing == 0.0 {
                    0.0
                } else {
                    3.0 * U * target(i)
                };
                ((a + r * pi + t) * scale as f64, 2.0 * U)
            },
        ),
    ]
}

/// Random logits in [-8, 8].
pub fn softmax_logits(inp: &mut Inputs, rows: usize, classes: usize) -> Array2<f32> {
    Array2::from_shape_vec((rows, classes), inp.uniform(rows * classes, -8.0, 8.0)).expect("shape")
}

/// Logit rows that overflow a naive softmax (`verify` checks them with [`super::fail_nonfinite`]).
pub fn softmax_extreme_logits() -> Array2<f32> {
    let rows: Vec<Vec<f32>> = vec![
        vec![1000.0, 0.0, 0.0],
        vec![-1000.0, -1000.0, -1000.0],
        vec![-1000.0, 0.0, 1000.0],
        vec![88.0, 89.0, 90.0],
        vec![-1e30, 1e30, 0.0],
        vec![0.0, 0.0, 0.0],
    ];
    Array2::from_shape_vec((rows.len(), 3), rows.concat()).expect("shape")
}
