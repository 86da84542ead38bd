//! The web page and its WebAssembly package in headless Chromium (WebGPU on SwiftShader):
//! `bash web/build.sh`, then `node web/tests/browser.mjs` (kernel verification in the page on
//! WebGPU and the CPU twins, training through the page's controls, the downloaded model checked
//! by this crate's `wgtrain eval`, bad input, drawing a digit, keyboard and touch at a phone's
//! width, and README.md's figures of the page checked against what the page shows).
//! `WGTRAIN_WRITE_SCREENSHOTS=1` also writes the README's screenshots into `assets/web/`.
//!
//! Runs when `WGTRAIN_BROWSER_TESTS=1` or `CI` is set (it builds the WebAssembly release and
//! takes a minute or two); otherwise it says so and passes. What it needs: Chromium
//! (`/usr/bin/chromium`, or `WGTRAIN_CHROMIUM`), Node with `web/node_modules/playwright-core`
//! (`cd web && npm ci`) and the wasm-bindgen CLI at the version `web/build.sh` pins. When one
//! is missing it skips with the reason, unless `CI` is set: then it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn env_on(name: &str) -> bool {
    std::env::var(name)
        .map(|v| !v.is_empty() && v != "0" && v != "false")
        .unwrap_or(false)
}

fn runs(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Why the browser test cannot run here, if it cannot.
fn missing(root: &Path) -> Vec<String> {
    let mut why = Vec::new();
    let chromium = std::env::var_os("WGTRAIN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        why.push(format!(
            "no Chromium at {} (apt-get install chromium, or set WGTRAIN_CHROMIUM)",
            chromium.display()
        ));
    }
    if !runs("node", "--version") {
        why.push("no `node` on PATH (Node 20 or newer)".into());
    }
    if !root.join("web/node_modules/playwright-core").is_dir() {
        why.push("web/node_modules/playwright-core is missing (cd web && npm ci)".into());
    }
    if !runs("wasm-bindgen", "--version") {
        why.push(
            "no `wasm-bindgen` on PATH (cargo install wasm-bindgen-cli at the version web/build.sh pins)"
                .into(),
        );
    }
    why
}

fn show(what: &str, out: &std::process::Output) {
    println!("--- {what}: {}", out.status);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn web_page_in_headless_chromium() {
    let ci = env_on("CI");
    if !ci && !env_on("WGTRAIN_BROWSER_TESTS") {
        println!(
            "skipped: the browser test runs with WGTRAIN_BROWSER_TESTS=1 (or CI set); \
             it builds web/ for wasm32 and drives headless Chromium"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let why = missing(root);
    if !why.is_empty() {
        let msg = format!("browser test cannot run: {}", why.join("; "));
        if ci {
            panic!("{msg} (CI is set, so this fails instead of skipping)");
        }
        println!("skipped: {msg}");
        return;
    }

    let t0 = Instant::now();
    let build = Command::new("bash")
        .arg("web/build.sh")
        .current_dir(root)
        .output()
        .expect("run bash web/build.sh");
    show("bash web/build.sh", &build);
    assert!(build.status.success(), "bash web/build.sh failed");
    println!("build: {:.1} s", t0.elapsed().as_secs_f64());

    let t1 = Instant::now();
    let xdg = std::env::var_os("XDG_RUNTIME_DIR")
        .unwrap_or_else(|| std::env::temp_dir().into_os_string());
    let node = Command::new("node")
        .arg("web/tests/browser.mjs")
        .current_dir(root)
        // This build's CLI checks the page's downloaded model.
        .env("WGTRAIN_BIN", env!("CARGO_BIN_EXE_wgtrain"))
        .env("XDG_RUNTIME_DIR", xdg)
        .output()
        .expect("run node web/tests/browser.mjs");
    show("node web/tests/browser.mjs", &node);
    println!("browser tests: {:.1} s", t1.elapsed().as_secs_f64());
    assert!(
        node.status.success(),
        "node web/tests/browser.mjs failed (its output is above)"
    );
}
