//! Microbenchmarks of what training runs, each on the GPU backend and on the CPU engine.
//!
//! Everything is measured through [`Backend`](crate::backend::Backend)s, the code path training
//! uses: the GPU column is a [`GpuBackend`](crate::backend::gpu::GpuBackend) on the adapter
//! measured, the CPU column the CPU engine ([`CpuBackend`](crate::backend::cpu::CpuBackend), on
//! every core). [`run`] measures:
//! * **ops**: every distinct op (by [`Op::name`](crate::ops::Op::name) and
//!   [`Op::shape`](crate::ops::Op::shape)) of the programs the training engine prepares for each
//!   [`Preset`](crate::model::Preset) at batch 100 (its training step, forward, backward and
//!   update, and its evaluation), read from those programs, not listed by hand: a new op or
//!   layer gets rows by being in a preset's program. The engine is built on each backend and
//!   runs one training step op by op, so the buffers hold what a step leaves in them; then each
//!   op is timed as a one-op program on them. Products: GFLOP/s = 2·M·N·K / median time;
//!   others: GB/s = the bytes of the buffers the op reads and writes, each counted once, /
//!   median time. The CPU engine fuses a convolution's im2col and col2im into the products
//!   around them when it runs a whole step; one-op programs time them unfused;
//! * **square products** 128, 256, … up to [`BenchOpts::max_size`](field@BenchOpts::max_size)
//!   as one-op programs likewise, and with [`BenchOpts::variants`] every tile variant the
//!   adapter can run (square sizes up to 1024 and the presets' products), GPU only: the GPU
//!   backend always runs the autotuned tile, so the variants launch the kernel directly;
//! * **training**: each preset's step at batch 100 with its own settings
//!   ([`TrainConfig::preset`](crate::train::TrainConfig::preset)) on the GPU engine and the
//!   CPU engine: images/s and the achieved FLOP rate (Σ 2·M·N·K of the step's products, read
//!   from its program) beside what the step's products and ops cost as one-op programs, and
//!   the per-step cost of submitting every step separately instead of 50 per submission.
//!
//! Times are medians over repeats. A sample is one
//! [`Backend::run_timed`](crate::backend::Backend::run_timed) of a program `inner` times in a
//! row (on the GPU one
//! submission, so a sub-millisecond kernel is not drowned in submission cost) divided by
//! `inner`. On the GPU it is timed with timestamp queries written around the submission when
//! the device has TIMESTAMP_QUERY (GPU time, without the host's submit and wait), else with the
//! wall clock around submit + wait; on the CPU engine with the wall clock around `run`.
//! [`Record::timing`] says which for the GPU column.

use crate::backend::Timed;
use crate::data::Dataset;
use crate::gpu::GpuContext;
use crate::Result;
use serde::Serialize;

pub mod first_step;
mod matmul;
mod ops;
mod train;

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
    /// Also measure the CPU engine ([`crate::backend::cpu::CpuBackend`]) beside the GPU.
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

/// One measurement: the GPU backend's figures, and the CPU engine's beside them.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// An op's name (`matmul`, `im2col`, `maxpool_backward`, …, see
    /// [`Op::name`](crate::ops::Op::name)), `train seed-small`, `dispatch overhead cnn`,
    /// `cpu fma peak`.
    pub op: String,
    /// An op's shape (see [`Op::shape`](crate::ops::Op::shape)): e.g. `1024x1024x1024 NN`,
    /// `100x512x784 NT BiasRelu` (M×N×K, transposes of A and B, epilogue), `100x28x28x6 k2`;
    /// `batch 100` for training.
    pub shape: String,
    /// GPU backend: median milliseconds per run of the one-op program (per training step for
    /// `train`).
    pub median_ms: f64,
    /// Products and training: GFLOP/s.
    pub gflops: Option<f64>,
    /// Other ops: GB/s (the buffers the op reads and writes, each counted once).
    pub gbps: Option<f64>,
    /// Training: images per second.
    pub images_per_s: Option<f64>,
    /// The CPU engine on the same program.
    pub cpu_median_ms: Option<f64>,
    /// The CPU engine's GFLOP/s, where `gflops` is given.
    pub cpu_gflops: Option<f64>,
    /// The CPU engine's GB/s, where `gbps` is given.
    pub cpu_gbps: Option<f64>,
    /// The CPU engine's images per second, where `images_per_s` is given.
    pub cpu_images_per_s: Option<f64>,
    /// `cpu_median_ms / median_ms`: above 1 where the GPU backend is faster.
    pub cpu_over_gpu: Option<f64>,
    /// Adapter name.
    pub adapter: String,
    /// Graphics backend (Vulkan, Metal, …).
    pub backend: String,
    /// The CPU engine measured, e.g. `cpu (2 threads)`.
    pub cpu_engine: String,
    /// How the GPU time was taken: `timestamp` (queries around the submission) or `wall`
    /// (clock around submit + wait), with samples × runs per sample.
    pub timing: String,
    /// Matmul: the tile run, `autotuned:` when it is the autotuner's choice.
    pub variant: String,
    /// Anything else worth knowing: the presets whose programs run the op, a failure, the
    /// step's one-op costs beside a training row.
    pub note: String,
}

impl Record {
    fn new(ctx: &GpuContext, op: &str, shape: String) -> Self {
        let threads = crate::backend::cpu::available_threads();
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
            cpu_over_gpu: None,
            adapter: ctx.info.name.clone(),
            backend: format!("{:?}", ctx.info.backend),
            cpu_engine: format!("cpu ({threads} threads)"),
            timing: String::new(),
            variant: String::new(),
            note: String::new(),
        }
    }
}

/// Rates from `work` units (FLOPs or bytes) and the medians: (GPU, CPU) per second / 1e9.
fn rates(r: &mut Record, work: f64) -> (Option<f64>, Option<f64>) {
    let per = |ms: f64| (ms.is_finite() && ms > 0.0).then(|| work / (ms * 1e-3) / 1e9);
    if let Some(c) = r.cpu_median_ms {
        r.cpu_over_gpu = r.median_ms.is_finite().then(|| c / r.median_ms);
    }
    (per(r.median_ms), r.cpu_median_ms.and_then(per))
}

/// GFLOP/s of both columns from `flops` per run, and their ratio.
fn set_flops(r: &mut Record, flops: f64) {
    (r.gflops, r.cpu_gflops) = rates(r, flops);
}

/// GB/s of both columns from `bytes` per run, and their ratio.
fn set_bytes(r: &mut Record, bytes: f64) {
    (r.gbps, r.cpu_gbps) = rates(r, bytes);
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

/// A median time per run and how it was taken.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Median seconds per run.
    secs: f64,
    /// The clock of the samples (the last one's, should they differ).
    clock: crate::backend::Clock,
    /// Samples taken.
    samples: usize,
    /// Runs per sample.
    inner: usize,
}

impl Sample {
    /// e.g. `timestamp (7 samples x 12 runs)`.
    fn describe(&self) -> String {
        format!(
            "{} ({} samples x {} runs)",
            self.clock, self.samples, self.inner
        )
    }
}

/// The median of `repeats` samples of `run(inner)` (which runs something `inner` times and
/// times it), per run; `inner` is chosen from one estimating `run(1)` so that a sample lasts
/// about `target_s` (1 to 200).
fn sample(
    repeats: usize,
    target_s: f64,
    mut run: impl FnMut(usize) -> Result<Timed>,
) -> Result<Sample> {
    let once = run(1)?.secs;
    let inner = ((target_s / once.max(1e-7)).ceil() as usize).clamp(1, 200);
    let mut clock = crate::backend::Clock::Wall;
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = run(inner)?;
        clock = t.clock;
        samples.push(t.secs / inner as f64);
    }
    Ok(Sample {
        secs: median(samples),
        clock,
        samples: repeats,
        inner,
    })
}

/// A seeded random matrix.
fn filled(rows: usize, cols: usize, seed: u64) -> ndarray::Array2<f32> {
    crate::verify::Inputs::new(seed).matrix(rows, cols)
}

/// A synthetic MNIST-shaped dataset (random pixels and labels).
#[cfg(test)]
fn synthetic(n: usize) -> Dataset {
    synthetic_shaped(crate::data::SampleShape::gray(28, 28), n)
}

/// A synthetic dataset of `n` samples of `shape` (random pixels and labels 0..9).
fn synthetic_shaped(shape: crate::data::SampleShape, n: usize) -> Dataset {
    let mut inp = crate::verify::Inputs::new(9);
    let features = (0..n * shape.len()).map(|_| inp.next_u64() as u8).collect();
    let labels = (0..n).map(|_| (inp.next_u64() % 10) as u32).collect();
    Dataset::new(shape, features, labels).expect("n samples of the shape")
}

/// One synthetic dataset of `n` samples per input shape the presets take (MNIST's 1×28×28
/// for most, 3×32×32 for resnet8), so that every preset gets its ops and `train` rows.
fn synthetic_sets(n: usize) -> Vec<Dataset> {
    let mut sets: Vec<Dataset> = Vec::new();
    for p in crate::model::Preset::ALL {
        let shape = crate::data::SampleShape::from(p.arch().input);
        if !sets.iter().any(|d| d.shape.len() == shape.len()) {
            sets.push(synthetic_shaped(shape, n));
        }
    }
    sets
}

/// The set of [`synthetic_sets`] whose samples fit `preset`'s input.
fn data_for(sets: &[Dataset], preset: crate::model::Preset) -> &Dataset {
    let want = crate::data::SampleShape::from(preset.arch().input).len();
    sets.iter()
        .find(|d| d.shape.len() == want)
        .expect("a synthetic set per preset input shape")
}

/// Run the benchmarks on the adapter of `ctx` and the CPU engine (see the module docs).
pub fn run(ctx: &GpuContext, opts: &BenchOpts) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    if opts.cpu {
        out.push(fma_peak_record(ctx));
    }
    out.extend(matmul::square_records(ctx, opts)?);
    let data = synthetic_sets(5000);
    let (rows, steps) = ops::op_records(ctx, opts, &data)?;
    out.extend(rows);
    if opts.train {
        let mut train = train::train_records(ctx, opts, &data, &steps)?;
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
        println!(
            "GPU columns: {} ({}), the GPU backend; CPU columns: the CPU engine, {}",
            r.adapter, r.backend, r.cpu_engine
        );
    }
    println!(
        "{:<24} {:<28} {:>10} {:>9} {:>8} {:>10} {:>10} {:>9} {:>8} {:>8}  variant / note",
        "op",
        "shape",
        "median ms",
        "GFLOP/s",
        "GB/s",
        "img/s",
        "CPU ms",
        "CPU GF/s",
        "CPU GB/s",
        "CPU/GPU"
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
            "{:<24} {:<28} {:>10.3} {:>9} {:>8} {:>10} {:>10} {:>9} {:>8} {:>8}  {tail}{cpu_extra}",
            r.op,
            r.shape,
            r.median_ms,
            opt(r.gflops, 2),
            opt(r.gbps, 2),
            rate_img,
            opt(r.cpu_median_ms, 3),
            opt(r.cpu_gflops, 2),
            opt(r.cpu_gbps, 2),
            opt(r.cpu_over_gpu, 2),
        );
    }
    if let Some(r) = records.iter().find(|r| !r.timing.is_empty()) {
        println!(
            "GPU timing: {}; CPU engine: wall clock around each run",
            r.timing.split(' ').next().unwrap_or("")
        );
    }
}
