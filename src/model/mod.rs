//! Networks as a sequence of layers: architecture, shapes, parameters, initialisation and file
//! I/O.
//!
//! An [`Arch`] is an input ([`Input`]) followed by layers ([`LayerSpec`]): convolutions, max
//! pooling and dense layers, with ReLU after every convolution and every dense layer except the
//! last, whose outputs feed softmax + cross-entropy. Parameters use PyTorch's layouts: a dense
//! layer's `weight` is `[O, I]` (`nn.Linear`), a convolution's `[O, C, K, K]` (`nn.Conv2d`), a
//! bias is `\[O\]`, so a saved file loads in PyTorch unchanged.

use crate::error::Setting;
use crate::nn::number;
use crate::{Error, Result};
use ndarray::{Array1, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use std::fmt;

pub mod io;
mod preset;

pub use preset::Preset;

pub use crate::nn::batchnorm::Running;
pub use crate::nn::{LayerSpec, Shape, MAX_DIM};

/// Largest number of elements of one sample's activations after any layer (or of the input).
pub const MAX_ELEMENTS: usize = 1 << 28;

/// Largest number of parameters of a whole network (keeps every count inside `usize`).
pub const MAX_PARAMS: u128 = 1 << 42;

/// The network's input, one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// A flat vector of this many values, e.g. `784`.
    Flat(usize),
    /// An image of `c` channels, `h` rows and `w` columns, e.g. `1x28x28`.
    Image {
        /// Channels C.
        c: usize,
        /// Height H (rows).
        h: usize,
        /// Width W (columns).
        w: usize,
    },
}

impl From<Input> for Shape {
    fn from(i: Input) -> Self {
        match i {
            Input::Flat(n) => Shape::Flat(n),
            Input::Image { c, h, w } => Shape::Image { c, h, w },
        }
    }
}

impl From<Input> for crate::ops::SampleShape {
    fn from(i: Input) -> Self {
        match i {
            Input::Flat(n) => Self::Flat(n),
            Input::Image { c, h, w } => Self::Image { c, h, w },
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Shape::from(*self).fmt(f)
    }
}

/// A network: its input and its layers, input first. The canonical text form (its
/// [`Display`](fmt::Display), accepted by [`Arch::parse`]) is dash-separated, e.g.
/// `1x28x28-c6k5p2-m2-c16k5-m2-120-84-10` or `784-512-10`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arch {
    /// What one sample is.
    pub input: Input,
    /// The layers, input side first; the last one's outputs are the class scores.
    pub layers: Vec<LayerSpec>,
}

impl fmt::Display for Arch {
    /// The text form [`Arch::parse`] reads back: a residual block as `r(...)` around its
    /// main path, without its projection (which the parse adds again).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.input)?;
        let Ok(wires) = crate::nn::residual::wiring(&self.layers) else {
            // Not a possible network: each layer as it is.
            for l in &self.layers {
                write!(f, "-{l}")?;
            }
            return Ok(());
        };
        for (l, w) in self.layers.iter().zip(&wires) {
            match l {
                LayerSpec::Residual(_) => f.write_str(")")?,
                _ if w.projection => {}
                _ if w.opens => write!(f, "-r({l}")?,
                _ => write!(f, "-{l}")?,
            }
        }
        Ok(())
    }
}

impl Arch {
    /// Parse an architecture: a dash-separated list of layers, input first.
    ///
    /// - input: `784` (flat) or `1x28x28` (C×H×W);
    /// - `c{out}k{k}`: a convolution, optionally followed by `s{stride}` and `p{pad}` in any
    ///   order (defaults 1 and 0), e.g. `c32k5p2`, `c8k3s2p1`;
    /// - `m{k}`: k×k max pooling with stride k;
    /// - a plain number: a dense layer of that width.
    ///
    /// Pure width lists may also use `,` or `x` as separators (`784,512,10`, `784x10`); a first
    /// token with two `x`s followed by more layers (`1x28x28-...`) is an image input, and a
    /// string without `-` or `,` is always a width list. The result is checked with
    /// [`Arch::shapes`], so a parsed architecture is always a possible network. Errors are
    /// [`Error::InvalidSetting`] for [`Setting::Arch`] naming the bad token, or
    /// [`Error::Network`] naming the impossible layer; one line each.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::setting(Setting::Arch, reason);
        let tokens: Vec<&str> = s.split(['-', ',']).map(str::trim).collect();
        let image = tokens.len() > 1 && tokens[0].matches('x').count() == 2;
        let (input, layer_tokens): (Input, Vec<&str>) = if image {
            let dims: Option<Vec<usize>> = tokens[0].split('x').map(|d| number(d.trim())).collect();
            let Some(&[c, h, w]) = dims.as_deref() else {
                return Err(bad(format!(
                    "input `{}` in `{s}` is not an image size CxHxW like 1x28x28",
                    tokens[0]
                )));
            };
            (Input::Image { c, h, w }, tokens[1..].to_vec())
        } else {
            let all: Vec<&str> = s.split(['-', ',', 'x']).map(str::trim).collect();
            let Some(n) = number(all[0]) else {
                return Err(bad(format!(
                    "input `{}` in `{s}` is not an input size like 784 or 1x28x28",
                    all[0]
                )));
            };
            (Input::Flat(n), all[1..].to_vec())
        };
        let mut arch = Arch {
            input,
            layers: Vec::with_capacity(layer_tokens.len()),
        };
        // Where the open residual block's main path starts, while one is open.
        let mut open: Option<usize> = None;
        for &t in &layer_tokens {
            let mut tok = t;
            if let Some(rest) = tok.strip_prefix("r(") {
                if open.is_some() {
                    return Err(bad(format!(
                        "`{t}` in `{s}` opens a residual block inside another: blocks do not nest"
                    )));
                }
                open = Some(arch.layers.len());
                tok = rest;
            }
            let closes = tok.ends_with(')');
            if closes {
                tok = &tok[..tok.len() - 1];
                if open.is_none() {
                    return Err(bad(format!(
                        "`{t}` in `{s}` closes a residual block that was not opened with `r(`"
                    )));
                }
            }
            if tok.contains(['(', ')']) {
                return Err(bad(format!(
                    "`{t}` in `{s}` has unbalanced or nested parentheses: a residual block is `r(` layers `)`, e.g. r(c16k3p1-b-c16k3p1-b)"
                )));
            }
            if tok.is_empty() && closes && open == Some(arch.layers.len()) {
                return Err(bad(format!(
                    "`{t}` in `{s}` is an empty residual block: it needs at least one layer"
                )));
            }
            let layer = LayerSpec::parse(tok).ok_or_else(|| {
                let examples: Vec<&str> = LayerSpec::GRAMMAR.iter().map(|g| g.2).collect();
                bad(format!(
                    "`{tok}` in `{s}` is not a layer: expected one like {}",
                    examples.join(", ")
                ))
            })?;
            arch.layers.push(layer);
            if closes {
                let start = open.take().expect("checked above");
                arch.close_block(start, s)?;
            }
        }
        if open.is_some() {
            return Err(bad(format!(
                "`{s}` opens a residual block with `r(` that no `)` closes"
            )));
        }
        arch.shapes()?;
        Ok(arch)
    }

    /// End the residual block whose main path is `self.layers[start..]`: its projection when
    /// the main path changes the shape (a 1×1 convolution with the stride that maps the
    /// block's input size to its output size, and a batch normalisation), then the join.
    fn close_block(&mut self, start: usize, text: &str) -> Result<()> {
        let main = self.layers.len() - start;
        // Errors name the whole text, not the part read so far.
        let shapes = self.shapes_checked(false).map_err(|e| match e {
            Error::Network { reason, .. } => Error::Network {
                arch: text.into(),
                reason,
            },
            e => e,
        })?;
        let (input, out) = (shapes[start], shapes[shapes.len() - 1]);
        let at = self.layers.len() + 1;
        let refuse = |reason: String| Error::Network {
            arch: text.into(),
            reason: format!("residual block ending at layer {}: {reason}", at - 1),
        };
        let project = input != out;
        if project {
            let (Shape::Image { h, w, .. }, Shape::Image { c, h: oh, w: ow }) = (input, out) else {
                return Err(refuse(format!(
                    "its output {out} differs from its input {input}, and only an image block can be projected (by a 1×1 convolution)"
                )));
            };
            // The stride s with ⌊(h − 1)/s⌋ + 1 = oh and the same across, if one exists.
            let stride = (1..=h.max(w)).find(|&s| (h - 1) / s + 1 == oh && (w - 1) / s + 1 == ow);
            let Some(stride) = stride else {
                return Err(refuse(format!(
                    "its output {out} cannot be reached from its input {input} by a strided 1×1 convolution"
                )));
            };
            self.layers.push(
                crate::nn::conv2d::Conv {
                    out: c,
                    k: 1,
                    stride,
                    pad: 0,
                }
                .into(),
            );
            self.layers.push(crate::nn::batchnorm::BatchNorm.into());
        }
        self.layers
            .push(crate::nn::residual::Residual { main, project }.into());
        Ok(())
    }

    /// The architecture string a preset name stands for (see [`Preset`]).
    pub fn preset(name: &str) -> Option<&'static str> {
        Preset::from_name(name).map(Preset::arch_str)
    }

    /// The input shape, then the shape out of each layer. Refuses an impossible network with
    /// one [`Error::Network`] line naming the layer (its index in the dash list, the input being
    /// 0, and its token) and the shapes involved: a kernel larger than its padded input, pooling
    /// to zero, a convolution or pooling on a flat input (the input, or after a dense layer), a
    /// last layer that is not dense, zero sizes, and sizes over [`MAX_DIM`] per dimension,
    /// [`MAX_ELEMENTS`] per sample or [`MAX_PARAMS`] in all.
    pub fn shapes(&self) -> Result<Vec<Shape>> {
        self.shapes_checked(true)
    }

    /// [`Arch::shapes`]; `complete` false skips the checks of a whole network (a dense last
    /// layer), for the part of an architecture read so far.
    fn shapes_checked(&self, complete: bool) -> Result<Vec<Shape>> {
        let fail = |at: usize, what: &dyn fmt::Display, reason: String| {
            let place = if at == 0 {
                format!("input `{what}`")
            } else {
                format!("layer {at} `{what}`")
            };
            Error::Network {
                arch: self.to_string(),
                reason: format!("{place}: {reason}"),
            }
        };
        let within = |at: usize, what: &dyn fmt::Display, shape: Shape| -> Result<()> {
            let dims: Vec<usize> = match shape {
                Shape::Flat(n) => vec![n],
                Shape::Image { c, h, w } => vec![c, h, w],
            };
            if dims.contains(&0) {
                return Err(fail(at, what, format!("gives an empty output ({shape})")));
            }
            if dims.iter().any(|&d| d > MAX_DIM) {
                return Err(fail(
                    at,
                    what,
                    format!("output {shape} has a dimension over {MAX_DIM}"),
                ));
            }
            let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if n.is_none_or(|n| n > MAX_ELEMENTS) {
                return Err(fail(
                    at,
                    what,
                    format!("output {shape} has over {MAX_ELEMENTS} elements per sample"),
                ));
            }
            Ok(())
        };

        let input = Shape::from(self.input);
        if input.is_empty() {
            return Err(fail(0, &self.input, "sizes must be at least 1".into()));
        }
        within(0, &self.input, input)?;
        let Some(last) = self.layers.last() else {
            return Err(Error::Network {
                arch: self.to_string(),
                reason: "no layers: it needs at least an input and an output width, e.g. 784-10"
                    .into(),
            });
        };
        let wires = crate::nn::residual::wiring(&self.layers)
            .map_err(|(i, reason)| fail(i + 1, &self.layers[i], reason))?;
        let mut shapes = vec![input];
        let mut params: u128 = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            let at = i + 1;
            let from = wires[i].input;
            let prev = shapes[from];
            let after = if from == 0 {
                "the input".to_string()
            } else {
                format!("layer {from} `{}`", self.layers[from - 1])
            };
            let kind = layer.kind();
            kind.check_prev(from.checked_sub(1).map(|j| &self.layers[j]))
                .map_err(|reason| fail(at, layer, reason))?;
            let out = kind
                .output(prev, &after)
                .map_err(|reason| fail(at, layer, reason))?;
            if let Some(skip) = wires[i].skip {
                if shapes[skip] != out {
                    return Err(fail(
                        at,
                        layer,
                        format!(
                            "the block's output {out} differs from its skip path's {}",
                            shapes[skip]
                        ),
                    ));
                }
            }
            if let Some((w, b)) = kind.params(prev) {
                let w = w.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
                params = params.saturating_add(w.saturating_add(b as u128));
            }
            if params > MAX_PARAMS {
                return Err(fail(
                    at,
                    layer,
                    format!("brings the network over {MAX_PARAMS} parameters"),
                ));
            }
            within(at, layer, out)?;
            shapes.push(out);
        }
        if complete && !matches!(last, LayerSpec::Dense(_)) {
            return Err(fail(
                self.layers.len(),
                last,
                "the last layer must be dense, one output per class (e.g. ...-10)".into(),
            ));
        }
        Ok(shapes)
    }

    /// The shapes without checks (saturating; meaningful only for a valid architecture).
    fn shapes_unchecked(&self) -> Vec<Shape> {
        let mut shapes = vec![Shape::from(self.input)];
        for (l, spec) in self.layers.iter().enumerate() {
            let prev = shapes[self.input_of(l)];
            // Some answer for any architecture, never a panic: a refused layer gives nothing.
            let from = "the layer before";
            shapes.push(spec.kind().output(prev, from).unwrap_or(Shape::Flat(0)));
        }
        shapes
    }

    /// The activation layer `l` reads, numbered as [`Arch::shapes`] (0: the input; `j + 1`:
    /// layer `j`'s output): the layer before, except inside residual blocks (see
    /// [`crate::nn::residual::wiring`]; an impossible list reads as a chain).
    pub fn input_of(&self, l: usize) -> usize {
        crate::nn::residual::wiring(&self.layers).map_or(l, |w| w[l].input)
    }

    /// The shape into each layer, one sample (unchecked, as [`Arch::param_shapes`]).
    pub fn input_shapes(&self) -> Vec<Shape> {
        let shapes = self.shapes_unchecked();
        let wires = crate::nn::residual::wiring(&self.layers);
        (0..self.layers.len())
            .map(|l| shapes[wires.as_ref().map_or(l, |w| w[l].input)])
            .collect()
    }

    /// Elements of one input sample.
    pub fn input_len(&self) -> usize {
        Shape::from(self.input).len()
    }

    /// Number of classes: the width of the last dense layer.
    pub fn classes(&self) -> usize {
        self.layers
            .iter()
            .rev()
            .find_map(|l| match *l {
                LayerSpec::Dense(d) => Some(d.out),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Total number of parameters (weights and biases).
    pub fn n_params(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|(w, b)| {
                w.iter()
                    .fold(1usize, |a, &d| a.saturating_mul(d))
                    .saturating_add(*b)
            })
            .fold(0usize, usize::saturating_add)
    }

    /// For each layer with parameters, in order: the weight's shape (`[O, I]` dense, `[O, C, K,
    /// K]` convolution; PyTorch layouts; a dense layer after an image has I = C·H·W) and the
    /// bias length O.
    pub fn param_shapes(&self) -> Vec<(Vec<usize>, usize)> {
        let shapes = self.input_shapes();
        self.layers
            .iter()
            .zip(&shapes)
            .filter_map(|(l, prev)| l.kind().params(*prev))
            .collect()
    }

    /// Beside each entry of [`Arch::param_shapes`]: the channels of a batch normalisation
    /// layer (whose running statistics a model keeps), `None` for the other layers.
    pub fn running_channels(&self) -> Vec<Option<usize>> {
        let shapes = self.input_shapes();
        self.layers
            .iter()
            .zip(&shapes)
            .filter(|(l, prev)| l.kind().params(**prev).is_some())
            .map(|(l, prev)| l.kind().running(*prev))
            .collect()
    }

    /// Whether this is a multilayer perceptron: flat input and only dense layers.
    pub fn is_mlp(&self) -> bool {
        matches!(self.input, Input::Flat(_))
            && self.layers.iter().all(|l| matches!(l, LayerSpec::Dense(_)))
    }

    /// The MLP with these widths, input first (no checks).
    pub(crate) fn mlp(sizes: &[usize]) -> Arch {
        Arch {
            input: Input::Flat(sizes[0]),
            layers: sizes[1..]
                .iter()
                .map(|&out| LayerSpec::Dense(crate::nn::dense::Dense { out }))
                .collect(),
        }
    }
}

/// The weight and bias of one layer, in PyTorch layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// `[O, I]` for a dense layer, `[O, C, K, K]` for a convolution, `[C]` for a batch
    /// normalisation (γ).
    pub weight: ArrayD<f32>,
    /// `\[O\]` (β of a batch normalisation)
    pub bias: Array1<f32>,
}

impl Param {
    /// A weight of `shape` filled with `w` and a bias of its first dimension filled with `b`.
    pub fn constant(shape: &[usize], w: f32, b: f32) -> Self {
        Param {
            weight: ArrayD::from_elem(IxDyn(shape), w),
            bias: Array1::from_elem(shape.first().copied().unwrap_or(0), b),
        }
    }
}

/// A network and its parameters: one [`Param`] per parametrised layer of `arch`, in order,
/// and for each of those that is a batch normalisation its running statistics. Build one with
/// [`Model::new`] (fresh statistics) or [`Model::with_running`].
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The network.
    pub arch: Arch,
    /// Weight and bias of each layer with parameters (not pooling), input side first.
    pub params: Vec<Param>,
    /// Beside each entry of `params`: the running statistics of a batch normalisation layer,
    /// `None` for the other layers.
    pub running: Vec<Option<Running>>,
}

/// Check that a tensor holds only finite values; the error names it and the first bad element.
pub(crate) fn check_finite_tensor(
    name: &str,
    shape: &[usize],
    data: impl IntoIterator<Item = f32>,
) -> std::result::Result<(), String> {
    let mut first = None;
    let mut count = 0usize;
    for (i, v) in data.into_iter().enumerate() {
        if !v.is_finite() {
            count += 1;
            first.get_or_insert((i, v));
        }
    }
    let Some((flat, v)) = first else {
        return Ok(());
    };
    // Row-major multi-index of the first bad element.
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (slot, &d) in index.iter_mut().zip(shape).rev() {
        if d > 0 {
            *slot = rest % d;
            rest /= d;
        }
    }
    let more = if count > 1 {
        format!(" ({count} non-finite values)")
    } else {
        String::new()
    };
    Err(format!("tensor `{name}` holds {v} at {index:?}{more}"))
}

/// Check every tensor of `params`, named `{prefix}.{i}.weight|bias`.
pub(crate) fn check_finite_params(
    prefix: &str,
    params: &[Param],
) -> std::result::Result<(), String> {
    for (i, p) in params.iter().enumerate() {
        check_finite_tensor(
            &format!("{prefix}.{i}.weight"),
            p.weight.shape(),
            p.weight.iter().copied(),
        )?;
        check_finite_tensor(
            &format!("{prefix}.{i}.bias"),
            p.bias.shape(),
            p.bias.iter().copied(),
        )?;
    }
    Ok(())
}

impl Model {
    /// `arch` with `params`, and fresh running statistics ([`Running::fresh`]) for its batch
    /// normalisation layers.
    pub fn new(arch: Arch, params: Vec<Param>) -> Self {
        let running = arch
            .running_channels()
            .into_iter()
            .map(|c| c.map(Running::fresh))
            .collect();
        Model {
            arch,
            params,
            running,
        }
    }

    /// `arch` with `params` and the running statistics beside them (see [`Model::running`]).
    pub fn with_running(arch: Arch, params: Vec<Param>, running: Vec<Option<Running>>) -> Self {
        Model {
            arch,
            params,
            running,
        }
    }

    /// Weights uniform in [-scale, scale], biases 0 (the lecture's initialisation), drawn from a
    /// ChaCha8 stream seeded with `seed`, layer by layer in row-major order, so every platform
    /// gets the same network (and MLPs the same as earlier versions did).
    pub fn init_uniform(arch: &Arch, scale: f32, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let params = arch
            .param_shapes()
            .into_iter()
            .zip(arch.running_channels())
            .map(|((shape, o), bn)| match bn {
                // Batch normalisation starts as PyTorch's: γ = 1, β = 0 (no draws).
                Some(_) => Param::constant(&shape, 1.0, 0.0),
                None => Param {
                    weight: ArrayD::from_shape_simple_fn(IxDyn(&shape), || {
                        rng.random_range(-scale..=scale)
                    }),
                    bias: Array1::zeros(o),
                },
            })
            .collect();
        Model::new(arch.clone(), params)
    }

    /// PyTorch's default initialisation of `nn.Linear` and `nn.Conv2d`: weight and bias uniform
    /// in [-1/√fan_in, 1/√fan_in) with fan_in = I (dense) or C·K·K (convolution), drawn from a
    /// ChaCha8 stream seeded with `seed`, each layer's weight (row-major) then its bias.
    pub fn init_pytorch(arch: &Arch, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let params = arch
            .param_shapes()
            .into_iter()
            .zip(arch.running_channels())
            .map(|((shape, o), bn)| {
                if bn.is_some() {
                    // PyTorch's BatchNorm: γ = 1, β = 0 (no draws).
                    return Param::constant(&shape, 1.0, 0.0);
                }
                let fan_in: usize = shape[1..].iter().product();
                let bound = (1.0 / (fan_in.max(1) as f64).sqrt()) as f32;
                let weight =
                    ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.random_range(-bound..bound));
                let bias = Array1::from_shape_simple_fn(o, || rng.random_range(-bound..bound));
                Param { weight, bias }
            })
            .collect();
        Model::new(arch.clone(), params)
    }

    /// Refuse NaN and infinities: the error ([`Error::BadModel`] with `what` in place of the
    /// path) names the tensor (`layers.2.weight`) and the first bad element.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        check_finite_params("layers", &self.params).map_err(|r| Error::bad_model(what, r))?;
        for (i, r) in self.running.iter().enumerate() {
            let Some(r) = r else { continue };
            for (kind, t) in [("running_mean", &r.mean), ("running_var", &r.var)] {
                check_finite_tensor(&format!("layers.{i}.{kind}"), t.shape(), t.iter().copied())
                    .map_err(|e| Error::bad_model(what, e))?;
            }
            check_finite_tensor(&format!("layers.{i}.num_batches_tracked"), &[], [r.batches])
                .map_err(|e| Error::bad_model(what, e))?;
        }
        Ok(())
    }

    /// Check that the parameters (and running statistics) have exactly the shapes `self.arch`
    /// calls for, and that the architecture is possible ([`Error::Weights`] or
    /// [`Error::Network`] otherwise).
    pub fn check_shapes(&self) -> Result<()> {
        check_param_shapes("model", "layers", &self.arch, &self.params)?;
        let want = self.arch.running_channels();
        let bad = |reason: String| Error::Weights {
            what: "model".into(),
            arch: self.arch.to_string(),
            reason,
        };
        if self.running.len() != want.len() {
            return Err(bad(format!(
                "it has running statistics for {} parametrised layers but arch {} has {}",
                self.running.len(),
                self.arch,
                want.len()
            )));
        }
        for (i, (r, c)) in self.running.iter().zip(&want).enumerate() {
            match (r, c) {
                (None, None) => {}
                (Some(r), Some(c)) if r.mean.len() == *c && r.var.len() == *c => {}
                (Some(_), Some(c)) => {
                    return Err(bad(format!(
                        "running statistics of `layers.{i}` are not [{c}]"
                    )))
                }
                (None, Some(_)) => {
                    return Err(bad(format!(
                        "missing running statistics of `layers.{i}` (a batch normalisation)"
                    )))
                }
                (Some(_), None) => {
                    return Err(bad(format!(
                        "`layers.{i}` has running statistics but is not a batch normalisation"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Check that `params` (named `{prefix}.{i}.*` in messages) have the shapes `arch` calls for.
pub(crate) fn check_param_shapes(
    what: &str,
    prefix: &str,
    arch: &Arch,
    params: &[Param],
) -> Result<()> {
    arch.shapes()?;
    let want = arch.param_shapes();
    let bad = |reason: String| Error::Weights {
        what: what.to_string(),
        arch: arch.to_string(),
        reason,
    };
    if params.len() != want.len() {
        return Err(bad(format!(
            "it has {} parametrised layers but arch {arch} has {}",
            params.len(),
            want.len()
        )));
    }
    for (i, (p, (w, o))) in params.iter().zip(&want).enumerate() {
        if p.weight.shape() != w.as_slice() {
            return Err(bad(format!(
                "tensor `{prefix}.{i}.weight` has shape {:?} but arch {arch} needs {w:?}",
                p.weight.shape()
            )));
        }
        if p.bias.len() != *o {
            return Err(bad(format!(
                "tensor `{prefix}.{i}.bias` has shape [{}] but arch {arch} needs [{o}]",
                p.bias.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::avgpool::AvgPool;
    use crate::nn::conv2d::Conv;
    use crate::nn::dense::Dense;
    use crate::nn::global_pool::GlobalAvgPool;

    fn shape_err(s: &str) -> String {
        let e = Arch::parse(s).expect_err(s).to_string();
        assert!(e.starts_with("invalid argument network: "), "{e}");
        let flag = e
            .match_indices("--")
            .any(|(i, _)| e[i + 2..].starts_with(|c: char| c.is_ascii_lowercase()));
        assert!(!flag, "the library names no flag: {e}");
        e
    }

    #[test]
    fn mlp_parses_and_prints() {
        let a = Arch::parse("784-512-10").unwrap();
        assert_eq!(a.input, Input::Flat(784));
        assert_eq!(
            a.layers,
            vec![Dense { out: 512 }.into(), Dense { out: 10 }.into()]
        );
        assert!(a.is_mlp());
        assert_eq!(a.to_string(), "784-512-10");
        assert_eq!(a.n_params(), 784 * 512 + 512 + 512 * 10 + 10);
        assert_eq!(a.input_len(), 784);
        assert_eq!(a.classes(), 10);
        for s in ["784,512,10", "784x512x10", "784 - 512 - 10", "784x512-10"] {
            assert_eq!(Arch::parse(s).unwrap(), a, "{s}");
        }
        // A lone CxHxW is no network, so it stays a width list as before.
        assert_eq!(Arch::parse("1x28x28").unwrap().to_string(), "1-28-28");
    }

    #[test]
    fn conv_nets_parse_print_and_shape() {
        let a = Arch::parse("1x28x28-c6k5p2-m2-c16k5-m2-120-84-10").unwrap();
        assert!(!a.is_mlp());
        assert_eq!(a.to_string(), "1x28x28-c6k5p2-m2-c16k5-m2-120-84-10");
        assert_eq!(a.input_len(), 784);
        assert_eq!(a.classes(), 10);
        let s: Vec<String> = a.shapes().unwrap().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            s,
            ["1x28x28", "6x28x28", "6x14x14", "16x10x10", "16x5x5", "120", "84", "10"]
        );
        assert_eq!(
            a.param_shapes(),
            vec![
                (vec![6, 1, 5, 5], 6),
                (vec![16, 6, 5, 5], 16),
                (vec![120, 400], 120),
                (vec![84, 120], 84),
                (vec![10, 84], 10),
            ]
        );
        assert_eq!(
            a.n_params(),
            61_706,
            "LeNet-5 with padding has 61,706 parameters"
        );

        let c = Arch::parse("3x9x9-c8k3s2p1-c4k2p1s3-m1-5").unwrap();
        assert_eq!(
            c.layers[0],
            LayerSpec::Conv(Conv {
                out: 8,
                k: 3,
                stride: 2,
                pad: 1
            })
        );
        assert_eq!(c.to_string(), "3x9x9-c8k3s2p1-c4k2s3p1-m1-5");
        assert_eq!(c.shapes().unwrap()[1], Shape::Image { c: 8, h: 5, w: 5 });
        assert_eq!(c.shapes().unwrap()[2], Shape::Image { c: 4, h: 2, w: 2 });
        // A convolution straight to the output.
        assert!(Arch::parse("1x4x4-c2k4-3").is_ok());
        assert!(Arch::parse("1x4x4-c2k4s1p0-3").unwrap().to_string() == "1x4x4-c2k4-3");
    }

    #[test]
    fn average_and_global_pooling_parse_print_and_shape() {
        let a = Arch::parse("3x9x7-c4k3p1-a2-c8k3p1-g-10").unwrap();
        assert_eq!(a.layers[1], AvgPool { k: 2 }.into());
        assert_eq!(a.layers[3], GlobalAvgPool.into());
        assert_eq!(a.to_string(), "3x9x7-c4k3p1-a2-c8k3p1-g-10");
        let s: Vec<String> = a.shapes().unwrap().iter().map(|s| s.to_string()).collect();
        assert_eq!(s, ["3x9x7", "4x9x7", "4x4x3", "8x4x3", "8", "10"]);
        // No parameters in either pooling; the dense layer after `g` reads C values.
        assert_eq!(
            a.param_shapes(),
            vec![
                (vec![4, 3, 3, 3], 4),
                (vec![8, 4, 3, 3], 8),
                (vec![10, 8], 10)
            ]
        );
        assert!(!a.layers[1].has_params() && !a.layers[3].has_params());
        assert!(a.layers[0].has_params());
        // Pooling is followed by no ReLU; convolutions and dense layers are.
        let relu: Vec<bool> = a.layers.iter().map(|l| l.kind().relu_after()).collect();
        assert_eq!(relu, [true, false, true, false, true]);
        for (arch, why) in [
            (
                "1x4x4-a5-2",
                "layer 1 `a5`: 5x5 pooling of its input 1x4x4 gives zero size",
            ),
            (
                "1x4x4-a0-2",
                "layer 1 `a0`: pooling size must be at least 1",
            ),
            (
                "1x4x4-8-g-2",
                "layer 2 `g`: global pooling needs an image, but layer 1 `8` gives a flat 8",
            ),
            (
                "1x4x4-g-c2k1-2",
                "layer 2 `c2k1`: a convolution needs an image, but layer 1 `g` gives a flat 1",
            ),
            ("1x4x4-c2k3-g", "layer 2 `g`: the last layer must be dense"),
        ] {
            let e = Arch::parse(arch).unwrap_err().to_string();
            assert!(e.contains(why), "{arch}: {e}");
        }
        for bad in ["1x4x4-a-2", "1x4x4-gg-2", "1x4x4-a2x-2", "1x4x4-g2-2"] {
            let e = Arch::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("is not a layer") && e.contains("a2, g"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn residual_blocks_parse_print_and_shape() {
        use crate::nn::batchnorm::BatchNorm;
        use crate::nn::residual::Residual;
        let text = "1x32x32-c16k3p1-b-r(c16k3p1-b-c16k3p1-b)-r(c32k3s2p1-b-c32k3p1-b)-g-10";
        let a = Arch::parse(text).unwrap();
        assert_eq!(a.to_string(), text);
        assert_eq!(Arch::parse(&a.to_string()).unwrap(), a);
        let conv = |out, k, stride, pad| {
            LayerSpec::from(Conv {
                out,
                k,
                stride,
                pad,
            })
        };
        let bn = LayerSpec::from(BatchNorm);
        // Flat: main path, projection (1×1 stride 2, BN), join.
        assert_eq!(
            a.layers,
            vec![
                conv(16, 3, 1, 1),
                bn,
                conv(16, 3, 1, 1),
                bn,
                conv(16, 3, 1, 1),
                bn,
                Residual {
                    main: 4,
                    project: false
                }
                .into(),
                conv(32, 3, 2, 1),
                bn,
                conv(32, 3, 1, 1),
                bn,
                conv(32, 1, 2, 0),
                bn,
                Residual {
                    main: 4,
                    project: true
                }
                .into(),
                GlobalAvgPool.into(),
                Dense { out: 10 }.into(),
            ]
        );
        let s = a.shapes().unwrap();
        assert_eq!(
            s[7],
            Shape::Image {
                c: 16,
                h: 32,
                w: 32
            }
        );
        assert_eq!(
            s[12],
            Shape::Image {
                c: 32,
                h: 16,
                w: 16
            },
            "the projection"
        );
        assert_eq!(
            s[14],
            Shape::Image {
                c: 32,
                h: 16,
                w: 16
            },
            "the join"
        );
        // Parameters in PyTorch's BasicBlock order: conv1, bn1, conv2, bn2, downsample.
        let p = a.param_shapes();
        assert_eq!(p[6], (vec![32, 16, 3, 3], 32));
        assert_eq!(
            p[10],
            (vec![32, 16, 1, 1], 32),
            "1×1 projection from the block input"
        );
        assert_eq!(p[11], (vec![32], 32));
        assert_eq!(p.len(), 13);
        // ReLUs: none on the join's two summands; the join has the block's.
        let relu = crate::nn::relu_flags(&a.layers);
        assert_eq!(
            relu,
            [
                false, true, false, true, false, false, true, false, true, false, false, false,
                false, true, false, false
            ]
        );
        // resnet8: 7 convolutions and a dense layer on the main path, 2 projections.
        let r8 = Arch::parse(Preset::Resnet8.arch_str()).unwrap();
        assert_eq!(r8.n_params(), 78_378);
        assert_eq!(r8.to_string(), Preset::Resnet8.arch_str());
        // Identity blocks on flat inputs, a one-layer block, a single-token block.
        for text in [
            "8-r(8-8)-3",
            "1x4x4-c2k3p1-r(c2k3p1)-r(c4k1)-m2-3",
            "8-r(8)-r(8-d0.5)-2",
        ] {
            let a = Arch::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(a.to_string(), text);
        }
    }

    #[test]
    fn bad_residual_blocks_are_refused_in_one_line() {
        for (text, want) in [
            ("1x4x4-r()-3", "empty residual block"),
            ("1x4x4-r(c2k1-r(c2k1))-3", "blocks do not nest"),
            ("1x4x4-c2k1)-3", "not opened"),
            ("1x4x4-r(c2k1-3", "no `)` closes"),
            ("1x4x4-r(c2k1))-3", "unbalanced or nested"),
            ("8-r(4)-3", "only an image block can be projected"),
            (
                "1x4x4-c2k1-r(c2k1p1)-3",
                "cannot be reached from its input 2x4x4",
            ),
            ("1x4x4-c2k1-r(b-c2k1)-3", "cannot start with `b`"),
            (
                "1x4x4-r(c2k1)-b-3",
                "must follow a convolution or a dense layer",
            ),
            ("1x4x4-r(c2k1)", "the last layer must be dense"),
        ] {
            let e = shape_err(text);
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'), "{text}: {e}");
        }
        // A hand-built list: a join whose summands differ, one that reaches before the input.
        use crate::nn::residual::Residual;
        let a = Arch {
            input: Input::Flat(4),
            layers: vec![
                Dense { out: 3 }.into(),
                Residual {
                    main: 1,
                    project: false,
                }
                .into(),
                Dense { out: 2 }.into(),
            ],
        };
        let e = a.shapes().unwrap_err().to_string();
        assert!(e.contains("differs from its skip path's 4"), "{e}");
        let a = Arch {
            input: Input::Flat(4),
            layers: vec![
                Residual {
                    main: 3,
                    project: false,
                }
                .into(),
                Dense { out: 2 }.into(),
            ],
        };
        assert!(a
            .shapes()
            .unwrap_err()
            .to_string()
            .contains("reach before the input"));
        let _ = (a.to_string(), a.param_shapes(), a.running_channels());
    }

    #[test]
    fn presets_parse_and_round_trip() {
        for name in ["seed-small", "seed-large", "lenet5", "cnn"] {
            let s = Arch::preset(name).unwrap();
            assert_eq!(Arch::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Arch::preset("resnet"), None);
        let cnn = Arch::parse(Arch::preset("cnn").unwrap()).unwrap();
        assert_eq!(cnn.param_shapes()[2], (vec![1024, 64 * 7 * 7], 1024));
    }

    #[test]
    fn syntax_errors_name_the_token() {
        for (s, tok) in [
            ("784", "no layers"),
            ("784-abc", "`abc`"),
            ("784--10", "``"),
            ("1x28x28-c6-10", "`c6`"),
            ("1x28x28-c6k5q1-10", "`c6k5q1`"),
            ("1x28x28-c6k5p1p2-10", "`c6k5p1p2`"),
            ("1x28x28-ck5-10", "`ck5`"),
            ("1x28x28-m-10", "`m`"),
            ("1xax28-10", "input `1xax28`"),
            ("-784-10", "input ``"),
            ("784-+10", "`+10`"),
            (
                "784-99999999999999999999999-10",
                "`99999999999999999999999`",
            ),
        ] {
            let e = shape_err(s);
            assert!(e.contains(tok), "{s}: {e}");
        }
    }

    #[test]
    fn impossible_nets_name_the_layer() {
        for (s, want) in [
            ("784-0-10", "layer 1 `0`: width must be at least 1"),
            ("0-10", "input `0`"),
            ("1x0x28-10", "input `1x0x28`"),
            (
                "1x28x28-c6k30-10",
                "layer 1 `c6k30`: 30x30 kernel is larger than its input 1x28x28 padded to 28x28",
            ),
            (
                "1x28x28-c6k31p1-10",
                "31x31 kernel is larger than its input 1x28x28 padded to 30x30",
            ),
            (
                "1x28x28-m2-m2-m2-m2-m2-10",
                "layer 5 `m2`: 2x2 pooling of its input 1x1x1 gives zero size",
            ),
            (
                "784-c6k5-10",
                "layer 1 `c6k5`: a convolution needs an image, but the input gives a flat 784",
            ),
            (
                "1x28x28-100-m2-10",
                "layer 2 `m2`: pooling needs an image, but layer 1 `100` gives a flat 100",
            ),
            (
                "1x28x28-c6k5-m2",
                "layer 2 `m2`: the last layer must be dense",
            ),
            (
                "1x28x28-c6k5",
                "layer 1 `c6k5`: the last layer must be dense",
            ),
            ("1x28x28-c0k5-10", "output channels must be at least 1"),
            ("1x28x28-c6k0-10", "kernel size must be at least 1"),
            ("1x28x28-c6k5s0-10", "stride must be at least 1"),
            ("1x28x28-m0-10", "pooling size must be at least 1"),
            ("784-2000000-10", "width is over"),
            ("1x2000000x1-10", "dimension over"),
            ("1024x1024x1024-10", "elements per sample"),
            ("1x28x28-c6k1p1048576-10", "dimension over"),
            ("1048576-1048576-1048576-1048576-1048576-10", "parameters"),
        ] {
            let e = shape_err(s);
            assert!(e.contains(want), "{s}: {e}");
        }
        // shapes() on a hand-built arch gives Error::Network.
        let a = Arch {
            input: Input::Flat(4),
            layers: vec![
                crate::nn::maxpool::MaxPool { k: 2 }.into(),
                crate::nn::dense::Dense { out: 2 }.into(),
            ],
        };
        assert!(matches!(a.shapes(), Err(Error::Network { .. })));
        let _ = (a.n_params(), a.param_shapes(), a.classes());
        let empty = Arch {
            input: Input::Flat(4),
            layers: vec![],
        };
        assert!(empty.shapes().is_err());
        assert_eq!(empty.n_params(), 0);
    }

    #[test]
    fn init_is_reproducible_and_bounded() {
        let a = Arch::parse("20-7-3").unwrap();
        let m1 = Model::init_uniform(&a, 0.07, 5);
        let m2 = Model::init_uniform(&a, 0.07, 5);
        assert_eq!(m1, m2);
        assert!(m1.params[0].weight.iter().all(|w| w.abs() <= 0.07));
        assert!(m1.params[0].bias.iter().all(|&b| b == 0.0));
        m1.check_shapes().unwrap();
        m1.check_finite("m").unwrap();
    }

    #[test]
    fn init_uniform_keeps_the_old_stream() {
        // The stream the MLP-only version drew: per layer, an [O, I] array row-major.
        let a = Arch::parse("784-10-10-10").unwrap();
        let m = Model::init_uniform(&a, 0.07, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for p in &m.params {
            let old = ndarray::Array2::from_shape_simple_fn(
                (p.weight.shape()[0], p.weight.shape()[1]),
                || rng.random_range(-0.07f32..=0.07),
            );
            assert_eq!(p.weight, old.into_dyn());
        }
    }

    #[test]
    fn init_pytorch_is_bounded_by_fan_in() {
        let a = Arch::parse(Arch::preset("lenet5").unwrap()).unwrap();
        let m = Model::init_pytorch(&a, 3);
        assert_eq!(m, Model::init_pytorch(&a, 3));
        assert_ne!(m, Model::init_pytorch(&a, 4));
        m.check_shapes().unwrap();
        for (p, fan_in) in m.params.iter().zip([25.0f32, 150.0, 400.0, 120.0, 84.0]) {
            let b = 1.0 / fan_in.sqrt();
            assert!(p.weight.iter().all(|w| w.abs() <= b));
            assert!(p.bias.iter().all(|w| w.abs() <= b));
            assert!(p.bias.iter().any(|&w| w != 0.0));
            // Spread over most of the range.
            let max = p.weight.iter().fold(0.0f32, |a, w| a.max(w.abs()));
            assert!(max > 0.8 * b, "{max} vs {b}");
        }
    }

    #[test]
    fn check_finite_names_the_tensor() {
        let a = Arch::parse("1x4x4-c2k3-m2-3").unwrap();
        let mut m = Model::init_pytorch(&a, 1);
        m.params[1].weight[[2, 1]] = f32::NEG_INFINITY;
        let e = m.check_finite("after epoch 3").unwrap_err().to_string();
        assert_eq!(
            e,
            "after epoch 3: tensor `layers.1.weight` holds -inf at [2, 1]"
        );
        m.params[0].bias[1] = f32::NAN;
        m.params[0].weight[[1, 0, 2, 2]] = f32::NAN;
        let e = m.check_finite("m").unwrap_err().to_string();
        assert_eq!(e, "m: tensor `layers.0.weight` holds NaN at [1, 0, 2, 2]");
    }
}
