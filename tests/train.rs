//! Training end to end on the committed 2,000-image MNIST sample: GPU and CPU agree,
//! runs are reproducible, and a short run reaches a stated accuracy.

mod common;

use wgtrain::data::load_dir;
use wgtrain::model::{Arch, Mlp};
use wgtrain::train::{
    self, cpu::CpuEngine, gpu::GpuEngine, Engine, Position, Quiet, TrainConfig, Which,
};

fn sample() -> wgtrain::data::Mnist {
    load_dir(std::path::Path::new("assets/mnist-sample")).expect("committed sample")
}

fn config(arch: &str, epochs: usize) -> TrainConfig {
    let mut cfg = TrainConfig::lecture(Arch::parse(arch).unwrap());
    cfg.epochs = epochs;
    cfg
}

fn max_diff(a: &Mlp, b: &Mlp) -> f32 {
    a.layers
        .iter()
        .zip(&b.layers)
        .flat_map(|(x, y)| {
            x.weight
                .iter()
                .zip(y.weight.iter())
                .chain(x.bias.iter().zip(y.bias.iter()))
                .map(|(p, q)| (p - q).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max)
}

#[test]
fn short_gpu_training_reaches_80_percent_on_the_sample() {
    // 784-100-10, lecture hyperparameters, 5 epochs on 2,000 images: the CPU path gets ~86%.
    let data = sample();
    let cfg = config("784-100-10", 5);
    for ctx in common::contexts("short_training") {
        let name = ctx.describe();
        let model = Mlp::init_uniform(&cfg.arch, cfg.init_scale, cfg.seed);
        let mut e = GpuEngine::new(ctx, &cfg, &model, None, &data.train, Some(&data.test)).unwrap();
        let hist = train::run(
            &mut e,
            &cfg,
            data.train.n,
            data.test.n,
            Position::default(),
            &mut Quiet,
        )
        .unwrap();
        let last = hist.last().unwrap();
        eprintln!(
            "{name}: test accuracy {:.2}% after {} epochs",
            100.0 * last.test_acc,
            hist.len()
        );
        assert_eq!(hist.len(), 5);
        assert!(
            last.test_acc >= 0.80,
            "{name}: test accuracy {}",
            last.test_acc
        );
        assert!(hist[0].train_loss > last.train_loss);
    }
}

#[test]
fn gpu_and_cpu_training_agree_within_rounding() {
    let data = sample();
    let cfg = config("784-32-16-10", 1);
    let model = Mlp::init_uniform(&cfg.arch, cfg.init_scale, cfg.seed);
    let mut cpu = CpuEngine::new(&cfg, &model, None, &data.train, Some(&data.test));
    let hc = train::run(
        &mut cpu,
        &cfg,
        data.train.n,
        data.test.n,
        Position::default(),
        &mut Quiet,
    )
    .unwrap();
    let mc = cpu.model().unwrap();
    for ctx in common::contexts("gpu_cpu_agree") {
        let name = ctx.describe();
        let mut gpu =
            GpuEngine::new(ctx, &cfg, &model, None, &data.train, Some(&data.test)).unwrap();
        let hg = train::run(
            &mut gpu,
            &cfg,
            data.train.n,
            data.test.n,
            Position::default(),
            &mut Quiet,
        )
        .unwrap();
        let mg = gpu.model().unwrap();
        // 20 SGD steps from identical weights; the two sides differ only in summation order,
        // so the weights drift apart by a few float32 roundings per step.
        let d = max_diff(&mc, &mg);
        eprintln!("{name}: max |w_gpu − w_cpu| = {d:.3e}");
        assert!(d < 1e-4, "{name}: weights differ by {d}");
        assert!((hc[0].train_loss - hg[0].train_loss).abs() < 1e-4);
        assert!((hc[0].test_acc - hg[0].test_acc).abs() <= 0.002);
    }
}

#[test]
fn fixed_seed_gives_bitwise_identical_runs() {
    let data = sample();
    let mut cfg = config("784-16-10", 1);
    cfg.max_steps = Some(10);
    let mut models = Vec::new();
    for _ in 0..2 {
        for ctx in common::contexts("reproducible").into_iter().take(1) {
            let model = Mlp::init_uniform(&cfg.arch, cfg.init_scale, cfg.seed);
            let mut e = GpuEngine::new(ctx, &cfg, &model, None, &data.train, None).unwrap();
            train::run(
                &mut e,
                &cfg,
                data.train.n,
                0,
                Position::default(),
                &mut Quiet,
            )
            .unwrap();
            models.push(e.model().unwrap());
        }
    }
    if models.len() == 2 {
        assert_eq!(models[0], models[1]);
    }
}

#[test]
fn evaluation_counts_every_test_image_once_including_a_partial_batch() {
    let data = sample();
    let mut cfg = config("784-10", 1);
    cfg.batch = 300; // 1,000 test images: 3 full batches and one of 100
    let model = Mlp::init_uniform(&cfg.arch, cfg.init_scale, 3);
    let mut cpu = CpuEngine::new(&cfg, &model, None, &data.train, Some(&data.test));
    let want = cpu.evaluate(Which::Test).unwrap();
    assert_eq!(want.seen, 1000);
    for ctx in common::contexts("eval_partial") {
        let mut e = GpuEngine::new(ctx, &cfg, &model, None, &data.train, Some(&data.test)).unwrap();
        let got = e.evaluate(Which::Test).unwrap();
        assert_eq!(got.seen, 1000);
        assert_eq!(got.correct, want.correct);
        assert!((got.loss_sum - want.loss_sum).abs() < 1e-3 * want.loss_sum);
    }
}

#[test]
fn no_shuffle_is_file_order_and_shuffle_is_a_seeded_permutation() {
    assert_eq!(train::epoch_order(5, 9, 0, false), vec![0, 1, 2, 3, 4]);
    let a = train::epoch_order(1000, 9, 0, true);
    let b = train::epoch_order(1000, 9, 1, true);
    assert_ne!(a, b, "each epoch gets a new order");
    assert_eq!(
        a,
        train::epoch_order(1000, 9, 0, true),
        "same seed, same order"
    );
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..1000).collect::<Vec<u32>>());
}

#[test]
fn diverging_loss_stops_with_a_clear_error() {
    let data = sample();
    let mut cfg = config("784-64-10", 1);
    cfg.lr = 1e30;
    let model = Mlp::init_uniform(&cfg.arch, cfg.init_scale, cfg.seed);
    let mut engines: Vec<Box<dyn Engine>> = common::contexts("diverge")
        .into_iter()
        .map(|ctx| -> Box<dyn Engine> {
            Box::new(GpuEngine::new(ctx, &cfg, &model, None, &data.train, None).unwrap())
        })
        .collect();
    engines.push(Box::new(CpuEngine::new(
        &cfg,
        &model,
        None,
        &data.train,
        None,
    )));
    for e in &mut engines {
        let err = train::run(
            e.as_mut(),
            &cfg,
            data.train.n,
            0,
            Position::default(),
            &mut Quiet,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("diverged"),
            "{}: {err}",
            e.device()
        );
    }
}
