//! MaxPool2d, K×K windows with stride K, on channels-last activations. The forward pass keeps
//! the index of each window's maximum; the backward pass sends each gradient to that element
//! only (the first maximum on ties, as PyTorch does).

use super::{Io, Layer};
use crate::backend::Backend;
use crate::ops::{BufId, Op, Pool2dSpec};
use crate::Result;

/// A max-pooling layer over a batch (see the module docs), with its argmax buffer.
pub struct MaxPool2d {
    spec: Pool2dSpec,
    idx: BufId,
}

impl MaxPool2d {
    /// The layer `spec`, allocating its u32 argmax buffer idx\[B,OH,OW,C\] on `be`; fails if the
    /// device cannot hold it.
    pub fn new(spec: Pool2dSpec, be: &mut dyn Backend) -> Result<Self> {
        let idx = be.alloc("pool argmax", spec.output_len())?;
        Ok(MaxPool2d { spec, idx })
    }
}

impl Layer for MaxPool2d {
    fn param_lens(&self) -> Option<(usize, usize)> {
        None
    }

    fn relu(&self) -> bool {
        false
    }

    fn forward(&self, io: &Io, ops: &mut Vec<Op>) {
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
