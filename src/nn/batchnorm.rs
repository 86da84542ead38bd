//! Batch normalisation, `b` in an architecture, right after a convolution (per channel,
//! PyTorch's `nn.BatchNorm2d`) or a dense layer (per feature, `nn.BatchNorm1d`), with
//! PyTorch's defaults: momentum 0.1, ε 1e-5, affine γ (starting at 1) and β (at 0).
//!
//! In training the minibatch's statistics normalise (the biased variance) and the running
//! statistics move towards them (the unbiased variance); in evaluation the running statistics
//! normalise. The ReLU of the layer before moves after the normalisation: `c32k3p1-b` is
//! convolution → BatchNorm → ReLU. The convolution or dense layer before keeps its bias (which
//! the normalisation cancels: harmless, and its gradient is then 0 up to rounding).
//!
//! The padding rows of a last partial minibatch (labels ≥ the class count) are excluded from
//! the statistics and get no gradient. Parameters are γ as the layer's `weight` and β as its
//! `bias`; the running statistics ([`Running`]) live in `Model::running` and in model files
//! as `layers.{i}.running_mean|running_var|num_batches_tracked`.

use super::{Build, Grammar, Io, Layer, LayerKind, LayerSpec, Mode, Refusal, Shape};
use crate::ops::{BatchNormSpec, BufId, Op};
use crate::Result;
use ndarray::Array1;
use std::fmt;

/// A batch normalisation layer's running statistics, PyTorch's `running_mean`, `running_var`
/// and `num_batches_tracked` buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    /// Running mean \[C\] (PyTorch starts it at 0).
    pub mean: Array1<f32>,
    /// Running (unbiased) variance \[C\] (PyTorch starts it at 1).
    pub var: Array1<f32>,
    /// Training batches seen. PyTorch keeps an int64; it is stored as f32 here (and in model
    /// files), exact up to 2²⁴ batches, and PyTorch's `load_state_dict` converts it.
    pub batches: f32,
}

impl Running {
    /// PyTorch's starting statistics for `c` channels: mean 0, variance 1, no batches.
    pub fn fresh(c: usize) -> Self {
        Running {
            mean: Array1::zeros(c),
            var: Array1::ones(c),
            batches: 0.0,
        }
    }

    /// [mean C | var C | batches], the layout the engine keeps them in.
    pub fn words(&self) -> Vec<f32> {
        let mut v: Vec<f32> = self.mean.iter().chain(self.var.iter()).copied().collect();
        v.push(self.batches);
        v
    }

    /// From [`Running::words`]' layout (2C + 1 values).
    pub fn from_words(w: &[f32]) -> Self {
        let c = w.len() / 2;
        Running {
            mean: Array1::from(w[..c].to_vec()),
            var: Array1::from(w[c..2 * c].to_vec()),
            batches: w[2 * c],
        }
    }
}

/// PyTorch's default running-statistics momentum.
pub const MOMENTUM: f32 = 0.1;
/// PyTorch's default ε.
pub const EPS: f32 = 1e-5;

/// Batch normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchNorm;

impl Grammar for BatchNorm {
    const TOKEN: &'static str = "b";
    const MEANING: &'static str =
        "batch normalisation after a convolution (per channel) or a dense layer (per feature); the ReLU moves after it";
    const EXAMPLE: &'static str = "b";
    fn parse(tok: &str) -> Option<Self> {
        (tok == "b").then_some(BatchNorm)
    }
}

impl fmt::Display for BatchNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("b")
    }
}

/// Channels normalised: an image's C, or a flat input's features.
fn channels(input: Shape) -> usize {
    match input {
        Shape::Image { c, .. } => c,
        Shape::Flat(n) => n,
    }
}

impl LayerKind for BatchNorm {
    fn output(&self, input: Shape, _from: &str) -> std::result::Result<Shape, Refusal> {
        Ok(input)
    }

    fn check_prev(&self, prev: Option<&LayerSpec>) -> std::result::Result<(), Refusal> {
        match prev {
            Some(LayerSpec::Conv(_)) | Some(LayerSpec::Dense(_)) => Ok(()),
            Some(p) => Err(format!(
                "batch normalisation must follow a convolution or a dense layer, not `{p}`"
            )),
            None => Err(
                "batch normalisation must follow a convolution or a dense layer, not the input"
                    .into(),
            ),
        }
    }

    fn params(&self, input: Shape) -> Option<(Vec<usize>, usize)> {
        let c = channels(input);
        Some((vec![c], c))
    }

    fn running(&self, input: Shape) -> Option<usize> {
        Some(channels(input))
    }

    fn relu_after(&self) -> bool {
        false
    }

    fn takes_relu(&self) -> bool {
        true
    }

    fn build(&self, b: Build<'_>) -> Result<Box<dyn Layer>> {
        let (per_sample, c) = match b.input {
            Shape::Image { c, h, w } => (h * w, c),
            Shape::Flat(n) => (1, n),
        };
        let spec = BatchNormSpec {
            batch: b.batch,
            per_sample,
            c,
            classes: b.classes,
            momentum: MOMENTUM,
            eps: EPS,
            relu: b.relu,
        };
        let fresh;
        let running = match b.running {
            Some(r) => r,
            None => {
                fresh = Running::fresh(c);
                &fresh
            }
        };
        let be = b.be;
        let running = be.upload_f32("batchnorm running statistics", &running.words())?;
        let stats = be.alloc("batchnorm statistics", spec.stats_len())?;
        let coef = be.alloc("batchnorm gradient coefficients", spec.coef_len())?;
        Ok(Box::new(BatchNormLayer {
            spec,
            labels: b.labels,
            running,
            stats,
            coef,
        }))
    }
}

/// A batch normalisation layer over a batch, with its running statistics and scratch.
pub struct BatchNormLayer {
    spec: BatchNormSpec,
    labels: BufId,
    /// [mean C | var C | batches].
    running: BufId,
    /// [mean C | istd C | n] of the last forward pass.
    stats: BufId,
    /// [γ·istd | dβ/n | dγ/n] between the two backward ops.
    coef: BufId,
}

impl Layer for BatchNormLayer {
    fn param_lens(&self) -> Option<(usize, usize)> {
        Some((self.spec.c, self.spec.c))
    }

    fn relu(&self) -> bool {
        self.spec.relu
    }

    fn forward(&self, io: &Io, mode: Mode, ops: &mut Vec<Op>) {
        let p = io.p.expect("batchnorm parameters");
        ops.push(match mode {
            Mode::Train => Op::BatchNormStats {
                spec: self.spec,
                x: io.x,
                labels: self.labels,
                running: self.running,
                stats: self.stats,
            },
            Mode::Eval => Op::BatchNormEvalStats {
                spec: self.spec,
                running: self.running,
                stats: self.stats,
            },
        });
        ops.push(Op::BatchNormApply {
            spec: self.spec,
            x: io.x,
            stats: self.stats,
            w: p.w,
            b: p.b,
            y: io.y,
        });
    }

    fn backward(&self, io: &Io, ops: &mut Vec<Op>) {
        let p = io.p.expect("batchnorm parameters");
        ops.push(Op::BatchNormBackward {
            spec: self.spec,
            x: io.x,
            labels: self.labels,
            stats: self.stats,
            w: p.w,
            dy: io.dy,
            dw: p.dw,
            db: p.db,
            coef: self.coef,
        });
        if let Some(dx) = io.dx {
            ops.push(Op::BatchNormInputGrad {
                spec: self.spec,
                x: io.x,
                labels: self.labels,
                stats: self.stats,
                coef: self.coef,
                dy: io.dy,
                mask: io.mask,
                dx,
            });
        }
    }

    fn state(&self) -> Option<(BufId, usize)> {
        Some((self.running, self.spec.stats_len()))
    }
}
