//! The `wgtrain` binary as a user runs it: results in standard formats, and bad input ending
//! in a one-line error with a non-zero exit, never a panic.

mod common;

use std::path::Path;
use std::process::Output;

/// Run the binary with the tests' environment: their own cache folder (never the user's
/// autotune cache), a writable `XDG_RUNTIME_DIR`, no `MNIST_DIR`.
fn wgtrain(args: &[&str]) -> Output {
    common::wgtrain_command()
        .args(args)
        .output()
        .expect("run wgtrain")
}

/// Non-zero exit, one line on stderr naming `needle`, no panic.
fn fails_cleanly(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "panic: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {err}");
    assert!(
        err.contains(needle),
        "error should mention {needle:?}: {err}"
    );
}

fn train_small(dir: &Path, extra: &[&str]) -> Output {
    let out = dir.join("m.safetensors");
    let mut args = vec![
        "train",
        "--arch",
        "784-32-10",
        "--data-dir",
        "assets/mnist-sample",
        "--epochs",
        "2",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    wgtrain(&args)
}

#[test]
fn train_writes_model_csv_plot_and_json_then_eval_and_predict_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = train_small(dir.path(), &["--device", "cpu"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["epochs"].as_array().unwrap().len(), 2);
    assert!(v["final"]["test_acc"].as_f64().unwrap() > 0.5);
    for f in ["m.safetensors", "m.metrics.csv", "m.png", "m.json"] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(dir.path().join("m.metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    let model = dir.path().join("m.safetensors");
    assert_eq!(v["engine"], "cpu");
    let (m, meta) = wgtrain::model::Model::load(&model).unwrap();
    assert_eq!(m.arch.to_string(), "784-32-10");
    let cfg: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    assert_eq!(cfg["lr"].as_f64().unwrap() as f32, 0.05);
    assert_eq!(cfg["optimizer"], "sgd");

    let ev = wgtrain(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data-dir",
        "assets/mnist-sample",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(
        ev.status.success(),
        "{}",
        String::from_utf8_lossy(&ev.stderr)
    );
    let e: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(e["test_images"], 1000);
    assert!(
        (e["test_acc"].as_f64().unwrap() - v["final"]["test_acc"].as_f64().unwrap()).abs() < 1e-6
    );

    let pr = wgtrain(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "assets/digits/7_0.png",
        "assets/digits/7_0_inverted.png",
    ]);
    assert!(
        pr.status.success(),
        "{}",
        String::from_utf8_lossy(&pr.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&pr.stdout).unwrap();
    let preds = p["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    assert_eq!(
        preds[0]["top"][0]["class"], preds[1]["top"][0]["class"],
        "inverted digit must read the same"
    );
    // Test image 0 is a clear 7: this 2-epoch model (73–75% test accuracy over seeds 1–6) gives
    // it 7 with probability 0.89–0.97.
    assert_eq!(preds[0]["top"][0]["class"], 7, "{p}");
}

/// `predict` names the digit each file in `assets/digits` shows (the number before the `_`),
/// for the plain and the inverted image, from a model trained by `train` on the sample.
#[test]
fn predict_returns_the_digit_named_in_each_file() {
    // 784-128-10, Adam lr 1e-3, 10 epochs on the 2,000-image sample (~0.5 s): 87–88% test
    // accuracy over seeds 1–8, and every digit file predicted right in all 8 runs, the hardest
    // (2_1.png, a 2 that weaker models read as 6) with probability 0.85–0.92. The 2-epoch
    // 784-32-10 model above reads it as 6 for some seeds, so it cannot carry this check.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let out = wgtrain(&[
        "train",
        "--arch",
        "784-128-10",
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--epochs",
        "10",
        "--seed",
        "1",
        "--device",
        "cpu",
        "--data-dir",
        "assets/mnist-sample",
        "--quiet",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<String> = std::fs::read_dir("assets/digits")
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .filter(|p| p.ends_with(".png"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut args = vec!["predict", "--model", model.to_str().unwrap(), "--json"];
    args.extend(files.iter().map(String::as_str));
    let pr = wgtrain(&args);
    assert!(
        pr.status.success(),
        "{}",
        String::from_utf8_lossy(&pr.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&pr.stdout).unwrap();
    let preds = p["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), files.len());
    for (file, pred) in files.iter().zip(preds) {
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        let want: u64 = name[..name.find('_').unwrap()].parse().unwrap();
        assert_eq!(pred["image"], file.as_str());
        assert_eq!(pred["top"][0]["class"], want, "{name}: {}", pred["top"]);
    }
}

#[test]
fn gpu_train_json_names_the_adapter() {
    if common::contexts("cli_gpu").is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = train_small(dir.path(), &["--device", "gpu", "--backend", "vulkan"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["device"].as_str().unwrap().contains("Vulkan"),
        "{}",
        v["device"]
    );
}

#[test]
fn bad_hyperparameters_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    fails_cleanly(&train_small(dir.path(), &["--lr", "0"]), "--lr");
    fails_cleanly(&train_small(dir.path(), &["--lr=-1"]), "--lr");
    fails_cleanly(
        &train_small(dir.path(), &["--batch-size", "0"]),
        "--batch-size",
    );
    for bad in ["crop:x", "rotate", "flip,flip", "crop:0"] {
        fails_cleanly(&train_small(dir.path(), &["--augment", bad]), "--augment");
    }
    let out = dir.path().join("m.safetensors");
    let arch = |a: &str| {
        wgtrain(&[
            "train",
            "--arch",
            a,
            "--data-dir",
            "assets/mnist-sample",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    fails_cleanly(&arch("784-0-10"), "--arch");
    fails_cleanly(&arch("100-10"), "784");
    // Residual blocks: unbalanced, nested, empty, and one no 1×1 projection reaches.
    for bad in [
        "1x28x28-r(c4k3p1-10",
        "1x28x28-r(c4k3p1-r(c4k1))-10",
        "1x28x28-r()-10",
        "1x28x28-c4k1-r(c4k3p2)-10",
    ] {
        fails_cleanly(&arch(bad), "--arch");
    }
    assert!(
        !dir.path().join("m.safetensors").exists(),
        "no model file on failure"
    );
}

#[test]
fn arch_that_disagrees_with_init_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ok = train_small(dir.path(), &["--device", "cpu"]);
    assert!(ok.status.success());
    let init = dir.path().join("m.safetensors");
    let out = wgtrain(&[
        "train",
        "--init",
        init.to_str().unwrap(),
        "--arch",
        "784-64-10",
        "--data-dir",
        "assets/mnist-sample",
        "--device",
        "cpu",
        "--out",
        dir.path().join("n.safetensors").to_str().unwrap(),
    ]);
    fails_cleanly(&out, "784-64-10");
}

#[test]
fn malformed_files_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    fails_cleanly(
        &wgtrain(&[
            "eval",
            "--model",
            junk.to_str().unwrap(),
            "--data-dir",
            "assets/mnist-sample",
        ]),
        "junk.safetensors",
    );
    fails_cleanly(
        &wgtrain(&[
            "predict",
            "--model",
            junk.to_str().unwrap(),
            "assets/digits/7_0.png",
        ]),
        "junk.safetensors",
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails_cleanly(
        &wgtrain(&["train", "--data-dir", empty.to_str().unwrap()]),
        "train-images",
    );
    // The library's errors name no flag; the CLI words them with its own.
    fails_cleanly(
        &wgtrain(&["train", "--data-dir", empty.to_str().unwrap()]),
        "error: --data-dir: ",
    );
    fails_cleanly(
        &wgtrain(&["train", "--lr", "0"]),
        "error: invalid argument --lr: 0 must be a finite number > 0",
    );
    // Refused before any data is read (the MNIST folder is not even looked for).
    fails_cleanly(
        &wgtrain(&["train", "--optimizer", "adam", "--nesterov"]),
        "invalid argument --nesterov: needs the sgd optimizer with momentum > 0",
    );
    fails_cleanly(&wgtrain(&["devices", "--backend", "nonsense"]), "nonsense");
}

#[test]
fn help_explains_every_flag() {
    let out = wgtrain(&["train", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--preset",
        "--arch",
        "--lr",
        "--l2",
        "--epochs",
        "--max-steps",
        "--batch-size",
        "--momentum",
        "--seed",
        "--no-shuffle",
        "--augment",
        "--init",
        "--device",
        "--out",
        "--json",
        "--data-dir",
        "--backend",
        "--adapter",
    ] {
        assert!(text.contains(flag), "train --help lacks {flag}");
    }
}

#[test]
fn devices_lists_adapters_as_json() {
    if common::contexts("cli_devices").is_empty() {
        return;
    }
    let out = wgtrain(&["devices", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = &v["adapters"][0];
    assert!(
        a["limits"]["max_storage_buffer_binding_size"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(a["name"].is_string() && a["backend"].is_string());
}

#[test]
fn batch_beyond_the_adapter_limits_is_refused_up_front() {
    if common::contexts("cli_limits").is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 1,048,576 × 784 floats = 3.3 GB for one activation buffer: beyond lavapipe's binding limit.
    let out = train_small(dir.path(), &["--device", "gpu", "--batch-size", "1048576"]);
    fails_cleanly(&out, "max_");
}

#[test]
fn diverging_loss_stops_with_one_line_and_writes_no_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = train_small(dir.path(), &["--device", "cpu", "--lr", "1e30"]);
    fails_cleanly(&out, "diverged");
    assert!(!dir.path().join("m.safetensors").exists());
}

#[test]
fn thread_counts_outside_the_cores_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for t in ["0", "100000"] {
        fails_cleanly(
            &train_small(dir.path(), &["--device", "cpu", "--threads", t]),
            "--threads",
        );
    }
    assert!(!dir.path().join("m.safetensors").exists(), "no model file");
    let ok = train_small(dir.path(), &["--device", "cpu", "--threads", "1"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["engine"], "cpu");
    assert!(
        v["device"].as_str().unwrap().contains("1 thread"),
        "{}",
        v["device"]
    );
}

/// `--device auto` trains on the CPU engine, with a one-line note, when the best adapter of
/// the backend is a software rasteriser (lavapipe here), and on the adapter when it is
/// hardware; `--device gpu` always takes the adapter.
#[test]
fn auto_prefers_the_cpu_engine_over_a_software_adapter() {
    let vulkan: Vec<_> = common::contexts("cli_auto")
        .into_iter()
        .filter(|c| c.info.backend == wgpu::Backend::Vulkan)
        .collect();
    if vulkan.is_empty() {
        return;
    }
    // wgtrain prefers hardware adapters, so the best is software only when all are.
    let software = vulkan
        .iter()
        .all(|c| c.info.device_type == wgpu::DeviceType::Cpu);
    let dir = tempfile::tempdir().unwrap();
    let out = train_small(dir.path(), &["--backend", "vulkan"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["engine"], if software { "cpu" } else { "gpu" }, "{err}");
    assert_eq!(err.contains("software one"), software, "{err}");
    let forced = train_small(dir.path(), &["--backend", "vulkan", "--device", "gpu"]);
    let v: serde_json::Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert_eq!(v["engine"], "gpu");
}

/// No adapter on the chosen backend (DX12 does not exist on Linux): `train` says so and
/// falls back to the CPU path; `--device gpu` fails with how to get an adapter.
#[cfg(target_os = "linux")]
#[test]
fn without_an_adapter_train_says_so_and_uses_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let args = |device: &'static str| {
        vec![
            "train".to_string(),
            "--arch".into(),
            "784-16-10".into(),
            "--data-dir".into(),
            "assets/mnist-sample".into(),
            "--epochs".into(),
            "1".into(),
            "--backend".into(),
            "dx12".into(),
            "--device".into(),
            device.into(),
            "--quiet".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let a: Vec<String> = args("auto");
    let o = wgtrain(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("no GPU adapter") && err.contains("CPU engine"),
        "{err}"
    );
    let g: Vec<String> = args("gpu");
    fails_cleanly(
        &wgtrain(&g.iter().map(String::as_str).collect::<Vec<_>>()),
        "mesa-vulkan-drivers",
    );
}

/// Without the `distributed` feature, `--distributed` says how to get it instead of running
/// alone as if it were one rank.
#[cfg(not(feature = "distributed"))]
#[test]
fn distributed_without_the_feature_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = train_small(dir.path(), &["--distributed"]);
    fails_cleanly(&out, "--features distributed");
    assert!(!dir.path().join("m.safetensors").exists());
}
