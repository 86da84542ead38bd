//! `examples/train_in_memory.rs`, the library's embedding example, runs and learns: `cargo
//! test` builds the examples, and this runs that one on the CPU engine and on a GPU adapter
//! where there is one (lavapipe here).

use std::path::PathBuf;
use std::process::Command;

mod common;

/// The example's binary, beside this test's (`target/<profile>/examples/`).
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples")
        .join(format!("train_in_memory{}", std::env::consts::EXE_SUFFIX))
}

fn run(device: &str) -> String {
    let out = Command::new(example())
        .arg(device)
        .output()
        .expect("run examples/train_in_memory (built by cargo test)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{device}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn train_in_memory_example_learns_the_stripes_and_reloads_its_model() {
    let text = run("cpu");
    assert!(text.contains("on cpu"), "{text}");
    assert!(text.contains("predictions agree"), "{text}");
    let acc: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("test: accuracy "))
        .and_then(|l| l.split('%').next())
        .and_then(|v| v.parse().ok())
        .expect("a test accuracy line");
    assert!(acc >= 90.0, "{text}");
    if !common::contexts("example").is_empty() {
        let text = run("gpu");
        assert!(text.contains("predictions agree"), "{text}");
    }
}
