//! Residual blocks (`r(...)`) through the public API: the CPU engine and every adapter train a
//! small residual net with BatchNorm and a projected block to the same weights and running
//! statistics, a trained model round-trips through its file (and evaluates the same after),
//! and the `layers.{i}` names follow PyTorch's BasicBlock order.

mod common;

use wgtrain::data::{Dataset, SampleShape};
use wgtrain::model::{Arch, Model};
use wgtrain::train::{self, Engine, Init, Position, Quiet, TrainConfig, Which};

/// An identity block (BN inside) and a projected one (stride 2, 4 → 8 channels).
const ARCH: &str = "1x8x8-c4k3p1-b-r(c4k3p1-b-c4k3p1-b)-r(c8k3s2p1-b-c8k3p1-b)-g-4";

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

fn cfg(arch: &str, batch: usize, steps: usize) -> TrainConfig {
    let mut c = TrainConfig::lecture(Arch::parse(arch).unwrap());
    c.batch = batch;
    c.init = Init::Pytorch;
    c.lr = 0.05;
    c.epochs = 1;
    c.max_steps = Some(steps);
    c
}

/// Largest |a − b| over the running means and variances.
fn running_diff(a: &Model, b: &Model) -> f32 {
    a.running
        .iter()
        .zip(&b.running)
        .filter_map(|(x, y)| Some((x.as_ref()?, y.as_ref()?)))
        .flat_map(|(x, y)| {
            x.mean
                .iter()
                .zip(&y.mean)
                .chain(x.var.iter().zip(&y.var))
                .map(|(p, q)| (p - q).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max)
}

#[test]
fn a_residual_net_with_batchnorm_trains_alike_on_the_cpu_engine_and_every_adapter() {
    let c = cfg(ARCH, 16, 10);
    let d = data(160, 4);
    let init = c.init_model();
    let mut cpu = Engine::cpu(&c, &init, None, &d, None).unwrap();
    let h = train::run(&mut cpu, Position::default(), &mut Quiet).unwrap();
    let mc = cpu.model().unwrap();
    assert!(common::max_diff(&mc, &init) > 1e-3, "the weights moved");
    assert_eq!(mc.running[1].as_ref().unwrap().batches, 10.0);
    assert!(h[0].train_loss.is_finite());
    let adapters = common::contexts("residual_agree");
    for ctx in adapters {
        let mut e = Engine::gpu(ctx, &c, &init, None, &d, None).unwrap();
        train::run(&mut e, Position::default(), &mut Quiet).unwrap();
        let m = e.model().unwrap();
        let (dw, dr) = (common::max_diff(&mc, &m), running_diff(&mc, &m));
        eprintln!(
            "{}: max |w_gpu − w_cpu| = {dw:.3e}, running statistics {dr:.3e}",
            e.device()
        );
        // The tolerance of the conv net's 20 SGD steps (tests/train.rs: the engines differ
        // only in summation order, ≈ 1e-7 expected, 1e-6 allowed); BatchNorm's 1/σ (σ of
        // order 0.1–1 here) scales an input-gradient difference by at most 10, so 1e-5.
        // Measured: weights 1.4e-7, running statistics 3.1e-7 on lavapipe and llvmpipe GL.
        assert!(dw < 1e-5, "{}: weights differ by {dw}", e.device());
        assert!(
            dr < 1e-5,
            "{}: running statistics differ by {dr}",
            e.device()
        );
    }
}

#[test]
fn a_trained_residual_model_round_trips_through_its_file_and_evaluates_the_same() {
    let c = cfg(ARCH, 16, 6);
    let d = data(64, 5);
    let mut e = Engine::cpu(&c, &c.init_model(), None, &d, Some(&d)).unwrap();
    train::run(&mut e, Position::default(), &mut Quiet).unwrap();
    let m = e.model().unwrap();
    let before = e.evaluate(Which::Test).unwrap();
    let meta = Default::default();
    let bytes = m.to_bytes("r.safetensors", &meta).unwrap();
    let (back, _) = Model::from_bytes(&bytes, "r.safetensors").unwrap();
    assert_eq!(back, m);
    assert_eq!(back.arch.to_string(), ARCH);
    let mut again = Engine::cpu(&c, &back, None, &d, Some(&d)).unwrap();
    let after = again.evaluate(Which::Test).unwrap();
    assert_eq!(before, after);

    // The tensors as PyTorch's BasicBlock names them in order: stem conv 0, bn 1; block 1
    // conv 2, bn 3, conv 4, bn 5; block 2 conv 6, bn 7, conv 8, bn 9, downsample conv 10
    // (1×1, from the block's 4 input channels), bn 11; the dense layer 12.
    let dir = std::env::temp_dir().join(format!("wgtrain-residual-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("r.safetensors");
    m.save(&path, &meta).unwrap();
    let (t, _) = wgtrain::model::io::load_tensors(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(t["layers.10.weight"].0, vec![8, 4, 1, 1]);
    assert_eq!(t["layers.11.running_var"].0, vec![8]);
    assert_eq!(t["layers.12.weight"].0, vec![4, 8]);
    assert!(!t.contains_key("layers.13.weight"));
}

/// The programs the engine records for a residual net: one join (add + ReLU) per block in each
/// of the training step and the two evaluations; in the step, one accumulating gradient add
/// per activation two layers read (each block's input), and no ReLU on a BatchNorm feeding a
/// join (the stem's and each block's first one keep theirs).
#[test]
fn the_recorded_programs_join_each_block_once_and_sum_each_twice_read_gradient() {
    use wgtrain::ops::Op;
    let c = cfg(ARCH, 16, 1);
    let ops = wgtrain::verify::coverage::program_ops(&c).unwrap();
    let joins = ops
        .iter()
        .filter(|o| matches!(o, Op::AddForward { relu: true, .. }))
        .count();
    assert_eq!(joins, 2 * 3, "2 blocks × (step + 2 evaluations)");
    assert!(!ops
        .iter()
        .any(|o| matches!(o, Op::AddForward { relu: false, .. })));
    let sums = ops
        .iter()
        .filter(|o| {
            matches!(
                o,
                Op::AddBackward {
                    accumulate: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        sums, 2,
        "each block's input is read by its first layer and its skip path"
    );
    // BatchNorm applies in the training step, in layer order: stem (ReLU), block 1 (ReLU,
    // none: feeds the join), block 2 (ReLU, none), projection (none).
    let step_end = ops
        .iter()
        .position(|o| matches!(o, Op::SoftmaxXentForward { .. }))
        .unwrap();
    let relus: Vec<bool> = ops[..step_end]
        .iter()
        .filter_map(|o| match o {
            Op::BatchNormApply { spec, .. } => Some(spec.relu),
            _ => None,
        })
        .collect();
    assert_eq!(relus, [true, true, false, true, false, false]);
}
