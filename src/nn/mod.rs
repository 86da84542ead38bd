//! Layers. Each layer type writes its forward and its backward once, as backend-neutral
//! [`Op`]s; the training step ([`crate::train::Engine`]) strings them together and a backend
//! runs them (the GPU records launches, the CPU runs the twins).
//!
//! Activations are channels-last, x\[B,H,W,C\], so every convolution is one call of the tuned
//! matmul (see [`crate::ops::Conv2dSpec`]) and a flatten is a view. Model files keep PyTorch's
//! layouts; the one place where the two differ, the weights of the first dense layer after a
//! flatten (PyTorch flattens C,H,W), is converted by that layer when parameters enter or leave
//! the engine.
//!
//! Adding a layer type: a WGSL file in `shaders/` with its launchers in `gpu/kernels.rs`, its
//! CPU twin under the same name in `cpu/`, an [`Op`] for each entry point, and one
//! implementation of [`Layer`] here.

use crate::backend::Backend;
use crate::model::{LayerSpec, Shape};
use crate::ops::{BufId, Op};
use crate::Result;

pub mod conv2d;
pub mod dense;
pub mod maxpool;

/// A layer's parameters and their gradients, in engine layout.
#[derive(Clone, Copy, Debug)]
pub struct ParamBufs {
    /// Weight: dense [O, I] (columns in H,W,C order after a flatten), convolution [O, C·K·K].
    pub w: BufId,
    /// Bias \[O\].
    pub b: BufId,
    /// Gradient of the weight, laid out as `w`.
    pub dw: BufId,
    /// Gradient of the bias \[O\].
    pub db: BufId,
}

/// The buffers one layer reads and writes in a step.
#[derive(Clone, Copy, Debug)]
pub struct Io {
    /// Input activations [B, in].
    pub x: BufId,
    /// Output activations [B, out] (after the ReLU when the layer has one).
    pub y: BufId,
    /// Gradient w.r.t. the layer's pre-activation output (the ReLU already applied by the
    /// layer above, or by the loss for the last layer).
    pub dy: BufId,
    /// Where to write the gradient w.r.t. the input; None for the first layer.
    pub dx: Option<BufId>,
    /// When the layer below ends in a ReLU: its output, to mask `dx` with (x > 0).
    pub mask: Option<BufId>,
    /// Parameters, for layers that have them.
    pub p: Option<ParamBufs>,
}

/// One layer of a network.
pub trait Layer {
    /// (weight, bias) element counts, for layers with parameters.
    fn param_lens(&self) -> Option<(usize, usize)>;
    /// Whether the output goes through a ReLU.
    fn relu(&self) -> bool;
    /// Append the forward pass: y from x.
    fn forward(&self, io: &Io, ops: &mut Vec<Op>);
    /// Append the backward pass: parameter gradients from dy and x, and dx when asked.
    fn backward(&self, io: &Io, ops: &mut Vec<Op>);
    /// A weight in file layout (PyTorch's) to engine layout.
    fn weight_to_engine(&self, w: Vec<f32>) -> Vec<f32> {
        w
    }
    /// A weight in engine layout back to file layout.
    fn weight_from_engine(&self, w: Vec<f32>) -> Vec<f32> {
        w
    }
}

/// Build the layer for `spec` between shapes `input` and `output` for minibatches of `batch`,
/// allocating its scratch buffers in `be`. `relu`: whether a ReLU follows it.
pub fn build(
    spec: &LayerSpec,
    input: Shape,
    output: Shape,
    batch: usize,
    relu: bool,
    be: &mut dyn Backend,
) -> Result<Box<dyn Layer>> {
    Ok(match *spec {
        LayerSpec::Dense { out } => Box::new(dense::Dense::new(input, out, batch, relu)),
        LayerSpec::Conv {
            out,
            k,
            stride,
            pad,
        } => {
            let Shape::Image { c, h, w } = input else {
                unreachable!("Arch::shapes refuses a convolution after a flat shape")
            };
            let spec = crate::ops::Conv2dSpec {
                batch,
                c_in: c,
                h,
                w,
                c_out: out,
                k,
                stride,
                pad,
            };
            debug_assert_eq!(output.len() * batch, spec.output_len());
            Box::new(conv2d::Conv2d::new(spec, relu, be)?)
        }
        LayerSpec::Pool { k } => {
            let Shape::Image { c, h, w } = input else {
                unreachable!("Arch::shapes refuses pooling after a flat shape")
            };
            let spec = crate::ops::Pool2dSpec { batch, c, h, w, k };
            Box::new(maxpool::MaxPool2d::new(spec, be)?)
        }
    })
}
