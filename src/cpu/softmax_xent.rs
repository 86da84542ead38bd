//! Twin of `shaders/softmax_xent.wgsl`.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, NdFloat};

/// logits\[B,C\], labels\[B\] -> (probs\[B,C\], loss\[B\]). Labels ≥ C are padding rows (loss 0).
/// With label smoothing ε > 0 (PyTorch's `CrossEntropyLoss(label_smoothing=ε)`) the loss is
/// (1 − ε)·ℓ_y + (ε/C)·Σ_c ℓ_c, ℓ_c = −log p_c.
pub fn softmax_xent_forward<F: NdFloat>(
    logits: ArrayView2<F>,
    labels: ArrayView1<u32>,
    smoothing: F,
) -> (Array2<F>, Array1<F>) {
    let (rows, classes) = logits.dim();
    let mut probs = Array2::zeros((rows, classes));
    let mut loss = Array1::zeros(rows);
    for r in 0..rows {
        let z = logits.row(r);
        let m = z.fold(F::neg_infinity(), |a, &b| a.max(b));
        let e = z.mapv(|v| (v - m).exp());
        let s = e.sum();
        probs.row_mut(r).assign(&e.mapv(|v| v / s));
        let y = labels[r] as usize;
        if y < classes {
            let lse = s.ln();
            let ly = lse + (m - z[y]);
            loss[r] = if smoothing == F::zero() {
                ly
            } else {
                let all = z.fold(F::zero(), |a, &zc| a + (lse + (m - zc)));
                (F::one() - smoothing) * ly + (smoothing / F::from(classes).expect("classes")) * all
            };
        }
    }
    (probs, loss)
}

/// dlogits\[B,C\] = (probs − target) · scale, target = onehot(labels), or with label smoothing
/// ε > 0 (1 − ε)·onehot + ε/C; padding rows get 0.
pub fn softmax_xent_backward<F: NdFloat>(
    probs: ArrayView2<F>,
    labels: ArrayView1<u32>,
    scale: F,
    smoothing: F,
) -> Array2<F> {
    let classes = probs.ncols();
    let mut d = probs.to_owned();
    for (r, mut row) in d.rows_mut().into_iter().enumerate() {
        let y = labels[r] as usize;
        if y >= classes {
            row.fill(F::zero());
            continue;
        }
        if smoothing == F::zero() {
            row[y] -= F::one();
            row.mapv_inplace(|v| v * scale);
        } else {
            let off = smoothing / F::from(classes).expect("classes");
            for (c, v) in row.iter_mut().enumerate() {
                let target = if c == y {
                    F::one() - smoothing
                } else {
                    F::zero()
                } + off;
                *v = (*v - target) * scale;
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn smoothed_gradient_is_the_smoothed_losss_derivative_by_finite_differences() {
        // f64, central differences with h = 1e-6: truncation O(h²) ≈ 1e-12, rounding
        // ≈ 1e-16/1e-6 = 1e-10; 1e-7 leaves a wide margin and catches any wrong target term
        // (a target off by ε/C = 0.025 moves the gradient by that much).
        let z = array![[0.3f64, -1.2, 2.0, 0.1], [1.0, 1.0, -3.0, 0.5]];
        let labels = array![2u32, 0];
        for eps in [0.0, 0.1, 0.5, 1.0] {
            let loss = |z: &Array2<f64>| softmax_xent_forward(z.view(), labels.view(), eps).1.sum();
            let (p, _) = softmax_xent_forward(z.view(), labels.view(), eps);
            let d = softmax_xent_backward(p.view(), labels.view(), 1.0, eps);
            let h = 1e-6;
            for r in 0..2 {
                for c in 0..4 {
                    let (mut up, mut down) = (z.clone(), z.clone());
                    up[[r, c]] += h;
                    down[[r, c]] -= h;
                    let fd = (loss(&up) - loss(&down)) / (2.0 * h);
                    assert!(
                        (fd - d[[r, c]]).abs() < 1e-7,
                        "ε {eps} [{r},{c}]: {fd} vs {}",
                        d[[r, c]]
                    );
                }
            }
        }
    }

    #[test]
    fn smoothed_loss_is_pytorchs_label_smoothing_cross_entropy() {
        // torch.nn.functional.cross_entropy(torch.tensor([[0.3, -1.2, 2.0, 0.1]],
        // dtype=torch.float64), torch.tensor([2]), label_smoothing=0.1) = 0.4870085762969594
        // (PyTorch 2.x).
        let z = array![[0.3f64, -1.2, 2.0, 0.1]];
        let (_, l) = softmax_xent_forward(z.view(), array![2u32].view(), 0.1);
        assert!((l[0] - 0.4870085762969594).abs() < 1e-12, "{}", l[0]);
    }
}
