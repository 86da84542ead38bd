//! A cold start (issue 23): a run with no autotune cache takes its first step on the adapter's
//! default tile, checked against the CPU twin, and tunes between steps, switching its programs
//! to the faster variants it finds; with a tuning budget of zero it still trains.

mod common;

use std::path::Path;
use std::time::Duration;
use wgtrain::backend::gpu::GpuBackend;
use wgtrain::data::load_dir;
use wgtrain::gpu::kernels::MatmulTile;
use wgtrain::model::Arch;
use wgtrain::train::{Engine, Position, Progress, Quiet, TrainConfig};

/// The same run as tests/train.rs' `gpu_and_cpu_training_agree_within_rounding`: 784-32-16-10,
/// lecture settings, 20 steps of 100 on the committed sample. The argument for its tolerance
/// (4e-7) is there; a tile switch changes only the order of a product's sums, which that
/// argument already allows at every step.
const SGD_20_STEPS_TOL: f32 = 4e-7;

#[test]
fn background_tuning_starts_on_checked_defaults_then_switches_every_program_to_its_choice() {
    let Some(ctx) = common::contexts("background_tuning")
        .into_iter()
        .find(|c| c.info.backend == wgpu::Backend::Vulkan)
    else {
        eprintln!("SKIPPED background_tuning: no Vulkan adapter");
        return;
    };
    // This process's own cache file, empty: every product starts cold. (No other test of
    // this binary tunes in process, so the tuner's state first reads the file named here.)
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("autotune.json");
    std::env::set_var(common::AUTOTUNE_CACHE_ENV, &cache);

    let data = load_dir(Path::new("assets/mnist-sample")).expect("committed sample");
    let mut cfg = TrainConfig::lecture(Arch::parse("784-32-16-10").unwrap());
    cfg.epochs = 1;
    let model = cfg.init_model();
    let mut cpu = Engine::cpu(&cfg, &model, None, &data.train, None).unwrap();
    wgtrain::train::run(&mut cpu, Position::default(), &mut Quiet).unwrap();

    let default = MatmulTile::default_for(&ctx).to_string();
    let name = ctx.describe();
    let mut be = GpuBackend::new(ctx);
    be.tune_in_background(true);
    let mut gpu = Engine::new(Box::new(be), &cfg, &model, None, &data.train, None).unwrap();
    let started = gpu
        .tuning_report()
        .expect("products started on the default");
    // Forward, backward and weight-gradient products of three layers, as the step launches.
    assert!(started.products.len() >= 3, "{started:?}");
    for p in &started.products {
        assert_eq!(p.started, default, "{name}: {p:?}");
        assert_eq!(p.chosen, None, "{name}: tuned before the first step: {p:?}");
    }
    assert!(!cache.exists(), "nothing is cached before a search ends");

    // Half the run on the defaults, every search to its end, the other half on the choices.
    let mut progress = Progress::of(&gpu, Position::default());
    let first = progress.advance(&mut gpu, 10).unwrap();
    assert_eq!(first.done, 10);
    gpu.tune_between_chunks(Duration::from_secs(3600)).unwrap();
    let tuned = gpu.tuning_report().unwrap();
    assert_eq!(tuned.products.len(), started.products.len());
    assert!(tuned.seconds > 0.0);
    let file = std::fs::read_to_string(&cache).expect("the choices are cached");
    for p in &tuned.products {
        let chosen = p
            .chosen
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: {p:?}"));
        assert!(file.contains(chosen), "{chosen} not cached: {file}");
        eprintln!(
            "{name}: {} {:?}: {} -> {chosen}",
            p.class, p.shape, p.started
        );
    }
    while !progress.finished() {
        progress.advance(&mut gpu, 10).unwrap();
    }
    let d = common::max_diff(&cpu.model().unwrap(), &gpu.model().unwrap());
    eprintln!("{name}: max |w_gpu − w_cpu| = {d:.3e} across the switch");
    assert!(d < SGD_20_STEPS_TOL, "{name}: weights differ by {d}");
    assert!(common::max_diff(&model, &gpu.model().unwrap()) > 1e-3);
}

/// `wgtrain train --json` on Vulkan with a fresh cache folder and `extra` environment.
fn cold_cli_run(dir: &Path, steps: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let out = dir.join("m.safetensors");
    let mut c = common::wgtrain_command();
    c.env(common::CACHE_ENV, dir.join("cache"));
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c
        .args([
            "train",
            "--arch",
            "784-32-10",
            "--data-dir",
            "assets/mnist-sample",
            "--device",
            "gpu",
            "--backend",
            "vulkan",
            "--epochs",
            "1",
            "--max-steps",
            steps,
            "--json",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {err}"))
}

#[test]
fn a_cold_run_with_a_tuning_budget_of_zero_trains_on_the_checked_defaults_and_caches_nothing() {
    if !common::contexts("cold_zero_budget")
        .iter()
        .any(|c| c.info.backend == wgpu::Backend::Vulkan)
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v = cold_cli_run(dir.path(), "20", &[("WGTRAIN_AUTOTUNE_BUDGET", "0")]);
    let products = v["tuning"]["products"].as_array().expect("a tuning report");
    assert!(!products.is_empty(), "{v}");
    for p in products {
        assert!(p["chosen"].is_null(), "tuned with a budget of zero: {p}");
        assert_eq!(p["started"], products[0]["started"], "{p}");
    }
    assert_eq!(v["tuning"]["seconds"], 0.0);
    assert!(v["startup_seconds"].as_f64().unwrap() > 0.0);
    // It trained: the loss fell below a guess's ln 10 = 2.30.
    assert!(v["final"]["train_loss"].as_f64().unwrap() < 2.0, "{v}");
    assert!(!dir.path().join("cache").join("autotune.json").exists());
}

#[test]
fn a_cold_run_of_one_step_takes_it_before_any_product_is_tuned() {
    if !common::contexts("cold_first_step")
        .iter()
        .any(|c| c.info.backend == wgpu::Backend::Vulkan)
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let v = cold_cli_run(dir.path(), "1", &[]);
    let products = v["tuning"]["products"].as_array().expect("a tuning report");
    // Every product of the step was prepared on the default before anything was timed: the
    // forward and backward products of both layers.
    assert!(products.len() >= 3, "{v}");
    for p in products {
        assert_eq!(p["started"], products[0]["started"], "{p}");
    }
}

#[test]
fn bench_times_the_first_step_of_child_processes_cold_and_warm_on_its_adapter() {
    let Some(ctx) = common::contexts("bench_first_step")
        .into_iter()
        .find(|c| c.info.backend == wgpu::Backend::Vulkan)
    else {
        eprintln!("SKIPPED bench_first_step: no Vulkan adapter");
        return;
    };
    let opts = wgtrain::bench::BenchOpts {
        quick: true,
        ..Default::default()
    };
    let exe = Path::new(env!("CARGO_BIN_EXE_wgtrain"));
    let rows = wgtrain::bench::first_step::first_step_records(&ctx, &opts, exe).unwrap();
    let names: Vec<(&str, &str)> = rows.iter().map(|r| (&r.op[..], &r.shape[..])).collect();
    assert_eq!(
        names,
        [
            ("first step seed-large", "cold"),
            ("first step seed-large", "warm"),
            ("first step lenet5", "cold"),
            ("first step lenet5", "warm"),
        ]
    );
    for r in &rows {
        // A child that failed leaves NaN and its message; a measured one a positive time
        // below the children's whole run.
        assert!(
            r.median_ms.is_finite() && r.median_ms > 0.0 && r.median_ms < 120_000.0,
            "{} {}: {} ms ({})",
            r.op,
            r.shape,
            r.median_ms,
            r.note
        );
        assert!(r.note.contains("of tuning"), "{}", r.note);
        assert_eq!(r.adapter, ctx.info.name);
    }
}
