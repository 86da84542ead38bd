//! The safetensors codec: bytes ↔ named F32 tensors and string metadata, with every header
//! check, and nothing known of models (their mapping onto tensors is [`super`]'s).
//!
//! Writing is deterministic (metadata keys sorted, tensors in the order given, the header
//! padded to 8 bytes) and atomic ([`crate::util::atomic_write`]); reading refuses oversized,
//! truncated or padded files, malformed headers, offsets outside the data and any dtype but
//! F32, each with a one-line [`Error::BadModel`] naming the file.

use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

/// String metadata stored in a file's `__metadata__` header entry.
pub type Metadata = BTreeMap<String, String>;

/// Tensors read from a file: name → (shape, row-major data).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Largest file [`load_tensors`] will read. Far above any network this engine can train, and it
/// keeps a mistyped path (a disk image, say) from being slurped into memory.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// The safetensors crate's own header limit, checked early for a clearer message.
const MAX_HEADER_BYTES: u64 = 100_000_000;

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
pub(super) fn read_capped(path: &Path) -> Result<Vec<u8>> {
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
pub(super) fn encode(
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
pub(super) fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serializes to JSON")
}

/// Parse and validate safetensors bytes; the error is the reason, without the path.
pub(super) fn decode(bytes: &[u8]) -> std::result::Result<(NamedTensors, Metadata), String> {
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
