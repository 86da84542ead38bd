//! Average pooling over K×K windows with stride K, `a{k}` in an architecture, as PyTorch's
//! `nn.AvgPool2d(k)` (no padding, floor): each output is its window's mean, and the backward
//! pass spreads each gradient evenly over its window. [`AvgPoolLayer`] also runs global
//! average pooling ([`super::global_pool`]), a window as large as the input.

use super::maxpool::pooled;
use super::{number, Build, Grammar, Io, Layer, LayerKind, Mode, Refusal, Shape};
use crate::ops::{AvgPool2dSpec, Op};
use crate::Result;
use std::fmt;

/// Average pooling over `k`×`k` windows with stride `k` (output side floor(side / k)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AvgPool {
    /// Window side and stride K.
    pub k: usize,
}

impl Grammar for AvgPool {
    const TOKEN: &'static str = "a{k}";
    const MEANING: &'static str = "k×k average pooling with stride k";
    const EXAMPLE: &'static str = "a2";
    fn parse(tok: &str) -> Option<Self> {
        number(tok.strip_prefix('a')?).map(|k| AvgPool { k })
    }
}

impl fmt::Display for AvgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{}", self.k)
    }
}

impl LayerKind for AvgPool {
    fn output(&self, input: Shape, from: &str) -> std::result::Result<Shape, Refusal> {
        pooled(input, self.k, from)
    }

    fn relu_after(&self) -> bool {
        false
    }

    fn build(&self, b: Build<'_>) -> Result<Box<dyn Layer>> {
        let Build { input, batch, .. } = b;
        let Shape::Image { c, h, w } = input else {
            unreachable!("Arch::shapes refuses pooling after a flat shape")
        };
        Ok(Box::new(AvgPoolLayer {
            spec: AvgPool2dSpec {
                batch,
                c,
                h,
                w,
                kh: self.k,
                kw: self.k,
            },
        }))
    }
}

/// An average-pooling layer over a batch: no parameters, no scratch buffers.
pub struct AvgPoolLayer {
    /// The pooling the layer's ops run.
    pub spec: AvgPool2dSpec,
}

impl Layer for AvgPoolLayer {
    fn param_lens(&self) -> Option<(usize, usize)> {
        None
    }

    fn relu(&self) -> bool {
        false
    }

    fn forward(&self, io: &Io, _mode: Mode, ops: &mut Vec<Op>) {
        ops.push(Op::AvgPoolForward {
            spec: self.spec,
            x: io.x,
            y: io.y,
        });
    }

    fn backward(&self, io: &Io, ops: &mut Vec<Op>) {
        if let Some(dx) = io.dx {
            ops.push(Op::AvgPoolBackward {
                spec: self.spec,
                dy: io.dy,
                mask: io.mask,
                dx,
            });
        }
    }
}
