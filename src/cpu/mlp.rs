//! The whole MLP step on the CPU: the twin of the GPU training step, generic over f32 (the
//! `--device cpu` path) and f64 (the finite-difference gradient check).
//!
//! Shapes: x [B,I]; layer l has W [O,I], b [O]; acts[l] [B,O] is ReLU(x·Wᵀ + b) for hidden
//! layers and the logits for the last one.

use super::{bias, matmul, softmax_xent};
use crate::ops::Epilogue;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, NdFloat};

/// Weights and biases (or their gradients) of every dense layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Layers<F> {
    /// [O, I] per layer.
    pub w: Vec<Array2<F>>,
    /// [O] per layer.
    pub b: Vec<Array1<F>>,
}

impl Layers<f32> {
    /// The parameters of `mlp`.
    pub fn from_mlp(mlp: &crate::model::Mlp) -> Self {
        Layers {
            w: mlp.layers.iter().map(|l| l.weight.clone()).collect(),
            b: mlp.layers.iter().map(|l| l.bias.clone()).collect(),
        }
    }
}

impl<F: NdFloat> Layers<F> {
    /// Zeros shaped like `self`.
    pub fn zeros_like(&self) -> Self {
        Layers {
            w: self.w.iter().map(|w| Array2::zeros(w.dim())).collect(),
            b: self.b.iter().map(|b| Array1::zeros(b.dim())).collect(),
        }
    }
}

/// Forward pass; returns every layer's output.
pub fn forward<F: NdFloat>(p: &Layers<F>, x: ArrayView2<F>) -> Vec<Array2<F>> {
    let n = p.w.len();
    let mut acts: Vec<Array2<F>> = Vec::with_capacity(n);
    for l in 0..n {
        let input = if l == 0 { x } else { acts[l - 1].view() };
        let mut y = matmul::matmul(input, p.w[l].view(), false, true);
        let epi = if l + 1 == n {
            Epilogue::Bias
        } else {
            Epilogue::BiasRelu
        };
        matmul::epilogue(&mut y, epi, Some(p.b[l].view()), None);
        acts.push(y);
    }
    acts
}

/// Backward pass from dlogits; returns dW, db for every layer.
pub fn backward<F: NdFloat>(
    p: &Layers<F>,
    x: ArrayView2<F>,
    acts: &[Array2<F>],
    dlogits: Array2<F>,
) -> Layers<F> {
    let n = p.w.len();
    let mut grads = p.zeros_like();
    let mut d = dlogits;
    for l in (0..n).rev() {
        let input = if l == 0 { x } else { acts[l - 1].view() };
        // dW[O,I] = dYᵀ·X, db[O] = Σ_B dY
        grads.w[l] = matmul::matmul(d.view(), input, true, false);
        grads.b[l] = bias::bias_backward(d.view());
        if l > 0 {
            // dX[B,I] = dY·W, then through the ReLU of the layer below
            let mut dx = matmul::matmul(d.view(), p.w[l].view(), false, false);
            matmul::epilogue(&mut dx, Epilogue::ReluMask, None, Some(acts[l - 1].view()));
            d = dx;
        }
    }
    grads
}

/// Mean cross-entropy over the non-padding rows, the probabilities, and the gradients of the
/// loss summed over rows times `scale` (1/B gives the batch mean, as the GPU step does).
pub fn loss_and_grads<F: NdFloat>(
    p: &Layers<F>,
    x: ArrayView2<F>,
    labels: ArrayView1<u32>,
    scale: F,
) -> (Array1<F>, Array2<F>, Layers<F>) {
    let acts = forward(p, x);
    let (probs, loss) = softmax_xent::softmax_xent_forward(acts[acts.len() - 1].view(), labels);
    let dlogits = softmax_xent::softmax_xent_backward(probs.view(), labels, scale);
    let grads = backward(p, x, &acts, dlogits);
    (loss, probs, grads)
}
