//! Gradients: the CPU backward against central finite differences in f64, then the GPU
//! backward against the CPU backward for the same small MLP.

mod common;

use ndarray::{Array1, Array2};
use wgtrain::cpu::mlp::{self, Layers};
use wgtrain::data::Dataset;
use wgtrain::model::{Arch, Dense, Mlp};
use wgtrain::train::gpu::GpuEngine;
use wgtrain::train::TrainConfig;
use wgtrain::verify::{Inputs, U};

const ARCH: &str = "6-5-4-3";
const B: usize = 7;

fn random_problem(seed: u64) -> (Layers<f64>, Array2<f64>, Array1<u32>) {
    let arch = Arch::parse(ARCH).unwrap();
    let mut inp = Inputs::new(seed);
    let mut p = Layers {
        w: vec![],
        b: vec![],
    };
    for l in 0..arch.n_layers() {
        let (i, o) = arch.layer(l);
        p.w.push(inp.matrix(o, i).mapv(|v| v as f64));
        p.b.push(Array1::from(inp.uniform(o, -0.5, 0.5)).mapv(|v| v as f64));
    }
    let x = inp.matrix(B, arch.input()).mapv(|v| v as f64);
    let labels = inp.labels(B, arch.classes(), false);
    (p, x, labels)
}

fn mean_loss(p: &Layers<f64>, x: &Array2<f64>, labels: &Array1<u32>) -> f64 {
    let (loss, _, _) = mlp::loss_and_grads(p, x.view(), labels.view(), 1.0 / B as f64);
    loss.sum() / B as f64
}

#[test]
fn cpu_backward_matches_central_differences_in_f64() {
    let seed = common::seed("gradcheck_fd");
    let (p, x, labels) = random_problem(seed);
    let (_, _, grads) = mlp::loss_and_grads(&p, x.view(), labels.view(), 1.0 / B as f64);
    // h balances truncation O(h²) against cancellation O(ε/h) in f64.
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for l in 0..p.w.len() {
        for idx in 0..p.w[l].len() + p.b[l].len() {
            let probe = |delta: f64| {
                let mut q = p.clone();
                if idx < q.w[l].len() {
                    let (o, i) = (idx / q.w[l].ncols(), idx % q.w[l].ncols());
                    q.w[l][[o, i]] += delta;
                } else {
                    q.b[l][idx - p.w[l].len()] += delta;
                }
                mean_loss(&q, &x, &labels)
            };
            let fd = (probe(h) - probe(-h)) / (2.0 * h);
            let an = if idx < p.w[l].len() {
                grads.w[l].as_slice().unwrap()[idx]
            } else {
                grads.b[l][idx - p.w[l].len()]
            };
            let err = (fd - an).abs();
            worst = worst.max(err);
            assert!(
                err <= 1e-7 + 1e-5 * an.abs(),
                "layer {l} param {idx}: finite difference {fd:.9e} vs backward {an:.9e}"
            );
        }
    }
    eprintln!("largest |fd − backward| = {worst:.3e}");
}

#[test]
fn gpu_backward_matches_cpu_backward() {
    let seed = common::seed("gradcheck_gpu");
    let (p64, x64, labels) = random_problem(seed);
    let arch = Arch::parse(ARCH).unwrap();
    // The f32 parameters and inputs both sides see.
    let model = Mlp {
        arch: arch.clone(),
        layers: p64
            .w
            .iter()
            .zip(&p64.b)
            .map(|(w, b)| Dense {
                weight: w.mapv(|v| v as f32),
                bias: b.mapv(|v| v as f32),
            })
            .collect(),
    };
    let x32 = x64.mapv(|v| v as f32);
    let p = Layers::from_mlp(&model)
        .w
        .iter()
        .map(|w| w.mapv(|v| v as f64))
        .collect::<Vec<_>>();
    let p = Layers {
        w: p,
        b: p64.b.iter().map(|b| b.mapv(|v| v as f32 as f64)).collect(),
    };
    let (_, _, want) = mlp::loss_and_grads(
        &p,
        x32.mapv(|v| v as f64).view(),
        labels.view(),
        1.0 / B as f64,
    );
    let mut cfg = TrainConfig::lecture(arch.clone());
    cfg.batch = B;
    let data = Dataset {
        images: vec![0; B * 6],
        labels: vec![0; B],
        n: B,
        rows: 2,
        cols: 3,
    };
    for ctx in common::contexts("gradcheck_gpu") {
        let name = ctx.describe();
        let mut engine = GpuEngine::new(ctx, &cfg, &model, None, &data, None).unwrap();
        let got = engine
            .gradients(x32.as_slice().unwrap(), labels.as_slice().unwrap())
            .unwrap();
        // Each gradient is a chain of at most 3 dot products of length ≤ max(B, width) = 7
        // in f32 with exp/log in the softmax: bound by 3·γ_7·(largest magnitude in the tensor)
        // plus softmax's few ULP, i.e. 64·u relative to the tensor's scale.
        for (l, (gw, gb)) in got.iter().enumerate() {
            for (what, g, w) in [
                ("dW", gw, want.w[l].iter().copied().collect::<Vec<f64>>()),
                ("db", gb, want.b[l].to_vec()),
            ] {
                let scale = w.iter().fold(0.0f64, |a, b| a.max(b.abs())).max(1e-3);
                for (i, (&gv, &wv)) in g.iter().zip(&w).enumerate() {
                    let err = (gv as f64 - wv).abs();
                    assert!(
                        err <= 64.0 * U * scale,
                        "{name}: layer {l} {what}[{i}] gpu {gv:e} cpu {wv:e} (err {err:.3e}, tol {:.3e})",
                        64.0 * U * scale
                    );
                }
            }
        }
    }
}
