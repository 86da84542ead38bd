//! Criterion benchmarks of the kernels and of one training step, on the first adapter wgpu finds
//! (`cargo bench --bench kernels`; `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` pick another). Without
//! any adapter they print a notice and measure nothing. Matmul throughput is in FLOP (criterion's
//! "elements"), the element-wise kernels' in bytes read and written. Each iteration is one
//! submission of a few launches plus the wait, so the figures include submission overhead; the
//! `wgtrain bench` command (src/bench.rs) reports kernel time alone and the CPU path beside it.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::OnceLock;
use std::time::Duration;
use wgtrain::gpu::kernels::{self, MatmulSpec, SgdParams};
use wgtrain::gpu::{autotune, AdapterChoice, GpuContext, Launch};

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

/// Launches per iteration: enough that submission overhead does not dominate small kernels.
const REPS: usize = 4;

fn run(ctx: &GpuContext, launch: &Launch) {
    ctx.submit(&[launch], REPS).expect("submit");
    ctx.wait().expect("wait");
}

fn matmul(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let mut shapes: Vec<(String, MatmulSpec)> = [128, 256, 512]
        .iter()
        .map(|&s| (format!("{s}^3"), MatmulSpec::new(s, s, s)))
        .collect();
    let products = wgtrain::bench::mlp_products(&[784, 512, 512, 512, 10], 100);
    // Forward layer 1, weight grad layer 1, input grad layer 2 of seed-large.
    for want in [
        "forward layer 1",
        "weight grad layer 1",
        "input grad layer 2",
    ] {
        if let Some((label, spec)) = products.iter().find(|(l, _)| l == want) {
            shapes.push((format!("{} {}x{}x{}", label, spec.m, spec.n, spec.k), *spec));
        }
    }
    for (name, spec) in shapes {
        let a = ctx.upload("a", &vec![0.5f32; spec.m * spec.k]);
        let b = ctx.upload("b", &vec![0.25f32; spec.k * spec.n]);
        let aux = ctx.upload("aux", &vec![1.0f32; spec.m * spec.n]);
        let out = ctx.storage("c", (spec.m * spec.n * 4) as u64);
        let tile = autotune::tile_for(ctx, &spec);
        let launch = kernels::matmul(ctx, &spec, &tile, &a, &b, Some(&aux), &out).expect("matmul");
        g.throughput(Throughput::Elements((spec.flops() as u64) * REPS as u64));
        g.bench_function(BenchmarkId::new(name, tile.to_string()), |it| {
            it.iter(|| run(ctx, &launch))
        });
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let n = 1000 * 1000;
    let (w, gr, v) = (
        ctx.upload("w", &vec![0.5f32; n]),
        ctx.upload("g", &vec![0.1f32; n]),
        ctx.upload("v", &vec![0f32; n]),
    );
    let hp = SgdParams {
        lr: 1e-6,
        momentum: 0.9,
        l2: 0.0,
    };
    let launch = kernels::sgd_update(ctx, n, hp, &w, &gr, &v).expect("sgd");
    g.throughput(Throughput::Bytes((20 * n * REPS) as u64));
    g.bench_function("sgd_update 1000000", |it| it.iter(|| run(ctx, &launch)));

    let (b, classes) = (10_000, 10);
    let logits = ctx.upload("logits", &vec![0.5f32; b * classes]);
    let labels = ctx.upload("labels", &(0..b as u32).map(|i| i % 10).collect::<Vec<_>>());
    let probs = ctx.storage("probs", (b * classes * 4) as u64);
    let loss = ctx.storage("loss", (b * 4) as u64);
    let launch = kernels::softmax_xent_forward(ctx, b, classes, &logits, &labels, &probs, &loss)
        .expect("softmax");
    g.throughput(Throughput::Bytes(((8 * b * classes + 8 * b) * REPS) as u64));
    g.bench_function("softmax_xent_forward 10000x10", |it| {
        it.iter(|| run(ctx, &launch))
    });
    g.finish();
}

fn training_step(c: &mut Criterion) {
    let Some(ctx) = context() else { return };
    let mut g = c.benchmark_group("train");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let data = wgtrain::data::Dataset {
        images: (0..2000 * 784).map(|i| (i * 7 % 251) as u8).collect(),
        labels: (0..2000).map(|i| (i % 10) as u8).collect(),
        n: 2000,
        rows: 28,
        cols: 28,
    };
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
