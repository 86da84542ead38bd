//! The PyTorch cross-checks of 3 SGD steps in training mode on a fixture of
//! `scripts/make_batchnorm_fixture.py`'s layout (`tests/torch_batchnorm.rs`,
//! `tests/torch_residual.rs`): one check, two fixtures.

use ndarray::{Array1, ArrayD, IxDyn};
use wgtrain::data::{Dataset, SampleShape};
use wgtrain::model::io::{load_tensors, NamedTensors};
use wgtrain::model::{Arch, Model, Param, Running};
use wgtrain::train::{self, Engine, Optimizer, Position, Quiet, TrainConfig, Which};

/// The state dict under `prefix` as a model.
pub fn model(t: &NamedTensors, prefix: &str, arch: &Arch) -> Model {
    let channels = arch.running_channels();
    let params = (0..channels.len())
        .map(|i| {
            let (ws, w) = &t[&format!("{prefix}.layers.{i}.weight")];
            let (_, b) = &t[&format!("{prefix}.layers.{i}.bias")];
            Param {
                weight: ArrayD::from_shape_vec(IxDyn(ws), w.clone()).unwrap(),
                bias: Array1::from(b.clone()),
            }
        })
        .collect();
    let running = channels
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.map(|_| Running {
                mean: Array1::from(t[&format!("{prefix}.layers.{i}.running_mean")].1.clone()),
                var: Array1::from(t[&format!("{prefix}.layers.{i}.running_var")].1.clone()),
                batches: t[&format!("{prefix}.layers.{i}.num_batches_tracked")].1[0],
            })
        })
        .collect();
    Model::with_running(arch.clone(), params, running)
}

/// Largest |a − b| over every weight, bias, running mean and variance; and whether the batch
/// counts agree exactly.
pub fn max_abs_diff(a: &Model, b: &Model) -> (f32, bool) {
    let mut d = 0.0f32;
    for (x, y) in a.params.iter().zip(&b.params) {
        for (p, q) in x
            .weight
            .iter()
            .zip(y.weight.iter())
            .chain(x.bias.iter().zip(&y.bias))
        {
            d = d.max((p - q).abs());
        }
    }
    let mut counts = true;
    for (x, y) in a.running.iter().zip(&b.running) {
        if let (Some(x), Some(y)) = (x, y) {
            for (p, q) in x.mean.iter().zip(&y.mean).chain(x.var.iter().zip(&y.var)) {
                d = d.max((p - q).abs());
            }
            counts &= x.batches == y.batches;
        }
    }
    (d, counts)
}

/// Train `fixture`'s network from its initial state for its 3 SGD steps on the CPU engine and
/// every adapter (`tag` names the run in skip messages); the weights and running statistics
/// must be PyTorch's within `tol`, `num_batches_tracked` equal, the losses within 1e-5.
pub fn three_sgd_steps_match(fixture: &str, tag: &str, tol: f32) {
    let (t, meta) = load_tensors(fixture).unwrap();
    let arch = Arch::parse(&meta["arch"]).unwrap();
    let (xs, x) = &t["x_bytes"];
    let data = Dataset::new(
        SampleShape::Image { c: 1, h: 6, w: 6 },
        x.iter().map(|&v| v as u8).collect(),
        t["labels"].1.iter().map(|&v| v as u32).collect(),
    )
    .unwrap();
    assert_eq!(data.n, xs[0]);
    let init = model(&t, "init", &arch);
    let want = model(&t, "sgd", &arch);
    let (moved, _) = max_abs_diff(&init, &want);
    assert!(moved > 1e-2, "the fixture's state moved ({moved})");
    let mut cfg = TrainConfig::lecture(arch.clone());
    cfg.optimizer = Optimizer::Sgd;
    cfg.lr = 0.1;
    cfg.momentum = 0.9;
    cfg.l2 = 0.0;
    cfg.batch = meta["batch"].parse().unwrap();
    cfg.epochs = 1;
    cfg.shuffle = false;
    let step_losses = &t["sgd.loss"].1;
    // The epoch's mean loss is over samples: 8, 8 and 4 per step.
    let torch_loss = (8.0 * step_losses[0] + 8.0 * step_losses[1] + 4.0 * step_losses[2]) / 20.0;
    let torch_eval = t["eval.loss"].1[0];
    let mut engines = vec![Engine::cpu(&cfg, &init, None, &data, None).unwrap()];
    for ctx in super::contexts(tag) {
        engines.push(Engine::gpu(ctx, &cfg, &init, None, &data, None).unwrap());
    }
    for mut e in engines {
        let h = train::run(&mut e, Position::default(), &mut Quiet).unwrap();
        let got = e.model().unwrap();
        let (d, counts) = max_abs_diff(&got, &want);
        let eval = train::summarize(&e.evaluate(Which::Train).unwrap()).0;
        eprintln!(
            "{}: max |state − torch| = {d:.3e}; train loss {:.7} vs {:.7}; eval loss {eval:.7} vs {torch_eval:.7}",
            e.device(),
            h[0].train_loss,
            torch_loss
        );
        assert!(counts, "{}: num_batches_tracked differs", e.device());
        assert!(
            d <= tol,
            "{}: state differs from PyTorch's by {d}",
            e.device()
        );
        assert!((h[0].train_loss - torch_loss).abs() < 1e-5);
        assert!((eval - torch_eval).abs() < 1e-5);
    }
}
