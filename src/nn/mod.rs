//! Layers. Each layer type lives in one file here that declares everything about it above the
//! kernels: its token in an architecture string ([`Grammar`]), the shape it gives and the
//! inputs it refuses, its parameters' shapes, whether a ReLU follows it ([`LayerKind`]), and
//! its forward and backward programs as backend-neutral [`Op`]s ([`Layer`]); the training step
//! ([`crate::train::Engine`]) strings them together and a backend runs them (the GPU records
//! launches, the CPU runs the twins). `wgtrain verify` and `wgtrain bench` read the ops a
//! layer launches from the recorded programs, so neither lists layer shapes by hand.
//!
//! Activations are channels-last, x\[B,H,W,C\], so every convolution is one call of the tuned
//! matmul (see [`crate::ops::Conv2dSpec`]) and a flatten is a view. Model files keep PyTorch's
//! layouts; the one place where the two differ, the weights of the first dense layer after a
//! flatten (PyTorch flattens C,H,W), is converted by that layer when parameters enter or leave
//! the engine.
//!
//! Adding a layer type (README, "Adding a layer"): one file here implementing [`Grammar`],
//! [`LayerKind`] and [`Layer`], and one line in the `layer_types!` list below. A layer that
//! needs a new op family also brings the op's WGSL file in `shaders/`, its twin under the
//! same name in `cpu/` and its fast kernel in `fastcpu/`, the [`Op`] variants with one arm
//! per backend, and the op's reference check in `oracle/` (see `avgpool.rs`, which did).

use crate::backend::Backend;
use crate::ops::{BufId, Op};
use crate::Result;
use std::fmt;

pub mod avgpool;
pub mod batchnorm;
pub mod conv2d;
pub mod dense;
pub mod dropout;
pub mod global_pool;
pub mod maxpool;
pub mod residual;

/// Largest size accepted along any one dimension (a width, a channel count, a side, a kernel,
/// a stride, a padding).
pub const MAX_DIM: usize = 1 << 20;

/// The shape flowing out of a layer (or the input), for one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A vector of this many values (after a dense layer, or a flat input).
    Flat(usize),
    /// A feature map of `c` channels, `h` rows and `w` columns (stored channels-last, H×W×C).
    Image {
        /// Channels C.
        c: usize,
        /// Height H (rows).
        h: usize,
        /// Width W (columns).
        w: usize,
    },
}

impl Shape {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match *self {
            Shape::Flat(n) => n,
            Shape::Image { c, h, w } => c.saturating_mul(h).saturating_mul(w),
        }
    }

    /// Whether the shape holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Shape::Flat(n) => write!(f, "{n}"),
            Shape::Image { c, h, w } => write!(f, "{c}x{h}x{w}"),
        }
    }
}

/// Parse a run of ASCII digits as a count; `None` for anything else (sign, empty, overflow).
pub(crate) fn number(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A layer type's token in an architecture string: how to read it, and a line for the help
/// and for the error that names a token no type reads.
pub trait Grammar: Sized {
    /// The token's form, e.g. `a{k}`.
    const TOKEN: &'static str;
    /// What it means, e.g. `k×k average pooling with stride k`.
    const MEANING: &'static str;
    /// A token of this type, e.g. `a2`.
    const EXAMPLE: &'static str;
    /// The layer `tok` describes, or `None` when it is not this type's token (the
    /// [`Display`](fmt::Display) of the result gives the token back).
    fn parse(tok: &str) -> Option<Self>;
}

/// Why a layer cannot follow the shape before it: one line, shown after the layer's place
/// ("layer 3 `m4`: ").
pub type Refusal = String;

/// What a layer type declares about itself above the kernels.
pub trait LayerKind: fmt::Display + fmt::Debug {
    /// The shape out of the layer given the shape into it, or why it cannot take that input.
    /// `from` names where the input comes from ("the input", "layer 2 `120`") for the
    /// refusal. Must not panic on any input (checked arithmetic).
    fn output(&self, input: Shape, from: &str) -> std::result::Result<Shape, Refusal>;
    /// (weight shape in PyTorch's layout, bias length) for a layer with parameters, given
    /// its input shape.
    fn params(&self, _input: Shape) -> Option<(Vec<usize>, usize)> {
        None
    }
    /// Channels of running statistics the layer keeps beside its parameters (batch
    /// normalisation), given its input shape.
    fn running(&self, _input: Shape) -> Option<usize> {
        None
    }
    /// Whether a ReLU follows the layer when it is not the network's last.
    fn relu_after(&self) -> bool;
    /// Whether the layer takes over the ReLU of the layer before it (batch normalisation:
    /// convolution → BatchNorm → ReLU): the layer before then has none, and this one applies
    /// it where the one before would have.
    fn takes_relu(&self) -> bool {
        false
    }
    /// Why the layer cannot follow `prev` (`None`: it would be the first layer), if it cannot.
    fn check_prev(&self, _prev: Option<&LayerSpec>) -> std::result::Result<(), Refusal> {
        Ok(())
    }
    /// The engine layer `b` describes (its shapes, minibatch rows, ReLU, the backend to
    /// allocate its buffers in, ...).
    fn build(&self, b: Build<'_>) -> Result<Box<dyn Layer>>;
}

/// Whether a program trains or evaluates: dropout drops only in [`Mode::Train`], batch
/// normalisation uses the minibatch's statistics (and updates its running ones) in
/// [`Mode::Train`] and its running statistics in [`Mode::Eval`]. The training step and
/// [`crate::train::Engine::gradients`] record `Train`; evaluation passes and prediction record
/// `Eval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A training step.
    Train,
    /// Evaluation or prediction.
    Eval,
}

/// What the engine gives a layer type to build its engine layer from: one struct, so an input
/// added later does not touch every layer.
pub struct Build<'a> {
    /// The shape into the layer, one sample.
    pub input: Shape,
    /// The shape out of the layer, one sample.
    pub output: Shape,
    /// Rows of the minibatch this engine runs (a data-parallel rank's share).
    pub batch: usize,
    /// Whether the layer's output goes through a ReLU.
    pub relu: bool,
    /// The backend to allocate scratch and state buffers in.
    pub be: &'a mut dyn Backend,
    /// The layer's place in the architecture (0 = the first layer after the input).
    pub index: usize,
    /// The run's seed (dropout masks).
    pub seed: u64,
    /// The global minibatch row of this engine's row 0 (0 in one process; a data-parallel
    /// rank's first row otherwise), so per-row randomness is the same however rows are split.
    pub row0: usize,
    /// The engine's u32 training-step counter: advanced once per training step, set by
    /// [`crate::train::Engine::set_step`].
    pub step: BufId,
    /// The minibatch's u32 labels \[B\]; a label ≥ `classes` marks a padding row.
    pub labels: BufId,
    /// Classes of the network (labels at or above are padding rows).
    pub classes: usize,
    /// The layer's running statistics (batch normalisation) as the model holds them.
    pub running: Option<&'a batchnorm::Running>,
}

/// The channels, height and width of an image input, or the refusal of a layer (`what`, e.g.
/// "pooling") that needs one.
pub(crate) fn image_input(
    input: Shape,
    what: &str,
    from: &str,
) -> std::result::Result<(usize, usize, usize), Refusal> {
    match input {
        Shape::Image { c, h, w } => Ok((c, h, w)),
        Shape::Flat(_) => Err(format!(
            "{what} needs an image, but {from} gives a flat {input} (use an image input like 1x28x28, and no dense layer before {what})"
        )),
    }
}

/// Declares [`LayerSpec`] with one variant per layer type, its dispatch to the type's
/// [`LayerKind`], and the token parser over every type's [`Grammar`]. Written as a macro so
/// that a new layer type is one line in the list below.
macro_rules! layer_types {
    ($($(#[$doc:meta])* $variant:ident($ty:ty),)*) => {
        /// One layer of an [`Arch`](crate::model::Arch), one variant per layer type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum LayerSpec {
            $($(#[$doc])* $variant($ty),)*
        }

        impl LayerSpec {
            /// What the layer's type declares (its file in this module).
            pub fn kind(&self) -> &dyn LayerKind {
                match self {
                    $(LayerSpec::$variant(l) => l,)*
                }
            }

            /// The layer a token names, trying every type's [`Grammar`] in turn.
            pub fn parse(tok: &str) -> Option<LayerSpec> {
                $(if let Some(l) = <$ty as Grammar>::parse(tok) {
                    return Some(LayerSpec::$variant(l));
                })*
                None
            }

            /// Every layer type's (token form, meaning, example), for help texts and errors.
            pub const GRAMMAR: &'static [(&'static str, &'static str, &'static str)] = &[
                $((<$ty as Grammar>::TOKEN, <$ty as Grammar>::MEANING, <$ty as Grammar>::EXAMPLE),)*
            ];
        }

        $(impl From<$ty> for LayerSpec {
            fn from(l: $ty) -> Self {
                LayerSpec::$variant(l)
            }
        })*
    };
}

layer_types! {
    /// A dense layer, `512`.
    Dense(dense::Dense),
    /// A 2-D convolution, `c32k5p2`.
    Conv(conv2d::Conv),
    /// Max pooling, `m2`.
    MaxPool(maxpool::MaxPool),
    /// Average pooling, `a2`.
    AvgPool(avgpool::AvgPool),
    /// Global average pooling, `g`.
    GlobalAvgPool(global_pool::GlobalAvgPool),
    /// Dropout, `d0.25`.
    Dropout(dropout::Dropout),
    /// Batch normalisation, `b`.
    BatchNorm(batchnorm::BatchNorm),
    /// The join of a residual block, `r(...)` (see [`residual`]).
    Residual(residual::Residual),
}

impl LayerSpec {
    /// Whether the layer has a weight and a bias.
    pub fn has_params(&self) -> bool {
        // Any input gives the answer: whether a type has parameters does not depend on it.
        self.kind().params(Shape::Flat(1)).is_some()
    }

    /// One line per layer type, `form  meaning (e.g. example)`, for help texts.
    pub fn grammar_help() -> String {
        Self::GRAMMAR
            .iter()
            .map(|(form, meaning, example)| format!("`{form}` {meaning} (e.g. `{example}`)"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.kind(), f)
    }
}

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
    /// A residual join's second input (None for every other layer).
    pub skip: Option<Skip>,
}

/// The second input of a residual join: the skip path's activation, where its gradient goes,
/// and the ReLU mask of that activation (as `x`, `dx` and `mask` of [`Io`]).
#[derive(Clone, Copy, Debug)]
pub struct Skip {
    /// The skip path's activations [B, out].
    pub x: BufId,
    /// Where to write its gradient; None when it is the network's input.
    pub dx: Option<BufId>,
    /// The skip activation itself when it ends in a ReLU, to mask `dx` with.
    pub mask: Option<BufId>,
}
/// One layer of a network.
pub trait Layer {
    /// (weight, bias) element counts, for layers with parameters.
    fn param_lens(&self) -> Option<(usize, usize)>;
    /// Whether the output goes through a ReLU.
    fn relu(&self) -> bool;
    /// Append the forward pass: y from x, training or evaluating.
    fn forward(&self, io: &Io, mode: Mode, ops: &mut Vec<Op>);
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
    /// The layer's state buffer that is not a parameter (batch normalisation's running
    /// statistics) and its length in words, read back into the model.
    fn state(&self) -> Option<(BufId, usize)> {
        None
    }
    /// Whether the layer's ops read the training-step counter (the engine then advances it
    /// once per step).
    fn uses_step(&self) -> bool {
        false
    }
}

/// For each layer of `layers`, whether its output goes through a ReLU: after every layer whose
/// type says so ([`LayerKind::relu_after`]) except the last, moved to the next layer when that
/// one takes it over ([`LayerKind::takes_relu`]), and never on the two outputs a residual
/// join adds (its main path's last layer, its projection's): the join applies the block's.
pub fn relu_flags(layers: &[LayerSpec]) -> Vec<bool> {
    let mut flags = chain_relu_flags(layers);
    if let Ok(wires) = residual::wiring(layers) {
        for (l, w) in wires.iter().enumerate() {
            if w.skip.is_none() {
                continue;
            }
            // The main path's last layer; a projection's batch normalisation is the layer
            // just before the join (an identity skip keeps the block input's ReLU).
            let projected = w.skip == Some(l);
            for act in [Some(w.input), projected.then_some(l)]
                .into_iter()
                .flatten()
            {
                if act > 0 {
                    flags[act - 1] = false;
                }
            }
        }
    }
    flags
}

/// [`relu_flags`] of a chain of layers, each reading the one before.
fn chain_relu_flags(layers: &[LayerSpec]) -> Vec<bool> {
    let n = layers.len();
    (0..n)
        .map(|l| {
            let kind = layers[l].kind();
            let own = if kind.takes_relu() {
                l > 0 && layers[l - 1].kind().relu_after()
            } else {
                kind.relu_after() && !layers.get(l + 1).is_some_and(|s| s.kind().takes_relu())
            };
            own && l + 1 < n
        })
        .collect()
}

/// Build the engine layer for `spec` (see [`Build`]).
pub fn build(spec: &LayerSpec, b: Build<'_>) -> Result<Box<dyn Layer>> {
    spec.kind().build(b)
}
