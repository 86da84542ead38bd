//! Dropout, `d{p}` in an architecture (e.g. `d0.25`), as PyTorch's `nn.Dropout(p)`: in
//! training each activation is zeroed with probability p and the survivors are scaled by
//! 1 / (1 − p) (inverted dropout, so evaluation is the identity); in evaluation it does
//! nothing. The mask is drawn on the device from a counter-based hash of (seed, training step,
//! layer, element) — see [`DropoutSpec`] — so the CPU engine and every GPU draw the same bits,
//! a resumed run draws what an unbroken one would, and the backward pass recomputes the mask
//! instead of storing it.

use super::{Build, Grammar, Io, Layer, LayerKind, Mode, Refusal, Shape};
use crate::ops::{fold_seed, BufId, DropoutSpec, Op};
use crate::Result;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Dropout with drop probability `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    p: f32,
}

impl Dropout {
    /// Dropout with probability `p` (refused by the architecture check unless 0 ≤ p < 1).
    pub fn new(p: f32) -> Self {
        Dropout { p }
    }
    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }
}

// `p` comes only from a parse of digits and one '.', so never NaN or −0: equality is bitwise.
impl Eq for Dropout {}

impl Hash for Dropout {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.p.to_bits().hash(state)
    }
}

impl Grammar for Dropout {
    const TOKEN: &'static str = "d{p}";
    const MEANING: &'static str =
        "dropout with probability p, 0 ≤ p < 1 (training only; survivors scaled by 1/(1−p))";
    const EXAMPLE: &'static str = "d0.25";
    fn parse(tok: &str) -> Option<Self> {
        let p = tok.strip_prefix('d')?;
        let digits_and_point = p.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if p.is_empty() || !digits_and_point || p.matches('.').count() > 1 {
            return None;
        }
        p.parse::<f32>().ok().map(Dropout::new)
    }
}

impl fmt::Display for Dropout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // f32's Display is the shortest string that reads back as the same value.
        write!(f, "d{}", self.p)
    }
}

impl LayerKind for Dropout {
    fn output(&self, input: Shape, _from: &str) -> std::result::Result<Shape, Refusal> {
        if !(0.0..1.0).contains(&self.p) {
            return Err(format!(
                "dropout probability {} must be at least 0 and below 1",
                self.p
            ));
        }
        Ok(input)
    }

    fn relu_after(&self) -> bool {
        false
    }

    fn build(&self, b: Build<'_>) -> Result<Box<dyn Layer>> {
        Ok(Box::new(DropoutLayer {
            spec: DropoutSpec {
                rows: b.batch,
                cols: b.input.len(),
                p: self.p,
                seed: fold_seed(b.seed),
                layer: b.index as u32,
                row0: b.row0,
            },
            step: b.step,
        }))
    }
}

/// A dropout layer over a batch: no parameters, no scratch (the mask is recomputed).
pub struct DropoutLayer {
    spec: DropoutSpec,
    step: BufId,
}

impl Layer for DropoutLayer {
    fn param_lens(&self) -> Option<(usize, usize)> {
        None
    }

    fn relu(&self) -> bool {
        false
    }

    fn forward(&self, io: &Io, mode: Mode, ops: &mut Vec<Op>) {
        let p = match mode {
            Mode::Train => self.spec.p,
            // p = 0 keeps every element and scales by exactly 1: a copy.
            Mode::Eval => 0.0,
        };
        ops.push(Op::DropoutForward {
            spec: DropoutSpec { p, ..self.spec },
            step: self.step,
            x: io.x,
            y: io.y,
        });
    }

    fn backward(&self, io: &Io, ops: &mut Vec<Op>) {
        if let Some(dx) = io.dx {
            ops.push(Op::DropoutBackward {
                spec: self.spec,
                step: self.step,
                dy: io.dy,
                mask: io.mask,
                dx,
            });
        }
    }

    fn uses_step(&self) -> bool {
        true
    }
}
