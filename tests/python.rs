//! The Python package (`python/`, issue 21) in a fresh virtual environment: `maturin develop`
//! builds the extension in the dev profile into the workspace's `target/` (where this `cargo
//! test` has compiled wgtrain and its dependencies already), then `pytest python/tests` runs
//! against this build's `wgtrain` binary (the bit-for-bit comparison with the CLI).
//!
//! Runs when `WGTRAIN_PYTHON_TESTS=1` or `CI` is set; otherwise it says so and passes. It needs
//! Python 3.9 or newer with `venv` (`python3`, or `WGTRAIN_PYTHON`) and the package registry
//! for maturin, pytest and numpy. When something is missing it skips with the reason, unless
//! `CI` is set: then it fails. PyTorch is not installed here (too large): the `state_dict`
//! round trip through torch skips; run `pytest python/tests` in an environment with torch for
//! it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn env_on(name: &str) -> bool {
    std::env::var(name)
        .map(|v| !v.is_empty() && v != "0" && v != "false")
        .unwrap_or(false)
}

fn python() -> String {
    std::env::var("WGTRAIN_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Why the Python tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let check = "import sys, venv, ensurepip; assert sys.version_info >= (3, 9), sys.version";
    match Command::new(python()).args(["-c", check]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "{} lacks Python 3.9+ with venv and ensurepip ({})",
            python(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!(
            "no `{}` on PATH ({e}); set WGTRAIN_PYTHON to a Python 3.9+",
            python()
        )),
    }
}

fn run(what: &str, cmd: &mut Command) {
    let t = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    println!(
        "--- {what}: {} ({:.1} s)",
        out.status,
        t.elapsed().as_secs_f64()
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed (its output is above)");
}

#[test]
fn python_package_builds_and_its_tests_pass() {
    let ci = env_on("CI");
    if !ci && !env_on("WGTRAIN_PYTHON_TESTS") {
        println!(
            "skipped: the Python tests run with WGTRAIN_PYTHON_TESTS=1 (or CI set); they build \
             python/ into a fresh virtual environment and run pytest python/tests"
        );
        return;
    }
    if let Some(why) = missing() {
        let msg = format!("the Python tests cannot run: {why}");
        if ci {
            panic!("{msg} (CI is set, so this fails instead of skipping)");
        }
        println!("skipped: {msg}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let venv = target.join("python-test-venv");
    let _ = std::fs::remove_dir_all(&venv);
    run(
        "python3 -m venv",
        Command::new(python()).args(["-m", "venv"]).arg(&venv),
    );
    let bin = venv.join("bin");
    run(
        "pip install maturin pytest numpy",
        Command::new(bin.join("python")).args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "maturin>=1.5,<2",
            "pytest",
            "numpy",
        ]),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(
        "maturin develop (dev profile)",
        Command::new(bin.join("maturin"))
            .args(["develop", "--manifest-path", "python/Cargo.toml"])
            .current_dir(root)
            .env("VIRTUAL_ENV", &venv)
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", &target),
    );
    let xdg = std::env::var_os("XDG_RUNTIME_DIR")
        .unwrap_or_else(|| std::env::temp_dir().into_os_string());
    run(
        "pytest python/tests",
        Command::new(bin.join("python"))
            .args(["-m", "pytest", "-q", "-rs", "python/tests"])
            .current_dir(root)
            .env("WGTRAIN_BIN", env!("CARGO_BIN_EXE_wgtrain"))
            .env("XDG_RUNTIME_DIR", xdg),
    );
}
