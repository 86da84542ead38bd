//! Residual blocks, `r(...)` in an architecture: the layers inside the parentheses (the main
//! path), whose output is added to the block's input (the skip path) before the block's final
//! ReLU, as ResNet's basic block: `r(c16k3p1-b-c16k3p1-b)` is conv → BN → ReLU → conv → BN,
//! plus the input, → ReLU. When the main path changes the shape (channels or stride) the skip path
//! is projected by a 1×1 convolution with the block's stride followed by a batch
//! normalisation (ResNet's option B); otherwise it is the identity.
//!
//! An [`Arch`](crate::model::Arch) keeps its layers flat: the block's main-path layers, then
//! its projection's two layers (when it has one), then the join, a [`Residual`] layer that
//! adds the main path's output and the skip path's. [`wiring`] says which activation every
//! layer reads; the parameters come in that order, which is PyTorch's `BasicBlock` order
//! (conv1, bn1, conv2, bn2, downsample conv, downsample bn). The layers feeding a join have
//! no ReLU of their own ([`super::relu_flags`]); the join has the block's. The engine sums the
//! gradients of an activation read by two layers (a block's input: its first main-path layer
//! and its skip path). Blocks do not nest.

use super::{Build, Grammar, Io, Layer, LayerKind, LayerSpec, Mode, Refusal, Shape};
use crate::ops::Op;
use crate::Result;
use std::fmt;

/// The join of a residual block: the block's last `main` layers (before its projection) are
/// its main path, and `project` says whether the two layers before this one are its skip
/// path's projection (a 1×1 convolution and a batch normalisation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Residual {
    /// Layers on the main path (at least 1).
    pub main: usize,
    /// Whether the skip path is projected (two layers: convolution 1×1, batch normalisation).
    pub project: bool,
}

impl Residual {
    /// Layers of the block before the join: the main path and the projection.
    pub fn span(&self) -> usize {
        self.main + if self.project { 2 } else { 0 }
    }
}

impl Grammar for Residual {
    const TOKEN: &'static str = "r(...)";
    const MEANING: &'static str = "a residual block: the dash-separated layers inside, whose output is added to the block's input before the block's ReLU; when the shape changes, the input is projected by a 1×1 convolution with the block's stride and a batch normalisation (blocks do not nest)";
    const EXAMPLE: &'static str = "r(c16k3p1-b-c16k3p1-b)";
    /// Never a single token: [`crate::model::Arch::parse`] reads the block form.
    fn parse(_tok: &str) -> Option<Self> {
        None
    }
}

impl fmt::Display for Residual {
    /// `r(...)`: the join alone (the architecture's text writes the whole block).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("r(...)")
    }
}

impl LayerKind for Residual {
    /// The main path's shape (the skip path's must equal it: [`crate::model::Arch::shapes`]).
    fn output(&self, input: Shape, _from: &str) -> std::result::Result<Shape, Refusal> {
        Ok(input)
    }

    fn relu_after(&self) -> bool {
        true
    }

    fn build(&self, b: Build<'_>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(AddLayer {
            len: b.batch * b.output.len(),
            relu: b.relu,
        }))
    }
}

/// Where one layer of a flat list reads from. Activations are numbered as the shapes of
/// [`crate::model::Arch::shapes`]: 0 is the network's input, `j + 1` the output of layer `j`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wire {
    /// The activation the layer reads (for a join: its main path's output).
    pub input: usize,
    /// A join's second summand: the block's input, or its projection's output.
    pub skip: Option<usize>,
    /// Whether the layer is the first of a block's main path (`r(` is written before it).
    pub opens: bool,
    /// Whether the layer belongs to a block's projection (not written in the text form).
    pub projection: bool,
}

/// For each layer of `layers`, what it reads; or the index of the layer that makes the list
/// impossible and why (an empty block, one that reaches before the input, nested blocks, a
/// projection that is not a 1×1 convolution and a batch normalisation, a block whose first
/// layer would take over the ReLU of a layer whose output the skip path also reads).
pub fn wiring(layers: &[LayerSpec]) -> std::result::Result<Vec<Wire>, (usize, Refusal)> {
    let mut wires: Vec<Wire> = (0..layers.len())
        .map(|l| Wire {
            input: l,
            skip: None,
            opens: false,
            projection: false,
        })
        .collect();
    // The end of the last block seen: a block starting before it would nest.
    let mut free_from = 0;
    for (a, spec) in layers.iter().enumerate() {
        let LayerSpec::Residual(r) = spec else {
            continue;
        };
        if r.main == 0 {
            return Err((a, "a residual block needs at least one layer".into()));
        }
        let Some(start) = a.checked_sub(r.span()) else {
            return Err((
                a,
                format!("the block's {} layers reach before the input", r.span()),
            ));
        };
        if start < free_from {
            return Err((a, "residual blocks do not nest".into()));
        }
        if layers[start].kind().takes_relu() {
            return Err((
                start,
                format!(
                    "a residual block cannot start with `{}`: the block's input also feeds its skip path, so the ReLU before it cannot move after this layer",
                    layers[start]
                ),
            ));
        }
        let input = start;
        let main_out = start + r.main;
        wires[start].opens = true;
        if r.project {
            let (pc, pb) = (a - 2, a - 1);
            let conv_ok = matches!(layers[pc], LayerSpec::Conv(c) if c.k == 1 && c.pad == 0);
            if !conv_ok || !matches!(layers[pb], LayerSpec::BatchNorm(_)) {
                return Err((
                    a,
                    format!(
                        "a block's projection is a 1×1 convolution without padding and a batch normalisation, not `{}-{}`",
                        layers[pc], layers[pb]
                    ),
                ));
            }
            wires[pc].input = input;
            wires[pc].projection = true;
            wires[pb].projection = true;
            wires[a].input = main_out;
            wires[a].skip = Some(a);
        } else {
            wires[a].skip = Some(input);
        }
        free_from = a + 1;
    }
    Ok(wires)
}

/// The join in the engine: y = main + skip (then the ReLU); backward, dy passes to both.
struct AddLayer {
    len: usize,
    relu: bool,
}

impl Layer for AddLayer {
    fn param_lens(&self) -> Option<(usize, usize)> {
        None
    }

    fn relu(&self) -> bool {
        self.relu
    }

    fn forward(&self, io: &Io, _mode: Mode, ops: &mut Vec<Op>) {
        let skip = io.skip.expect("a join reads a skip path");
        ops.push(Op::AddForward {
            len: self.len,
            relu: self.relu,
            a: io.x,
            b: skip.x,
            y: io.y,
        });
    }

    fn backward(&self, io: &Io, ops: &mut Vec<Op>) {
        let skip = io.skip.expect("a join reads a skip path");
        for (dx, mask) in [(io.dx, io.mask), (skip.dx, skip.mask)] {
            if let Some(dx) = dx {
                ops.push(Op::AddBackward {
                    len: self.len,
                    accumulate: false,
                    dy: io.dy,
                    mask,
                    dx,
                });
            }
        }
    }
}
