//! The `wgtrain` command line. Library errors arrive as one-line [`wgtrain::Error`]s; this is
//! the only place `anyhow` is used.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;
use wgtrain::dist::Solo;
use wgtrain::error::{Setting, Wording};
use wgtrain::gpu::context::{self, AdapterChoice};
use wgtrain::gpu::GpuContext;
use wgtrain::model::{Arch, Input, Model, Preset};
use wgtrain::report::EpochMetrics;
use wgtrain::train::{self, session, Engine, Optimizer, TrainConfig, Which};

#[derive(Parser)]
#[command(
    name = "wgtrain",
    version,
    about = "Train neural networks on any GPU with WebGPU compute shaders (Vulkan, Metal, DX12, GL), checked against a CPU reference",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a network (MLP or conv net) on MNIST or any dataset in MNIST's IDX format. With no flags: the
    /// lecture's large network, 784-512-512-512-10, for 10 epochs.
    Train(Box<TrainArgs>),
    /// Test accuracy and loss of a saved model.
    Eval(EvalArgs),
    /// Classify PNG or JPEG digit images with a saved model.
    Predict(PredictArgs),
    /// List every GPU adapter wgpu finds, with the limits and features that matter.
    Devices(DevicesArgs),
    /// Check every kernel against its CPU twin on the chosen adapter (run it to trust a new GPU
    /// or driver), or with `--device cpu` every op of the CPU engine; exits non-zero on any
    /// mismatch.
    Verify(VerifyArgs),
    /// Benchmark every op the presets' programs run (one-op programs: GFLOP/s, GB/s, medians),
    /// matrix products and training throughput on the chosen adapter's GPU backend, next to the
    /// CPU engine and the machine's measured FMA peak.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// A fast smoke run: small sizes, few repeats.
    #[arg(long)]
    quick: bool,
    /// Largest square matmul size (default: 2048 on CPU adapters, 4096 on GPUs).
    #[arg(long, default_value_t = 0)]
    max_size: usize,
    /// Timed samples per measurement; the median is reported (default 7, quick 3).
    #[arg(long, default_value_t = 0)]
    repeats: usize,
    /// Also time every matmul variant the adapter can run.
    #[arg(long)]
    variants: bool,
    /// Skip the CPU engine figures (and the FMA peak).
    #[arg(long)]
    no_cpu: bool,
    /// Skip the training-throughput, dispatch-overhead and first-step measurements (the first step: seconds from process start to the first training step of seed-large and lenet5, each in a child `wgtrain train` with an empty cache folder, then again with the folder it left).
    #[arg(long)]
    no_train: bool,
    /// Print one JSON object: {"records": [{op, shape, median_ms, gflops|gbps, cpu_median_ms, cpu_over_gpu, adapter, backend, cpu_engine, timing, ...}]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args, Clone)]
struct GpuArgs {
    /// Graphics API backend: vulkan, metal, dx12, gl or all (also WGPU_BACKEND).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Adapter index (from `wgtrain devices`) or a substring of its name (also WGPU_ADAPTER_NAME).
    #[arg(long, global = true)]
    adapter: Option<String>,
}

impl GpuArgs {
    fn choice(&self) -> AdapterChoice {
        AdapterChoice {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Device {
    /// The GPU adapter if it is a hardware one; the CPU engine (with a one-line note) when
    /// the best adapter is a software rasteriser (lavapipe, llvmpipe, SwiftShader, WARP) or
    /// there is none.
    Auto,
    /// The GPU adapter, software ones included; fail if there is none.
    Gpu,
    /// The CPU engine (gemm-crate products and fused element-wise kernels on every core).
    Cpu,
}

impl From<Device> for wgtrain::backend::DeviceChoice {
    fn from(d: Device) -> Self {
        match d {
            Device::Auto => Self::Auto,
            Device::Gpu => Self::Gpu,
            Device::Cpu => Self::Cpu,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum ScheduleArg {
    /// The same α for every step.
    Constant,
    /// Cosine decay from α to 0 over the run.
    Cosine,
    /// One cycle: α/25 up to α over the first 30 % of the run, then down to α/25/1e4.
    OneCycle,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum OptimizerArg {
    /// SGD with momentum (PyTorch's torch.optim.SGD).
    Sgd,
    /// Adam, β1 0.9, β2 0.999, ε 1e-8 (PyTorch's torch.optim.Adam).
    Adam,
    /// Adam with decoupled weight decay (PyTorch's torch.optim.AdamW; --weight-decay).
    Adamw,
}

#[derive(Args)]
struct DataArgs {
    /// Folder with the four MNIST-format IDX files (raw or .gz, standard names). Default: the
    /// per-user cache, downloading MNIST there on first use.
    #[arg(long, env = "MNIST_DIR")]
    data_dir: Option<PathBuf>,
    /// Your own data instead of MNIST, as FORMAT:PATHS (see --help for every form; overrides
    /// --data-dir)
    #[arg(long, long_help = DATA_HELP, value_name = "FORMAT:PATHS")]
    data: Option<String>,
    /// Hold out a fraction F of the training samples (0 < F < 1) as the test set, for data
    /// that has none (e.g. --val-split 0.1): drawn with a fixed seed, so `eval` with the same
    /// F evaluates the samples training held out.
    #[arg(long, value_name = "F")]
    val_split: Option<f64>,
}

/// `--data`'s long help.
const DATA_HELP: &str = "Your own data instead of MNIST, as FORMAT:PATHS. The forms:\n\
- idx:TRAIN_X,TRAIN_Y[,TEST_X,TEST_Y]  IDX files (raw or .gz) of any rank: features \
[N,F], [N,H,W] or [N,C,H,W] bytes, labels [N]\n\
- npy:X,Y[,TEST_X,TEST_Y]  NumPy .npy arrays in C order, shaped as for idx: features uint8 \
(scaled to [0,1]) or float32 (used as they are; NaN or Inf refused), labels any integer type\n\
- npz:FILE (or just FILE.npz)  a NumPy archive holding x_train, y_train and optionally \
x_test, y_test (np.savez or np.savez_compressed)\n\
- cifar10:DIR, cifar100:DIR, cifar100-coarse:DIR  the CIFAR binary releases \
(data_batch_1..5.bin and test_batch.bin; train.bin and test.bin for CIFAR-100, fine or \
coarse labels), class names from the names file when present\n\
- images:ROOT[,HxW]  an image folder as torchvision's ImageFolder: ROOT/train/<class>/*.png|jpg \
and optionally ROOT/test/<class>/...; classes sorted by name; grayscale if every image is, \
else RGB; resized to HxW, or all of one size; the class names are saved in the model and \
printed by predict\n\
- csv:TRAIN[,TEST]  comma-separated rows of numeric features (float32, used as they are) and \
a label column (the \
one a header names `label`, else the last; class indices or class names)\n\
Images given channels-first (C×H×W) match an --arch input CxHxW. Data without a test set \
trains without evaluation unless --val-split holds part of it out. Overrides --data-dir.";

/// `--arch`'s long help, its layer list read from the library's layer types.
fn arch_help() -> String {
    format!(
        "Layers, input first, dash-separated (overrides the preset's network). The input: `784` \
         (flat) or `1x28x28` (C×H×W). Layers: {}. ReLU follows every convolution and every \
         dense layer except the last, which gives the class scores. E.g. 784-512-10, \
         1x28x28-c8k3p1-m2-10, 3x32x32-c16k3p1-a2-c32k3p1-g-10 or, with residual blocks, \
         3x32x32-c16k3p1-b-r(c16k3p1-b-c16k3p1-b)-r(c32k3s2p1-b-c32k3p1-b)-g-10.",
        wgtrain::model::LayerSpec::grammar_help()
    )
}

#[derive(Args)]
struct TrainArgs {
    /// Network and hyperparameters (all 10 epochs): seed-small = 784-10-10-10 and seed-large =
    /// 784-512-512-512-10 with the lecture's SGD (lr 0.05, momentum 0.9, batch 100, init ±0.07);
    /// lenet5 = 1x28x28-c6k5p2-m2-c16k5-m2-120-84-10 and cnn =
    /// 1x28x28-c32k5p2-m2-c64k5p2-m2-1024-10 with Adam (lr 0.001 decayed to 0 by a cosine over
    /// the run, batch 100, PyTorch's init); resnet8 = a ResNet-8 for 3x32x32 images (CIFAR-10:
    /// three residual blocks of 16, 32, 64 channels with BatchNorm, global pooling) with the
    /// same Adam settings.
    #[arg(long, value_enum, default_value = "seed-large")]
    preset: Preset,
    /// Layers, input first, dash-separated (overrides the preset's network), e.g. 784-512-10 or
    /// 1x28x28-c8k3p1-m2-10 (--help lists every layer type)
    #[arg(long, long_help = arch_help())]
    arch: Option<String>,
    /// Update rule: sgd (momentum, PyTorch's SGD), adam (PyTorch's Adam) or adamw (Adam with
    /// decoupled weight decay, PyTorch's AdamW) (default: the preset's).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Learning-rate schedule, for every optimizer, stepped after every update over all T
    /// updates of the configured epochs: constant; cosine (α·(1 + cos(π·t/T))/2, PyTorch's
    /// CosineAnnealingLR(T_max=T)); one-cycle (PyTorch's OneCycleLR(max_lr=α, total_steps=T)
    /// with its defaults: from α/25 up to α over the first 30 % of the updates, then down to
    /// α/25/1e4, both by cosine; momentum is not cycled) (default: the preset's).
    #[arg(long, value_enum)]
    lr_schedule: Option<ScheduleArg>,
    /// Linear learning-rate warm-up over the first N updates: update t ≤ N uses the schedule's
    /// rate times t/N (PyTorch: LambdaLR(lambda k: min(1, (k+1)/N)) multiplied into the
    /// schedule) (default: 0, none).
    #[arg(long, value_name = "N")]
    warmup: Option<usize>,
    /// AdamW's decoupled weight decay λ: each update first scales the decayed parameters by
    /// 1 − α_t·λ (PyTorch's AdamW weight_decay) (default with --optimizer adamw: 0.01, as
    /// PyTorch's). AdamW only; SGD and Adam decay through --l2.
    #[arg(long, value_name = "λ")]
    weight_decay: Option<f32>,
    /// SGD with Nesterov momentum: the step is g + μ·v instead of v (PyTorch's
    /// SGD(nesterov=True)); needs --optimizer sgd and momentum > 0.
    #[arg(long)]
    nesterov: bool,
    /// Apply --l2 / --weight-decay to every parameter, biases and BatchNorm's β too (PyTorch's
    /// weight_decay on one parameter group); default: weights only (matrices, kernels,
    /// BatchNorm's γ).
    #[arg(long)]
    decay_all: bool,
    /// Label smoothing ε in [0, 1] of the training loss (PyTorch's
    /// CrossEntropyLoss(label_smoothing=ε): the target is (1−ε)·onehot + ε/C; the reported
    /// training loss is that smoothed loss, the test loss plain cross-entropy) (default: 0).
    #[arg(long, value_name = "ε")]
    label_smoothing: Option<f32>,
    /// Learning rate α.
    #[arg(long)]
    lr: Option<f32>,
    /// Momentum μ (SGD only).
    #[arg(long)]
    momentum: Option<f32>,
    /// L2 regularisation λ on the weights (not the biases, unless --decay-all), added to the
    /// gradient (PyTorch's SGD / Adam weight_decay); sgd and adam only.
    #[arg(long)]
    l2: Option<f32>,
    /// Number of epochs T (passes over the training set).
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many SGD steps in total.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Minibatch size m.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed for initialisation and shuffling; a fixed seed makes a run reproducible [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Take minibatches in file order (batch b holds samples b·m … (b+1)·m − 1).
    #[arg(long)]
    no_shuffle: bool,
    /// Augment the training images on the device (never evaluation): crop:P (a random crop
    /// with zero padding P: the image shifted by up to P pixels each way, zeros where it
    /// leaves the image), flip (a horizontal flip with probability 1/2), or both as one
    /// comma-separated value, e.g. --augment crop:4,flip. Seeded by --seed, the same on every
    /// device, resumed exactly; image inputs only (default: off, or the checkpoint's).
    #[arg(long, value_name = "crop:P,flip")]
    augment: Option<String>,
    /// Normalise every sample per channel on the device, (x - mean) / std, after the bytes'
    /// scaling to [0, 1] and after any augmentation, in training and in evaluation: auto (the
    /// training set's mean and population standard deviation per channel), MEAN/STD with one
    /// value each for all channels or one per channel, comma-separated (e.g. 0.286/0.353 or
    /// 0.4914,0.4822,0.4465/0.247,0.243,0.261), or off. The values are saved in the model
    /// file, and eval and predict apply them (default: off, or the checkpoint's/preset's).
    #[arg(long, value_name = "auto|MEAN/STD|off")]
    normalize: Option<String>,
    /// Start from the weights in this safetensors model file.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Train on only the first N training images (quick runs).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    /// Threads of the CPU engine, 1 to the cores available (default: all of them).
    #[arg(long)]
    threads: Option<usize>,
    /// Save the trained model here (safetensors, PyTorch nn.Linear / nn.Conv2d layouts); the
    /// metrics CSV, PNG plot and JSON summary go next to it.
    #[arg(long, default_value = "wgtrain-model.safetensors")]
    out: PathBuf,
    /// Print one JSON object with the results instead of text.
    #[arg(long)]
    json: bool,
    /// Save a resumable checkpoint (<out>.ckpt.safetensors) every N epochs; 0 = never.
    #[arg(long, default_value_t = 1)]
    checkpoint_every: usize,
    /// Continue the run saved in this checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// Data-parallel training over MPI, started as `mpirun -np N wgtrain train --distributed
    /// ...`: each rank holds a replica, takes 1/N of every minibatch (--batch-size stays the
    /// global size) and sums gradients with the others each step. Each rank opens its own
    /// adapter: the host's GPUs in local-rank order unless --adapter is given; --device cpu
    /// works per rank. Every rank must be given the same settings and data (checked at
    /// start-up); rank 0 writes the model, metrics and checkpoints. Needs a wgtrain built with
    /// `--features distributed` (Open MPI installed).
    #[arg(long)]
    distributed: bool,
    /// With --distributed: sum each layer's gradients on a communication thread while the
    /// layers below it run their backward pass, instead of all of them after it. Pays when the
    /// all-reduce is slow (between hosts) and each rank has a core to spare; not available for
    /// conv nets on the CPU engine (which fuses a convolution's passes), where a note says so.
    #[arg(long)]
    overlap: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// The safetensors model file.
    #[arg(long)]
    model: PathBuf,
    /// Where to compute.
    #[arg(long, value_enum, default_value = "auto")]
    device: Device,
    /// Threads of the CPU engine, 1 to the cores available (default: all of them).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct PredictArgs {
    /// The safetensors model file.
    #[arg(long)]
    model: PathBuf,
    /// PNG or JPEG images: single digits for an MNIST model (any size; light backgrounds are
    /// inverted, the digit centred as MNIST's), or pictures resized to the model's input for a
    /// model trained on an image folder or CIFAR. Class names saved with the model are printed
    /// beside each class index.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DevicesArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args)]
struct VerifyArgs {
    /// What to verify: `gpu` checks every WGSL kernel on the adapter (every matmul variant
    /// among them); `cpu` checks the CPU engine. Both op by op, with the same inputs, f64
    /// oracles and tolerances.
    #[arg(long, value_enum, default_value = "gpu")]
    device: VerifyDevice,
    /// Only these kernel families (see `wgtrain verify --help`; default: all of them:
    /// matmul, bias, softmax_xent, sgd, metrics, gather, conv2d, maxpool, adam).
    #[arg(long, value_enum, value_delimiter = ',')]
    kernel: Vec<wgtrain::verify::Family>,
    /// Seed for the random inputs (default: fresh; also WGTRAIN_SEED).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Where `wgtrain verify` runs its checks.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum VerifyDevice {
    /// The WGSL kernels on the GPU adapter.
    Gpu,
    /// The CPU engine's backend, op by op.
    Cpu,
}

fn main() {
    // The clock the JSON summary's startup_seconds counts from.
    wgtrain::util::since_start();
    let cli = Cli::parse();
    // Warnings from the library (e.g. the autotuner) reach the user; RUST_LOG overrides.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    // Mesa's Vulkan loader prints an error line without a runtime dir; give it a private one.
    #[cfg(unix)]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
        let dir = std::env::temp_dir().join(format!("wgtrain-xdg-{user}"));
        if std::fs::create_dir_all(&dir).is_ok() {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
    let result = match cli.cmd {
        Cmd::Train(a) => cmd_train(*a),
        Cmd::Eval(a) => cmd_eval(a),
        Cmd::Predict(a) => cmd_predict(a),
        Cmd::Devices(a) => cmd_devices(a),
        Cmd::Verify(a) => cmd_verify(a),
        Cmd::Bench(a) => cmd_bench(a),
    };
    if let Err(e) = result {
        // One line: the context chain joined, no backtrace.
        say_error(&format!("error: {}", error_chain(&e)));
        std::process::exit(1);
    }
}

/// The context chain of `e` joined into one line, no backtrace; the library's errors worded
/// with this command line's flags ([`Flags`]).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = Vec::new();
    for c in e.chain() {
        match c.downcast_ref::<wgtrain::Error>() {
            // A library error's line already says its cause (an I/O error's, say): stop here
            // rather than print the cause again.
            Some(e) => {
                msg.push(e.worded(&Flags));
                break;
            }
            None => msg.push(c.to_string()),
        }
    }
    msg.join(": ")
}

/// How the command line names what a user can change: its flags.
struct Flags;

impl Wording for Flags {
    fn setting(&self, s: Setting) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(match s {
            Setting::Arch => "--arch",
            Setting::Preset => "--preset",
            Setting::Optimizer => "--optimizer",
            Setting::LrSchedule => "--lr-schedule",
            Setting::Lr => "--lr",
            Setting::Momentum => "--momentum",
            Setting::L2 => "--l2",
            Setting::BatchSize => "--batch-size",
            Setting::Epochs => "--epochs",
            Setting::MaxSteps => "--max-steps",
            Setting::Init => "--init",
            Setting::Resume => "--resume",
            Setting::Threads => "--threads",
            Setting::Kernel => "--kernel",
            Setting::DataDir => "--data-dir",
            Setting::Data => "--data",
            Setting::ValSplit => "--val-split",
            Setting::Augment => "--augment",
            Setting::WeightDecay => "--weight-decay",
            Setting::Nesterov => "--nesterov",
            Setting::LabelSmoothing => "--label-smoothing",
            Setting::Normalize => "--normalize",
            other => other.describe(),
        })
    }
    fn use_cpu(&self) -> std::borrow::Cow<'static, str> {
        "run with --device cpu".into()
    }
    fn resume(&self, path: &std::path::Path) -> String {
        format!("continue with --resume {}", path.display())
    }
    fn data_dir(&self) -> std::borrow::Cow<'static, str> {
        "pass --data-dir DIR or set MNIST_DIR=DIR".into()
    }
}

/// Write `line` to stderr in one `write` call. `eprintln!` writes each formatted piece
/// separately to the unbuffered stderr, and under `mpirun` another process's output can land
/// between "error: " and the rest of the line.
fn say_error(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

// ---------------------------------------------------------------------------------------------

fn cmd_devices(a: DevicesArgs) -> Result<()> {
    let out = context::adapter_reports(&a.gpu.choice())?;
    if a.json {
        print_json(&json!({ "adapters": out }));
        return Ok(());
    }
    if out.is_empty() {
        return Err(wgtrain::Error::NoAdapter {
            backends: a.gpu.backend.unwrap_or_else(|| "any backend".into()),
        }
        .into());
    }
    for d in &out {
        let l = &d["limits"];
        let f = &d["features"];
        let mib = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / (1 << 20) as f64;
        println!(
            "[{}] {}  ({}, {})",
            d["index"],
            d["name"].as_str().unwrap_or(""),
            d["backend"].as_str().unwrap_or(""),
            d["device_type"].as_str().unwrap_or("")
        );
        println!(
            "    driver: {} {}",
            d["driver"].as_str().unwrap_or(""),
            d["driver_info"].as_str().unwrap_or("")
        );
        println!(
            "    max storage binding {:.0} MiB, max buffer {:.0} MiB, workgroup storage {} KiB, {} invocations/workgroup",
            mib(&l["max_storage_buffer_binding_size"]),
            mib(&l["max_buffer_size"]),
            l["max_compute_workgroup_storage_size"].as_u64().unwrap_or(0) / 1024,
            l["max_compute_invocations_per_workgroup"]
        );
        println!(
            "    timestamp queries: {}, subgroups: {}, f16: {}",
            f["timestamp_query"], f["subgroups"], f["shader_f16"]
        );
    }
    Ok(())
}

fn cmd_verify(a: VerifyArgs) -> Result<()> {
    use wgtrain::backend::{cpu::CpuBackend, gpu::GpuBackend, Backend};
    // The checks run ops on a fresh backend per family (its buffers are freed with it); the
    // GPU's opens the adapter once.
    let mut ctx = match a.device {
        VerifyDevice::Gpu => Some(GpuContext::new(&a.gpu.choice())?),
        VerifyDevice::Cpu => None,
    };
    let (describe, adapter, backend) = match &ctx {
        Some(ctx) => (
            ctx.describe(),
            ctx.info.name.clone(),
            format!("{:?}", ctx.info.backend),
        ),
        None => {
            let be = CpuBackend::new();
            let (adapter, backend) = be.adapter();
            (be.describe(), adapter, backend)
        }
    };
    let seed = a.seed.unwrap_or_else(wgtrain::verify::run_seed);
    let families = if a.kernel.is_empty() {
        wgtrain::verify::Family::ALL.to_vec()
    } else {
        a.kernel.clone()
    };
    if !a.json {
        match a.device {
            VerifyDevice::Gpu => println!("adapter: {describe}"),
            VerifyDevice::Cpu => println!("engine: {describe}"),
        }
        println!("seed: {seed} (replay with --seed {seed})");
    }
    let mut all_pass = true;
    let mut fams = Vec::new();
    for &fam in &families {
        let t = Instant::now();
        let checks = match ctx.take() {
            Some(gpu) => {
                let mut be = GpuBackend::new(gpu);
                let checks = wgtrain::verify::run_backend_family(&mut be, fam, seed, true);
                ctx = Some(be.into_ctx());
                checks?
            }
            None => wgtrain::verify::run_backend_family(&mut CpuBackend::new(), fam, seed, true)?,
        };
        // One table row per kernel entry point: shapes tried, worst errors, pass/fail.
        let mut rows: BTreeMap<String, (usize, f64, f64, f64, usize)> = BTreeMap::new();
        for c in &checks {
            let r = rows.entry(c.name()).or_default();
            r.0 += 1;
            r.1 = r.1.max(c.max_abs);
            r.2 = r.2.max(c.max_rel);
            r.3 = r.3.max(c.worst);
            r.4 += c.bad;
        }
        let pass = checks.iter().all(|c| c.pass());
        all_pass &= pass;
        if !a.json {
            println!("\n{fam} ({:.1}s)", t.elapsed().as_secs_f64());
            println!(
                "  {:<36} {:>6} {:>11} {:>11} {:>9}  result",
                "kernel", "shapes", "max abs", "max rel", "err/tol"
            );
            for (k, r) in &rows {
                println!(
                    "  {:<36} {:>6} {:>11.3e} {:>11.3e} {:>9.3}  {}",
                    k,
                    r.0,
                    r.1,
                    r.2,
                    r.3,
                    if r.4 == 0 { "pass" } else { "FAIL" }
                );
            }
            for c in checks.iter().filter(|c| !c.pass()).take(10) {
                println!(
                    "  FAIL {} {}: {} of {} elements out of tolerance (max abs {:.3e})",
                    c.name(),
                    c.shape,
                    c.bad,
                    c.elements,
                    c.max_abs
                );
            }
        }
        fams.push(json!({
            "family": fam.name(),
            "pass": pass,
            "kernels": rows.iter().map(|(k, r)| json!({
                "kernel": k, "shapes": r.0, "max_abs": r.1, "max_rel": r.2,
                "err_over_tol": r.3, "bad_elements": r.4,
            })).collect::<Vec<_>>(),
        }));
    }
    if a.json {
        print_json(&json!({
            "device": a.device.to_possible_value().expect("a value").get_name(),
            "adapter": adapter,
            "backend": backend,
            "seed": seed,
            "pass": all_pass,
            "families": fams,
        }));
    } else {
        println!(
            "\n{}",
            if all_pass {
                "all kernels pass"
            } else {
                "SOME KERNELS FAILED"
            }
        );
    }
    if !all_pass {
        anyhow::bail!("verification failed on {describe} (seed {seed})");
    }
    Ok(())
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let ctx = GpuContext::new(&a.gpu.choice())?;
    let opts = wgtrain::bench::BenchOpts {
        quick: a.quick,
        max_size: a.max_size,
        repeats: a.repeats,
        variants: a.variants,
        cpu: !a.no_cpu,
        train: !a.no_train,
        ..Default::default()
    };
    if !a.json {
        eprintln!("benchmarking on {}", ctx.describe());
    }
    let mut records = wgtrain::bench::run(&ctx, &opts)?;
    if opts.train {
        let exe = std::env::current_exe()?;
        records.extend(wgtrain::bench::first_step::first_step_records(
            &ctx, &opts, &exe,
        )?);
    }
    if a.json {
        print_json(&json!({ "records": records }));
    } else {
        wgtrain::bench::print_table(&records);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

/// The backend for `device`, printing auto's one-line note (to stderr, so `--json` output
/// stays one object) when it chose the CPU engine.
fn open_backend(
    device: Device,
    threads: Option<usize>,
    gpu: &GpuArgs,
) -> Result<Box<dyn wgtrain::backend::Backend>> {
    let (be, note) = wgtrain::backend::open(device.into(), &gpu.choice(), threads)?;
    match note {
        Some(n @ wgtrain::backend::CpuFallback::SoftwareAdapter { .. }) => {
            eprintln!("{n} (--device gpu forces the adapter)")
        }
        Some(n) => eprintln!("{n}"),
        None => {}
    }
    Ok(be)
}

/// The data `args` name, with `--val-split` applied, and whether its pictures are photographs
/// brought to size by resizing (for `predict`; MNIST-layout digits are not).
fn load_data(args: &DataArgs) -> Result<(wgtrain::data::Splits, bool)> {
    let (mut splits, resized) = match &args.data {
        Some(text) => {
            let src: wgtrain::data::Source = text.parse()?;
            (src.load()?, src.pictures_resized())
        }
        None => {
            let dir = wgtrain::data::mnist::resolve(args.data_dir.as_deref())?;
            (wgtrain::data::load_dir(&dir)?.into(), false)
        }
    };
    if let Some(f) = args.val_split {
        splits.hold_out(f)?;
    }
    Ok((splits, resized))
}

/// Refuse an output path whose folder does not exist, before any work is done.
fn check_out_dir(out: &std::path::Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            anyhow::bail!(
                "--out {}: folder {} does not exist",
                out.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Progress bar, per-epoch lines and the Ctrl-C flag; checkpoints are the library's.
struct Progress {
    bar: Option<ProgressBar>,
    epochs: usize,
    batch: usize,
    t_epoch: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    json: bool,
    /// Train loss of the previous epoch: the bar's only loss figure, as steps read nothing back.
    last_loss: Option<f32>,
}

impl train::Observer for Progress {
    fn on_steps(&mut self, epoch: usize, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            if done <= train::CHUNK {
                bar.set_length(total as u64);
                bar.set_position(0);
                bar.reset_eta();
                bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.epochs));
                self.t_epoch = Instant::now();
            }
            bar.set_position(done as u64);
            let ips = (done * self.batch) as f64 / self.t_epoch.elapsed().as_secs_f64().max(1e-9);
            let loss = match self.last_loss {
                Some(l) => format!("loss {l:.4} (last epoch), "),
                None => String::new(),
            };
            bar.set_message(format!("{loss}{ips:.0} img/s"));
        }
    }

    fn on_epoch(&mut self, _engine: &mut Engine, m: &EpochMetrics) -> wgtrain::Result<()> {
        self.last_loss = Some(m.train_loss);
        let line = format!(
            "epoch {:>2}/{}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.1}s, {:.0} img/s",
            m.epoch,
            self.epochs,
            m.train_loss,
            100.0 * m.train_acc,
            m.test_loss,
            100.0 * m.test_acc,
            m.seconds,
            m.images_per_sec
        );
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ if !self.json => eprintln!("{line}"),
            _ => {}
        }
        Ok(())
    }

    fn interrupted(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn on_interrupt(&mut self, _engine: &mut Engine, epoch: usize, step: usize) -> wgtrain::Error {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        wgtrain::Error::Stopped {
            epoch: epoch + 1,
            step,
        }
    }
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    if a.distributed {
        return cmd_train_distributed(a);
    }
    train_run(a, Rc::new(Solo), 0)
}

#[cfg(not(feature = "distributed"))]
fn cmd_train_distributed(_: TrainArgs) -> Result<()> {
    anyhow::bail!(
        "--distributed needs a wgtrain built with MPI: install Open MPI (Debian: apt-get install \
         openmpi-bin libopenmpi-dev libclang-dev) and build with `cargo build --release \
         --features distributed`"
    )
}

/// One rank of `mpirun -np N wgtrain train --distributed`. An error every rank reaches
/// together (interrupt, divergence, ranks that disagree) ends MPI normally and is printed once,
/// by rank 0; any other error on one rank (a lost adapter, a missing file, a panic) is printed
/// with the rank and host, and ends the whole job at once so no rank waits for it forever.
#[cfg(feature = "distributed")]
fn cmd_train_distributed(a: TrainArgs) -> Result<()> {
    use wgtrain::dist::{mpi::Mpi, Collective};
    // A second thread calls MPI only with --overlap; other runs keep MPI's cheaper level.
    let mpi = Rc::new(Mpi::init(a.overlap)?);
    let (rank, size, host) = (mpi.rank(), mpi.size(), mpi.host().to_string());
    let local = mpi.local_rank();
    let comm = mpi.clone();
    // A panic must not unwind into MPI_Finalize while the other ranks wait in a collective.
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train_run(a, comm, local)))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked (see above)")));
    let Err(e) = result else {
        return Ok(());
    };
    let together = matches!(
        e.downcast_ref::<wgtrain::Error>(),
        Some(
            wgtrain::Error::Interrupted(_)
                | wgtrain::Error::Diverged { .. }
                | wgtrain::Error::Distributed(_)
        )
    );
    if together {
        // Rank 0 speaks before MPI_Finalize (which waits for every rank): once another rank
        // has exited non-zero, mpirun ends the job and a line not yet written is lost.
        if rank == 0 {
            say_error(&format!("error: {}", error_chain(&e)));
        }
        drop(mpi); // MPI_Finalize, with every rank
        std::process::exit(1);
    }
    say_error(&format!(
        "error: rank {rank} of {size} on {host}: {}; ending every rank",
        error_chain(&e)
    ));
    mpi.abort(1)
}

/// Train as one process (`comm` = [`Solo`]) or as one rank of `comm`; `local_rank` picks the
/// default adapter among the host's GPUs.
fn train_run(
    a: TrainArgs,
    comm: Rc<dyn wgtrain::dist::Collective>,
    local_rank: usize,
) -> Result<()> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let leader = rank == 0;
    if let Some(t) = a.threads {
        wgtrain::backend::cpu::check_threads(t)?;
    }
    let ov = session::Overrides {
        arch: a.arch.as_deref().map(Arch::parse).transpose()?,
        optimizer: a.optimizer.map(|o| match o {
            OptimizerArg::Sgd => Optimizer::Sgd,
            OptimizerArg::Adam => Optimizer::Adam,
            OptimizerArg::Adamw => Optimizer::AdamW,
        }),
        lr_schedule: a.lr_schedule.map(|s| match s {
            ScheduleArg::Constant => train::LrSchedule::Constant,
            ScheduleArg::Cosine => train::LrSchedule::Cosine,
            ScheduleArg::OneCycle => train::LrSchedule::OneCycle,
        }),
        weight_decay: a.weight_decay,
        nesterov: a.nesterov,
        decay_all: a.decay_all,
        warmup: a.warmup,
        label_smoothing: a.label_smoothing,
        lr: a.lr,
        momentum: a.momentum,
        l2: a.l2,
        epochs: a.epochs,
        batch: a.batch_size,
        max_steps: a.max_steps,
        seed: a.seed,
        no_shuffle: a.no_shuffle,
        augment: a
            .augment
            .as_deref()
            .map(|s| {
                wgtrain::ops::Augment::parse(s)
                    .map_err(|r| wgtrain::Error::setting(Setting::Augment, r))
            })
            .transpose()?,
        normalize: a
            .normalize
            .as_deref()
            .map(|s| {
                wgtrain::ops::Normalize::parse(s)
                    .map_err(|r| wgtrain::Error::setting(Setting::Normalize, r))
            })
            .transpose()?,
    };
    let start = session::start(
        TrainConfig::preset(a.preset),
        &ov,
        a.init.as_deref(),
        a.resume.as_deref(),
    )?;
    let cfg = start.cfg.clone();
    check_out_dir(&a.out)?;

    let (mut data, resized) = load_data(&a.data)?;
    if let Some(n) = a.train_limit {
        data.train = data.train.subset(n.min(data.train.n));
    }
    if let (Some(n), Some(t)) = (a.test_limit, data.test.as_mut()) {
        *t = t.subset(n.min(t.n));
    }
    train::check_data(&cfg.arch, &data.train, "training")?;
    if let Some(t) = &data.test {
        train::check_data(&cfg.arch, t, "test")?;
    }
    if ranks > 1 {
        session::check_ranks_agree(comm.as_ref(), &start, &data.train, data.test.as_ref())?;
        // Forking the communicator for --overlap is itself a collective: all ranks or none.
        wgtrain::dist::check_agreement(comm.as_ref(), &[("--overlap", a.overlap.to_string())])?;
    }

    let mut gpu = a.gpu.clone();
    if ranks > 1 && gpu.adapter.is_none() && a.device != Device::Cpu {
        gpu.adapter =
            context::nth_hardware_adapter(&gpu.choice(), local_rank)?.map(|i| i.to_string());
    }
    let mut be = open_backend(a.device, a.threads, &gpu)?;
    // Start at once on checked defaults; tune between steps (see GpuBackend::tune_pending).
    if let Some(g) = be.as_gpu() {
        g.tune_in_background(true);
    }
    let mut engine = Engine::with_group(
        be,
        &cfg,
        &start.model,
        start.state.as_ref(),
        &data.train,
        data.test.as_ref(),
        comm,
    )?;
    if a.overlap && ranks > 1 && !engine.overlap_communication()? && leader {
        eprintln!(
            "note: --overlap is not available for this run (a rank's engine cannot cut its step, \
             or MPI lacks MPI_THREAD_MULTIPLE); gradients are summed after the backward pass"
        );
    }
    let device = engine.device();
    if ranks > 1 && !a.json {
        eprintln!("rank {rank} of {ranks}: {device}");
    }
    if leader && !a.json {
        let each = match ranks {
            1 => String::new(),
            n => format!(" (over {n} ranks)"),
        };
        eprintln!(
            "training {} on {} ({} train / {} test images), {} lr {} ({} schedule) momentum {} l2 {} batch {}{each} epochs {}",
            cfg.arch, device, data.train.n, data.test.as_ref().map_or(0, |t| t.n), cfg.optimizer, cfg.lr, cfg.lr_schedule, cfg.momentum, cfg.l2, cfg.batch, cfg.epochs
        );
        let mut extras = Vec::new();
        if cfg.optimizer == Optimizer::AdamW {
            extras.push(format!("weight decay {}", cfg.weight_decay));
        }
        if cfg.nesterov {
            extras.push("nesterov".to_string());
        }
        if cfg.decay_scope == train::DecayScope::All {
            extras.push("decay on all parameters".to_string());
        }
        if cfg.warmup > 0 {
            extras.push(format!("warm-up {} updates", cfg.warmup));
        }
        if cfg.label_smoothing > 0.0 {
            extras.push(format!("label smoothing {}", cfg.label_smoothing));
        }
        if !extras.is_empty() {
            eprintln!("optimiser: {}", extras.join(", "));
        }
        if !cfg.augment.is_off() {
            eprintln!("augmenting the training images: {}", cfg.augment);
        }
        let norm = &engine.config().normalize;
        if !norm.is_off() {
            eprintln!("normalising the samples (mean/std per channel): {norm}");
        }
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while saving is ignored; the save is atomic either way.
        let _ = ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::SeqCst));
    }
    let bar = if a.quiet || a.json || !leader {
        None
    } else {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] step {pos}/{len} {msg} eta {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        Some(bar)
    };
    let mut obs = Progress {
        bar,
        epochs: cfg.epochs,
        batch: cfg.batch,
        t_epoch: Instant::now(),
        stop,
        json: a.json || !leader,
        last_loss: None,
    };
    let t0 = Instant::now();
    let result = session::train(
        &mut engine,
        start.position,
        &session::sibling(&a.out, ".ckpt.safetensors"),
        a.checkpoint_every,
        &mut obs,
    );
    if let Some(bar) = &obs.bar {
        bar.finish_and_clear();
    }
    let history = result?;
    let s = session::finish_with(
        &mut engine,
        history,
        t0.elapsed().as_secs_f64(),
        &a.out,
        &data_metadata(&data.class_names, resized),
    )
    .with_context(|| "saving the results")?;
    if !leader {
        return Ok(());
    }
    if a.json {
        print_json(&serde_json::to_value(&s)?);
    } else {
        println!(
            "final: train acc {:.2}% (full pass), test acc {:.2}%, {:.1}s on {}",
            100.0 * s.last.train_acc,
            100.0 * s.last.test_acc.unwrap_or(f32::NAN),
            s.seconds,
            s.device
        );
        println!(
            "saved {}, {}, {}",
            s.model.display(),
            s.metrics_csv.display(),
            s.plot.display()
        );
    }
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    if let Some(t) = a.threads {
        wgtrain::backend::cpu::check_threads(t)?;
    }
    let (model, meta) = Model::load(&a.model)?;
    let (data, _) = load_data(&a.data)?;
    let Some(test) = data.test else {
        anyhow::bail!(
            "the data has no test set to evaluate on; hold part of it out with --val-split F"
        );
    };
    train::check_data(&model.arch, &test, "test")?;
    let mut cfg = TrainConfig::lecture(model.arch.clone());
    cfg.batch = 1000;
    cfg.normalize = train::saved_normalize(&meta)?;
    let be = open_backend(a.device, a.threads, &a.gpu)?;
    let mut engine = Engine::new(be, &cfg, &model, None, &test, None)?;
    let t = Instant::now();
    let (loss, acc) = train::summarize(&engine.evaluate(Which::Train)?);
    let secs = t.elapsed().as_secs_f64();
    if a.json {
        print_json(&json!({
            "model": a.model, "arch": model.arch.to_string(), "device": engine.device(),
            "engine": engine.kind(),
            "test_images": test.n, "test_loss": loss, "test_acc": acc, "seconds": secs,
        }));
    } else {
        println!(
            "{}: test accuracy {:.2}%, loss {:.4} on {} images ({}, {:.2}s)",
            a.model.display(),
            100.0 * acc,
            loss,
            test.n,
            engine.device(),
            secs
        );
    }
    Ok(())
}

/// Model-file metadata describing the data a model was trained on: its class names (`classes`,
/// a JSON list) and, for photographs brought to size by resizing, `pictures = resized`.
fn data_metadata(names: &[String], resized: bool) -> wgtrain::model::io::Metadata {
    let mut m = wgtrain::model::io::Metadata::new();
    if !names.is_empty() {
        m.insert("classes".into(), json!(names).to_string());
    }
    if resized {
        m.insert("pictures".into(), "resized".into());
    }
    m
}

fn cmd_predict(a: PredictArgs) -> Result<()> {
    let (model, meta) = Model::load(&a.model)?;
    let names: Vec<String> = meta
        .get("classes")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let resized = meta.get("pictures").is_some_and(|v| v == "resized");
    let (c, h, w) = match model.arch.input {
        Input::Image { c, h, w } => (c, h, w),
        Input::Flat(n) => {
            let side = (n as f64).sqrt() as usize;
            if side * side != n {
                anyhow::bail!(
                    "model input width {n} is not a square image; predict needs an image model"
                );
            }
            (1, side, side)
        }
    };
    let mut cfg = TrainConfig::lecture(model.arch.clone());
    cfg.batch = 1;
    cfg.normalize = train::saved_normalize(&meta)?;
    // One blank sample stands in for a dataset: predict writes its images straight in.
    let blank = wgtrain::data::Dataset::new(
        wgtrain::data::SampleShape::from(model.arch.input),
        vec![0; model.arch.input_len()],
        vec![0],
    )?;
    let mut engine = Engine::cpu(&cfg, &model, None, &blank, None)?;
    let mut results = Vec::new();
    for path in &a.images {
        // Digits are prepared as MNIST's were; other pictures are resized as the folder was.
        let x = if resized || c != 1 {
            wgtrain::data::folder::load_picture(path, c, h, w)?
        } else {
            wgtrain::data::image::load_digit(path, h, w)?
        };
        let probs = engine.probabilities(&x)?;
        let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        ranked.sort_by(|x, y| y.1.total_cmp(&x.1));
        ranked.truncate(a.top.max(1));
        results.push(json!({
            "image": path,
            "top": ranked.iter().map(|&(c, p)| match names.get(c) {
                Some(name) => json!({"class": c, "name": name, "probability": p}),
                None => json!({"class": c, "probability": p}),
            }).collect::<Vec<_>>(),
        }));
        if !a.json {
            let top: Vec<String> = ranked
                .iter()
                .map(|&(c, p)| match names.get(c) {
                    Some(name) => format!("{c} {name} ({:.1}%)", 100.0 * p),
                    None => format!("{c} ({:.1}%)", 100.0 * p),
                })
                .collect();
            println!("{}: {}", path.display(), top.join(", "));
        }
    }
    if a.json {
        print_json(&json!({ "model": a.model, "predictions": results }));
    }
    Ok(())
}
