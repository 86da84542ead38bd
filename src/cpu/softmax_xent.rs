//! Twin of `shaders/softmax_xent.wgsl`.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, NdFloat};

/// logits\[B,C\], labels\[B\] -> (probs\[B,C\], loss\[B\]). Labels ≥ C are padding rows (loss 0).
pub fn softmax_xent_forward<F: NdFloat>(
    logits: ArrayView2<F>,
    labels: ArrayView1<u32>,
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
            loss[r] = s.ln() + (m - z[y]);
        }
    }
    (probs, loss)
}

/// dlogits\[B,C\] = (probs − onehot(labels)) · scale; padding rows get 0.
pub fn softmax_xent_backward<F: NdFloat>(
    probs: ArrayView2<F>,
    labels: ArrayView1<u32>,
    scale: F,
) -> Array2<F> {
    let classes = probs.ncols();
    let mut d = probs.to_owned();
    for (r, mut row) in d.rows_mut().into_iter().enumerate() {
        let y = labels[r] as usize;
        if y >= classes {
            row.fill(F::zero());
            continue;
        }
        row[y] -= F::one();
        row.mapv_inplace(|v| v * scale);
    }
    d
}
