//! MaxPool2d, K×K windows with stride K, on channels-last activations. The forward pass keeps
//! the index of each window's maximum; the backward pass sends each gradient to that element
//! only (the first maximum on ties, as PyTorch does).

use super::{image_input, number, Build, Grammar, Io, Layer, LayerKind, Mode, Refusal, Shape};
use crate::backend::Backend;
use crate::ops::{BufId, Op, Pool2dSpec};
use crate::Result;
use std::fmt;

/// Max pooling over `k`×`k` windows with stride `k`, `m{k}` in an architecture (output side
/// floor(side / k)); PyTorch's `nn.MaxPool2d(k)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaxPool {
    /// Window side and stride K.
    pub k: usize,
}

impl Grammar for MaxPool {
    const TOKEN: &'static str = "m{k}";
    const MEANING: &'static str = "k×k max pooling with stride k";
    const EXAMPLE: &'static str = "m2";
    fn parse(tok: &str) -> Option<Self> {
        number(tok.strip_prefix('m')?).map(|k| MaxPool { k })
    }
}

impl fmt::Display for MaxPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.k)
    }
}

/// The output of K×K pooling with stride K (shared with [`super::avgpool`]): the same
/// channels, each side floor(side / K); refused for a flat input, K = 0, or a window larger
/// than the input.
pub(crate) fn pooled(input: Shape, k: usize, from: &str) -> std::result::Result<Shape, Refusal> {
    let (c, h, w) = image_input(input, "pooling", from)?;
    if k == 0 {
        return Err("pooling size must be at least 1".into());
    }
    if k > h || k > w {
        return Err(format!(
            "{k}x{k} pooling of its input {input} gives zero size"
        ));
    }
    Ok(Shape::Image {
        c,
        h: h / k,
        w: w / k,
    })
}

impl LayerKind for MaxPool {
    fn output(&self, input: Shape, from: &str) -> std::result::Result<Shape, Refusal> {
        pooled(input, self.k, from)
    }

    fn relu_after(&self) -> bool {
        false
    }

    fn build(&self, b: Build<'_>) -> Result<Box<dyn Layer>> {
        let Build {
            input, batch, be, ..
        } = b;
        let Shape::Image { c, h, w } = input else {
            unreachable!("Arch::shapes refuses pooling after a flat shape")
        };
        let spec = Pool2dSpec {
            batch,
            c,
            h,
            w,
            k: self.k,
        };
        Ok(Box::new(MaxPoolLayer::new(spec, be)?))
    }
}

/// A max-pooling layer over a batch (see the module docs), with its argmax buffer.
pub struct MaxPoolLayer {
    spec: Pool2dSpec,
    idx: BufId,
}

impl MaxPoolLayer {
    /// The layer `spec`, allocating its u32 argmax buffer idx\[B,OH,OW,C\] on `be`; fails if the
    /// device cannot hold it.
    pub fn new(spec: Pool2dSpec, be: &mut dyn Backend) -> Result<Self> {
        let idx = be.alloc("pool argmax", spec.output_len())?;
        Ok(MaxPoolLayer { spec, idx })
    }
}

impl Layer for MaxPoolLayer {
    fn param_lens(&self) -> Option<(usize, usize)> {
        None
    }

    fn relu(&self) -> bool {
        false
    }

    fn forward(&self, io: &Io, _mode: Mode, ops: &mut Vec<Op>) {
        ops.push(Op::MaxPoolForward {
            spec: self.spec,
            x: io.x,
            y: io.y,
            idx: self.idx,
        });
    }

    fn backward(&self, io: &Io, ops: &mut Vec<Op>) {
        if let Some(dx) = io.dx {
            ops.push(Op::MaxPoolBackward {
                spec: self.spec,
                dy: io.dy,
                idx: self.idx,
                mask: io.mask,
                dx,
            });
        }
    }
}
