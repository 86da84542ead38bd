//! NumPy `.npy` arrays: features `uint8` (scaled to [0, 1] on the device) or `float32` (used as
//! they are, refused when NaN or infinite), labels of any integer type.
//!
//! The format (NumPy's `lib/format.py`): the magic `\x93NUMPY`, a version byte pair, a header
//! length (2 bytes little-endian in version 1, 4 in versions 2 and 3), then a Python dict
//! literal `{'descr': '<u1', 'fortran_order': False, 'shape': (N, C, H, W), }` padded with
//! spaces, then the elements. Only C-order arrays are read (a Fortran-order array would need a
//! transpose the user did not ask for). Nothing in the header is trusted: the element count is
//! multiplied with overflow checks and compared with the bytes that follow before anything is
//! allocated from it.

use std::path::Path;

use super::{Dataset, FeatureType, SampleShape};
use crate::{Error, Result};

/// Largest array payload read (4 GiB): above it, a header is taken to be corrupt.
pub const MAX_BYTES: u64 = 4 << 30;

/// An element type of a `.npy` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// Unsigned integer of this many bytes.
    U(usize),
    /// Signed integer of this many bytes.
    I(usize),
    /// IEEE float of this many bytes.
    F(usize),
    /// `bool` (one byte, 0 or 1).
    Bool,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::U(n) | Dtype::I(n) | Dtype::F(n) => n,
            Dtype::Bool => 1,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dtype::U(n) => write!(f, "uint{}", 8 * n),
            Dtype::I(n) => write!(f, "int{}", 8 * n),
            Dtype::F(n) => write!(f, "float{}", 8 * n),
            Dtype::Bool => f.write_str("bool"),
        }
    }
}

/// A parsed `.npy` array: its shape, element type and raw little-endian elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Npy {
    /// The shape, outermost first.
    pub shape: Vec<usize>,
    /// The element type.
    pub dtype: Dtype,
    /// The elements, little-endian (big-endian files are swapped on reading).
    pub data: Vec<u8>,
}

impl Npy {
    /// Elements of the array.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as features: `uint8` (or `bool`) as bytes, `float32` as they are (each
    /// finite; the error names the first that is not, by its flat index); any other type is
    /// an error naming `path`.
    pub fn into_features(self, path: &Path) -> Result<(FeatureType, Vec<u8>)> {
        match self.dtype {
            Dtype::U(1) | Dtype::Bool => Ok((FeatureType::U8, self.data)),
            Dtype::F(4) => {
                let value = |i: usize| {
                    f32::from_le_bytes(self.data[4 * i..4 * i + 4].try_into().expect("4 bytes"))
                };
                if let Some(i) = (0..self.data.len() / 4).find(|&i| !value(i).is_finite()) {
                    return Err(Error::bad_data(
                        path,
                        format!(
                            "feature value {i} (flat index) is {}; features must be finite",
                            value(i)
                        ),
                    ));
                }
                Ok((FeatureType::F32, self.data))
            }
            d => Err(Error::bad_data(
                path,
                format!(
                    "features are {d}; wgtrain reads uint8 (0 to 255, scaled to [0, 1]) or float32 (used as they are)"
                ),
            )),
        }
    }

    /// The elements as class indices: an integer array whose values lie in `0 ..= u32::MAX`;
    /// else an error naming `path` and the first bad element.
    pub fn into_labels(self, path: &Path) -> Result<Vec<u32>> {
        let size = self.dtype.size();
        let signed = match self.dtype {
            Dtype::U(_) | Dtype::Bool => false,
            Dtype::I(_) => true,
            Dtype::F(_) => {
                return Err(Error::bad_data(
                    path,
                    format!("labels are {}; class indices must be integers", self.dtype),
                ))
            }
        };
        self.data
            .chunks_exact(size)
            .enumerate()
            .map(|(i, c)| {
                let mut b = [0u8; 8];
                b[..size].copy_from_slice(c);
                let v = if signed {
                    // Sign-extend from `size` bytes.
                    let shift = 64 - 8 * size as u32;
                    ((i64::from_le_bytes(b) << shift) >> shift) as i128
                } else {
                    u64::from_le_bytes(b) as i128
                };
                u32::try_from(v).map_err(|_| {
                    Error::bad_data(
                        path,
                        format!("label {i} is {v}, not a class index (0 to {})", u32::MAX),
                    )
                })
            })
            .collect()
    }
}

/// Read a `.npy` file.
pub fn read(path: &Path) -> Result<Npy> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes, path)
}

/// A dataset from a features file and a labels file (see [`dataset`]).
pub fn load_pair(x: &Path, y: &Path) -> Result<Dataset> {
    dataset(read(x)?, x, read(y)?, y)
}

/// Parse `.npy` bytes; `path` only names them in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Npy> {
    let bad = |r: String| Error::bad_data(path, r);
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a NumPy .npy file (no \\x93NUMPY magic)".into()));
    }
    let major = bytes[6];
    let (hlen, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad(format!(".npy format version {major} is not 1, 2 or 3"))),
    };
    let header = bytes
        .get(start..start.saturating_add(hlen))
        .ok_or_else(|| bad("truncated .npy header".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(".npy header is not text".into()))?;
    let descr = dict_value(header, "descr")
        .ok_or_else(|| bad(format!("no 'descr' in header {header:?}")))?;
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| bad(format!("no 'fortran_order' in header {header:?}")))?;
    let shape_text = dict_value(header, "shape")
        .ok_or_else(|| bad(format!("no 'shape' in header {header:?}")))?;
    if fortran.trim() != "False" {
        return Err(bad(
            "array is in Fortran order; save it in C order (np.ascontiguousarray)".into(),
        ));
    }
    let (dtype, big) = parse_descr(descr.trim().trim_matches(['\'', '"'])).ok_or_else(|| {
        bad(format!(
            "element type {descr} is not an integer, float or bool type"
        ))
    })?;
    let shape = shape_text
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("shape {shape_text} is not a tuple of sizes")))?;
    let count = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .and_then(|c| c.checked_mul(dtype.size() as u64))
        .filter(|&b| b <= MAX_BYTES)
        .ok_or_else(|| bad(format!("shape {shape:?} of {dtype} is too large")))?;
    let body = &bytes[start + hlen..];
    if body.len() as u64 != count {
        return Err(bad(format!(
            "shape {shape:?} of {dtype} needs {count} data bytes but the file holds {}",
            body.len()
        )));
    }
    let mut data = body.to_vec();
    if big && dtype.size() > 1 {
        for c in data.chunks_exact_mut(dtype.size()) {
            c.reverse();
        }
    }
    Ok(Npy { shape, dtype, data })
}

/// The text of `'key': value` in a Python dict literal (up to the next top-level comma).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    Some(rest)
}

/// A dtype string such as `<u1`, `|b1`, `>i4`, `<f4`: the type and whether it is big-endian.
fn parse_descr(d: &str) -> Option<(Dtype, bool)> {
    let (order, rest) = d.split_at(1.min(d.len()));
    let (big, rest) = match order {
        "<" | "|" | "=" => (false, rest),
        ">" => (true, rest),
        _ => (false, d),
    };
    let (kind, size) = rest.split_at(1.min(rest.len()));
    let size: usize = size.parse().ok()?;
    let t = match (kind, size) {
        ("u", 1 | 2 | 4 | 8) => Dtype::U(size),
        ("i", 1 | 2 | 4 | 8) => Dtype::I(size),
        ("f", 4 | 8) => Dtype::F(size),
        ("b", 1) => Dtype::Bool,
        _ => return None,
    };
    Some((t, big))
}

/// Encode `uint8` or integer data as a version-1 `.npy` file (C order), e.g. for tests.
/// `descr` is NumPy's type string (`|u1`, `<i8`, ...); `data` its little-endian elements.
pub fn encode(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Pad so that the data starts on a multiple of 64 bytes, ending the header with '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A dataset from a features array (`[N, F]`, `[N, H, W]` or `[N, C, H, W]`, uint8, C order)
/// and a labels array (`[N]`, any integer type). `x_path` and `y_path` name them in errors.
pub fn dataset(x: Npy, x_path: &Path, y: Npy, y_path: &Path) -> Result<Dataset> {
    let shape = sample_shape(&x.shape, x_path)?;
    let n = x.shape[0];
    if y.shape.len() != 1 && !(y.shape.len() == 2 && y.shape[1] == 1) {
        return Err(Error::bad_data(
            y_path,
            format!(
                "labels have shape {:?}; expected one class index per sample, [N]",
                y.shape
            ),
        ));
    }
    if y.shape[0] != n {
        return Err(Error::bad_data(
            y_path,
            format!(
                "holds {} labels but {} holds {n} samples",
                y.shape[0],
                x_path.display()
            ),
        ));
    }
    let (kind, features) = x.into_features(x_path)?;
    let labels = y.into_labels(y_path)?;
    Dataset::from_chw_kind(shape, kind, features, labels)
}

/// The sample shape of an array whose first dimension counts samples: `[N, F]` is flat,
/// `[N, H, W]` a grayscale image, `[N, C, H, W]` an image of C channels.
pub fn sample_shape(dims: &[usize], path: &Path) -> Result<SampleShape> {
    let shape = match *dims {
        [_, f] => SampleShape::Flat(f),
        [_, h, w] => SampleShape::gray(h, w),
        [_, c, h, w] => SampleShape::Image { c, h, w },
        _ => {
            return Err(Error::bad_data(
                path,
                format!("features have shape {dims:?}; expected [N, F], [N, H, W] or [N, C, H, W]"),
            ))
        }
    };
    if dims[0] == 0 {
        return Err(Error::bad_data(path, "holds no samples"));
    }
    if shape.is_empty() {
        return Err(Error::bad_data(
            path,
            format!("features have shape {dims:?}: samples of zero size"),
        ));
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("a.npy")
    }

    #[test]
    fn round_trip_u8_and_int_labels() {
        let x: Vec<u8> = (0..24).collect();
        let a = parse(&encode("|u1", &[2, 3, 2, 2], &x), p()).unwrap();
        assert_eq!((a.shape.clone(), a.dtype), (vec![2, 3, 2, 2], Dtype::U(1)));
        assert_eq!(a.data, x);
        let labels: Vec<u8> = [3i64, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let y = parse(&encode("<i8", &[2], &labels), p()).unwrap();
        assert_eq!(y.into_labels(p()).unwrap(), vec![3, 7]);
        let big: Vec<u8> = [1i32, 2].iter().flat_map(|v| v.to_be_bytes()).collect();
        let y = parse(&encode(">i4", &[2], &big), p()).unwrap();
        assert_eq!(y.into_labels(p()).unwrap(), vec![1, 2]);
    }

    #[test]
    fn bad_arrays_name_the_problem() {
        let neg: Vec<u8> = [1i16, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let e = parse(&encode("<i2", &[2], &neg), p())
            .unwrap()
            .into_labels(p())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "a.npy: label 1 is -1, not a class index (0 to 4294967295)"
        );
        let huge: Vec<u8> = u64::MAX.to_le_bytes().to_vec();
        let e = parse(&encode("<u8", &[1], &huge), p())
            .unwrap()
            .into_labels(p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 0 is 18446744073709551615"), "{e}");
        let f = encode("<f8", &[1, 1], &[0; 8]);
        let e = parse(&f, p())
            .unwrap()
            .into_features(p())
            .unwrap_err()
            .to_string();
        assert!(e.contains("features are float64"), "{e}");
        let vals: Vec<u8> = [1.0f32, f32::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f = encode("<f4", &[1, 2], &vals);
        let e = parse(&f, p())
            .unwrap()
            .into_features(p())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "a.npy: feature value 1 (flat index) is inf; features must be finite"
        );
        let short = encode("|u1", &[2, 3], &[0; 5]);
        let e = parse(&short, p()).unwrap_err().to_string();
        assert!(e.contains("needs 6 data bytes but the file holds 5"), "{e}");
        let e = parse(b"PK\x03\x04 not numpy", p()).unwrap_err().to_string();
        assert!(e.contains("not a NumPy"), "{e}");
    }
}
