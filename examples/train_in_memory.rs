//! wgtrain as a library: train a small convolutional network on a dataset built in code, then
//! evaluate, predict, save and load it.
//!
//! The data: 8×8 grayscale pictures of stripes, horizontal (class 0) or vertical (class 1), at a
//! random phase and with noise. Run with `cargo run --release --example train_in_memory`
//! (add `-- gpu` to train on a GPU adapter; the default picks one as `wgtrain train` does).

use rand::{Rng, SeedableRng};
use wgtrain::backend::DeviceChoice;
use wgtrain::data::{Dataset, SampleShape};
use wgtrain::model::Arch;
use wgtrain::train::{Optimizer, TrainConfig};
use wgtrain::trainer::{Trainer, Which};

/// `n` pictures of stripes with their labels, drawn from `seed`.
fn stripes(n: usize, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (rows, cols) = (8, 8);
    let mut images = Vec::with_capacity(n * rows * cols);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let vertical = rng.random_bool(0.5);
        let phase = rng.random_range(0..2);
        for y in 0..rows {
            for x in 0..cols {
                let along = if vertical { x } else { y };
                let ink = if (along + phase) % 2 == 0 {
                    200.0
                } else {
                    40.0
                };
                let noisy: f32 = ink + rng.random_range(-40.0..40.0);
                images.push(noisy.clamp(0.0, 255.0) as u8);
            }
        }
        labels.push(vertical as u32);
    }
    Dataset::new(SampleShape::gray(rows, cols), images, labels).expect("n pictures of 8×8")
}

fn main() -> wgtrain::Result<()> {
    let device = match std::env::args().nth(1).as_deref() {
        Some("gpu") => DeviceChoice::Gpu,
        Some("cpu") => DeviceChoice::Cpu,
        _ => DeviceChoice::Auto,
    };
    let train = stripes(2000, 1);
    let test = stripes(500, 2);

    let mut cfg = TrainConfig::lecture(Arch::parse("1x8x8-c4k3p1-m2-16-2")?);
    cfg.optimizer = Optimizer::Adam;
    cfg.lr = 0.01;
    cfg.batch = 50;
    cfg.epochs = 3;
    cfg.init = wgtrain::train::Init::Pytorch;
    let mut trainer = Trainer::on_device(cfg.clone(), device, &train, Some(&test))?;
    println!("training {} on {}", cfg.arch, trainer.device());
    trainer.fit(|r| {
        if let Some(m) = &r.metrics {
            println!(
                "epoch {}: train loss {:.4}, test accuracy {:.1}%",
                m.epoch,
                m.train_loss,
                100.0 * m.test_acc
            );
        }
        true
    })?;

    let eval = trainer.evaluate(Which::Test)?;
    println!(
        "test: accuracy {:.1}%, loss {:.4} over {} pictures",
        100.0 * eval.accuracy,
        eval.loss,
        eval.n
    );

    // The first two test pictures, as the network takes them (values in [0, 1]).
    let x: Vec<f32> = test.features[..2 * 64]
        .iter()
        .map(|&v| v as f32 / 255.0)
        .collect();
    let p = trainer.predict(&x)?;
    for (i, row) in p.chunks(2).enumerate() {
        println!(
            "picture {i} (label {}): P(vertical) = {:.3}",
            test.labels[i], row[1]
        );
    }

    let dir = std::env::temp_dir().join(format!("wgtrain-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| wgtrain::Error::io(&dir, e))?;
    let path = dir.join("stripes.safetensors");
    trainer.save(&path)?;
    let be = wgtrain::backend::open(DeviceChoice::Cpu, &Default::default(), None)?.0;
    let mut again = Trainer::load(&path, cfg, be, &train, Some(&test))?;
    let q = again.predict(&x)?;
    let _ = std::fs::remove_dir_all(&dir);
    let same = p.iter().zip(&q).all(|(a, b)| (a - b).abs() < 1e-4);
    println!(
        "saved and loaded {}: predictions {}",
        path.display(),
        if same { "agree" } else { "DIFFER" }
    );
    if eval.accuracy < 0.9 || !same {
        eprintln!("error: the example did not learn the stripes or lost them on loading");
        std::process::exit(1);
    }
    Ok(())
}
