//! Dropout (`d{p}`) and batch normalisation (`b`) through the public API: the grammar, the
//! refusals, evaluation mode, the dropout mask through the engine (rate, and the same mask on
//! the CPU engine and every adapter), a resumed run drawing the masks of an unbroken one,
//! running statistics in model files, and data-parallel training refused with BN.

mod common;

use std::rc::Rc;
use wgtrain::data::{Dataset, SampleShape};
use wgtrain::dist::ThreadGroup;
use wgtrain::model::{Arch, Model};
use wgtrain::train::{self, Engine, Init, Position, Quiet, TrainConfig};
use wgtrain::Error;

/// `n` seeded pseudo-random 8×8 images with labels 0..4.
fn data(n: usize, seed: u64) -> Dataset {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let images = (0..n * 64).map(|_| (next() % 256) as u8).collect();
    let labels = (0..n).map(|_| next() % 4).collect();
    Dataset::new(SampleShape::Image { c: 1, h: 8, w: 8 }, images, labels).unwrap()
}

fn cfg(arch: &str, batch: usize) -> TrainConfig {
    let mut c = TrainConfig::lecture(Arch::parse(arch).unwrap());
    c.batch = batch;
    c.init = Init::Pytorch;
    c.lr = 0.05;
    c.epochs = 2;
    c
}

#[test]
fn dropout_and_batchnorm_tokens_round_trip() {
    for s in [
        "1x8x8-c4k3p1-b-m2-16-b-d0.3-4",
        "64-d0.25-32-b-d0-4",
        "1x8x8-d0.5-c4k3-b-g-4",
    ] {
        let a = Arch::parse(s).unwrap();
        assert_eq!(a.to_string(), s);
        assert_eq!(Arch::parse(&a.to_string()).unwrap(), a);
    }
    // The ReLU moves after the BatchNorm: c4k3p1 has none, b has one; the dense layer before
    // the dropout keeps its own.
    let a = Arch::parse("1x8x8-c4k3p1-b-m2-16-d0.3-4").unwrap();
    assert_eq!(
        wgtrain::nn::relu_flags(&a.layers),
        [false, true, false, true, false, false]
    );
}

#[test]
fn impossible_dropout_and_batchnorm_layers_are_refused_in_one_line() {
    for (s, says) in [
        ("64-d1.5-4", "dropout probability 1.5"),
        ("64-d1-4", "dropout probability 1"),
        ("1x8x8-b-c4k3-4", "not the input"),
        ("1x8x8-c4k3-m2-b-4", "not `m2`"),
        ("64-16-b-b-4", "not `b`"),
        ("64-16-b", "last layer must be dense"),
    ] {
        let e = Arch::parse(s).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Network { .. }), "{s}: {msg}");
        assert!(msg.contains(says), "{s}: {msg}");
        assert!(!msg.contains('\n'), "{s}: {msg}");
    }
    for s in ["64-d-4", "64-d0.3.1-4", "64-d-0.3-4", "64-dx-4", "64-bn-4"] {
        let e = Arch::parse(s).unwrap_err();
        assert!(e.to_string().contains("is not a layer"), "{s}: {e}");
    }
}

/// Evaluation is deterministic and dropout is the identity there: a net with dropout gives
/// the probabilities of the same net without it, twice over, on every backend.
#[test]
fn evaluation_is_deterministic_and_dropout_free() {
    let with = cfg("1x8x8-c4k3p1-b-m2-16-d0.5-4", 8);
    let without = cfg("1x8x8-c4k3p1-b-m2-16-4", 8);
    let m = Model::init_pytorch(&with.arch, 3);
    let m0 = Model::with_running(without.arch.clone(), m.params.clone(), m.running.clone());
    let d = data(16, 1);
    let x: Vec<f32> = d.features[..8 * 64]
        .iter()
        .map(|&v| v as f32 / 255.0)
        .collect();
    let mut engines = vec![(
        Engine::cpu(&with, &m, None, &d, None).unwrap(),
        Engine::cpu(&without, &m0, None, &d, None).unwrap(),
    )];
    let pairs = common::contexts("layers_eval")
        .into_iter()
        .zip(common::contexts("layers_eval_without"));
    for (ctx, ctx2) in pairs {
        engines.push((
            Engine::gpu(ctx, &with, &m, None, &d, None).unwrap(),
            Engine::gpu(ctx2, &without, &m0, None, &d, None).unwrap(),
        ));
    }
    for (mut a, mut b) in engines {
        let p1 = a.probabilities(&x).unwrap();
        let p2 = a.probabilities(&x).unwrap();
        let p0 = b.probabilities(&x).unwrap();
        assert_eq!(p1, p2, "{}", a.device());
        assert_eq!(p1, p0, "{}", a.device());
    }
}

/// Dropout on the input of a dense layer, one row of 4000 equal values: the weight
/// gradient's dropped columns are exactly 0 and the kept ones scaled by 1/(1 − p). The drop
/// rate is about p, and the CPU engine and every adapter drop the same columns.
#[test]
fn training_drops_about_p_with_the_same_mask_everywhere() {
    let p = 0.3;
    let c = cfg("4000-d0.3-2", 1);
    let m = Model::init_pytorch(&c.arch, 5);
    let d = Dataset::new(SampleShape::Flat(4000), vec![128; 4000], vec![1]).unwrap();
    let x = vec![0.5f32; 4000];
    let mut masks = Vec::new();
    let mut engines = vec![Engine::cpu(&c, &m, None, &d, None).unwrap()];
    for ctx in common::contexts("layers_mask") {
        engines.push(Engine::gpu(ctx, &c, &m, None, &d, None).unwrap());
    }
    for mut e in engines {
        let g = e.gradients(&x, &[1]).unwrap();
        let row: Vec<f32> = g[0].weight.iter().take(4000).copied().collect();
        let kept: Vec<bool> = row.iter().map(|&v| v != 0.0).collect();
        let rate = kept.iter().filter(|&&k| !k).count() as f64 / 4000.0;
        // 4000 Bernoulli(0.3) draws: standard deviation 0.0072.
        assert!((rate - p).abs() < 0.03, "{}: dropped {rate}", e.device());
        let live = row.iter().find(|&&v| v != 0.0).copied().unwrap();
        assert!(row.iter().all(|&v| v == 0.0 || v == live), "{}", e.device());
        masks.push((e.device(), kept));
    }
    for (dev, k) in &masks[1..] {
        assert_eq!(
            k, &masks[0].1,
            "{dev} and {} drop different inputs",
            masks[0].0
        );
    }
}

/// A run stopped after 7 of 10 steps and resumed from its weights, running statistics and
/// optimiser state ends with exactly the weights of the unbroken run: the dropout masks
/// follow the run's step count, not the engine's life.
#[test]
fn a_resumed_run_with_dropout_and_batchnorm_matches_the_unbroken_one() {
    let c = cfg("1x8x8-c4k3p1-b-m2-16-b-d0.5-4", 8);
    let d = data(40, 2);
    let init = Model::init_pytorch(&c.arch, 9);
    let mut a = Engine::cpu(&c, &init, None, &d, None).unwrap();
    train::run(&mut a, Position::default(), &mut Quiet).unwrap();
    let unbroken = a.model().unwrap();

    let mut short = c.clone();
    short.max_steps = Some(7);
    let mut b = Engine::cpu(&short, &init, None, &d, None).unwrap();
    train::run(&mut b, Position::default(), &mut Quiet).unwrap();
    let (half, state) = (b.model().unwrap(), b.opt_state().unwrap());
    assert_eq!(half.running[1].as_ref().unwrap().batches, 7.0);
    let mut r = Engine::cpu(&c, &half, Some(&state), &d, None).unwrap();
    train::run(&mut r, Position { epoch: 1, step: 2 }, &mut Quiet).unwrap();
    let resumed = r.model().unwrap();
    assert_eq!(resumed, unbroken);
    assert_eq!(resumed.running[1].as_ref().unwrap().batches, 10.0);

    // Without the step counter the masks would repeat: a fresh engine started at step 0 of
    // epoch 1 from the same state draws other masks and ends elsewhere.
    let mut wrong = Engine::cpu(&c, &half, Some(&state), &d, None).unwrap();
    wrong.set_step(0).unwrap();
    wrong
        .train_steps(&train::epoch_order(40, c.seed, 1, true), 2, 3)
        .unwrap();
    assert_ne!(wrong.model().unwrap().params, unbroken.params);
}

#[test]
fn running_statistics_round_trip_through_model_files_and_nan_is_refused() {
    let c = cfg("1x8x8-c4k3p1-b-m2-16-b-4", 8);
    let d = data(24, 3);
    let mut e = Engine::cpu(&c, &Model::init_pytorch(&c.arch, 1), None, &d, None).unwrap();
    train::run(&mut e, Position::default(), &mut Quiet).unwrap();
    let m = e.model().unwrap();
    let r = m.running[1].as_ref().unwrap();
    assert_eq!(r.batches, 6.0);
    assert!(r.mean.iter().all(|&v| v != 0.0), "{r:?}");
    let meta = Default::default();
    let bytes = m.to_bytes("m.safetensors", &meta).unwrap();
    let (back, _) = Model::from_bytes(&bytes, "m.safetensors").unwrap();
    assert_eq!(back, m);
    let dir = std::env::temp_dir().join(format!("wgtrain-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    m.save(&path, &meta).unwrap();
    let (t, _) = wgtrain::model::io::load_tensors(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(t["layers.1.num_batches_tracked"].0, Vec::<usize>::new());
    for name in [
        "layers.1.running_mean",
        "layers.1.running_var",
        "layers.1.num_batches_tracked",
        "layers.3.running_var",
    ] {
        assert!(t.contains_key(name), "{name} missing");
    }

    let mut bad = m.clone();
    bad.running[3].as_mut().unwrap().var[2] = f32::NAN;
    let bytes = bad.to_bytes("bad.safetensors", &meta).unwrap();
    let e = Model::from_bytes(&bytes, "bad.safetensors").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad.safetensors") && msg.contains("layers.3.running_var"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn data_parallel_training_with_batchnorm_is_refused() {
    let c = cfg("64-16-b-4", 8);
    let m = Model::init_pytorch(&c.arch, 1);
    let d = Dataset::new(
        SampleShape::Image { c: 1, h: 8, w: 8 },
        vec![1; 8 * 64],
        vec![0; 8],
    )
    .unwrap();
    let group = ThreadGroup::new(2).into_iter().next().unwrap();
    let be = Box::new(wgtrain::backend::reference::ReferenceBackend::new());
    let e = Engine::with_group(be, &c, &m, None, &d, None, Rc::new(group));
    let msg = e.err().expect("refused").to_string();
    assert!(msg.contains("batch normalisation"), "{msg}");
}
