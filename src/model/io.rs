//! Model and checkpoint files: the mapping of a [`Model`] (and a [`Checkpoint`]'s optimiser
//! state and run record) onto named tensors in PyTorch's `nn.Linear` / `nn.Conv2d` layouts and
//! metadata, over the safetensors [`codec`].
//!
//! A model file holds `layers.{i}.weight` (`[O, I]` for a dense layer, `[O, C, K, K]` for a
//! convolution) and `layers.{i}.bias` (`\[O\]`) as little-endian F32, `i` counting the layers that
//! have parameters from 0 (so multilayer perceptron files keep their names; a batch
//! normalisation is such a layer: `weight` γ and `bias` β \[C\], and beside them its running
//! statistics `layers.{i}.running_mean` \[C\], `running_var` \[C\] and `num_batches_tracked` (a
//! scalar, f32 where PyTorch keeps an int64; `load_state_dict` converts it)), plus string
//! metadata (`format`, `arch` — the full architecture string, `activation`, `output` and
//! whatever the caller adds). A checkpoint adds the optimizer's state buffers as
//! `optimizer.{slot}.{i}.weight|bias` (`velocity` for SGD momentum, `adam.m`/`adam.v` for Adam)
//! and the trainer's `run` record as JSON text, so training can resume exactly; a checkpoint also
//! loads as a plain model. Files of earlier versions (`wgtrain-mlp-v1`,
//! `wgtrain-checkpoint-v1`) still load.
//!
//! Files are written atomically ([`crate::util::atomic_write`]) and byte-for-byte
//! deterministically (metadata keys sorted, tensors in layer order), so the same weights always
//! give the same file. Loading checks everything before trusting it, NaN and infinities
//! included; every failure is a one-line [`Error::BadModel`] naming the file.

use super::{check_finite_tensor, check_param_shapes, Arch, Model, Param, Running, MAX_DIM};
use crate::error::Setting;
use crate::{Error, Result};
use codec::{decode, encode, json, read_capped};
use ndarray::{Array1, ArrayD, IxDyn};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;

pub mod codec;

pub use codec::{load_tensors, save_tensors, Metadata, NamedTensors, MAX_FILE_BYTES};

/// `format` metadata of a model file written by [`Model::save`].
pub const MODEL_FORMAT: &str = "wgtrain-model-v2";

/// `format` of model files written by earlier versions (multilayer perceptrons only); still read.
pub const MODEL_FORMAT_V1: &str = "wgtrain-mlp-v1";

/// `format` metadata of a checkpoint written by [`Checkpoint::save`].
pub const CHECKPOINT_FORMAT: &str = "wgtrain-checkpoint-v2";

/// `format` of checkpoints written by earlier versions (momentum in `optimizer.velocity.*`,
/// `epoch`, `step` and the hyperparameters as string metadata); still read.
pub const CHECKPOINT_FORMAT_V1: &str = "wgtrain-checkpoint-v1";

/// Metadata keys that [`Model::save`] writes itself and [`Model::load`] checks and strips.
const MODEL_KEYS: [&str; 4] = ["format", "arch", "activation", "output"];

/// How many tensor names an error message lists before eliding the rest.
const NAMES_SHOWN: usize = 6;

/// The first few names of `names`, for error messages.
fn list_names<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let names: Vec<&String> = names.into_iter().collect();
    let mut shown: Vec<String> = names
        .iter()
        .take(NAMES_SHOWN)
        .map(|n| format!("`{n}`"))
        .collect();
    if names.len() > NAMES_SHOWN {
        shown.push(format!("and {} more", names.len() - NAMES_SHOWN));
    }
    if shown.is_empty() {
        "none".into()
    } else {
        shown.join(", ")
    }
}

/// An array's elements in row-major order, copied only if the array is not contiguous (a
/// transposed view, say).
fn row_major<'a, D: ndarray::Dimension>(a: &'a ndarray::Array<f32, D>) -> Cow<'a, [f32]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// A tensor to be saved: name, shape, row-major data.
type OwnedTensor<'a> = (String, Vec<usize>, Cow<'a, [f32]>);

/// Tensor list `(name, shape, data)` for `params` under `prefix` (e.g. `layers`).
fn param_tensors<'a>(prefix: &str, params: &'a [Param]) -> Vec<OwnedTensor<'a>> {
    let mut out = Vec::with_capacity(2 * params.len());
    for (i, p) in params.iter().enumerate() {
        out.push((
            format!("{prefix}.{i}.weight"),
            p.weight.shape().to_vec(),
            row_major(&p.weight),
        ));
        out.push((
            format!("{prefix}.{i}.bias"),
            p.bias.shape().to_vec(),
            row_major(&p.bias),
        ));
    }
    out
}

/// The names of a batch normalisation's running statistics under `layers.{i}.`, in PyTorch's.
const RUNNING_KINDS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// Tensor list for the running statistics beside `params` (`{prefix}.{i}.running_mean` \[C\],
/// `running_var` \[C\], `num_batches_tracked` (a scalar, f32)).
fn running_tensors<'a>(prefix: &str, running: &'a [Option<Running>]) -> Vec<OwnedTensor<'a>> {
    let mut out = Vec::new();
    for (i, r) in running.iter().enumerate() {
        let Some(r) = r else { continue };
        let c = r.mean.len();
        out.push((
            format!("{prefix}.{i}.running_mean"),
            vec![c],
            row_major(&r.mean),
        ));
        out.push((
            format!("{prefix}.{i}.running_var"),
            vec![r.var.len()],
            row_major(&r.var),
        ));
        out.push((
            format!("{prefix}.{i}.num_batches_tracked"),
            vec![],
            Cow::Owned(vec![r.batches]),
        ));
    }
    out
}

/// Remove the running statistics of every batch normalisation layer of `arch` from `tensors`
/// (`{prefix}.{i}.running_mean|running_var|num_batches_tracked`), checking their shapes.
fn take_running(
    tensors: &mut NamedTensors,
    prefix: &str,
    arch: &Arch,
) -> std::result::Result<Vec<Option<Running>>, String> {
    arch.running_channels()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let Some(c) = c else {
                for kind in RUNNING_KINDS {
                    let name = format!("{prefix}.{i}.{kind}");
                    if tensors.contains_key(&name) {
                        return Err(format!(
                            "unexpected tensor `{name}`: layer {i} of {arch} is not a batch normalisation"
                        ));
                    }
                }
                return Ok(None);
            };
            let mut take = |kind: &str, want: Vec<usize>| {
                let name = format!("{prefix}.{i}.{kind}");
                match tensors.remove(&name) {
                    Some((shape, data)) if shape == want => Ok(data),
                    Some((shape, _)) => Err(format!(
                        "tensor `{name}` has shape {shape:?} where arch {arch} needs {want:?}"
                    )),
                    None => Err(format!(
                        "missing tensor `{name}` (layer {i} is a batch normalisation)"
                    )),
                }
            };
            let mean = take(RUNNING_KINDS[0], vec![c])?;
            let var = take(RUNNING_KINDS[1], vec![c])?;
            let batches = take(RUNNING_KINDS[2], vec![])?;
            Ok(Some(Running {
                mean: Array1::from(mean),
                var: Array1::from(var),
                batches: batches[0],
            }))
        })
        .collect()
}

/// Save owned tensor triples (borrowing them as `save_tensors` wants).
fn save_owned(path: &Path, tensors: &[OwnedTensor<'_>], meta: &Metadata) -> Result<()> {
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_ref()))
        .collect();
    save_tensors(path, &refs, meta)
}

/// Metadata for a model: the caller's keys, then the reserved ones (which win).
fn model_metadata(model: &Model, format: &str, extra: &Metadata) -> Metadata {
    let mut meta = extra.clone();
    meta.insert("format".into(), format.into());
    meta.insert("arch".into(), model.arch.to_string());
    meta.insert("activation".into(), "relu".into());
    meta.insert("output".into(), "softmax".into());
    meta
}

/// One stored tensor: name, shape, row-major data.
type RawTensor = (String, Vec<usize>, Vec<f32>);

/// One layer's weight and bias as read from a file, shapes not yet checked.
struct RawParam {
    weight: RawTensor,
    bias: RawTensor,
}

/// `3.weight` → (3, "weight"); `None` unless the index is a canonical number and the kind is
/// `weight` or `bias`.
fn parse_index(rest: &str) -> Option<(usize, &str)> {
    let (i, kind) = rest.split_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let v = i.parse::<usize>().ok().filter(|v| v.to_string() == i)?;
    Some((v, kind))
}

/// Remove `{prefix}.{i}.weight|bias` for `i` in `0..n` from `tensors`; a missing one is an error.
fn collect_params(
    tensors: &mut NamedTensors,
    prefix: &str,
    n: usize,
) -> std::result::Result<Vec<RawParam>, String> {
    let mut take = |name: String| match tensors.remove(&name) {
        Some((shape, data)) => Ok((name, shape, data)),
        None => Err(format!("missing tensor `{name}`")),
    };
    (0..n)
        .map(|i| {
            Ok(RawParam {
                weight: take(format!("{prefix}.{i}.weight"))?,
                bias: take(format!("{prefix}.{i}.bias"))?,
            })
        })
        .collect()
}

/// Remove and return the layers stored under `prefix` (`layers.{i}.weight|bias`), checking that
/// indices run 0..n without gaps. Any other tensor under `prefix.` is an error.
fn take_params(
    tensors: &mut NamedTensors,
    prefix: &str,
) -> std::result::Result<Vec<RawParam>, String> {
    let dotted = format!("{prefix}.");
    let mut n = 0;
    for name in tensors.keys().filter(|k| k.starts_with(&dotted)) {
        let rest = &name[dotted.len()..];
        // Running statistics are taken once the architecture is known (`take_running`).
        let running = rest
            .split_once('.')
            .is_some_and(|(_, kind)| RUNNING_KINDS.contains(&kind));
        match parse_index(rest) {
            Some((i, _)) => n = n.max(i + 1),
            None if running => {}
            None => return Err(format!("unexpected tensor `{name}`")),
        }
    }
    collect_params(tensors, prefix, n)
}

/// Rebuild a multilayer perceptron from dense layer shapes (a file without `arch` metadata):
/// each weight `[O, I]`, each bias `\[O\]`, each layer's input the previous one's output.
fn arch_from_dense(raw: &[RawParam]) -> std::result::Result<Arch, String> {
    if raw.is_empty() {
        return Err("no `layers.0.weight` tensor".into());
    }
    let mut sizes = Vec::with_capacity(raw.len() + 1);
    for (l, p) in raw.iter().enumerate() {
        let (wname, wshape, _) = &p.weight;
        let (bname, bshape, _) = &p.bias;
        let [o, i] = wshape[..] else {
            let hint = if wshape.len() == 4 {
                " (a convolution's weight: a file with convolutions needs `arch` metadata)"
            } else {
                ""
            };
            return Err(format!(
                "tensor `{wname}` has shape {wshape:?}; expected [out, in]{hint}"
            ));
        };
        if bshape[..] != [o] {
            return Err(format!(
                "tensor `{bname}` has shape {bshape:?}; expected [{o}] to match `{wname}` {wshape:?}"
            ));
        }
        if l == 0 {
            sizes.push(i);
        } else if i != sizes[l] {
            return Err(format!(
                "`{wname}` is [{o}, {i}] but layer {} outputs {}: layers do not chain",
                l - 1,
                sizes[l]
            ));
        }
        sizes.push(o);
    }
    if let Some(w) = sizes.iter().find(|&&w| w == 0 || w > MAX_DIM) {
        return Err(format!("layer width {w} is outside 1..={MAX_DIM}"));
    }
    let arch = Arch::mlp(&sizes);
    arch.shapes().map_err(|e| match e {
        Error::Network { arch, reason } => format!("{arch}: {reason}"),
        e => e.to_string(),
    })?;
    Ok(arch)
}

/// Check raw tensors against the shapes `arch` calls for; the error names the tensor and both
/// shapes. `needs` says who needs them (`arch 784-10`, `the model`).
fn check_raw_shapes(
    raw: &[RawParam],
    prefix: &str,
    arch: &Arch,
    needs: &str,
) -> std::result::Result<(), String> {
    let want = arch.param_shapes();
    if raw.len() > want.len() {
        return Err(format!(
            "unexpected tensor `{prefix}.{}.weight`: {needs} has {} parametrised layers",
            want.len(),
            want.len()
        ));
    }
    for (p, (w, o)) in raw.iter().zip(&want) {
        for ((name, shape, _), need) in [(&p.weight, w.clone()), (&p.bias, vec![*o])] {
            if *shape != need {
                return Err(format!(
                    "tensor `{name}` has shape {shape:?} where {needs} needs {need:?}"
                ));
            }
        }
    }
    if raw.len() < want.len() {
        return Err(format!(
            "missing tensor `{prefix}.{}.weight`: {needs} has {} parametrised layers",
            raw.len(),
            want.len()
        ));
    }
    Ok(())
}

/// Arrays from raw tensors whose shapes have been checked.
fn to_params(raw: Vec<RawParam>) -> std::result::Result<Vec<Param>, String> {
    raw.into_iter()
        .map(|p| {
            let (wname, wshape, wdata) = p.weight;
            let weight = ArrayD::from_shape_vec(IxDyn(&wshape), wdata)
                .map_err(|e| format!("`{wname}`: {e}"))?;
            Ok(Param {
                weight,
                bias: Array1::from_vec(p.bias.2),
            })
        })
        .collect()
}

/// Refuse NaN and infinities in any tensor, naming the first such tensor.
fn check_all_finite(tensors: &NamedTensors) -> std::result::Result<(), String> {
    for (name, (shape, data)) in tensors {
        check_finite_tensor(name, shape, data.iter().copied())?;
    }
    Ok(())
}

/// The reason of an [`Arch::parse`] error, without the `invalid argument network:` prefix.
fn arch_reason(e: Error) -> String {
    match e {
        Error::InvalidSetting { reason, .. } => reason,
        Error::Network { arch, reason } => format!("{arch}: {reason}"),
        e => e.to_string(),
    }
}

/// Turn the `layers.*` tensors plus metadata into a checked [`Model`], leaving other tensors in
/// `tensors`. The architecture is the `arch` metadata when present (every tensor must then have
/// the shape it calls for); otherwise the tensors must form a multilayer perceptron.
fn model_from_tensors(
    tensors: &mut NamedTensors,
    meta: &Metadata,
) -> std::result::Result<Model, String> {
    match meta.get("format").map(String::as_str) {
        None
        | Some(MODEL_FORMAT)
        | Some(MODEL_FORMAT_V1)
        | Some(CHECKPOINT_FORMAT)
        | Some(CHECKPOINT_FORMAT_V1) => {}
        Some(f) => {
            return Err(format!(
                "unsupported format `{f}` (this build reads {MODEL_FORMAT}, {MODEL_FORMAT_V1}, {CHECKPOINT_FORMAT} and {CHECKPOINT_FORMAT_V1})"
            ))
        }
    }
    for (key, want) in [("activation", "relu"), ("output", "softmax")] {
        if let Some(v) = meta.get(key).filter(|v| *v != want) {
            return Err(format!("{key} `{v}` is not supported (only {want})"));
        }
    }
    let all_names = list_names(tensors.keys());
    let raw = take_params(tensors, "layers")?;
    if raw.is_empty() {
        return Err(format!(
            "no `layers.0.weight` tensor: not a model in PyTorch nn.Linear/nn.Conv2d layout (tensors: {all_names})"
        ));
    }
    let arch = match meta.get("arch") {
        Some(declared) => {
            let arch = Arch::parse(declared).map_err(|e| {
                format!(
                    "metadata says arch `{declared}`, which is not a possible network: {}",
                    arch_reason(e)
                )
            })?;
            check_raw_shapes(&raw, "layers", &arch, &format!("arch {arch}")).map_err(|r| {
                let found = match arch_from_dense(&raw) {
                    Ok(a) => format!(" (the tensors are {a})"),
                    Err(_) => String::new(),
                };
                format!("metadata says arch `{declared}` but {r}{found}")
            })?;
            arch
        }
        None => arch_from_dense(&raw)?,
    };
    let running = take_running(tensors, "layers", &arch)?;
    Ok(Model::with_running(arch, to_params(raw)?, running))
}

/// `meta` without the keys in `reserved`.
fn strip(mut meta: Metadata, reserved: &[&str]) -> Metadata {
    meta.retain(|k, _| !reserved.contains(&k.as_str()));
    meta
}

impl Model {
    /// Save to `path` as safetensors in PyTorch layout (`layers.{i}.weight` `[O, I]` or `[O, C,
    /// K, K]`, `layers.{i}.bias` `\[O\]`, `i` counting layers with parameters), atomically.
    ///
    /// Metadata is `extra_meta` plus `format` (`wgtrain-model-v2`), `arch` (the canonical
    /// string), `activation` and `output`, which are always written by this function (a
    /// same-named key in `extra_meta` is overridden). Fails with [`Error::Weights`] if the
    /// parameters do not match `self.arch`. Values are not checked: a file holding NaN is
    /// written, and refused when loaded.
    pub fn save(&self, path: impl AsRef<Path>, extra_meta: &Metadata) -> Result<()> {
        let path = path.as_ref();
        crate::util::atomic_write(path, &self.to_bytes(path, extra_meta)?)
    }

    /// The bytes [`Model::save`] writes (the browser offers them as a download); `name` only
    /// names the file in errors.
    pub fn to_bytes(&self, name: impl AsRef<Path>, extra_meta: &Metadata) -> Result<Vec<u8>> {
        self.check_shapes()?;
        let meta = model_metadata(self, MODEL_FORMAT, extra_meta);
        let mut tensors = param_tensors("layers", &self.params);
        tensors.extend(running_tensors("layers", &self.running));
        let refs: Vec<(&str, &[usize], &[f32])> = tensors
            .iter()
            .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_ref()))
            .collect();
        encode(&refs, &meta).map_err(|r| Error::bad_model(name.as_ref(), r))
    }

    /// Load a model written by [`Model::save`] (or by earlier versions), a [`Checkpoint`], or any
    /// safetensors file with F32 `layers.{i}.weight|bias` tensors in PyTorch layout.
    ///
    /// The architecture is the `arch` metadata when present, and every tensor must have the
    /// shape it calls for; a file without it must hold a multilayer perceptron, rebuilt from the
    /// tensor shapes. NaN or infinity in any tensor is refused, naming the tensor.
    /// `optimizer.*` tensors are otherwise ignored; any other tensor is an error. Returns the
    /// model and the metadata without the reserved keys (`format`, `arch`, `activation`,
    /// `output`, and a checkpoint's `slots`), i.e. what was passed as `extra_meta` (for a
    /// checkpoint, `run`, or an old checkpoint's `epoch`, `lr`, ...).
    pub fn load(path: impl AsRef<Path>) -> Result<(Model, Metadata)> {
        let path = path.as_ref();
        Self::from_bytes(&read_capped(path)?, path)
    }

    /// [`Model::load`] from the file's bytes (a file dropped onto a web page); `name` only
    /// names it in errors.
    pub fn from_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<(Model, Metadata)> {
        let path = name.as_ref();
        let bad = |r: String| Error::bad_model(path, r);
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(bad(format!(
                "file is {} bytes, over the {MAX_FILE_BYTES}-byte limit for model files",
                bytes.len()
            )));
        }
        let (mut tensors, meta) = decode(bytes).map_err(bad)?;
        check_all_finite(&tensors).map_err(bad)?;
        let model = model_from_tensors(&mut tensors, &meta).map_err(bad)?;
        tensors.retain(|k, _| !k.starts_with("optimizer."));
        if !tensors.is_empty() {
            return Err(bad(format!(
                "unexpected tensors {}",
                list_names(tensors.keys())
            )));
        }
        let is_checkpoint = meta.get("format").map(String::as_str) == Some(CHECKPOINT_FORMAT);
        let mut extra = strip(meta, &MODEL_KEYS);
        if is_checkpoint {
            extra.remove("slots");
        }
        Ok((model, extra))
    }

    /// Check that a model loaded from `file` has the architecture `arch` asked for on the
    /// for; the error ([`Error::InvalidSetting`] for [`Setting::Arch`]) names both, e.g.
    /// `784-512-10 disagrees with model file x.safetensors (784-256-10)`.
    pub fn check_compatible(&self, arch: &Arch, file: &Path) -> Result<()> {
        if self.arch == *arch {
            return Ok(());
        }
        Err(Error::InvalidSetting {
            setting: Setting::Arch,
            reason: format!(
                "{arch} disagrees with model file {} ({})",
                file.display(),
                self.arch
            ),
        })
    }

    /// The weights as named tensors `(name, shape, row-major data)`, by the names and in the
    /// layouts of a model file (`layers.{i}.weight` `[O, I]` or `[O, C, K, K]`,
    /// `layers.{i}.bias`): what PyTorch's `state_dict` of the same network holds.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut tensors = param_tensors("layers", &self.params);
        tensors.extend(running_tensors("layers", &self.running));
        tensors
            .into_iter()
            .map(|(n, s, d)| (n, s, d.into_owned()))
            .collect()
    }

    /// A model of `arch` from named tensors as [`Model::named_tensors`] gives them (a PyTorch
    /// `state_dict`): every tensor `arch` needs, with its shape, finite, and no other, checked
    /// as a model file's are. `what` names them in the error ([`Error::Weights`], one line
    /// naming the tensor).
    pub fn from_named_tensors(arch: &Arch, mut tensors: NamedTensors, what: &str) -> Result<Model> {
        let bad = |reason: String| Error::Weights {
            what: what.to_string(),
            arch: arch.to_string(),
            reason,
        };
        arch.shapes()?;
        check_all_finite(&tensors).map_err(bad)?;
        let mut meta = Metadata::new();
        meta.insert("arch".into(), arch.to_string());
        let model = model_from_tensors(&mut tensors, &meta).map_err(bad)?;
        if !tensors.is_empty() {
            return Err(bad(format!(
                "unexpected tensors {}",
                list_names(tensors.keys())
            )));
        }
        Ok(model)
    }
}

/// Everything needed to resume training exactly: weights, optimizer state and the run's
/// configuration and position.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The network being trained.
    pub model: Model,
    /// Named optimizer state buffers, each shaped exactly like `model.params`: `velocity` for
    /// SGD momentum, `adam.m` and `adam.v` for Adam. Stored as `optimizer.{slot}.{i}.weight|bias`.
    pub slots: Vec<(String, Vec<Param>)>,
    /// The trainer's own record of the run (configuration, position, optimizer step), opaque
    /// here. For an old (`wgtrain-checkpoint-v1`) file, an object built from its metadata:
    /// `{"epoch": 3, "step": 0, "lr": 0.05, "shuffle": true, "device": "cpu", ...}`.
    pub run: serde_json::Value,
}

/// Whether `name` can name an optimizer slot: dot-separated non-empty parts of ASCII letters,
/// digits and `_`.
fn valid_slot_name(name: &str) -> bool {
    name.split('.').all(|part| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// A metadata value of an old checkpoint as JSON: a bool, an integer, a finite number, or else
/// the string itself.
fn guess_json(v: &str) -> serde_json::Value {
    use serde_json::Value;
    match v {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = v.parse::<u64>() {
        return n.into();
    }
    if let Ok(n) = v.parse::<i64>() {
        return n.into();
    }
    match v.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        Some(n)
            if v.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            Value::Number(n)
        }
        _ => Value::String(v.to_string()),
    }
}

impl Checkpoint {
    /// Save to `path` atomically: `layers.{i}.*` as in a model file plus
    /// `optimizer.{slot}.{i}.weight|bias`, with `format` = `wgtrain-checkpoint-v2`, `run` (the
    /// JSON text of [`Checkpoint::run`]) and `slots` (the JSON list of slot names, in order).
    /// Fails with [`Error::Weights`] if the model or a slot does not match the arch, and with
    /// [`Error::BadModel`] for a slot name that is empty, repeated or not made of
    /// dot-separated `[A-Za-z0-9_]` parts.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let arch = &self.model.arch;
        self.model.check_shapes()?;
        let mut names = BTreeSet::new();
        for (name, params) in &self.slots {
            if !valid_slot_name(name) || !names.insert(name.as_str()) {
                return Err(Error::bad_model(
                    path,
                    format!("cannot write optimizer slot {name:?}: names must be unique, dot-separated [A-Za-z0-9_] parts"),
                ));
            }
            check_param_shapes(
                &format!("optimizer slot `{name}`"),
                &format!("optimizer.{name}"),
                arch,
                params,
            )?;
        }
        let mut meta = model_metadata(&self.model, CHECKPOINT_FORMAT, &Metadata::new());
        meta.insert("run".into(), json(&self.run));
        let order: Vec<&str> = self.slots.iter().map(|(n, _)| n.as_str()).collect();
        meta.insert("slots".into(), json(&order));
        let mut tensors = param_tensors("layers", &self.model.params);
        tensors.extend(running_tensors("layers", &self.model.running));
        for (name, params) in &self.slots {
            tensors.extend(param_tensors(&format!("optimizer.{name}"), params));
        }
        save_owned(path, &tensors, &meta)
    }

    /// Load a checkpoint written by [`Checkpoint::save`], or an old `wgtrain-checkpoint-v1`
    /// file (its momentum buffers become the `velocity` slot, its metadata the `run` object).
    ///
    /// A plain model file is refused with "not a checkpoint"; so is a checkpoint whose `run` is
    /// not valid JSON, a slot shaped unlike the model (naming the tensor), and NaN or infinity in
    /// any tensor.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bad = |r: String| Error::bad_model(path, r);
        let (mut tensors, meta) = load_tensors(path)?;
        let v1 = match meta.get("format").map(String::as_str) {
            Some(CHECKPOINT_FORMAT) => false,
            Some(CHECKPOINT_FORMAT_V1) => true,
            Some(f) => {
                return Err(bad(format!(
                    "not a checkpoint (format is `{f}`, expected `{CHECKPOINT_FORMAT}`)"
                )))
            }
            None => {
                return Err(bad(format!(
                    "not a checkpoint (no `format` metadata, expected `{CHECKPOINT_FORMAT}`)"
                )))
            }
        };
        let (run, slot_names) = if v1 {
            (
                Self::run_from_v1(&meta).map_err(bad)?,
                vec!["velocity".to_string()],
            )
        } else {
            let run = meta
                .get("run")
                .ok_or_else(|| bad("checkpoint has no `run` metadata".into()))?;
            let run: serde_json::Value = serde_json::from_str(run)
                .map_err(|e| bad(format!("checkpoint `run` metadata is not valid JSON: {e}")))?;
            (run, Self::slot_names(&meta, &tensors).map_err(bad)?)
        };
        check_all_finite(&tensors).map_err(bad)?;
        let model = model_from_tensors(&mut tensors, &meta).map_err(bad)?;
        let n = model.arch.param_shapes().len();
        let mut slots = Vec::with_capacity(slot_names.len());
        for name in slot_names {
            let prefix = format!("optimizer.{name}");
            let raw = collect_params(&mut tensors, &prefix, n).map_err(bad)?;
            check_raw_shapes(&raw, &prefix, &model.arch, "the model").map_err(bad)?;
            slots.push((name, to_params(raw).map_err(bad)?));
        }
        if !tensors.is_empty() {
            return Err(bad(format!(
                "unexpected tensors {}",
                list_names(tensors.keys())
            )));
        }
        Ok(Checkpoint { model, slots, run })
    }

    /// The slot names of a v2 checkpoint: its `slots` metadata, or else every
    /// `optimizer.{slot}.{i}.weight|bias` found, sorted.
    fn slot_names(
        meta: &Metadata,
        tensors: &NamedTensors,
    ) -> std::result::Result<Vec<String>, String> {
        if let Some(list) = meta.get("slots") {
            let names: Vec<String> = serde_json::from_str(list).map_err(|_| {
                format!("checkpoint `slots` metadata {list:?} is not a JSON list of names")
            })?;
            let mut seen = BTreeSet::new();
            for n in &names {
                if !valid_slot_name(n) || !seen.insert(n) {
                    return Err(format!(
                        "checkpoint `slots` metadata names slot {n:?} twice or is not a slot name"
                    ));
                }
            }
            return Ok(names);
        }
        let found: BTreeSet<String> = tensors
            .keys()
            .filter_map(|k| {
                // optimizer.{slot}.{i}.{weight|bias}, the slot itself possibly dotted.
                let (head, kind) = k.strip_prefix("optimizer.")?.rsplit_once('.')?;
                let (slot, i) = head.rsplit_once('.')?;
                parse_index(&format!("{i}.{kind}"))?;
                valid_slot_name(slot).then(|| slot.to_string())
            })
            .collect();
        Ok(found.into_iter().collect())
    }

    /// The `run` object of an old checkpoint: every metadata key but the model's own, values
    /// parsed to numbers and bools where they are; `epoch` must be a count, `step` defaults to 0.
    fn run_from_v1(meta: &Metadata) -> std::result::Result<serde_json::Value, String> {
        let epoch = meta
            .get("epoch")
            .ok_or_else(|| "checkpoint has no `epoch` metadata".to_string())?;
        let epoch = epoch
            .parse::<usize>()
            .map_err(|_| format!("checkpoint epoch `{epoch}` is not a count"))?;
        let mut run: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .filter(|(k, _)| !MODEL_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), guess_json(v)))
            .collect();
        run.insert("epoch".into(), epoch.into());
        run.entry("step").or_insert(0.into());
        Ok(run.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_bytes_are_the_saved_file_and_load_back_the_same() {
        let arch = crate::model::Arch::parse("784-16-10").unwrap();
        let m = Model::init_uniform(&arch, 0.07, 3);
        let mut meta = Metadata::new();
        meta.insert("note".into(), "x".into());
        let bytes = m.to_bytes("m.safetensors", &meta).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        m.save(&path, &meta).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "save writes to_bytes");
        let (back, extra) = Model::from_bytes(&bytes, "dropped.safetensors").unwrap();
        assert_eq!(back, m);
        assert_eq!(extra, meta);
    }

    #[test]
    fn model_bytes_holding_nan_or_garbage_are_refused_naming_the_file() {
        let arch = crate::model::Arch::parse("784-16-10").unwrap();
        let mut m = Model::init_uniform(&arch, 0.07, 3);
        m.params[0].weight.as_slice_mut().unwrap()[5] = f32::NAN;
        let bytes = m.to_bytes("m.safetensors", &Metadata::new()).unwrap();
        let e = Model::from_bytes(&bytes, "dropped.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("dropped.safetensors: ") && e.contains("NaN"),
            "{e}"
        );
        let e = Model::from_bytes(b"not a model", "dropped.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("dropped.safetensors: "), "{e}");
    }
}
