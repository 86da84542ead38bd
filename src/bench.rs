//! Microbenchmarks of the kernels and of training, each next to the CPU reference path.
//!
//! [`run`] measures, on one adapter:
//! * matmul on square sizes 128, 256, … up to
//!   [`BenchOpts::max_size`](field@BenchOpts::max_size) and on the products of the lecture's
//!   784-512-512-512-10 MLP at batch 100 (forward with the fused bias/ReLU epilogue, weight
//!   gradients, input gradients with the ReLU-mask epilogue), with the autotuned variant
//!   (and, with [`BenchOpts::variants`], every variant): GFLOP/s = 2·M·N·K / median time;
//! * the element-wise kernels bias_add, bias_backward, relu_forward, softmax_xent_forward and
//!   sgd_update at a few sizes: GB/s = bytes read and written once / median time;
//! * training throughput (images/s) of seed-small (784-10-10-10) and seed-large on the GPU
//!   engine and the CPU engine, the achieved training FLOP rate (6·Σ(I·O)·B per step: forward,
//!   input gradient and weight gradient products) next to the matmul-only rate at those shapes,
//!   and the per-step cost of submitting every step separately instead of 50 per submission.
//!
//! Times are medians over repeats. On the GPU a sample is one submission of several back-to-back
//! launches (so a sub-millisecond kernel is not drowned in submission cost) divided by their
//! number; it is measured with timestamp queries written around the submission when the device
//! has TIMESTAMP_QUERY (GPU time, excluding the host's submit and wait), else with the wall clock
//! around submit + wait. [`Record::timing`] says which. The CPU figures are the crate's CPU twins
//! (ndarray, f32; `dot` for matmul) on the same shapes.

use crate::cpu;
use crate::data::Dataset;
use crate::fastcpu;
use crate::gpu::kernels::{self, Epilogue, MatmulSpec, MatmulTile, SgdParams};
use crate::gpu::{autotune, GpuContext, Launch};
use crate::model::{Arch, LayerSpec, Model, Preset, Shape};
use crate::train;
use crate::Result;
use ndarray::{Array1, Array2, IxDyn};
use serde::Serialize;
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOpts {
    /// A fast smoke run: square sizes up to 512, fewer repeats, a few training steps.
    pub quick: bool,
    /// Largest square matmul size; 0 = automatic: 2048 on CPU adapters (lavapipe is slow),
    /// 4096 otherwise (`quick`: 512).
    pub max_size: usize,
    /// Timed samples per measurement (the median is reported); 0 = automatic (7, `quick` 3).
    pub repeats: usize,
    /// Also time every matmul variant the adapter can run, one record each (square sizes up to
    /// 1024 and the MLP products).
    pub variants: bool,
    /// Also measure the CPU reference path.
    pub cpu: bool,
    /// Measure training throughput and dispatch overhead.
    pub train: bool,
    /// Training steps per measurement; 0 = automatic (40, `quick` 6).
    pub train_steps: usize,
}

impl Default for BenchOpts {
    fn default() -> Self {
        BenchOpts {
            quick: false,
            max_size: 0,
            repeats: 0,
            variants: false,
            cpu: true,
            train: true,
            train_steps: 0,
        }
    }
}

impl BenchOpts {
    fn repeats(&self) -> usize {
        match (self.repeats, self.quick) {
            (0, false) => 7,
            (0, true) => 3,
            (r, _) => r.max(1),
        }
    }
    fn max_size(&self, ctx: &GpuContext) -> usize {
        match (self.max_size, self.quick) {
            (0, true) => 512,
            (0, false) if ctx.info.device_type == wgpu::DeviceType::Cpu => 2048,
            (0, false) => 4096,
            (s, _) => s,
        }
    }
    fn train_steps(&self) -> usize {
        match (self.train_steps, self.quick) {
            (0, false) => 40,
            (0, true) => 6,
            (s, _) => s.max(1),
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// `matmul`, `bias_add`, `bias_backward`, `relu_forward`, `softmax_xent_forward`, `sgd_update`,
    /// `train seed-small`, `train seed-large`, `dispatch overhead seed-large`.
    pub op: String,
    /// e.g. `1024x1024x1024 NN`, `100x512x784 NT BiasRelu` (M×N×K, transposes of A and B,
    /// epilogue), `100x512`, `batch 100`.
    pub shape: String,
    /// Median milliseconds per launch (per training step for `train`).
    pub median_ms: f64,
    /// Matmul and training: GFLOP/s.
    pub gflops: Option<f64>,
    /// Element-wise kernels: GB/s (each input read and each output written once).
    pub gbps: Option<f64>,
    /// Training: images per second.
    pub images_per_s: Option<f64>,
    /// The CPU reference path on the same shape.
    pub cpu_median_ms: Option<f64>,
    /// The CPU reference path's GFLOP/s, where `gflops` is given.
    pub cpu_gflops: Option<f64>,
    /// The CPU reference path's GB/s, where `gbps` is given.
    pub cpu_gbps: Option<f64>,
    /// The CPU reference path's images per second, where `images_per_s` is given.
    pub cpu_images_per_s: Option<f64>,
    /// Adapter name.
    pub adapter: String,
    /// Graphics backend (Vulkan, Metal, …).
    pub backend: String,

    /// How the GPU time was taken: `timestamp` (queries around the submission) or `wall`
    /// (clock around submit + wait), with samples × launches per sample.
    pub timing: String,
    /// Matmul: the variant (tile) measured, `autotuned:` when it is the autotuner's choice.
    pub variant: String,
    /// Anything else worth knowing (e.g. the matmul-only rate at the training shapes).
    pub note: String,
}

impl Record {
    fn new(ctx: &GpuContext, op: &str, shape: String) -> Self {
        Record {
            op: op.to_string(),
            shape,
            median_ms: f64::NAN,
            gflops: None,
            gbps: None,
            images_per_s: None,
            cpu_median_ms: None,
            cpu_gflops: None,
            cpu_gbps: None,
            cpu_images_per_s: None,
            adapter: ctx.info.name.clone(),
            backend: format!("{:?}", ctx.info.backend),
            timing: String::new(),
            variant: String::new(),
            note: String::new(),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times GPU submissions: with timestamp queries written by empty compute passes submitted just
/// before and just after the work, or with the wall clock.
struct Timer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
}

impl Timer {
    fn new(ctx: &GpuContext) -> Self {
        let queries = ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("bench timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench timestamps"),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                (set, buf)
            });
        Timer { queries }
    }

    fn kind(&self) -> &'static str {
        if self.queries.is_some() {
            "timestamp"
        } else {
            "wall"
        }
    }

    /// One empty compute pass writing timestamp `index`; the end pass also resolves both.
    fn mark(&self, ctx: &GpuContext, index: u32) {
        let Some((set, buf)) = &self.queries else {
            return;
        };
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: (index == 0).then_some(0),
                end_of_pass_write_index: (index == 1).then_some(1),
            };
            let _pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench timestamp"),
                timestamp_writes: Some(writes),
            });
        }
        if index == 1 {
            enc.resolve_query_set(set, 0..2, buf, 0);
        }
        ctx.queue.submit([enc.finish()]);
    }

    /// Seconds for `work` (which submits GPU work), by timestamps when available.
    fn time(&self, ctx: &GpuContext, work: impl FnOnce() -> Result<()>) -> Result<f64> {
        let t = Instant::now();
        self.mark(ctx, 0);
        work()?;
        self.mark(ctx, 1);
        ctx.wait()?;
        let wall = t.elapsed().as_secs_f64();
        let Some((_, buf)) = &self.queries else {
            return Ok(wall);
        };
        let ticks: Vec<u64> = ctx.read("timestamps", buf, 2)?;
        let period_ns = ctx.queue.get_timestamp_period() as f64;
        let gpu = ticks[1].wrapping_sub(ticks[0]) as f64 * period_ns * 1e-9;
        // A backend that returns zeros (or garbage) must not produce absurd figures.
        if gpu > 0.0 && gpu <= wall * 1.5 {
            Ok(gpu)
        } else {
            Ok(wall)
        }
    }
}

/// Median seconds per launch of `launches` run back to back: each sample submits them `inner`
/// times in one pass, where `inner` makes a sample last about `target_s`.
fn time_gpu(
    ctx: &GpuContext,
    timer: &Timer,
    launches: &[&Launch],
    repeats: usize,
    target_s: f64,
) -> Result<(f64, String)> {
    // Warm up (first use may compile) and estimate.
    ctx.submit(launches, 1)?;
    ctx.wait()?;
    let once = timer.time(ctx, || ctx.submit(launches, 1).map(|_| ()))?;
    let inner = ((target_s / once.max(1e-7)).ceil() as usize).clamp(1, 200);
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let s = timer.time(ctx, || ctx.submit(launches, inner).map(|_| ()))?;
        samples.push(s / inner as f64);
    }
    let how = format!("{} ({repeats} samples x {inner} launches)", timer.kind());
    Ok((median(samples), how))
}

/// Median seconds of `f` on the host.
fn time_cpu(repeats: usize, target_s: f64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64();
    let inner = ((target_s / once.max(1e-7)).ceil() as usize).clamp(1, 200);
    let samples = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    median(samples)
}

/// The products of one training step of `sizes` at batch `b`: forward (bias, ReLU on hidden
/// layers), weight gradients, input gradients (ReLU mask), as in `train::gpu`.
pub fn mlp_products(sizes: &[usize], b: usize) -> Vec<(String, MatmulSpec)> {
    let n = sizes.len() - 1;
    let mut out = Vec::new();
    for l in 0..n {
        let (i, o) = (sizes[l], sizes[l + 1]);
        let epilogue = if l + 1 == n {
            Epilogue::Bias
        } else {
            Epilogue::BiasRelu
        };
        let spec = MatmulSpec {
            trans_b: true,
            epilogue,
            ..MatmulSpec::new(b, o, i)
        };
        out.push((format!("forward layer {}", l + 1), spec));
    }
    for l in (0..n).rev() {
        let (i, o) = (sizes[l], sizes[l + 1]);
        let dw = MatmulSpec {
            trans_a: true,
            ..MatmulSpec::new(o, i, b)
        };
        out.push((format!("weight grad layer {}", l + 1), dw));
        if l > 0 {
            let dx = MatmulSpec {
                epilogue: Epilogue::ReluMask,
                ..MatmulSpec::new(b, i, o)
            };
            out.push((format!("input grad layer {}", l + 1), dx));
        }
    }
    out
}

fn shape_name(spec: &MatmulSpec) -> String {
    let t = |x: bool| if x { 'T' } else { 'N' };
    let mut s = format!(
        "{}x{}x{} {}{}",
        spec.m,
        spec.n,
        spec.k,
        t(spec.trans_a),
        t(spec.trans_b)
    );
    if spec.epilogue != Epilogue::None {
        s += &format!(" {:?}", spec.epilogue);
    }
    s
}

/// A pool with every core, as the CPU engine builds by default.
fn cpu_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(crate::backend::cpu::available_threads())
        .build()
        .expect("a thread pool")
}

fn filled(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut inp = crate::verify::Inputs::new(seed);
    inp.matrix(rows, cols)
}

/// Matmul records for `spec`: the autotuned variant, and every variant with `opts.variants`.
fn bench_matmul(
    ctx: &GpuContext,
    timer: &Timer,
    opts: &BenchOpts,
    spec: &MatmulSpec,
    label: &str,
) -> Result<Vec<Record>> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let a = if spec.trans_a {
        filled(k, m, 1)
    } else {
        filled(m, k, 1)
    };
    let b = if spec.trans_b {
        filled(n, k, 2)
    } else {
        filled(k, n, 2)
    };
    let bias = filled(1, n, 3).into_shape_with_order(n).expect("shape");
    let mask = filled(m, n, 4);
    let ab = ctx.upload("bench a", a.as_slice().unwrap());
    let bb = ctx.upload("bench b", b.as_slice().unwrap());
    let aux = match spec.epilogue {
        Epilogue::ReluMask => ctx.upload("bench mask", mask.as_slice().unwrap()),
        _ => ctx.upload("bench bias", bias.as_slice().unwrap()),
    };
    let cb = ctx.storage("bench c", (m * n * 4) as u64);

    // The CPU engine's product (gemm crate + epilogue) on its thread pool, into a buffer
    // allocated once, as in training.
    let cpu_ms = opts.cpu.then(|| {
        let aux = match spec.epilogue {
            Epilogue::ReluMask => mask.as_slice().unwrap(),
            _ => bias.as_slice().unwrap(),
        };
        let mut c = vec![0.0f32; m * n];
        let mut scratch = Vec::new();
        cpu_pool().install(|| {
            1e3 * time_cpu(opts.repeats(), 0.05, || {
                fastcpu::matmul::matmul(
                    spec,
                    a.as_slice().unwrap(),
                    b.as_slice().unwrap(),
                    Some(aux),
                    &mut c,
                    &mut scratch,
                );
                std::hint::black_box(&c);
            })
        })
    });

    let chosen = autotune::tile_for(ctx, spec);
    let mut tiles = vec![chosen];
    // Every variant only up to 1024³: the slow ones would take minutes beyond.
    if opts.variants && spec.flops() <= 2.2e9 {
        tiles.extend(
            MatmulTile::CANDIDATES
                .iter()
                .filter(|t| **t != chosen && t.unsupported_for(ctx, spec).is_none()),
        );
    }
    let mut out = Vec::new();
    for tile in tiles {
        let mut r = Record::new(ctx, "matmul", shape_name(spec));
        r.variant = if tile == chosen && autotune::enabled() {
            format!("autotuned: {tile}")
        } else {
            tile.to_string()
        };
        r.note = label.to_string();
        match kernels::matmul(ctx, spec, &tile, &ab, &bb, Some(&aux), &cb)
            .and_then(|l| time_gpu(ctx, timer, &[&l], opts.repeats(), 0.02))
        {
            Ok((s, how)) => {
                r.median_ms = s * 1e3;
                r.gflops = Some(spec.flops() / s / 1e9);
                r.timing = how;
            }
            Err(e) => r.note = format!("{label}; failed: {e}"),
        }
        if let Some(ms) = cpu_ms {
            r.cpu_median_ms = Some(ms);
            r.cpu_gflops = Some(spec.flops() / (ms * 1e-3) / 1e9);
        }
        out.push(r);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn elementwise_record(
    ctx: &GpuContext,
    timer: &Timer,
    opts: &BenchOpts,
    op: &str,
    shape: String,
    bytes: f64,
    launch: &Launch,
    cpu: impl FnMut(),
) -> Result<Record> {
    let mut r = Record::new(ctx, op, shape);
    let (s, how) = time_gpu(ctx, timer, &[launch], opts.repeats(), 0.01)?;
    r.median_ms = s * 1e3;
    r.gbps = Some(bytes / s / 1e9);
    r.timing = how;
    if opts.cpu {
        let c = time_cpu(opts.repeats(), 0.02, cpu);
        r.cpu_median_ms = Some(c * 1e3);
        r.cpu_gbps = Some(bytes / c / 1e9);
    }
    Ok(r)
}

fn bench_elementwise(ctx: &GpuContext, timer: &Timer, opts: &BenchOpts) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let rows_cols: &[(usize, usize)] = if opts.quick {
        &[(100, 512), (1000, 1000)]
    } else {
        &[(100, 512), (1000, 1000), (4096, 1024)]
    };
    for &(rows, cols) in rows_cols {
        let n = rows * cols;
        let x = filled(rows, cols, 5);
        let xb = ctx.upload("x", x.as_slice().unwrap());
        let shape = format!("{rows}x{cols}");

        // bias_backward: column sums of a [rows, cols] gradient.
        let db = ctx.storage("db", (cols * 4) as u64);
        let l = kernels::bias_backward(ctx, rows, cols, &xb, &db)?;
        out.push(elementwise_record(
            ctx,
            timer,
            opts,
            "bias_backward",
            shape.clone(),
            (4 * n + 4 * cols) as f64,
            &l,
            || {
                std::hint::black_box(cpu::bias::bias_backward(x.view()));
            },
        )?);

        // sgd_update over rows·cols parameters: reads w, g, v, writes w, v.
        let w = x.clone().into_shape_with_order(IxDyn(&[n])).expect("shape");
        let g = filled(rows, cols, 7)
            .into_shape_with_order(IxDyn(&[n]))
            .expect("shape");
        let wb = ctx.upload("w", w.as_slice().unwrap());
        let gb = ctx.upload("g", g.as_slice().unwrap());
        let vb = ctx.upload("v", &vec![0f32; n]);
        let hp = SgdParams {
            lr: 1e-6,
            momentum: 0.9,
            l2: 1e-4,
        };
        let l = kernels::sgd_update(ctx, n, hp, &wb, &gb, &vb)?;
        let mut wc = w.clone();
        let mut vc = ndarray::ArrayD::<f32>::zeros(IxDyn(&[n]));
        out.push(elementwise_record(
            ctx,
            timer,
            opts,
            "sgd_update",
            format!("{n}"),
            (20 * n) as f64,
            &l,
            || cpu::sgd::sgd_update(wc.view_mut(), g.view(), vc.view_mut(), hp),
        )?);
    }
    let softmax: &[(usize, usize)] = if opts.quick {
        &[(100, 10), (1000, 1000)]
    } else {
        &[(100, 10), (10000, 10), (1000, 1000)]
    };
    for &(rows, classes) in softmax {
        let z = filled(rows, classes, 8);
        let labels: Array1<u32> = (0..rows as u32).map(|i| i % classes as u32).collect();
        let zb = ctx.upload("logits", z.as_slice().unwrap());
        let lb = ctx.upload("labels", labels.as_slice().unwrap());
        let pb = ctx.storage("probs", (rows * classes * 4) as u64);
        let lossb = ctx.storage("loss", (rows * 4) as u64);
        let l = kernels::softmax_xent_forward(ctx, rows, classes, &zb, &lb, &pb, &lossb)?;
        let bytes = (8 * rows * classes + 8 * rows) as f64;
        out.push(elementwise_record(
            ctx,
            timer,
            opts,
            "softmax_xent_forward",
            format!("{rows}x{classes}"),
            bytes,
            &l,
            || {
                std::hint::black_box(cpu::softmax_xent::softmax_xent_forward(
                    z.view(),
                    labels.view(),
                ));
            },
        )?);
    }
    Ok(out)
}

/// A synthetic MNIST-shaped dataset (random pixels and labels).
fn synthetic(n: usize) -> Dataset {
    let mut inp = crate::verify::Inputs::new(9);
    Dataset {
        images: (0..n * 784).map(|_| inp.next_u64() as u8).collect(),
        labels: (0..n).map(|_| (inp.next_u64() % 10) as u8).collect(),
        n,
        rows: 28,
        cols: 28,
    }
}

/// Training FLOPs per step: the multiply-adds of each dense layer (I·O per sample) and each
/// convolution (OH·OW·C·K·K·O per sample), ×2 for forward, input gradient and weight gradient
/// each: 6·Σ·B.
pub fn train_flops(arch: &Arch, b: usize) -> Result<f64> {
    let shapes = arch.shapes()?;
    let mut s = 0.0;
    for (l, spec) in arch.layers.iter().enumerate() {
        let (i, o) = (shapes[l], shapes[l + 1]);
        s += match (*spec, i, o) {
            (LayerSpec::Dense { out }, _, _) => (i.len() * out) as f64,
            (LayerSpec::Conv { out, k, .. }, Shape::Image { c, .. }, Shape::Image { h, w, .. }) => {
                (h * w * c * k * k * out) as f64
            }
            _ => 0.0,
        };
    }
    Ok(6.0 * s * b as f64)
}

fn bench_train(
    ctx: &GpuContext,
    opts: &BenchOpts,
    matmul_rate: &dyn Fn(&[usize]) -> Option<f64>,
) -> Result<Vec<Record>> {
    let steps = opts.train_steps();
    let batch = 100;
    let data = synthetic(5000);
    let mut out = Vec::new();
    for preset in Preset::ALL {
        let (name, arch) = (preset.name(), preset.arch());
        let mut cfg = train::TrainConfig::lecture(arch.clone());
        cfg.batch = batch;
        let model = Model::init_uniform(&arch, 0.07, cfg.seed);
        let flops = train_flops(&arch, batch)?;
        // Conv nets take far longer per step on CPU adapters: fewer steps keep the run short.
        let steps = if arch.is_mlp() {
            steps
        } else {
            (steps / 4).max(2)
        };
        // A second device on the same adapter: the engine owns its context.
        let gctx = GpuContext::from_adapter(ctx.adapter.clone())?;
        let mut engine = train::Engine::gpu(gctx, &cfg, &model, None, &data, None)?;
        engine.run_raw_steps(2, 2)?; // warm up: compile every pipeline
        let time_steps = |engine: &mut train::Engine, per_submit: usize| -> Result<f64> {
            let samples = (0..opts.repeats().min(5))
                .map(|_| {
                    let t = Instant::now();
                    engine.run_raw_steps(steps, per_submit)?;
                    Ok(t.elapsed().as_secs_f64() / steps as f64)
                })
                .collect::<Result<Vec<f64>>>()?;
            Ok(median(samples))
        };
        let per_step = time_steps(&mut engine, train::CHUNK)?;
        let mut r = Record::new(ctx, &format!("train {name}"), format!("batch {batch}"));
        r.median_ms = per_step * 1e3;
        r.images_per_s = Some(batch as f64 / per_step);
        r.gflops = Some(flops / per_step / 1e9);
        r.timing = format!(
            "wall ({} samples x {steps} steps, {} steps per submit)",
            opts.repeats().min(5),
            train::CHUNK
        );
        r.variant = "autotuned".into();
        r.note = format!("{arch}; {:.1} MFLOP per step", flops / 1e6);
        if let Some(rate) = arch
            .is_mlp()
            .then(|| mlp_widths(&arch))
            .and_then(|w| matmul_rate(&w))
        {
            r.note += &format!("; matmul alone at these shapes: {rate:.2} GFLOP/s");
        }
        if opts.cpu {
            let mut cpu_engine = train::Engine::cpu(&cfg, &model, None, &data, None)?;
            let order: Vec<u32> = (0..data.n as u32).collect();
            let cpu_steps = steps.min(data.n / batch);
            cpu_engine.train_steps(&order, 0, 1)?;
            let samples = (0..opts.repeats().min(5))
                .map(|_| {
                    let t = Instant::now();
                    cpu_engine.train_steps(&order, 0, cpu_steps)?;
                    Ok(t.elapsed().as_secs_f64() / cpu_steps as f64)
                })
                .collect::<Result<Vec<f64>>>()?;
            let c = median(samples);
            r.cpu_median_ms = Some(c * 1e3);
            r.cpu_images_per_s = Some(batch as f64 / c);
            r.cpu_gflops = Some(flops / c / 1e9);
        }
        out.push(r);

        // Dispatch overhead: every step its own submission (and wait) versus 50 per submission.
        let single = time_steps(&mut engine, 1)?;
        let mut d = Record::new(
            ctx,
            &format!("dispatch overhead {name}"),
            format!("batch {batch}"),
        );
        d.median_ms = (single - per_step) * 1e3;
        d.timing = format!(
            "wall: per step with 1 step per submit ({:.3} ms) minus with {} ({:.3} ms)",
            single * 1e3,
            train::CHUNK,
            per_step * 1e3
        );
        d.note = if single > per_step {
            format!(
                "{:.0}% of a step submitted alone",
                100.0 * (single - per_step) / single
            )
        } else {
            "no measurable difference (within the noise of the two medians)".into()
        };
        out.push(d);
    }
    Ok(out)
}

/// The presets with convolutions.
fn conv_presets() -> impl Iterator<Item = Preset> {
    Preset::ALL.into_iter().filter(|p| !p.arch().is_mlp())
}

/// The three products of every convolution of the `lenet5` and `cnn` presets at batch `b` (a
/// convolution is im2col + these; see `src/nn/conv2d.rs`): forward y = cols·Wᵀ (+bias, ReLU),
/// weight gradient dW = dYᵀ·cols, and dcols = dY·W.
pub fn conv_products(b: usize) -> Result<Vec<(String, MatmulSpec)>> {
    let mut out = Vec::new();
    for preset in conv_presets() {
        let (name, arch) = (preset.name(), preset.arch());
        let shapes = arch.shapes()?;
        for (l, spec) in arch.layers.iter().enumerate() {
            let (
                LayerSpec::Conv { out: o, k, .. },
                Shape::Image { c, .. },
                Shape::Image { h, w, .. },
            ) = (*spec, shapes[l], shapes[l + 1])
            else {
                continue;
            };
            let (m, kk) = (b * h * w, c * k * k);
            let tag = format!("{name} conv layer {}", l + 1);
            out.push((
                format!("{tag} forward"),
                MatmulSpec {
                    trans_b: true,
                    epilogue: Epilogue::BiasRelu,
                    ..MatmulSpec::new(m, o, kk)
                },
            ));
            out.push((
                format!("{tag} weight grad"),
                MatmulSpec {
                    trans_a: true,
                    ..MatmulSpec::new(o, kk, m)
                },
            ));
            if l > 0 {
                out.push((format!("{tag} cols grad"), MatmulSpec::new(m, kk, o)));
            }
        }
    }
    Ok(out)
}

/// im2col, col2im and max-pooling at the `lenet5` and `cnn` presets' layers, batch 100 (GB/s of
/// the bytes each must move at least), beside their CPU twins.
fn bench_conv_kernels(ctx: &GpuContext, timer: &Timer, opts: &BenchOpts) -> Result<Vec<Record>> {
    use crate::ops::{Conv2dSpec, Pool2dSpec};
    let mut out = Vec::new();
    for preset in conv_presets() {
        let (name, arch) = (preset.name(), preset.arch());
        let shapes = arch.shapes()?;
        for (l, spec) in arch.layers.iter().enumerate() {
            let Shape::Image { c, h, w } = shapes[l] else {
                continue;
            };
            let tag = format!("{name} layer {}", l + 1);
            match *spec {
                LayerSpec::Conv {
                    out: o,
                    k,
                    stride,
                    pad,
                } => {
                    let cs = Conv2dSpec {
                        batch: 100,
                        c_in: c,
                        h,
                        w,
                        c_out: o,
                        k,
                        stride,
                        pad,
                    };
                    let (n_in, n_cols) = (cs.input_len(), cs.col_rows() * cs.col_cols());
                    let x = filled(1, n_in, 7).into_raw_vec_and_offset().0;
                    let d = filled(cs.col_rows(), cs.col_cols(), 8);
                    let xb = ctx.upload("x", &x);
                    let cb = ctx.upload("cols", d.as_slice().expect("standard layout"));
                    let yb = ctx.storage("out", (n_in.max(n_cols) * 4) as u64);
                    let shape = format!("{}x{}", cs.col_rows(), cs.col_cols());
                    let bytes = 4.0 * (n_in + n_cols) as f64;
                    let l1 = kernels::im2col(ctx, &cs, &xb, &yb)?;
                    let mut r = elementwise_record(
                        ctx,
                        timer,
                        opts,
                        "im2col",
                        shape.clone(),
                        bytes,
                        &l1,
                        || {
                            std::hint::black_box(cpu::conv2d::im2col(&x, &cs));
                        },
                    )?;
                    r.note = tag.clone();
                    out.push(r);
                    let l2 = kernels::col2im(ctx, &cs, &cb, None, &yb)?;
                    let mut r =
                        elementwise_record(ctx, timer, opts, "col2im", shape, bytes, &l2, || {
                            std::hint::black_box(cpu::conv2d::col2im(d.view(), &cs, None));
                        })?;
                    r.note = tag;
                    out.push(r);
                }
                LayerSpec::Pool { k } => {
                    let ps = Pool2dSpec {
                        batch: 100,
                        c,
                        h,
                        w,
                        k,
                    };
                    let (n_in, n_out) = (ps.input_len(), ps.output_len());
                    let x = filled(1, n_in, 9).into_raw_vec_and_offset().0;
                    let xb = ctx.upload("x", &x);
                    let yb = ctx.storage("y", (n_out * 4) as u64);
                    let ib = ctx.storage("idx", (n_out * 4) as u64);
                    let dxb = ctx.storage("dx", (n_in * 4) as u64);
                    let shape = format!("{}x{h}x{w}x{c}", ps.batch);
                    let lf = kernels::maxpool_forward(ctx, &ps, &xb, &yb, &ib)?;
                    let bytes = 4.0 * (n_in + 2 * n_out) as f64;
                    let mut r = elementwise_record(
                        ctx,
                        timer,
                        opts,
                        "maxpool_forward",
                        shape.clone(),
                        bytes,
                        &lf,
                        || {
                            std::hint::black_box(cpu::maxpool::maxpool_forward(&x, &ps));
                        },
                    )?;
                    r.note = tag.clone();
                    out.push(r);
                    let (_, idx) = cpu::maxpool::maxpool_forward(&x, &ps);
                    let dy = vec![1.0f32; n_out];
                    let lb = kernels::maxpool_backward(ctx, &ps, &yb, &ib, None, &dxb)?;
                    let mut r = elementwise_record(
                        ctx,
                        timer,
                        opts,
                        "maxpool_backward",
                        shape,
                        bytes,
                        &lb,
                        || {
                            std::hint::black_box(cpu::maxpool::maxpool_backward(
                                &dy, &idx, &ps, None,
                            ));
                        },
                    )?;
                    r.note = tag;
                    out.push(r);
                }
                LayerSpec::Dense { .. } => {}
            }
        }
    }
    Ok(out)
}

/// The layer widths of an MLP, input first.
fn mlp_widths(arch: &Arch) -> Vec<usize> {
    let mut w = vec![arch.input_len()];
    w.extend(arch.layers.iter().filter_map(|l| match l {
        LayerSpec::Dense { out } => Some(*out),
        _ => None,
    }));
    w
}

/// Run the benchmarks on `ctx` (see the module docs).
pub fn run(ctx: &GpuContext, opts: &BenchOpts) -> Result<Vec<Record>> {
    let timer = Timer::new(ctx);
    let mut out = Vec::new();
    if opts.cpu {
        out.push(fma_peak_record(ctx));
    }
    let max = opts.max_size(ctx);
    let mut size = 128;
    while size <= max {
        let spec = MatmulSpec::new(size, size, size);
        out.extend(bench_matmul(ctx, &timer, opts, &spec, "square")?);
        size *= 2;
    }
    let large = [784, 512, 512, 512, 10];
    let mut mlp_ms: Vec<(MatmulSpec, f64)> = Vec::new();
    for (label, spec) in mlp_products(&large, 100) {
        let recs = bench_matmul(ctx, &timer, opts, &spec, &format!("seed-large {label}"))?;
        if let Some(r) = recs.first().filter(|r| r.median_ms.is_finite()) {
            mlp_ms.push((spec, r.median_ms));
        }
        out.extend(recs);
    }
    for (label, spec) in conv_products(100)? {
        out.extend(bench_matmul(ctx, &timer, opts, &spec, &label)?);
    }
    out.extend(bench_elementwise(ctx, &timer, opts)?);
    out.extend(bench_conv_kernels(ctx, &timer, opts)?);
    if opts.train {
        // The matmul-only rate of a network's products: from the records above for seed-large,
        // measured here for anything else.
        let rate = |sizes: &[usize]| -> Option<f64> {
            let products = mlp_products(sizes, 100);
            let mut flops = 0.0;
            let mut secs = 0.0;
            for (_, spec) in &products {
                let ms = match mlp_ms.iter().find(|(s, _)| s == spec) {
                    Some((_, ms)) => *ms,
                    None => {
                        let once = BenchOpts {
                            variants: false,
                            cpu: false,
                            ..opts.clone()
                        };
                        bench_matmul(ctx, &timer, &once, spec, "")
                            .ok()?
                            .first()?
                            .median_ms
                    }
                };
                flops += spec.flops();
                secs += ms * 1e-3;
            }
            (secs > 0.0).then(|| flops / secs / 1e9)
        };
        let mut train = bench_train(ctx, opts, &rate)?;
        if let Some(peak) = out.iter().find(|r| r.op == "cpu fma peak") {
            let peak = peak.cpu_gflops.unwrap_or(f64::NAN);
            for r in &mut train {
                if let Some(g) = r.cpu_gflops {
                    r.note += &format!("; CPU engine at {:.0}% of the FMA peak", 100.0 * g / peak);
                }
            }
        }
        out.extend(train);
    }
    Ok(out)
}

/// The machine's measured f32 FMA peak on every core, the ceiling for the CPU columns.
fn fma_peak_record(ctx: &GpuContext) -> Record {
    let threads = crate::backend::cpu::available_threads();
    let peak = crate::peak::cpu_fma_peak_gflops(threads);
    let mut r = Record::new(ctx, "cpu fma peak", format!("{threads} threads"));
    r.median_ms = f64::NAN;
    r.cpu_gflops = Some(peak);
    r.variant = crate::peak::fma_isa().into();
    r.note = crate::peak::cpu_model();
    r
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// Print `records` as a table for people.
pub fn print_table(records: &[Record]) {
    if let Some(r) = records.first() {
        println!("adapter: {} ({})", r.adapter, r.backend);
    }
    println!(
        "{:<28} {:<24} {:>10} {:>9} {:>8} {:>10} {:>10} {:>9} {:>8}  variant / note",
        "op", "shape", "median ms", "GFLOP/s", "GB/s", "img/s", "CPU ms", "CPU GF/s", "CPU GB/s"
    );
    for r in records {
        let rate_img = r
            .images_per_s
            .map(|x| format!("{x:.0}"))
            .unwrap_or_else(|| "-".into());
        let cpu_extra = match r.cpu_images_per_s {
            Some(x) => format!(" (CPU {x:.0} img/s)"),
            None => String::new(),
        };
        let mut tail = r.variant.clone();
        if !r.note.is_empty() {
            if !tail.is_empty() {
                tail += "; ";
            }
            tail += &r.note;
        }
        if r.op.starts_with("dispatch overhead") {
            // The two step times the difference comes from.
            tail += &format!(" ({})", r.timing);
        }
        println!(
            "{:<28} {:<24} {:>10.3} {:>9} {:>8} {:>10} {:>10} {:>9} {:>8}  {tail}{cpu_extra}",
            r.op,
            r.shape,
            r.median_ms,
            opt(r.gflops, 2),
            opt(r.gbps, 2),
            rate_img,
            opt(r.cpu_median_ms, 3),
            opt(r.cpu_gflops, 2),
            opt(r.cpu_gbps, 2),
        );
    }
    if let Some(r) = records.iter().find(|r| !r.timing.is_empty()) {
        println!("GPU timing: {}", r.timing.split(' ').next().unwrap_or(""));
    }
}
