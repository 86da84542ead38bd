//! Per-channel normalisation (`--normalize auto|MEAN/STD`) through the public API: the
//! setting's grammar and refusals, `auto`'s values against numpy's, the batches the engine
//! gathers (the oracle's on the CPU engine, the same on every adapter, augmented or not, in
//! training and evaluation), and a model trained with it evaluating and predicting the same
//! after a save and a load.

mod common;

use wgtrain::data::{Dataset, SampleShape};
use wgtrain::error::Setting;
use wgtrain::model::{Arch, Model};
use wgtrain::ops::{Augment, FeatureType, GatherAugment, Normalize};
use wgtrain::train::{self, session, Engine, Init, TrainConfig, Which};
use wgtrain::Error;

const SHAPE: SampleShape = SampleShape::Image { c: 3, h: 6, w: 5 };
const ARCH: &str = "3x6x5-c4k3p1-b-d0.2-g-4";

fn lcg(seed: u64) -> impl FnMut() -> u32 {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    }
}

/// `n` seeded pseudo-random 3×6×5 images (bytes, or f32 values in [−2, 2)) with labels 0..4;
/// channel k's values are shifted by k so that the channels differ.
fn data(n: usize, seed: u64, kind: FeatureType) -> Dataset {
    let mut next = lcg(seed);
    let len = n * SHAPE.len();
    let labels: Vec<u32> = (0..n).map(|_| next() % 4).collect();
    match kind {
        FeatureType::U8 => {
            let images = (0..len)
                .map(|i| ((next() % 200) + 25 * (i % 3) as u32) as u8)
                .collect();
            Dataset::new(SHAPE, images, labels).unwrap()
        }
        FeatureType::F32 => {
            let v: Vec<f32> = (0..len)
                .map(|i| (next() % 4096) as f32 / 1024.0 - 2.0 + (i % 3) as f32)
                .collect();
            Dataset::from_f32(SHAPE, &v, labels).unwrap()
        }
    }
}

fn cfg(batch: usize, augment: Augment, normalize: Normalize) -> TrainConfig {
    let mut c = TrainConfig::lecture(Arch::parse(ARCH).unwrap());
    c.batch = batch;
    c.init = Init::Pytorch;
    c.lr = 0.05;
    c.epochs = 2;
    c.seed = 7;
    c.augment = augment;
    c.normalize = normalize;
    c
}

fn values(mean: &[f32], std: &[f32]) -> Normalize {
    Normalize::Values {
        mean: mean.to_vec(),
        std: std.to_vec(),
    }
}

const CROP_FLIP: Augment = Augment {
    crop: 2,
    flip: true,
};

#[test]
fn the_normalize_setting_parses_prints_and_refuses_in_one_line() {
    for (s, want) in [
        ("auto", Normalize::Auto),
        ("off", Normalize::Off),
        ("0.286/0.353", values(&[0.286], &[0.353])),
        (
            "0.4914,0.4822,0.4465/0.247,0.243,0.261",
            values(&[0.4914, 0.4822, 0.4465], &[0.247, 0.243, 0.261]),
        ),
        ("-1, 2e-1/ 3,0.5", values(&[-1.0, 0.2], &[3.0, 0.5])),
    ] {
        let n = Normalize::parse(s).unwrap();
        assert_eq!(n, want, "{s}");
        assert_eq!(Normalize::parse(&n.to_string()).unwrap(), n);
    }
    for bad in [
        "",
        "0.5",
        "0.5/0",
        "0.5/-1",
        "x/1",
        "0.5/inf",
        "nan/1",
        "1,2/3",
        "/",
        "0.5/1/2",
        "automatic",
    ] {
        let e = Normalize::parse(bad).unwrap_err();
        assert!(!e.contains('\n') && !e.is_empty(), "{bad}: {e}");
    }
    // Off is not written into a configuration, so files of runs without it are unchanged.
    let json = serde_json::to_string(&cfg(4, Augment::OFF, Normalize::Off)).unwrap();
    assert!(!json.contains("normalize"), "{json}");
    let json = serde_json::to_string(&cfg(4, Augment::OFF, values(&[0.5], &[2.0]))).unwrap();
    let back: TrainConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.normalize, values(&[0.5], &[2.0]));
}

/// `auto` on tests/fixtures/tiny.npz's training images gives numpy's per-channel mean and
/// population standard deviation of x / 255 (scripts/make_normalize_fixture.py), to f32's
/// rounding of the f64 values (a relative 2⁻²⁴, 6e-8; 1e-6 allowed for the summation order).
#[test]
fn auto_values_are_numpys() {
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/tiny_normalize.json").unwrap(),
    )
    .unwrap();
    let splits = wgtrain::data::npz::load(std::path::Path::new("tests/fixtures/tiny.npz")).unwrap();
    let t = splits.train;
    assert_eq!(t.shape, SampleShape::Image { c: 3, h: 4, w: 4 });
    let Normalize::Values { mean, std } = Normalize::auto(&t.features, t.kind, 3).unwrap() else {
        panic!("values")
    };
    for (name, got) in [("mean", &mean), ("std", &std)] {
        let w: Vec<f64> = want[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), 3);
        for (g, w) in got.iter().zip(&w) {
            assert!(
                (*g as f64 - w).abs() <= 1e-6 * w.abs(),
                "{name}: {got:?} against numpy's {w:?}"
            );
        }
    }
    // The engine resolves `auto` to those values, which the run's configuration then holds.
    let c = {
        let mut c = TrainConfig::lecture(Arch::parse("3x4x4-c6k3p1-g-3").unwrap());
        c.normalize = Normalize::Auto;
        c
    };
    let m = Model::init_pytorch(&c.arch, 1);
    let e = Engine::cpu(&c, &m, None, &t, None).unwrap();
    assert_eq!(e.config().normalize, values(&mean, &std));
}

#[test]
fn normalisation_that_does_not_fit_the_data_is_refused_with_a_typed_error() {
    let d = data(10, 1, FeatureType::U8);
    for (n, needle) in [
        (values(&[0.1, 0.2], &[1.0, 1.0]), "3 channels"),
        (values(&[0.1], &[0.0]), "> 0"),
    ] {
        let c = cfg(5, Augment::OFF, n);
        let m = Model::init_pytorch(&c.arch, 1);
        match Engine::cpu(&c, &m, None, &d, None) {
            Err(Error::InvalidSetting {
                setting: Setting::Normalize,
                reason,
            }) => assert!(
                reason.contains(needle) && !reason.contains('\n'),
                "{reason}"
            ),
            other => panic!("expected a refusal, got {:?}", other.err()),
        }
    }
    // A constant channel has nothing to divide by.
    let flat = Dataset::new(SampleShape::Flat(4), vec![7; 40], vec![0; 10]).unwrap();
    let mut c = TrainConfig::lecture(Arch::parse("4-3-2").unwrap());
    c.normalize = Normalize::Auto;
    let m = Model::init_pytorch(&c.arch, 1);
    match Engine::cpu(&c, &m, None, &flat, None) {
        Err(Error::InvalidSetting {
            setting: Setting::Normalize,
            reason,
        }) => assert!(reason.contains("constant"), "{reason}"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
}

/// The training batches of steps 0..steps over epoch 0 (x as the engine holds it, labels).
fn batches(e: &mut Engine, order: &[u32], steps: usize) -> Vec<(Vec<f32>, Vec<u32>)> {
    (0..steps)
        .map(|s| {
            e.set_step(s).unwrap();
            e.train_steps(order, s, 1).unwrap();
            e.last_batch().unwrap()
        })
        .collect()
}

/// The oracle's batch of step `step` (rows from `first` of `order`).
fn oracle(
    d: &Dataset,
    order: &[u32],
    first: usize,
    rows: usize,
    step: u32,
    augment: Augment,
    table: &[f32],
) -> Vec<f32> {
    let SampleShape::Image { c, h, w } = d.shape else {
        unreachable!()
    };
    let ga = GatherAugment {
        augment,
        h,
        w,
        c,
        seed: wgtrain::ops::fold_seed(7),
        step: wgtrain::ops::BufId(0),
    };
    let (x, _) = wgtrain::cpu::gather::gather(
        &d.features,
        d.kind,
        &d.labels,
        d.sample_len(),
        order,
        first,
        rows,
        (!augment.is_off()).then_some((&ga, step)),
        Some(table),
    );
    x.iter().copied().collect()
}

/// The normalised batches the CPU engine gathers are the oracle's bit for bit, the oracle's
/// are (v − mean)·(1/std) of the plain batches per channel, and every adapter gathers the same
/// (f32 values bit for bit; bytes within the kernel's argued rounding: its division by 255
/// within 2.5 ULP scaled by 1/std, plus the two roundings after it), with and without the
/// augmentation, whose zero padding becomes −mean/std.
#[test]
fn normalised_batches_are_the_oracles_on_the_cpu_engine_and_every_adapter() {
    let steps = 4;
    let n = values(&[0.3, -0.5, 1.25], &[0.2, 1.5, 0.7]);
    let table = n.table(3).unwrap().unwrap();
    for kind in [FeatureType::F32, FeatureType::U8] {
        for augment in [Augment::OFF, CROP_FLIP] {
            let d = data(37, 3, kind);
            let c = cfg(8, augment, n.clone());
            let m = Model::init_pytorch(&c.arch, 2);
            let order = train::epoch_order(d.n, c.seed, 0, true);
            let mut cpu = Engine::cpu(&c, &m, None, &d, None).unwrap();
            let want = batches(&mut cpu, &order, steps);
            let mut plain =
                Engine::cpu(&cfg(8, augment, Normalize::Off), &m, None, &d, None).unwrap();
            let raw = batches(&mut plain, &order, steps);
            for (s, (x, y)) in want.iter().enumerate() {
                let o = oracle(&d, &order, s * 8, 8, s as u32, augment, &table);
                assert!(
                    x.iter().zip(&o).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{kind:?} {augment} step {s}: the CPU engine's batch is not the oracle's"
                );
                assert_eq!(y, &raw[s].1);
                for (i, (&v, &r)) in x.iter().zip(&raw[s].0).enumerate() {
                    let ch = i % 3;
                    assert_eq!(
                        v.to_bits(),
                        ((r - table[ch]) * table[3 + ch]).to_bits(),
                        "{kind:?} {augment} step {s} value {i}"
                    );
                }
                if !augment.is_off() {
                    let pad = (0.0 - table[0]) * table[3];
                    assert!(x.contains(&pad), "step {s}: crop padding, normalised");
                }
            }
            for ctx in common::contexts("normalised_batches") {
                let mut gpu = Engine::gpu(ctx, &c, &m, None, &d, None).unwrap();
                let got = batches(&mut gpu, &order, steps);
                let device = gpu.device();
                for (s, ((gx, gy), (wx, wy))) in got.iter().zip(&want).enumerate() {
                    assert_eq!(gy, wy, "{device} step {s}");
                    let u = 1.0 / (1u64 << 24) as f64;
                    for (i, (a, b)) in gx.iter().zip(wx).enumerate() {
                        let ok = match kind {
                            FeatureType::F32 => a.to_bits() == b.to_bits(),
                            FeatureType::U8 => {
                                let s = table[3 + i % 3] as f64;
                                ((a - b) as f64).abs() <= 3.0 * u * s + 3.0 * u * (*b as f64).abs()
                            }
                        };
                        assert!(
                            ok,
                            "{kind:?} {augment} on {device}, step {s}, value {i}: {a} against \
                             the CPU engine's {b}"
                        );
                    }
                }
            }
        }
    }
}

/// A model trained with `auto` normalisation, saved as `wgtrain train` saves it and loaded
/// back with the normalisation its file holds, evaluates to the same bits and predicts the
/// same probabilities; without the normalisation it does not.
#[test]
fn a_normalised_model_evaluates_and_predicts_identically_after_save_and_load() {
    let d = data(40, 6, FeatureType::U8);
    let test = data(16, 8, FeatureType::U8);
    let c = cfg(8, CROP_FLIP, Normalize::Auto);
    let m = Model::init_pytorch(&c.arch, 3);
    let mut e = Engine::cpu(&c, &m, None, &d, Some(&test)).unwrap();
    let order = train::epoch_order(d.n, c.seed, 0, true);
    e.train_steps(&order, 0, 5).unwrap();
    let resolved = e.config().normalize.clone();
    assert_eq!(resolved, Normalize::auto(&d.features, d.kind, 3).unwrap());
    let trained_eval = e.evaluate(Which::Test).unwrap();
    let x: Vec<f32> = test.features[..8 * SHAPE.len()]
        .iter()
        .map(|&b| b as f32 / 255.0)
        .collect();
    let trained_probs = e.probabilities(&x).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    session::finish(&mut e, Vec::new(), 0.0, &path).unwrap();
    let (loaded, meta) = Model::load(&path).unwrap();
    let saved = train::saved_normalize(&meta).unwrap();
    assert_eq!(saved, resolved);

    let mut ec = TrainConfig::lecture(loaded.arch.clone());
    ec.batch = 8;
    ec.normalize = saved;
    let mut again = Engine::cpu(&ec, &loaded, None, &test, None).unwrap();
    assert_eq!(again.evaluate(Which::Train).unwrap(), trained_eval);
    let probs = again.probabilities(&x).unwrap();
    assert!(
        probs
            .iter()
            .zip(&trained_probs)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "predictions after the load differ"
    );
    // On the GPU too, to rounding: the same predicted classes.
    for ctx in common::contexts("normalised_model_on_gpu") {
        let mut g = Engine::gpu(ctx, &ec, &loaded, None, &test, None).unwrap();
        let p = g.probabilities(&x).unwrap();
        for (a, b) in p.iter().zip(&probs) {
            assert!((a - b).abs() < 1e-4, "{} against {}", a, b);
        }
    }
    // The check can fail: the same model without its normalisation evaluates otherwise.
    ec.normalize = Normalize::Off;
    let mut off = Engine::cpu(&ec, &loaded, None, &test, None).unwrap();
    assert_ne!(off.evaluate(Which::Train).unwrap(), trained_eval);
    assert_ne!(off.probabilities(&x).unwrap(), trained_probs);
}

/// `wgtrain train --normalize auto` saves the values, `eval` applies them (the run's final test
/// accuracy again), `predict` reads the clear 7 of `assets/digits` as a 7, and a bad value ends
/// in one line naming the flag.
#[test]
fn the_cli_trains_evaluates_and_predicts_with_normalisation() {
    let run = |args: &[&str]| {
        common::wgtrain_command()
            .args(args)
            .output()
            .expect("run wgtrain")
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let m = model.to_str().unwrap();
    let out = run(&[
        "train",
        "--arch",
        "784-128-10",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--epochs",
        "3",
        "--data-dir",
        "assets/mnist-sample",
        "--normalize",
        "auto",
        "--device",
        "cpu",
        "--json",
        "--out",
        m,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, meta) = Model::load(&model).unwrap();
    let Normalize::Values { mean, std } = train::saved_normalize(&meta).unwrap() else {
        panic!("values saved")
    };
    // MNIST's pixels: mean about 0.13, standard deviation about 0.31.
    assert!(
        (0.1..0.16).contains(&mean[0]) && (0.28..0.34).contains(&std[0]),
        "{mean:?} {std:?}"
    );
    let ev = run(&[
        "eval",
        "--model",
        m,
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
    assert!(
        (e["test_acc"].as_f64().unwrap() - v["final"]["test_acc"].as_f64().unwrap()).abs() < 1e-6,
        "eval {e} against training's {}",
        v["final"]
    );
    let pr = run(&["predict", "--model", m, "--json", "assets/digits/7_0.png"]);
    assert!(
        pr.status.success(),
        "{}",
        String::from_utf8_lossy(&pr.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&pr.stdout).unwrap();
    assert_eq!(p["predictions"][0]["top"][0]["class"], 7, "{p}");

    let bad = run(&[
        "train",
        "--arch",
        "784-10",
        "--data-dir",
        "assets/mnist-sample",
        "--normalize",
        "0.1/0",
        "--device",
        "cpu",
        "--out",
        m,
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && !err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(err.contains("--normalize") && err.contains("> 0"), "{err}");
}
