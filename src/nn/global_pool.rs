//! Global average pooling, `g` in an architecture: C×H×W → C, each channel's mean over the
//! whole image, as PyTorch's `nn.AdaptiveAvgPool2d(1)` followed by `nn.Flatten()`. It runs
//! the average-pooling ops with one H×W window; channels-last, y\[B,1,1,C\] is already the flat
//! y\[B,C\] a following dense layer reads (no weight permutation: its input is flat).

use super::avgpool::AvgPoolLayer;
use super::{image_input, Build, Grammar, Layer, LayerKind, Refusal, Shape};
use crate::ops::AvgPool2dSpec;
use crate::Result;
use std::fmt;

/// Global average pooling: one value per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GlobalAvgPool;

impl Grammar for GlobalAvgPool {
    const TOKEN: &'static str = "g";
    const MEANING: &'static str = "global average pooling, C×H×W → C";
    const EXAMPLE: &'static str = "g";
    fn parse(tok: &str) -> Option<Self> {
        (tok == "g").then_some(GlobalAvgPool)
    }
}

impl fmt::Display for GlobalAvgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("g")
    }
}

impl LayerKind for GlobalAvgPool {
    fn output(&self, input: Shape, from: &str) -> std::result::Result<Shape, Refusal> {
        let (c, _, _) = image_input(input, "global pooling", from)?;
        Ok(Shape::Flat(c))
    }

    fn relu_after(&self) -> bool {
        false
    }

    fn build(&self, b: Build<'_>) -> Result<Box<dyn Layer>> {
        let Build { input, batch, .. } = b;
        let Shape::Image { c, h, w } = input else {
            unreachable!("Arch::shapes refuses global pooling after a flat shape")
        };
        Ok(Box::new(AvgPoolLayer {
            spec: AvgPool2dSpec {
                batch,
                c,
                h,
                w,
                kh: h,
                kw: w,
            },
        }))
    }
}
