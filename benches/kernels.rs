//! Criterion benchmarks of the kernels and of one training step, on the first adapter wgpu finds
//! (`cargo bench --bench kernels`; `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` pick another). Without
//! any adapter they print a notice and measure nothing. Each op runs as a one-op program on the
//! GPU backend, as training runs it. Matmul throughput is in FLOP (criterion's "elements"), the
//! element-wise ops' in bytes read and written. Each iteration is one `run` of a few repeats
//! (one submission) plus the wait, so the figures include submission overhead; the
//! `wgtrain bench` command (src/bench/) reports GPU time alone and the CPU engine beside it.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::OnceLock;
use std::time::Duration;
use wgtrain::backend::gpu::GpuBackend;
use wgtrain::backend::Backend;
use wgtrain::gpu::{autotune, AdapterChoice, GpuContext};
use wgtrain::model::Preset;
use wgtrain::ops::{BufId, Epilogue, MatmulSpec, Op, SgdParams};

fn context() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            // Mesa's Vulkan loader complains without it; any writable folder will do.
            let dir = std::env::temp_dir().join("wgtrain-xdg");
            let _ = std::fs::create_dir_all(&dir);
            std::env::set_var("XDG_RUNTIME_DIR", dir);
        }
        match GpuContext::new(&AdapterChoice::default()) {
            Ok(ctx) => {
                eprintln!("benchmarking on {}", ctx.describe());
                Some(ctx)
            }
            Err(e) => {
                eprintln!("SKIPPED kernel benchmarks: {e}");
                None
            }
        }
    })
    .as_ref()
}

/// Runs of a program per iteration: enough that submission overhead does not dominate small
/// kernels.
const REPS: usize = 4;

/// A GPU backend on the benchmarked adapter (a device of its own).
fn backend(ctx: &GpuContext) -> GpuBackend {
    GpuBackend::new(GpuContext::from_adapter(ctx.adapter.clone()).expect("device"))
}

/// A buffer of `n` words filled with `v`.
fn filled(be: &mut GpuBackend, n: usize, v: f32) -> BufId {
    let b = be.alloc("bench", n).expect("alloc");
    be.write(b, &vec![v.to_bits(); n]).expect("write");
    b
}

fn matmul(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let mut be = backend(ctx);
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut shapes: Vec<(String, MatmulSpec)> = [128, 256, 512]
        .iter()
        .map(|&s| (format!("{s}^3"), MatmulSpec::new(s, s, s)))
        .collect();
    // The first three products seed-large's programs run (forward layers 1 and 2, …), read
    // from the programs the engine prepares.
    let products = wgtrain::verify::coverage::preset_products(Preset::SeedLarge).expect("programs");
    for spec in products.into_iter().take(3) {
        shapes.push((format!("seed-large {spec}"), spec));
    }
    for (name, spec) in shapes {
        let a = filled(&mut be, spec.m * spec.k, 0.5);
        let b = filled(&mut be, spec.k * spec.n, 0.25);
        let aux = filled(&mut be, spec.m * spec.n, 1.0);
        let out = filled(&mut be, spec.m * spec.n, 0.0);
        let aux = (spec.epilogue != Epilogue::None).then_some(aux);
        let p = be
            .prepare(&[Op::Matmul {
                spec,
                a,
                b,
                aux,
                c: out,
            }])
            .expect("matmul");
        let tile = autotune::tile_for(ctx, &spec);
        g.throughput(Throughput::Elements((spec.flops() as u64) * REPS as u64));
        g.bench_function(BenchmarkId::new(name, tile.to_string()), |it| {
            it.iter(|| be.run(p, REPS).expect("run"))
        });
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let mut be = backend(ctx);
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let (rows, cols) = (1000, 1000);
    let n = rows * cols;
    let (dy, db) = (filled(&mut be, n, 0.5), filled(&mut be, cols, 0.0));
    let p = be
        .prepare(&[Op::BiasBackward { rows, cols, dy, db }])
        .expect("bias_backward");
    g.throughput(Throughput::Bytes((4 * (n + cols) * REPS) as u64));
    g.bench_function("bias_backward 1000x1000", |it| {
        it.iter(|| be.run(p, REPS).expect("run"))
    });

    let (w, gr, v) = (
        filled(&mut be, n, 0.5),
        filled(&mut be, n, 0.1),
        filled(&mut be, n, 0.0),
    );
    let hp = SgdParams {
        lr: 1e-6,
        momentum: 0.9,
        l2: 0.0,
        nesterov: false,
    };
    let p = be
        .prepare(&[Op::Sgd {
            n,
            hp,
            w,
            g: gr,
            v,
            lr_table: None,
        }])
        .expect("sgd");
    g.throughput(Throughput::Bytes((20 * n * REPS) as u64));
    g.bench_function("sgd 1000000", |it| {
        it.iter(|| be.run(p, REPS).expect("run"))
    });

    let (rows, classes) = (10_000, 10);
    let logits = filled(&mut be, rows * classes, 0.5);
    let labels = be.alloc("labels", rows).expect("alloc");
    let l: Vec<u32> = (0..rows as u32).map(|i| i % 10).collect();
    be.write(labels, &l).expect("write");
    let probs = filled(&mut be, rows * classes, 0.0);
    let loss = filled(&mut be, rows, 0.0);
    let p = be
        .prepare(&[Op::SoftmaxXentForward {
            rows,
            classes,
            logits,
            labels,
            probs,
            loss,
            smoothing: 0.0,
        }])
        .expect("softmax");
    g.throughput(Throughput::Bytes(
        ((8 * rows * classes + 8 * rows) * REPS) as u64,
    ));
    g.bench_function("softmax_xent_forward 10000x10", |it| {
        it.iter(|| be.run(p, REPS).expect("run"))
    });
    g.finish();
}

fn training_step(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let mut g = c.benchmark_group("train");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let data = wgtrain::data::Dataset::new(
        wgtrain::data::SampleShape::gray(28, 28),
        (0..2000 * 784).map(|i| (i * 7 % 251) as u8).collect(),
        (0..2000).map(|i| (i % 10) as u32).collect(),
    )
    .expect("2000 samples of 28×28");
    for name in ["seed-small", "seed-large", "lenet5"] {
        let cfg = wgtrain::train::TrainConfig::preset(name.parse().expect("preset"));
        let model = cfg.init_model();
        let gctx = GpuContext::from_adapter(ctx.adapter.clone()).expect("device");
        let mut engine =
            wgtrain::train::Engine::gpu(gctx, &cfg, &model, None, &data, None).expect("engine");
        // Images per step; 5 steps per iteration in one submission.
        g.throughput(Throughput::Elements((cfg.batch * 5) as u64));
        g.bench_function(format!("{name} 5 steps"), |it| {
            it.iter(|| engine.run_raw_steps(5, 5).expect("steps"))
        });
    }
    g.finish();
}

criterion_group!(benches, matmul, elementwise, training_step);
criterion_main!(benches);
