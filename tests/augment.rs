//! Training-time augmentation (`--augment crop:P,flip`) through the public API: the setting's
//! grammar and refusals, the training batches the engine gathers (the oracle's crops and flips,
//! the same on the CPU engine and every adapter), evaluation unaugmented, and a resumed run
//! drawing the crops of an unbroken one.

mod common;

use wgtrain::data::{Dataset, SampleShape};
use wgtrain::error::Setting;
use wgtrain::model::{Arch, Model};
use wgtrain::ops::{Augment, FeatureType, GatherAugment};
use wgtrain::train::{self, Engine, Init, Position, Quiet, TrainConfig, Which};
use wgtrain::Error;

const SHAPE: SampleShape = SampleShape::Image { c: 3, h: 6, w: 5 };

fn lcg(seed: u64) -> impl FnMut() -> u32 {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    }
}

/// `n` seeded pseudo-random 3×6×5 images (bytes, or f32 values in [−2, 2)) with labels 0..4.
fn data(n: usize, seed: u64, kind: FeatureType) -> Dataset {
    let mut next = lcg(seed);
    let len = n * SHAPE.len();
    let labels: Vec<u32> = (0..n).map(|_| next() % 4).collect();
    match kind {
        FeatureType::U8 => {
            let images = (0..len).map(|_| (next() % 256) as u8).collect();
            Dataset::new(SHAPE, images, labels).unwrap()
        }
        FeatureType::F32 => {
            let v: Vec<f32> = (0..len)
                .map(|_| (next() % 4096) as f32 / 1024.0 - 2.0)
                .collect();
            Dataset::from_f32(SHAPE, &v, labels).unwrap()
        }
    }
}

fn cfg(arch: &str, batch: usize, augment: Augment) -> TrainConfig {
    let mut c = TrainConfig::lecture(Arch::parse(arch).unwrap());
    c.batch = batch;
    c.init = Init::Pytorch;
    c.lr = 0.05;
    c.epochs = 2;
    c.seed = 7;
    c.augment = augment;
    c
}

const CROP_FLIP: Augment = Augment {
    crop: 2,
    flip: true,
};

#[test]
fn the_augment_setting_parses_prints_and_refuses_in_one_line() {
    for (s, crop, flip) in [
        ("crop:4,flip", 4, true),
        ("flip,crop:4", 4, true),
        ("crop:1", 1, false),
        ("flip", 0, true),
        ("off", 0, false),
    ] {
        let a = Augment::parse(s).unwrap();
        assert_eq!(a, Augment { crop, flip }, "{s}");
        assert_eq!(Augment::parse(&a.to_string()).unwrap(), a);
    }
    for bad in [
        "",
        "crop",
        "crop:0",
        "crop:-1",
        "crop:x",
        "flip,flip",
        "crop:2,crop:3",
        "rotate",
        "off,flip",
    ] {
        let e = Augment::parse(bad).unwrap_err();
        assert!(!e.contains('\n') && !e.is_empty(), "{bad}: {e}");
    }
}

#[test]
fn augmenting_flat_samples_is_refused_with_a_typed_error() {
    let mut next = lcg(1);
    let d = Dataset::new(
        SampleShape::Flat(30),
        (0..300).map(|_| next() as u8).collect(),
        (0..10).map(|i| i % 4).collect(),
    )
    .unwrap();
    let c = cfg("30-8-4", 5, CROP_FLIP);
    let m = Model::init_pytorch(&c.arch, 1);
    match Engine::cpu(&c, &m, None, &d, None) {
        Err(Error::InvalidSetting {
            setting: Setting::Augment,
            reason,
        }) => assert!(reason.contains("flat"), "{reason}"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    // A flat network on image data augments the images (the dense layer flattens them).
    let images = data(10, 1, FeatureType::U8);
    let c = cfg("90-8-4", 5, CROP_FLIP);
    let m = Model::init_pytorch(&c.arch, 1);
    assert!(Engine::cpu(&c, &m, None, &images, None).is_ok());
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
fn oracle(d: &Dataset, order: &[u32], first: usize, rows: usize, step: u32) -> Vec<f32> {
    let SampleShape::Image { c, h, w } = d.shape else {
        unreachable!()
    };
    let ga = GatherAugment {
        augment: CROP_FLIP,
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
        Some((&ga, step)),
        None,
    );
    x.iter().copied().collect()
}

/// The crops and flips the CPU engine gathers are the oracle's, every adapter gathers the same
/// (f32 values bit for bit; bytes to the same byte, as the kernel's division by 255 may round
/// differently), and they differ from the samples as they are and from step to step.
#[test]
fn augmented_batches_are_the_oracles_on_the_cpu_engine_and_every_adapter() {
    let steps = 5;
    for kind in [FeatureType::F32, FeatureType::U8] {
        let d = data(37, 3, kind);
        let c = cfg("3x6x5-c4k3p1-g-4", 8, CROP_FLIP);
        let m = Model::init_pytorch(&c.arch, 2);
        let order = train::epoch_order(d.n, c.seed, 0, true);
        let mut cpu = Engine::cpu(&c, &m, None, &d, None).unwrap();
        let want = batches(&mut cpu, &order, steps);
        let plain = cfg("3x6x5-c4k3p1-g-4", 8, Augment::OFF);
        let mut off = Engine::cpu(&plain, &m, None, &d, None).unwrap();
        let unaugmented = batches(&mut off, &order, steps);
        for (s, (x, y)) in want.iter().enumerate() {
            let o = oracle(&d, &order, s * 8, 8, s as u32);
            assert!(
                x.iter().zip(&o).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kind:?} step {s}: the CPU engine's batch is not the oracle's"
            );
            assert_ne!(x, &unaugmented[s].0, "{kind:?} step {s}: not augmented");
            assert_eq!(y, &unaugmented[s].1, "labels travel with their samples");
            assert!(x.contains(&0.0), "step {s}: a crop of 2 pads some zeros");
        }
        // Another step draws other crops for the same samples.
        let again = oracle(&d, &order, 0, 8, 1);
        assert_ne!(again, want[0].0);
        for ctx in common::contexts("augmented_batches") {
            let mut gpu = Engine::gpu(ctx, &c, &m, None, &d, None).unwrap();
            let got = batches(&mut gpu, &order, steps);
            let device = gpu.device();
            for (s, ((gx, gy), (wx, wy))) in got.iter().zip(&want).enumerate() {
                assert_eq!(gy, wy, "{device} step {s}");
                let same = match kind {
                    FeatureType::F32 => gx.iter().zip(wx).all(|(a, b)| a.to_bits() == b.to_bits()),
                    FeatureType::U8 => gx
                        .iter()
                        .zip(wx)
                        .all(|(a, b)| (a * 255.0).round() == (b * 255.0).round()),
                };
                assert!(
                    same,
                    "{kind:?} on {device}, step {s}: not the CPU engine's batch"
                );
            }
        }
    }
}

/// Evaluation gathers the samples as they are: the metrics of an augmenting engine are the
/// bits of an engine without augmentation, after training steps too, and its last evaluation
/// batch is the test set's rows unchanged.
#[test]
fn evaluation_is_never_augmented() {
    let d = data(30, 4, FeatureType::U8);
    let test = data(12, 5, FeatureType::U8);
    let m = Model::init_pytorch(&Arch::parse("3x6x5-c4k3p1-g-4").unwrap(), 3);
    let mut with = Engine::cpu(
        &cfg("3x6x5-c4k3p1-g-4", 6, CROP_FLIP),
        &m,
        None,
        &d,
        Some(&test),
    )
    .unwrap();
    let mut without = Engine::cpu(
        &cfg("3x6x5-c4k3p1-g-4", 6, Augment::OFF),
        &m,
        None,
        &d,
        Some(&test),
    )
    .unwrap();
    for which in [Which::Train, Which::Test] {
        assert_eq!(
            with.evaluate(which).unwrap(),
            without.evaluate(which).unwrap(),
            "{which:?}"
        );
    }
    let (x, y) = with.last_batch().unwrap();
    let last = 12 - 6;
    let rows: Vec<f32> = test.features[last * 90..]
        .iter()
        .map(|&b| b as f32 / 255.0)
        .collect();
    assert_eq!(x, rows);
    assert_eq!(y, test.labels[last..]);
    // Training is augmented: the same steps end elsewhere.
    let order = train::epoch_order(d.n, 7, 0, true);
    with.train_steps(&order, 0, 5).unwrap();
    without.train_steps(&order, 0, 5).unwrap();
    assert_ne!(
        with.model().unwrap().params,
        without.model().unwrap().params
    );
}

/// A run stopped after 7 of 10 steps and resumed from its checkpoint's configuration ends with
/// exactly the weights of the unbroken one (the crops follow the run's step count), and the
/// augmentation travels in the saved configuration.
#[test]
fn a_resumed_augmented_run_matches_the_unbroken_one() {
    let c = cfg("3x6x5-c4k3p1-g-4", 8, CROP_FLIP);
    let d = data(40, 6, FeatureType::U8);
    let init = Model::init_pytorch(&c.arch, 9);
    let mut a = Engine::cpu(&c, &init, None, &d, None).unwrap();
    train::run(&mut a, Position::default(), &mut Quiet).unwrap();
    let unbroken = a.model().unwrap();

    let mut short = c.clone();
    short.max_steps = Some(7);
    let mut b = Engine::cpu(&short, &init, None, &d, None).unwrap();
    train::run(&mut b, Position::default(), &mut Quiet).unwrap();
    let (half, state) = (b.model().unwrap(), b.opt_state().unwrap());
    let saved: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(saved.augment, CROP_FLIP);
    let mut r = Engine::cpu(&saved, &half, Some(&state), &d, None).unwrap();
    train::run(&mut r, Position { epoch: 1, step: 2 }, &mut Quiet).unwrap();
    assert_eq!(r.model().unwrap(), unbroken);

    // A configuration without augmentation writes no such field (files of such runs are
    // unchanged) and reads back as off.
    let plain = cfg("3x6x5-c4k3p1-g-4", 8, Augment::OFF);
    let json = serde_json::to_string(&plain).unwrap();
    assert!(!json.contains("augment"), "{json}");
    let back: TrainConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.augment, Augment::OFF);
}
