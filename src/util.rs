//! Small filesystem helpers shared by the model, checkpoint and report writers, the dataset
//! cache and the autotuner.

use crate::{Error, Result};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable: folder that replaces the per-user cache root (`<it>/<sub>` is used).
pub const ENV_CACHE_DIR: &str = "WGTRAIN_CACHE_DIR";

/// The per-user cache folder for `sub` (e.g. `"mnist"`); not created here.
///
/// `$WGTRAIN_CACHE_DIR/<sub>` if that variable is set (and not empty), else
/// `<cache>/wgtrain/<sub>`, where `<cache>` is the platform's per-user cache folder from the
/// `dirs` crate: `$XDG_CACHE_HOME` (if absolute) or `$HOME/.cache` on Linux,
/// `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows. An empty `sub` gives the root
/// itself. Fails with a one-line error when no such folder can be found.
pub fn cache_dir(sub: &str) -> Result<PathBuf> {
    cache_dir_from(std::env::var_os(ENV_CACHE_DIR), dirs::cache_dir, sub)
}

/// [`cache_dir`] given the override variable's value and the platform lookup.
fn cache_dir_from(
    over: Option<std::ffi::OsString>,
    platform: impl FnOnce() -> Option<PathBuf>,
    sub: &str,
) -> Result<PathBuf> {
    let join = |root: PathBuf| {
        if sub.is_empty() {
            root
        } else {
            root.join(sub)
        }
    };
    if let Some(root) = over.filter(|v| !v.is_empty()) {
        return Ok(join(PathBuf::from(root)));
    }
    match platform() {
        Some(base) => Ok(join(base.join("wgtrain"))),
        None => Err(Error::io(
            join(PathBuf::from("wgtrain")),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no per-user cache folder found (is HOME set?); set {ENV_CACHE_DIR}=DIR"),
            ),
        )),
    }
}

/// Distinguishes temp files of concurrent writers inside one process (the pid alone does not).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `path` so that the file is either the old contents or the new ones, never a
/// mix or a truncated prefix, even if the process is killed (or the machine loses power) at any
/// moment.
///
/// The data goes to a hidden temp file in the same directory (`.{name}.tmp.{pid}.{n}`; same
/// directory so the rename stays on one filesystem and is atomic), is fsynced, and is then renamed
/// over `path`; finally the directory is fsynced so the rename itself is durable. On failure the
/// temp file is removed. Only a kill -9 between creating and renaming can leave a stray temp
/// file behind; the target is never damaged. If `path` is a symlink, the link itself is replaced.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);

    // `create_new` so a leftover file with the same name (pid reuse after a crash) is never
    // shared with another writer; the error then names the temp file, which the user can delete.
    let written = {
        // Closed at the end of this block, before the rename.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&tmp, e))
    };
    let renamed = written.and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if let Err(e) = renamed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir);
    Ok(())
}

/// Make a rename in `dir` durable. Best effort: some filesystems refuse to fsync directories, and
/// Windows cannot open one as a file; the data itself was already synced.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The blocking entry points on top of the async ones: natively, block on `f` (a read's future
/// is ready once the device has been polled to idle). The browser's thread must not block:
/// there `f` is polled once and a read still waiting for the GPU fails in one line naming
/// `what` (the synchronous paths — autotuning, the kernel checks — are not ported yet; the
/// async ones are what a page uses).
pub fn wait_for<T>(what: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = what;
        pollster::block_on(f)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(f).poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(Error::Readback {
                what: what.to_string(),
                reason: "the browser cannot wait for the GPU here; use the async API".into(),
            }),
        }
    }
}

/// Time since the process's clock started: the first call of this function (the CLI calls it
/// first thing in `main`, so for it this is the time since the process started).
pub fn since_start() -> std::time::Duration {
    static START: std::sync::OnceLock<web_time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(web_time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn cache_dir_override_then_platform() {
        let over = || Some(std::ffi::OsString::from("/o"));
        let platform = || Some(PathBuf::from("/home/u/.cache"));
        let none = || None;
        assert_eq!(
            cache_dir_from(over(), platform, "mnist").unwrap(),
            Path::new("/o/mnist")
        );
        assert_eq!(cache_dir_from(over(), none, "").unwrap(), Path::new("/o"));
        // An empty override counts as unset.
        let empty = Some(std::ffi::OsString::new());
        assert_eq!(
            cache_dir_from(empty, platform, "mnist").unwrap(),
            Path::new("/home/u/.cache/wgtrain/mnist")
        );
        assert_eq!(
            cache_dir_from(None, platform, "").unwrap(),
            Path::new("/home/u/.cache/wgtrain")
        );
        let err = cache_dir_from(None, none, "mnist").unwrap_err().to_string();
        assert!(err.contains(ENV_CACHE_DIR) && !err.contains('\n'), "{err}");
        assert!(err.contains("mnist"), "{err}");
    }

    #[test]
    fn writes_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        atomic_write(&p, b"first").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        atomic_write(&p, b"second, longer").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second, longer");
        atomic_write(&p, b"").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"");
        assert_eq!(entries(dir.path()), vec!["out.bin"]);
    }

    #[test]
    fn failed_rename_cleans_up_and_keeps_target() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory cannot be replaced by a file, so the final rename fails.
        let p = dir.path().join("target");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("keep"), b"x").unwrap();
        let err = atomic_write(&p, b"data").unwrap_err();
        assert!(err.to_string().contains("target"), "{err}");
        assert_eq!(entries(dir.path()), vec!["target"]);
        assert_eq!(fs::read(p.join("keep")).unwrap(), b"x");
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("out.bin");
        let err = atomic_write(&p, b"data").unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        assert!(!dir.path().join("nope").exists());
    }

    #[test]
    fn readers_never_see_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        let a = vec![b'a'; 1 << 20];
        let b = vec![b'b'; (1 << 20) + 4096];
        atomic_write(&p, &a).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = {
            let (p, stop, seen) = (p.clone(), stop.clone(), seen.clone());
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) {
                    let got = fs::read(&p).unwrap();
                    assert!(
                        got == a || got == b,
                        "saw a partial file of {} bytes",
                        got.len()
                    );
                    reads += 1;
                    seen.store(reads, Ordering::Relaxed);
                }
                reads
            })
        };
        // At least 20 writes, and on until the reader has read a few times (a loaded machine
        // may not schedule it during the first 20).
        let mut i = 0;
        while i < 20 || seen.load(Ordering::Relaxed) < 5 {
            atomic_write(&p, if i % 2 == 0 { &b } else { &a }).unwrap();
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(entries(dir.path()), vec!["big.bin"]);
    }

    /// Run the writer in a child process (this same test binary) and SIGKILL it at varying
    /// moments: the target must always be one complete version.
    ///
    /// Event-driven, not timed: the child prints a line on stdout after each completed write,
    /// and round `r` kills it right after its `r + 1`-th line, while it is in the middle of the
    /// next write (creating, filling, syncing or renaming its temp file, wherever the scheduler
    /// lets it be). A loaded machine only slows the rounds down. Each round starts from the
    /// parent's version `a`, and the child writes only `b` and `c`: after an announced write the
    /// file must be one of those two, whole.
    #[cfg(unix)]
    #[test]
    fn kill_9_mid_write_never_truncates() {
        use std::io::BufRead;
        const CHILD_ENV: &str = "WGTRAIN_ATOMIC_WRITE_CHILD";
        const WROTE: &str = "wgtrain-atomic-write: wrote";
        let a = vec![b'a'; 4 << 20];
        let b = vec![b'b'; (4 << 20) + 1];
        let c = vec![b'c'; (4 << 20) + 2];
        if let Ok(dir) = std::env::var(CHILD_ENV) {
            // Child: rewrite the file until killed, announcing each completed write (bounded
            // in case the parent dies first). Straight to the process's stdout, which the test
            // harness does not capture.
            let p = Path::new(&dir).join("target.bin");
            let start = std::time::Instant::now();
            for i in 0.. {
                atomic_write(&p, if i % 2 == 0 { &b } else { &c }).unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "{WROTE} {i}").unwrap();
                out.flush().unwrap();
                if start.elapsed().as_secs() > 60 {
                    break;
                }
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("target.bin");
        for round in 0..6 {
            atomic_write(&p, &a).unwrap();
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "util::tests::kill_9_mid_write_never_truncates",
                    "--nocapture",
                ])
                .env(CHILD_ENV, dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Wait for `round + 1` completed writes; the harness's own lines are skipped.
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let mut writes = 0;
            while writes <= round {
                match lines.next() {
                    Some(line) => writes += usize::from(line.unwrap().starts_with(WROTE)),
                    None => panic!("round {round}: the child exited after {writes} writes"),
                }
            }
            child.kill().unwrap(); // SIGKILL, mid-way through the next write
            child.wait().unwrap();
            let got = fs::read(&p).unwrap();
            assert!(
                got == b || got == c,
                "round {round}: {} bytes, {}",
                got.len(),
                if got == a {
                    "the child's announced writes did not land"
                } else {
                    "not one complete version"
                }
            );
        }
    }
}
