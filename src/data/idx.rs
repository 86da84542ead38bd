//! The IDX container that MNIST (and Fashion-MNIST, KMNIST, EMNIST) ship in.
//!
//! An IDX file is a 4-byte magic `00 00 TT DD` (element type `TT`, here always `0x08` =
//! unsigned byte; `DD` dimensions), then `DD` big-endian `u32` sizes, then the elements in
//! row-major order. Images are `[n, rows, cols]` (magic `0x00000803`), labels `[n]`
//! (`0x00000801`). Files may be gzipped; that is detected from the content (`1f 8b`), never
//! from the file name.
//!
//! The reader trusts nothing in the header: sizes are multiplied with overflow checks, capped
//! at [`MAX_DATA_BYTES`], and compared with how many bytes the file can really hold before any
//! buffer is sized from them, so a corrupt or hostile header cannot make it allocate much.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::path::Path;

use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::{Error, Result};

/// Magic of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest element payload accepted (2 GiB). The biggest MNIST-format set in use, EMNIST
/// ByClass, is about 0.55 GB; a header declaring more than this is corrupt.
pub const MAX_DATA_BYTES: u64 = 2 << 30;

/// Deflate cannot expand data by more than about 1032:1, so a gzip file of `L` bytes holds at
/// most `L * 1032` bytes; used to bound what a gzipped file may pre-allocate.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// The contents of an images IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Rows of each image.
    pub rows: usize,
    /// Columns of each image.
    pub cols: usize,
    /// `n * rows * cols` pixels, image after image, each row-major.
    pub data: Vec<u8>,
}

/// An IDX array of unsigned bytes of any rank (1 to [`MAX_RANK`] dimensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The sizes, outermost first (`[n, c, h, w]` for a 4-D image file).
    pub dims: Vec<usize>,
    /// The elements in row-major order.
    pub data: Vec<u8>,
}

/// Most dimensions an IDX array may declare here.
pub const MAX_RANK: u8 = 8;

/// Read an IDX file of unsigned bytes of any rank (`0x000008DD`), raw or gzipped.
pub fn read_idx_array(path: &Path) -> Result<IdxArray> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let (dims, data) = read_from(BufReader::new(file), len, path, None)?;
    Ok(IdxArray { dims, data })
}

/// [`read_idx_array`] from bytes in memory; `path` only names them in errors.
pub fn parse_idx_array(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let (dims, data) = read_from(bytes, bytes.len() as u64, path, None)?;
    Ok(IdxArray { dims, data })
}

/// Encode an array of any rank as an uncompressed IDX file.
pub fn encode_idx_array(dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    let rank = u8::try_from(dims.len())
        .ok()
        .filter(|r| (1..=MAX_RANK).contains(r))
        .ok_or_else(|| encode_error(format!("{} dimensions", dims.len())))?;
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| encode_error(format!("dims {dims:?} overflow usize")))?;
    if data.len() != expected {
        return Err(encode_error(format!(
            "dims {dims:?} need {expected} bytes, got {}",
            data.len()
        )));
    }
    let mut out = vec![0, 0, 0x08, rank];
    for &d in dims {
        out.extend_from_slice(&dim_u32(d)?.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Read an images file (`0x00000803`, `[n, rows, cols]`), raw or gzipped.
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let (dims, data) = read_file(path, 3)?;
    Ok(IdxImages {
        n: dims[0],
        rows: dims[1],
        cols: dims[2],
        data,
    })
}

/// Read a labels file (`0x00000801`, `[n]`), raw or gzipped.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    read_file(path, 1).map(|(_, data)| data)
}

/// Parse an images file held in memory; `path` only names it in errors.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    let (dims, data) = read_from(bytes, bytes.len() as u64, path, Some(3))?;
    Ok(IdxImages {
        n: dims[0],
        rows: dims[1],
        cols: dims[2],
        data,
    })
}

/// Parse a labels file held in memory; `path` only names it in errors.
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    read_from(bytes, bytes.len() as u64, path, Some(1)).map(|(_, data)| data)
}

/// Encode images as an uncompressed IDX file.
pub fn encode_idx_images(n: usize, rows: usize, cols: usize, data: &[u8]) -> Result<Vec<u8>> {
    let expected = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| encode_error(format!("{n}×{rows}×{cols} images overflow usize")))?;
    if data.len() != expected {
        return Err(encode_error(format!(
            "{n} images of {rows}×{cols} need {expected} bytes, got {}",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for d in [n, rows, cols] {
        out.extend_from_slice(&dim_u32(d)?.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Encode labels as an uncompressed IDX file.
pub fn encode_idx_labels(labels: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&dim_u32(labels.len())?.to_be_bytes());
    out.extend_from_slice(labels);
    Ok(out)
}

/// Write images as a gzipped IDX file (deterministic bytes: no time stamp in the gzip header).
pub fn write_idx_images(
    path: &Path,
    n: usize,
    rows: usize,
    cols: usize,
    data: &[u8],
) -> Result<()> {
    write_gz(path, &encode_idx_images(n, rows, cols, data)?)
}

/// Write labels as a gzipped IDX file (deterministic bytes).
pub fn write_idx_labels(path: &Path, labels: &[u8]) -> Result<()> {
    write_gz(path, &encode_idx_labels(labels)?)
}

/// Gzip `bytes` (best compression, mtime 0 so equal input gives equal output).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    // Writing into a Vec cannot fail.
    enc.write_all(bytes).expect("in-memory write");
    enc.finish().expect("in-memory write")
}

/// True when `bytes` start with the gzip magic `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

fn write_gz(path: &Path, raw: &[u8]) -> Result<()> {
    crate::util::atomic_write(path, &gzip(raw))
}

fn dim_u32(d: usize) -> Result<u32> {
    u32::try_from(d).map_err(|_| encode_error(format!("dimension {d} does not fit in u32")))
}

/// Arrays that cannot be written as IDX.
fn encode_error(reason: String) -> Error {
    Error::Unsupported {
        what: "encoding IDX".into(),
        reason,
    }
}

fn read_file(path: &Path, ndims: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    read_from(BufReader::new(file), len, path, Some(ndims))
}

/// Read as much of `buf` as the reader holds; returns how many bytes were read (short only
/// at end of input), so a truncated header can say how long the file really was.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Shared reader for files and in-memory bytes. `stored_len` is the length of the input as
/// stored (compressed or not), known before anything is allocated.
fn read_from(
    mut input: impl BufRead,
    stored_len: u64,
    path: &Path,
    ndims: Option<u8>,
) -> Result<(Vec<usize>, Vec<u8>)> {
    // Sniff the gzip magic, then put the two bytes back in front of the stream.
    let mut sniff = [0u8; 2];
    let got = read_full(&mut input, &mut sniff).map_err(|e| Error::io(path, e))?;
    let gz = is_gzip(&sniff[..got]);
    let chained = Cursor::new(sniff[..got].to_vec()).chain(input);
    if gz {
        let mut dec = MultiGzDecoder::new(chained);
        let bound = stored_len.saturating_mul(DEFLATE_MAX_RATIO);
        read_body(&mut dec, None, bound, path, ndims, true)
    } else {
        let mut raw = chained;
        read_body(&mut raw, Some(stored_len), stored_len, path, ndims, false)
    }
}

/// Map an I/O error met while reading the element stream. Inside gzip, malformed deflate data,
/// a bad CRC or a cut-off stream all surface as I/O errors of these kinds.
fn stream_err(path: &Path, e: io::Error, gz: bool) -> Error {
    let corrupt = matches!(
        e.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof
    );
    if gz && corrupt {
        Error::bad_data(path, format!("corrupt gzip data: {e}"))
    } else {
        Error::io(path, e)
    }
}

/// Parse header and payload from a (decompressed) stream.
///
/// `exact_len`: total decompressed length when known up front (raw files), checked against the
/// header before allocating. `alloc_bound`: most bytes the input can possibly yield, used to
/// cap the initial buffer so a lying header in a tiny gzip file allocates little.
fn read_body(
    r: &mut impl Read,
    exact_len: Option<u64>,
    alloc_bound: u64,
    path: &Path,
    ndims: Option<u8>,
    gz: bool,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let what = if gz { "decompressed data" } else { "file" };
    let mut magic = [0u8; 4];
    let got = read_full(r, &mut magic).map_err(|e| stream_err(path, e, gz))?;
    if got < 4 {
        return Err(Error::bad_data(
            path,
            format!("truncated IDX header: {what} is only {got} bytes, the magic alone needs 4"),
        ));
    }
    let ndims = match ndims {
        Some(d) => {
            check_magic(path, magic, d)?;
            d
        }
        None => any_rank(path, magic)?,
    };

    let header_len = 4 + 4 * ndims as usize;
    let mut dim_bytes = [0u8; 4 * MAX_RANK as usize];
    let dim_bytes = &mut dim_bytes[..4 * ndims as usize];
    let got = read_full(r, dim_bytes).map_err(|e| stream_err(path, e, gz))?;
    if got < dim_bytes.len() {
        return Err(Error::bad_data(
            path,
            format!(
                "truncated IDX header: {what} is only {} bytes, a {ndims}-dimensional header needs {header_len}",
                4 + got
            ),
        ));
    }
    let dims: Vec<u64> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
        .collect();
    let shape = describe(&dims);
    if dims.len() > 1 && dims[1..].contains(&0) {
        return Err(Error::bad_data(
            path,
            format!(
                "header declares {shape}: {} of zero size",
                if dims.len() == 3 { "images" } else { "samples" }
            ),
        ));
    }
    // u32 * u32 * u32 can overflow u64; checked_mul makes that an error, not a wrap.
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::bad_data(path, format!("header declares {shape}: the size overflows"))
        })?;
    if expected > MAX_DATA_BYTES {
        return Err(Error::bad_data(
            path,
            format!(
                "header declares {shape} = {expected} bytes, above the {MAX_DATA_BYTES}-byte cap; the header is corrupt"
            ),
        ));
    }
    if let Some(total) = exact_len {
        let body = total.saturating_sub(header_len as u64);
        if body < expected {
            return Err(Error::bad_data(
                path,
                format!(
                    "truncated: header declares {shape} = {expected} data bytes but the file holds only {body}"
                ),
            ));
        }
        if body > expected {
            return Err(Error::bad_data(
                path,
                format!(
                    "{} bytes of trailing data after the {expected} data bytes that the header ({shape}) declares",
                    body - expected
                ),
            ));
        }
    }

    let cap = expected.min(alloc_bound) as usize;
    let mut data = Vec::with_capacity(cap);
    // One byte past the declared size is enough to detect trailing data without reading it all.
    r.take(expected + 1)
        .read_to_end(&mut data)
        .map_err(|e| stream_err(path, e, gz))?;
    let got = data.len() as u64;
    if got < expected {
        return Err(Error::bad_data(
            path,
            format!(
                "truncated: header declares {shape} = {expected} data bytes but only {got} follow"
            ),
        ));
    }
    if got > expected {
        return Err(Error::bad_data(
            path,
            format!(
                "trailing data after the {expected} data bytes that the header ({shape}) declares"
            ),
        ));
    }
    let dims = dims.into_iter().map(|d| d as usize).collect();
    Ok((dims, data))
}

fn describe(dims: &[u64]) -> String {
    match dims {
        [n] => format!("{n} labels"),
        [n, r, c] => format!("{n} images of {r}×{c}"),
        [n, rest @ ..] => {
            let each: Vec<String> = rest.iter().map(u64::to_string).collect();
            format!("{n} samples of {}", each.join("×"))
        }
        [] => "no dimensions".into(),
    }
}

/// The rank of an IDX file of unsigned bytes of any rank, from its magic.
fn any_rank(path: &Path, magic: [u8; 4]) -> Result<u8> {
    let value = u32::from_be_bytes(magic);
    if magic[0] != 0 || magic[1] != 0 {
        return Err(Error::bad_data(
            path,
            format!("not an IDX file: magic is 0x{value:08x}, expected 0x000008DD"),
        ));
    }
    if magic[2] != 0x08 {
        return Err(Error::bad_data(
            path,
            format!(
                "IDX element type 0x{:02x} is not unsigned byte (0x08); magic 0x{value:08x}",
                magic[2]
            ),
        ));
    }
    if !(1..=MAX_RANK).contains(&magic[3]) {
        return Err(Error::bad_data(
            path,
            format!(
                "IDX file declares {} dimensions (magic 0x{value:08x}); 1 to {MAX_RANK} are read",
                magic[3]
            ),
        ));
    }
    Ok(magic[3])
}

fn check_magic(path: &Path, magic: [u8; 4], ndims: u8) -> Result<()> {
    let value = u32::from_be_bytes(magic);
    let (want, kind) = if ndims == 3 {
        (IMAGES_MAGIC, "images")
    } else {
        (LABELS_MAGIC, "labels")
    };
    if value == want {
        return Ok(());
    }
    let reason = if magic[0] != 0 || magic[1] != 0 {
        format!("not an IDX file: magic is 0x{value:08x}, expected 0x{want:08x} ({kind})")
    } else if magic[2] != 0x08 {
        format!(
            "IDX element type 0x{:02x} is not unsigned byte (0x08); magic 0x{value:08x}, expected 0x{want:08x}",
            magic[2]
        )
    } else if value == IMAGES_MAGIC || value == LABELS_MAGIC {
        let other = if value == IMAGES_MAGIC {
            "images"
        } else {
            "labels"
        };
        format!("this is an IDX {other} file (magic 0x{value:08x}), expected {kind} (0x{want:08x})")
    } else {
        format!(
            "IDX file has {} dimensions (magic 0x{value:08x}), expected {ndims} for {kind} (0x{want:08x})",
            magic[3]
        )
    };
    Err(Error::bad_data(path, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("mem.idx")
    }

    #[test]
    fn round_trip_raw_and_gz() {
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let raw = encode_idx_images(2, 3, 4, &data).unwrap();
        for bytes in [raw.clone(), gzip(&raw)] {
            let img = parse_idx_images(&bytes, p()).unwrap();
            assert_eq!((img.n, img.rows, img.cols), (2, 3, 4));
            assert_eq!(img.data, data);
        }
        let labels = encode_idx_labels(&[3, 1, 4]).unwrap();
        assert_eq!(
            parse_idx_labels(&gzip(&labels), p()).unwrap(),
            vec![3, 1, 4]
        );
    }

    #[test]
    fn lying_gzip_header_allocates_little() {
        // A tiny gzip declaring 1 GiB must fail as truncated; capacity is bounded by 1032×len.
        let mut raw = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [1u32 << 14, 256, 256] {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        let err = parse_idx_images(&gzip(&raw), p()).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn wrong_kind_named() {
        let labels = encode_idx_labels(&[1]).unwrap();
        let err = parse_idx_images(&labels, p()).unwrap_err().to_string();
        assert!(err.contains("IDX labels file"), "{err}");
    }

    #[test]
    fn any_rank_round_trips_and_reads_mnist_files() {
        let data: Vec<u8> = (0..2 * 3 * 2 * 2).map(|i| i as u8).collect();
        let raw = encode_idx_array(&[2, 3, 2, 2], &data).unwrap();
        for bytes in [raw.clone(), gzip(&raw)] {
            let a = parse_idx_array(&bytes, p()).unwrap();
            assert_eq!((a.dims, a.data), (vec![2, 3, 2, 2], data.clone()));
        }
        let img = encode_idx_images(2, 3, 4, &data).unwrap();
        assert_eq!(parse_idx_array(&img, p()).unwrap().dims, vec![2, 3, 4]);
        let e = parse_idx_array(&raw[..30], p()).unwrap_err().to_string();
        assert!(e.contains("2 samples of 3×2×2"), "{e}");
        let mut f32s = raw.clone();
        f32s[2] = 0x0d;
        let e = parse_idx_array(&f32s, p()).unwrap_err().to_string();
        assert!(e.contains("not unsigned byte"), "{e}");
    }

    #[test]
    fn encode_checks_length() {
        assert!(encode_idx_images(2, 2, 2, &[0; 7]).is_err());
    }
}
