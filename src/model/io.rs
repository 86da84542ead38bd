//! Model and checkpoint files: safetensors in PyTorch's `nn.Linear` layout.
//!
//! A model file holds `layers.{i}.weight` (`[O, I]`) and `layers.{i}.bias` (`[O]`) as little-endian
//! F32, `i` counting dense layers from 0, plus string metadata (`format`, `arch`, `activation`,
//! `output` and whatever the caller adds). A checkpoint adds the momentum buffers as
//! `optimizer.velocity.{i}.weight|bias` and the number of completed epochs, so training can resume
//! exactly; a checkpoint also loads as a plain model.
//!
//! Files are written atomically ([`crate::util::atomic_write`]) and byte-for-byte
//! deterministically (metadata keys sorted, tensors in layer order), so the same weights always
//! give the same file. Loading checks everything before trusting it; every failure is a one-line
//! [`Error::BadModel`] naming the file.

use super::{Arch, Dense, Mlp};
use crate::{Error, Result};
use ndarray::{Array1, Array2};
use safetensors::{Dtype, SafeTensors};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

/// String metadata stored in a file's `__metadata__` header entry.
pub type Metadata = BTreeMap<String, String>;

/// Tensors read from a file: name → (shape, row-major data).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// `format` metadata of a model file written by [`Mlp::save`].
pub const MODEL_FORMAT: &str = "wgtrain-mlp-v1";

/// `format` metadata of a checkpoint written by [`Checkpoint::save`].
pub const CHECKPOINT_FORMAT: &str = "wgtrain-checkpoint-v1";

/// Largest file [`load_tensors`] will read. Far above any MLP this engine can train, and it keeps
/// a mistyped path (a disk image, say) from being slurped into memory.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// The safetensors crate's own header limit, checked early for a clearer message.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Metadata keys that [`Mlp::save`] writes itself and [`Mlp::load`] checks and strips.
const MODEL_KEYS: [&str; 4] = ["format", "arch", "activation", "output"];

/// Widest layer accepted, the same bound as [`Arch::parse`].
const MAX_WIDTH: usize = 1 << 20;

/// How many tensor names an error message lists before eliding the rest.
const NAMES_SHOWN: usize = 6;

/// Write F32 tensors and string metadata to `path` as a safetensors file, atomically.
///
/// `tensors` are `(name, shape, row-major data)`; names must be unique and non-empty, and each
/// shape's product must equal its data length. Tensors are stored in the order given.
pub fn save_tensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, &[usize], &[f32])],
    metadata: &Metadata,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode(tensors, metadata).map_err(|r| Error::bad_model(path, r))?;
    crate::util::atomic_write(path, &bytes)
}

/// Read every tensor and the metadata of a safetensors file.
///
/// Rejects files over [`MAX_FILE_BYTES`], truncated or padded files, malformed headers,
/// inconsistent offsets and any dtype other than F32, each with a one-line error naming the file.
/// Values are not checked: NaN and infinities load as they are.
pub fn load_tensors(path: impl AsRef<Path>) -> Result<(NamedTensors, Metadata)> {
    let path = path.as_ref();
    let bytes = read_capped(path)?;
    decode(&bytes).map_err(|r| Error::bad_model(path, r))
}

/// Read a whole file, refusing anything larger than [`MAX_FILE_BYTES`] before allocating.
fn read_capped(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let too_big = |len: u64| {
        Error::bad_model(
            path,
            format!("file is {len} bytes, over the {MAX_FILE_BYTES}-byte limit for model files"),
        )
    };
    if len > MAX_FILE_BYTES {
        return Err(too_big(len));
    }
    // A capacity hint only; `try_from` keeps 32-bit targets from truncating it.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // `take` because the file may have grown since `metadata` (and some "files" report size 0).
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Serialize to safetensors bytes. Written by hand rather than with `safetensors::serialize`
/// because that takes a `HashMap` for the metadata, whose random order would make every save of
/// the same weights a different file.
fn encode(
    tensors: &[(&str, &[usize], &[f32])],
    metadata: &Metadata,
) -> std::result::Result<Vec<u8>, String> {
    let mut entries = Vec::with_capacity(tensors.len() + 1);
    if !metadata.is_empty() {
        entries.push(format!("\"__metadata__\":{}", json(metadata)));
    }
    let mut seen = BTreeSet::new();
    let mut offset = 0usize;
    for &(name, shape, data) in tensors {
        if name.is_empty() || name == "__metadata__" {
            return Err(format!("cannot write a tensor named {name:?}"));
        }
        if !seen.insert(name) {
            return Err(format!("cannot write tensor `{name}` twice"));
        }
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(data.len()) {
            return Err(format!(
                "cannot write tensor `{name}`: shape {shape:?} does not hold {} values",
                data.len()
            ));
        }
        let end = offset + 4 * data.len();
        entries.push(format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[{offset},{end}]}}",
            json(name),
            json(shape),
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", entries.join(","));
    // The format pads the header with spaces so tensor data starts 8-byte aligned.
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for &(_, _, data) in tensors {
        if cfg!(target_endian = "little") {
            bytes.extend_from_slice(bytemuck::cast_slice(data));
        } else {
            bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        }
    }
    Ok(bytes)
}

/// JSON text of a string, shape or string map (these always serialize).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes to JSON")
}

/// Parse and validate safetensors bytes; the error is the reason, without the path.
fn decode(bytes: &[u8]) -> std::result::Result<(NamedTensors, Metadata), String> {
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(format!(
            "only {} bytes, too short for a safetensors header (truncated or not a safetensors file)",
            bytes.len()
        ));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "header length {n} is implausible: not a safetensors file"
        ));
    }
    let header_end = 8 + n as usize;
    let Some(header) = bytes.get(8..header_end) else {
        return Err(format!(
            "header needs {n} bytes but only {} follow its length: truncated or not a safetensors file",
            bytes.len() - 8
        ));
    };
    precheck_offsets(header, bytes.len() - header_end)?;

    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| match e {
        safetensors::SafeTensorError::MetadataIncompleteBuffer => {
            "data size does not match the header: truncated or has trailing bytes".to_string()
        }
        e => format!("not a valid safetensors file: {e}"),
    })?;
    let data = &bytes[header_end..];

    let mut tensors = NamedTensors::new();
    for (name, info) in meta.tensors() {
        if info.dtype != Dtype::F32 {
            return Err(format!(
                "tensor `{name}` has dtype {}; only F32 is supported",
                info.dtype
            ));
        }
        let (s, e) = info.data_offsets;
        // `read_metadata` validated the offsets; `get` keeps a library bug from becoming a panic.
        let raw = data
            .get(s..e)
            .ok_or_else(|| format!("tensor `{name}` has offsets outside the file"))?;
        // chunks + from_le_bytes: the data may be unaligned and the host big-endian.
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        tensors.insert(name, (info.shape.clone(), values));
    }
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok((tensors, metadata))
}

/// Reject data offsets beyond the data section before the safetensors crate sees them: it adds the
/// last offset to the header size without overflow checks, so a crafted header near `usize::MAX`
/// would panic (debug) or be misjudged (release) there.
fn precheck_offsets(header: &[u8], data_len: usize) -> std::result::Result<(), String> {
    let parsed: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| format!("header is not valid JSON ({e}): not a safetensors file"))?;
    let serde_json::Value::Object(entries) = parsed else {
        return Err("header is not a JSON object: not a safetensors file".into());
    };
    for (name, info) in entries.iter().filter(|(k, _)| *k != "__metadata__") {
        let end = info.get("data_offsets").and_then(|o| o.get(1));
        if let Some(end) = end.and_then(|e| e.as_u64()) {
            if end > data_len as u64 {
                return Err(format!(
                    "tensor `{name}` ends at byte {end} of a {data_len}-byte data section: truncated or corrupt"
                ));
            }
        }
    }
    Ok(())
}

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

/// Tensor list `(name, shape, data)` for `layers` under `prefix` (e.g. `layers`).
fn layer_tensors<'a>(prefix: &str, layers: &'a [Dense]) -> Vec<OwnedTensor<'a>> {
    let mut out = Vec::with_capacity(2 * layers.len());
    for (i, d) in layers.iter().enumerate() {
        out.push((
            format!("{prefix}.{i}.weight"),
            d.weight.shape().to_vec(),
            row_major(&d.weight),
        ));
        out.push((
            format!("{prefix}.{i}.bias"),
            d.bias.shape().to_vec(),
            row_major(&d.bias),
        ));
    }
    out
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
fn model_metadata(mlp: &Mlp, format: &str, extra: &Metadata) -> Metadata {
    let mut meta = extra.clone();
    meta.insert("format".into(), format.into());
    meta.insert("arch".into(), mlp.arch.to_string());
    meta.insert("activation".into(), "relu".into());
    meta.insert("output".into(), "softmax".into());
    meta
}

/// Check that `layers` have exactly the shapes `arch` calls for.
fn check_layer_shapes(what: &str, arch: &Arch, layers: &[Dense]) -> Result<()> {
    if layers.len() != arch.n_layers() {
        return Err(Error::Shape(format!(
            "{what} has {} layers but arch {arch} needs {}",
            layers.len(),
            arch.n_layers()
        )));
    }
    for (l, d) in layers.iter().enumerate() {
        let (i, o) = arch.layer(l);
        if d.weight.dim() != (o, i) || d.bias.len() != o {
            return Err(Error::Shape(format!(
                "{what} layer {l} has weight {:?} and bias [{}] but arch {arch} needs [{o}, {i}] and [{o}]",
                d.weight.shape(),
                d.bias.len()
            )));
        }
    }
    Ok(())
}

/// Remove and return the dense layers stored under `prefix` (`layers.{i}.weight|bias`), checking
/// that indices run 0..n without gaps, each weight is 2-D, each bias 1-D and as long as the
/// weight has rows. Any other tensor under `prefix.` is an error.
fn take_layers(
    tensors: &mut NamedTensors,
    prefix: &str,
) -> std::result::Result<Vec<Dense>, String> {
    let dotted = format!("{prefix}.");
    let names: Vec<String> = tensors
        .keys()
        .filter(|k| k.starts_with(&dotted))
        .cloned()
        .collect();
    let mut n = 0;
    for name in &names {
        let rest = &name[dotted.len()..];
        let index = rest
            .split_once('.')
            .filter(|(_, kind)| *kind == "weight" || *kind == "bias")
            .and_then(|(i, _)| i.parse::<usize>().ok().filter(|v| v.to_string() == i));
        match index {
            Some(i) => n = n.max(i + 1),
            None => return Err(format!("unexpected tensor `{name}`")),
        }
    }
    let mut layers = Vec::with_capacity(n);
    for i in 0..n {
        let mut take = |kind: &str| {
            let name = format!("{dotted}{i}.{kind}");
            tensors
                .remove(&name)
                .map(|t| (name.clone(), t))
                .ok_or_else(|| format!("missing tensor `{name}`"))
        };
        let (wname, (wshape, wdata)) = take("weight")?;
        let (bname, (bshape, bdata)) = take("bias")?;
        let [o, inp] = wshape[..] else {
            return Err(format!(
                "tensor `{wname}` has shape {wshape:?}; expected [out, in]"
            ));
        };
        if bshape != [o] {
            return Err(format!(
                "tensor `{bname}` has shape {bshape:?}; expected [{o}] to match `{wname}` {wshape:?}"
            ));
        }
        let weight =
            Array2::from_shape_vec((o, inp), wdata).map_err(|e| format!("`{wname}`: {e}"))?;
        let bias = Array1::from_vec(bdata);
        layers.push(Dense { weight, bias });
    }
    Ok(layers)
}

/// Rebuild the architecture from layer shapes: each layer's input is the previous one's output.
fn arch_from_layers(layers: &[Dense]) -> std::result::Result<Arch, String> {
    let Some(first) = layers.first() else {
        return Err("no `layers.0.weight` tensor".into());
    };
    let mut sizes = vec![first.weight.ncols(), first.weight.nrows()];
    for (l, d) in layers.iter().enumerate().skip(1) {
        let (o, i) = d.weight.dim();
        if i != sizes[l] {
            return Err(format!(
                "`layers.{l}.weight` is [{o}, {i}] but layer {} outputs {}: layers do not chain",
                l - 1,
                sizes[l]
            ));
        }
        sizes.push(o);
    }
    if let Some(w) = sizes.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
        return Err(format!("layer width {w} is outside 1..={MAX_WIDTH}"));
    }
    Ok(Arch { sizes })
}

/// Turn the `layers.*` tensors plus metadata into a checked [`Mlp`], leaving other tensors in
/// `tensors`.
fn mlp_from_tensors(
    tensors: &mut NamedTensors,
    meta: &Metadata,
) -> std::result::Result<Mlp, String> {
    match meta.get("format").map(String::as_str) {
        None | Some(MODEL_FORMAT) | Some(CHECKPOINT_FORMAT) => {}
        Some(f) => {
            return Err(format!(
                "unsupported format `{f}` (this build reads {MODEL_FORMAT} and {CHECKPOINT_FORMAT})"
            ))
        }
    }
    for (key, want) in [("activation", "relu"), ("output", "softmax")] {
        if let Some(v) = meta.get(key).filter(|v| *v != want) {
            return Err(format!("{key} `{v}` is not supported (only {want})"));
        }
    }
    let all_names = list_names(tensors.keys());
    let layers = take_layers(tensors, "layers")?;
    let arch = arch_from_layers(&layers).map_err(|r| {
        if layers.is_empty() {
            format!("{r}: not an MLP in PyTorch nn.Linear layout (tensors: {all_names})")
        } else {
            r
        }
    })?;
    if let Some(declared) = meta.get("arch") {
        match Arch::parse(declared) {
            Ok(a) if a == arch => {}
            _ => {
                return Err(format!(
                    "metadata says arch `{declared}` but the tensors are {arch}"
                ))
            }
        }
    }
    Ok(Mlp { arch, layers })
}

/// `meta` without the keys in `reserved`.
fn strip(mut meta: Metadata, reserved: &[&str]) -> Metadata {
    meta.retain(|k, _| !reserved.contains(&k.as_str()));
    meta
}

impl Mlp {
    /// Save to `path` as safetensors in PyTorch `nn.Linear` layout (`layers.{i}.weight`
    /// `[O, I]`, `layers.{i}.bias` `[O]`), atomically.
    ///
    /// Metadata is `extra_meta` plus `format`, `arch`, `activation` and `output`, which are
    /// always written by this function (a same-named key in `extra_meta` is overridden).
    /// Fails with [`Error::Shape`] if the layers do not match `self.arch`.
    pub fn save(&self, path: impl AsRef<Path>, extra_meta: &Metadata) -> Result<()> {
        check_layer_shapes("model", &self.arch, &self.layers)?;
        let meta = model_metadata(self, MODEL_FORMAT, extra_meta);
        save_owned(path.as_ref(), &layer_tensors("layers", &self.layers), &meta)
    }

    /// Load a model written by [`Mlp::save`], a [`Checkpoint`], or any safetensors file with
    /// F32 `layers.{i}.weight|bias` tensors in PyTorch layout.
    ///
    /// The architecture comes from the tensor shapes and must agree with the `arch` metadata if
    /// present. `optimizer.*` tensors are ignored; any other tensor is an error. Returns the
    /// model and the metadata without the reserved keys (`format`, `arch`, `activation`,
    /// `output`), i.e. what was passed as `extra_meta` (for a checkpoint, also `epoch`).
    pub fn load(path: impl AsRef<Path>) -> Result<(Mlp, Metadata)> {
        let path = path.as_ref();
        let (mut tensors, meta) = load_tensors(path)?;
        let mlp = mlp_from_tensors(&mut tensors, &meta).map_err(|r| Error::bad_model(path, r))?;
        tensors.retain(|k, _| !k.starts_with("optimizer."));
        if !tensors.is_empty() {
            return Err(Error::bad_model(
                path,
                format!("unexpected tensors {}", list_names(tensors.keys())),
            ));
        }
        Ok((mlp, strip(meta, &MODEL_KEYS)))
    }

    /// Check that a model loaded from `file` has the architecture `arch` asked for on the
    /// command line; the error names both, e.g. `invalid argument --arch: 784-512-10 disagrees
    /// with model file x.safetensors (784-256-10)`.
    pub fn check_compatible(&self, arch: &Arch, file: &Path) -> Result<()> {
        if self.arch == *arch {
            return Ok(());
        }
        Err(Error::InvalidArg {
            name: "--arch",
            reason: format!(
                "{arch} disagrees with model file {} ({})",
                file.display(),
                self.arch
            ),
        })
    }
}

/// Everything needed to resume training exactly: weights, SGD momentum buffers, progress and the
/// run's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The network being trained.
    pub model: Mlp,
    /// Momentum buffers, one per layer with the layer's shapes.
    pub velocity: Vec<Dense>,
    /// Epochs completed.
    pub epoch: usize,
    /// Hyperparameters, seed and the like, as the trainer chooses to record them. The keys
    /// `format`, `arch`, `activation`, `output` and `epoch` are reserved.
    pub meta: Metadata,
}

impl Checkpoint {
    /// Metadata keys written by [`Checkpoint::save`] itself and stripped by [`Checkpoint::load`].
    const KEYS: [&'static str; 5] = ["format", "arch", "activation", "output", "epoch"];

    /// Save to `path` atomically: `layers.{i}.*` as in a model file plus
    /// `optimizer.velocity.{i}.weight|bias`, with `format` = `wgtrain-checkpoint-v1` and `epoch`.
    /// Fails with [`Error::Shape`] if the model or velocity shapes do not match the arch.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        check_layer_shapes("model", &self.model.arch, &self.model.layers)?;
        check_layer_shapes("optimizer velocity", &self.model.arch, &self.velocity)?;
        let mut meta = model_metadata(&self.model, CHECKPOINT_FORMAT, &self.meta);
        meta.insert("epoch".into(), self.epoch.to_string());
        let mut tensors = layer_tensors("layers", &self.model.layers);
        tensors.extend(layer_tensors("optimizer.velocity", &self.velocity));
        save_owned(path.as_ref(), &tensors, &meta)
    }

    /// Load a checkpoint written by [`Checkpoint::save`]. A plain model file is refused with
    /// "not a checkpoint"; velocity shapes must match the model's.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bad = |r: String| Error::bad_model(path, r);
        let (mut tensors, meta) = load_tensors(path)?;
        match meta.get("format").map(String::as_str) {
            Some(CHECKPOINT_FORMAT) => {}
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
        }
        let epoch = meta
            .get("epoch")
            .ok_or_else(|| bad("checkpoint has no `epoch` metadata".into()))?;
        let epoch = epoch
            .parse::<usize>()
            .map_err(|_| bad(format!("checkpoint epoch `{epoch}` is not a count")))?;
        let model = mlp_from_tensors(&mut tensors, &meta).map_err(bad)?;
        let velocity = take_layers(&mut tensors, "optimizer.velocity").map_err(bad)?;
        check_layer_shapes("optimizer velocity", &model.arch, &velocity)
            .map_err(|e| bad(format!("{e}")))?;
        if !tensors.is_empty() {
            return Err(bad(format!(
                "unexpected tensors {}",
                list_names(tensors.keys())
            )));
        }
        Ok(Checkpoint {
            model,
            velocity,
            epoch,
            meta: strip(meta, &Self::KEYS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_is_deterministic_and_aligned() {
        let meta: Metadata = [("b", "2"), ("a", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let t: &[(&str, &[usize], &[f32])] = &[("x", &[2], &[1.0, 2.0]), ("y", &[], &[3.0])];
        let a = encode(t, &meta).unwrap();
        assert_eq!(a, encode(t, &meta).unwrap());
        let n = u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        assert_eq!(a.len(), 8 + n + 12);
        let (tensors, m) = decode(&a).unwrap();
        assert_eq!(m, meta);
        assert_eq!(tensors["x"], (vec![2], vec![1.0, 2.0]));
        assert_eq!(tensors["y"], (vec![], vec![3.0]));
    }

    #[test]
    fn encode_rejects_bad_input() {
        let m = Metadata::new();
        assert!(encode(&[("x", &[3], &[1.0])], &m).is_err());
        assert!(encode(&[("x", &[1], &[1.0]), ("x", &[1], &[1.0])], &m).is_err());
        assert!(encode(&[("", &[1], &[1.0])], &m).is_err());
        assert!(encode(&[("x", &[usize::MAX, 2], &[])], &m).is_err());
    }

    #[test]
    fn huge_offsets_are_rejected_without_panicking() {
        // Offsets summing to near usize::MAX used to overflow inside the safetensors crate.
        let big = 1usize << 60;
        let mut entries = Vec::new();
        let mut s = 0usize;
        for i in 0..15 {
            entries.push(format!(
                "\"t{i:02}\":{{\"dtype\":\"U8\",\"shape\":[{big}],\"data_offsets\":[{s},{}]}}",
                s + big
            ));
            s += big;
        }
        let last = usize::MAX - s;
        entries.push(format!(
            "\"zz\":{{\"dtype\":\"U8\",\"shape\":[{last}],\"data_offsets\":[{s},{}]}}",
            usize::MAX
        ));
        let header = format!("{{{}}}", entries.join(","));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(err.contains("truncated or corrupt"), "{err}");
    }
}
