//! Training a [`crate::model::Model`] with SGD, Adam or AdamW on either backend: [`Engine`] holds
//! the one training step, [`run`] the epoch loop (shuffling, evaluation, metrics, divergence),
//! and [`session`] starting, resuming and checkpointing a run.

use crate::data::{Dataset, SampleShape};
use crate::error::{Mismatch, Setting};
use crate::model::{Arch, Preset};
use crate::ops::{AdamParams, MetricsAcc, SgdParams};
use crate::report::EpochMetrics;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use web_time::Instant;

pub mod engine;
pub mod session;

pub use engine::{CommTime, Engine, OptState, Slot};

/// The update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with momentum (PyTorch's `torch.optim.SGD`).
    Sgd,
    /// Adam (PyTorch's `torch.optim.Adam`, β1 0.9, β2 0.999, ε 1e-8).
    Adam,
    /// Adam with decoupled weight decay (PyTorch's `torch.optim.AdamW`, β1 0.9, β2 0.999,
    /// ε 1e-8): w ← w·(1 − α_t·λ) with λ = [`TrainConfig::weight_decay`], then Adam's step
    /// without L2.
    #[serde(rename = "adamw")]
    AdamW,
}

impl std::fmt::Display for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adam => "adam",
            Optimizer::AdamW => "adamw",
        })
    }
}

/// How the learning rate changes over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// α throughout.
    #[default]
    Constant,
    /// α·(1 + cos(π·(t−1)/T))/2 for update t of T = epochs × steps per epoch: PyTorch's
    /// `CosineAnnealingLR(T_max = T)` stepped after every update.
    Cosine,
    /// PyTorch's `OneCycleLR(max_lr = α, total_steps = T)` with its defaults (pct_start 0.3,
    /// anneal_strategy "cos", div_factor 25, final_div_factor 1e4, three_phase False),
    /// stepped after every update: a cosine rise from α/25 to α over the first 30 % of the
    /// updates, then a cosine fall to α/25/1e4. Its momentum cycling is not done (as
    /// `cycle_momentum=False`): momentum (SGD) and β1 (Adam) stay fixed.
    #[serde(rename = "one-cycle")]
    OneCycle,
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
            LrSchedule::OneCycle => "one-cycle",
        })
    }
}

impl LrSchedule {
    /// The learning rate of update `t` (1-based) of `total`, in f64.
    pub fn lr(self, lr: f32, t: usize, total: usize) -> f64 {
        match self {
            LrSchedule::Constant => lr as f64,
            LrSchedule::Cosine => {
                let x = (t.max(1) - 1) as f64 / total.max(1) as f64;
                lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
            }
            LrSchedule::OneCycle => {
                // torch.optim.lr_scheduler.OneCycleLR.get_lr, in f64 as PyTorch's Python floats.
                let cos = |start: f64, end: f64, pct: f64| {
                    end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
                };
                let max = lr as f64;
                let initial = max / 25.0;
                let min = initial / 1e4;
                let total = total.max(1) as f64;
                let end1 = 0.3 * total - 1.0;
                let end2 = total - 1.0;
                let s = (t.max(1) - 1) as f64;
                if s <= end1 {
                    cos(initial, max, s / end1)
                } else {
                    cos(max, min, (s - end1) / (end2 - end1))
                }
            }
        }
    }
}

/// Which parameters weight decay (SGD's and Adam's coupled L2, AdamW's decoupled decay)
/// applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayScope {
    /// Weights only (matrices, kernels, BatchNorm's γ), not biases (BatchNorm's β): the
    /// common recipe; in PyTorch, two parameter groups.
    #[default]
    Weights,
    /// Every parameter, as PyTorch's `weight_decay` on a single parameter group.
    All,
}

impl DecayScope {
    fn is_weights(&self) -> bool {
        *self == DecayScope::Weights
    }
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

fn is_zero_usize(x: &usize) -> bool {
    *x == 0
}

fn is_false(x: &bool) -> bool {
    !*x
}

/// How fresh weights are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Weights uniform in [−scale, scale], biases 0 (the lecture's).
    Uniform {
        /// Half-width of the interval (0.07 in the lecture).
        scale: f32,
    },
    /// PyTorch's default for nn.Linear / nn.Conv2d: U(±1/√fan_in) for weights and biases.
    Pytorch,
}

/// Everything that defines a training run (stored in checkpoints as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network trained (stored as its `--arch` string).
    #[serde(with = "arch_string")]
    pub arch: Arch,
    /// The update rule.
    pub optimizer: Optimizer,
    /// Learning rate α.
    pub lr: f32,
    /// Momentum μ.
    pub momentum: f32,
    /// L2 regularisation λ (weights only).
    pub l2: f32,
    /// Minibatch size m.
    pub batch: usize,
    /// Epochs T.
    pub epochs: usize,
    /// Stop after this many steps in total.
    pub max_steps: Option<usize>,
    /// Seeds the fresh weights and every epoch's shuffle.
    pub seed: u64,
    /// Shuffle every epoch (false = file order).
    pub shuffle: bool,
    /// How fresh weights are drawn.
    pub init: Init,
    /// How the learning rate changes over the run.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Training-time augmentation of image samples (off: none; saved in checkpoints so a
    /// resumed run draws the same crops and flips; not written when off, so files of runs
    /// without it are unchanged).
    #[serde(default, skip_serializing_if = "crate::ops::Augment::is_off")]
    pub augment: crate::ops::Augment,
    // The fields below are not written when off, so files of runs without them are unchanged
    // and files written before them load.
    /// AdamW's decoupled weight decay λ (PyTorch's `AdamW(weight_decay=λ)`; 0.01 there and
    /// here when AdamW is chosen without a value). AdamW only: SGD and Adam decay through
    /// [`TrainConfig::l2`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_decay: f32,
    /// SGD with Nesterov momentum (PyTorch's `SGD(nesterov=True)`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub nesterov: bool,
    /// Which parameters L2 and weight decay apply to.
    #[serde(default, skip_serializing_if = "DecayScope::is_weights")]
    pub decay_scope: DecayScope,
    /// Learning-rate warm-up over the first N updates: update t ≤ N uses α_t·t/N, α_t the
    /// schedule's rate (PyTorch: `LambdaLR(lambda k: min(1, (k + 1) / N))` multiplied into
    /// the schedule); 0: none.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub warmup: usize,
    /// Label smoothing ε of the training loss (PyTorch's `CrossEntropyLoss(label_smoothing=ε)`);
    /// evaluation reports plain cross-entropy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub label_smoothing: f32,
    /// Per-channel normalisation of every minibatch (off: none; `auto` is resolved to the
    /// training set's values when an engine is built, and those values are what checkpoints
    /// and model files hold; not written when off, so files of runs without it are unchanged).
    #[serde(default, skip_serializing_if = "crate::ops::Normalize::is_off")]
    pub normalize: crate::ops::Normalize,
}

/// An [`Arch`] as its `--arch` string in JSON.
mod arch_string {
    use crate::model::Arch;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(a: &Arch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arch, D::Error> {
        let s = String::deserialize(d)?;
        Arch::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl TrainConfig {
    /// The lecture's settings for `arch`: α 0.05, μ 0.9, m 100, 10 epochs, init ±0.07.
    pub fn lecture(arch: Arch) -> Self {
        TrainConfig {
            arch,
            optimizer: Optimizer::Sgd,
            lr: 0.05,
            momentum: 0.9,
            l2: 0.0,
            batch: 100,
            epochs: 10,
            max_steps: None,
            seed: 1,
            shuffle: true,
            init: Init::Uniform { scale: 0.07 },
            lr_schedule: LrSchedule::Constant,
            augment: crate::ops::Augment::OFF,
            weight_decay: 0.0,
            nesterov: false,
            decay_scope: DecayScope::Weights,
            warmup: 0,
            label_smoothing: 0.0,
            normalize: crate::ops::Normalize::Off,
        }
    }

    /// The settings of a preset (its network: [`Preset::arch`]): the lecture's SGD settings
    /// for the two MLPs, Adam with a cosine learning-rate schedule and PyTorch's initialisation
    /// for the conv nets (calibrated against PyTorch: `scripts/calibrate_torch.py`); `fashion`
    /// also trains 15 epochs with `crop:2,flip` augmentation and `auto` normalisation
    /// (`scripts/calibrate_fashion.py`).
    pub fn preset(preset: Preset) -> Self {
        let mut cfg = TrainConfig::lecture(preset.arch());
        if !cfg.arch.is_mlp() {
            cfg.optimizer = Optimizer::Adam;
            cfg.lr = 1e-3;
            cfg.lr_schedule = LrSchedule::Cosine;
            cfg.init = Init::Pytorch;
        }
        if preset == Preset::Fashion {
            // Calibrated on Fashion-MNIST with scripts/calibrate_fashion.py.
            cfg.epochs = 15;
            cfg.augment = crate::ops::Augment {
                crop: 2,
                flip: true,
            };
            cfg.normalize = crate::ops::Normalize::Auto;
        }
        cfg
    }

    /// Steps the whole run takes over `train_len` samples.
    pub fn total_steps(&self, train_len: usize) -> usize {
        let all = self.epochs * train_len.div_ceil(self.batch.max(1));
        self.max_steps.map_or(all, |m| m.min(all))
    }

    /// Fresh weights for this run.
    pub fn init_model(&self) -> crate::model::Model {
        match self.init {
            Init::Uniform { scale } => {
                crate::model::Model::init_uniform(&self.arch, scale, self.seed)
            }
            Init::Pytorch => crate::model::Model::init_pytorch(&self.arch, self.seed),
        }
    }

    /// Refuse impossible hyperparameters up front.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting, reason: String| Err(Error::InvalidSetting { setting, reason });
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(
                Setting::Lr,
                format!("{} must be a finite number > 0", self.lr),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(
                Setting::Momentum,
                format!("{} must be in [0, 1)", self.momentum),
            );
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            return bad(
                Setting::L2,
                format!("{} must be a finite number ≥ 0", self.l2),
            );
        }
        if self.batch == 0 {
            return bad(Setting::BatchSize, "must be at least 1".into());
        }
        if self.batch > 1 << 20 {
            return bad(
                Setting::BatchSize,
                format!("{} is larger than 1048576", self.batch),
            );
        }
        if self.epochs == 0 {
            return bad(Setting::Epochs, "must be at least 1".into());
        }
        if self.max_steps == Some(0) {
            return bad(Setting::MaxSteps, "must be at least 1".into());
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(
                Setting::WeightDecay,
                format!("{} must be a finite number ≥ 0", self.weight_decay),
            );
        }
        if self.weight_decay > 0.0 && self.optimizer != Optimizer::AdamW {
            return bad(
                Setting::WeightDecay,
                format!(
                    "decoupled weight decay is AdamW's; {} decays through L2 regularisation",
                    self.optimizer
                ),
            );
        }
        if self.l2 > 0.0 && self.optimizer == Optimizer::AdamW {
            return bad(
                Setting::L2,
                "adamw decays the weights directly (weight decay), not through L2 regularisation"
                    .into(),
            );
        }
        if self.nesterov && (self.optimizer != Optimizer::Sgd || self.momentum == 0.0) {
            return bad(
                Setting::Nesterov,
                format!(
                    "needs the sgd optimizer with momentum > 0 (got {} with momentum {})",
                    self.optimizer, self.momentum
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return bad(
                Setting::LabelSmoothing,
                format!("{} must be in [0, 1]", self.label_smoothing),
            );
        }
        self.normalize
            .check()
            .map_err(|r| Error::setting(Setting::Normalize, r))?;
        self.arch.shapes()?;
        Ok(())
    }

    /// Whether weight decay applies to a weight (`weight`) or a bias.
    pub fn decays(&self, weight: bool) -> bool {
        weight || self.decay_scope == DecayScope::All
    }

    /// The SGD hyperparameters for a weight or a bias (λ where [`TrainConfig::decays`] it).
    pub fn sgd(&self, weight: bool) -> SgdParams {
        SgdParams {
            lr: self.lr,
            momentum: self.momentum,
            l2: if self.decays(weight) { self.l2 } else { 0.0 },
            nesterov: self.nesterov,
        }
    }

    /// The Adam hyperparameters (PyTorch's defaults) for a weight or a bias (AdamW: no L2;
    /// its decay is a separate step).
    pub fn adam(&self, weight: bool) -> AdamParams {
        AdamParams {
            lr: self.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            l2: if self.decays(weight) { self.l2 } else { 0.0 },
        }
    }

    /// Whether the learning rate changes during the run (a schedule or warm-up).
    pub fn scheduled(&self) -> bool {
        self.lr_schedule != LrSchedule::Constant || self.warmup > 0
    }

    /// The learning rate of update `t` (1-based) of a run whose schedule spans `span`
    /// updates: the schedule's, times the warm-up ramp min(1, t/N).
    pub fn lr_at(&self, t: usize, span: usize) -> f64 {
        let lr = self.lr_schedule.lr(self.lr, t, span);
        if t < self.warmup {
            lr * t.max(1) as f64 / self.warmup as f64
        } else {
            lr
        }
    }
}

/// The normalisation a model file's `config` metadata holds (its training run's, resolved to
/// values; a checkpoint's in its `run` object's `config`), or off for a file without one;
/// [`Error::InvalidSetting`] ([`Setting::Normalize`]) when the file's values are not a valid
/// normalisation.
pub fn saved_normalize(meta: &crate::model::io::Metadata) -> Result<crate::ops::Normalize> {
    let bad = |r: String| Error::setting(Setting::Normalize, format!("in the model file: {r}"));
    let json = |k: &str| {
        meta.get(k)
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
    };
    let config = json("config")
        .or_else(|| json("run").and_then(|mut r| r.get_mut("config").map(serde_json::Value::take)));
    let Some(v) = config.and_then(|mut c| c.get_mut("normalize").map(serde_json::Value::take))
    else {
        return Ok(crate::ops::Normalize::Off);
    };
    let n: crate::ops::Normalize = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
    if n == crate::ops::Normalize::Auto {
        return Err(bad("`auto` without its values".into()));
    }
    n.check().map_err(bad)?;
    Ok(n)
}

/// The sample order of `epoch` (0-based): a shuffle seeded by (seed, epoch), so a run resumed
/// at an epoch boundary sees exactly the batches an uninterrupted run would.
pub fn epoch_order(n: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    if shuffle {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        order.shuffle(&mut rng);
    }
    order
}

/// Which resident dataset to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The training set.
    Train,
    /// The test set.
    Test,
}

/// (mean loss, accuracy) of accumulated metrics.
pub fn summarize(acc: &MetricsAcc) -> (f32, f32) {
    let n = acc.seen.max(1) as f32;
    (acc.loss_sum / n, acc.correct as f32 / n)
}

/// Hooks the driver calls while training (progress bars, checkpoints, Ctrl-C).
pub trait Observer {
    /// After each chunk of steps: steps done in this epoch, of how many.
    fn on_steps(&mut self, _epoch: usize, _done: usize, _total: usize) {}
    /// After each epoch; return Err to stop (e.g. interrupted).
    fn on_epoch(&mut self, _engine: &mut Engine, _m: &EpochMetrics) -> Result<()> {
        Ok(())
    }
    /// Asked between chunks; true stops training at once.
    fn interrupted(&self) -> bool {
        false
    }
    /// Called when [`Observer::interrupted`] said stop, after `step` steps of `epoch`
    /// (0-based); returns the error to end the run with (e.g. after saving a checkpoint).
    fn on_interrupt(&mut self, _engine: &mut Engine, epoch: usize, step: usize) -> Error {
        Error::Stopped {
            epoch: epoch + 1,
            step,
        }
    }
}

/// A no-op observer.
pub struct Quiet;
impl Observer for Quiet {}

/// Steps per submission: long enough to amortise submit overhead, short enough for a lively
/// progress bar.
pub const CHUNK: usize = 50;

/// Where a run starts: epochs completed, and steps already done in the next epoch (non-zero
/// only when resuming a checkpoint saved mid-epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Epochs completed.
    pub epoch: usize,
    /// Steps already done in the next epoch (0 at an epoch boundary).
    pub step: usize,
}

/// Where a run stands between chunks of steps, and what the next chunk is: the bookkeeping of
/// the epoch loop (each epoch's order, drawn once; the epoch's end; `max_steps`), shared by
/// [`run`] and by drivers that go one chunk at a time (the browser's trainer, which yields to
/// the page between chunks and reads metrics after each).
pub struct Progress {
    steps_per_epoch: usize,
    total: usize,
    train_len: usize,
    seed: u64,
    shuffle: bool,
    /// Epochs completed, and steps done in the next one.
    pos: Position,
    /// Steps done in the whole run.
    done: usize,
    /// The order of one epoch (drawn once per epoch).
    order: Option<(usize, Vec<u32>)>,
}

/// One chunk of steps, as [`Progress::advance`] ran it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The epoch it belongs to (0-based).
    pub epoch: usize,
    /// Steps done in that epoch after it.
    pub done: usize,
    /// Steps the epoch runs (fewer than a full epoch's if `max_steps` ends the run in it).
    pub of: usize,
    /// It ended its epoch (or the run).
    pub epoch_end: bool,
}

impl Progress {
    /// The run `engine` was built for (its settings, over its training set), starting at
    /// `start`.
    pub fn of(engine: &Engine, start: Position) -> Self {
        Progress::new(engine.config(), engine.train_len(), start)
    }

    /// A run of `cfg` over `train_len` samples, starting at `start`.
    pub fn new(cfg: &TrainConfig, train_len: usize, start: Position) -> Self {
        let steps_per_epoch = train_len.div_ceil(cfg.batch.max(1));
        Progress {
            steps_per_epoch,
            total: cfg.total_steps(train_len),
            train_len,
            seed: cfg.seed,
            shuffle: cfg.shuffle,
            pos: start,
            done: start.epoch * steps_per_epoch + start.step,
            order: None,
        }
    }

    /// Epochs completed and steps done in the next.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Steps done in the whole run, and how many it takes.
    pub fn steps(&self) -> (usize, usize) {
        (self.done, self.total)
    }

    /// Where the run stands after its last step: the end of its last epoch, or inside an
    /// epoch when `max_steps` ends it there.
    pub fn end(&self) -> Position {
        let per = self.steps_per_epoch.max(1);
        Position {
            epoch: self.total / per,
            step: self.total % per,
        }
    }

    /// Whether the run has done all its steps.
    pub fn finished(&self) -> bool {
        self.done >= self.total
    }

    /// Run the next chunk of at most `max` steps on `engine`, never past its epoch's end or
    /// the run's (`max_steps`).
    pub fn advance(&mut self, engine: &mut Engine, max: usize) -> Result<Chunk> {
        let Position { epoch, step: first } = self.pos;
        // The steps this epoch runs: all of them, or what max_steps leaves.
        let of = self
            .steps_per_epoch
            .min(first + self.total.saturating_sub(self.done));
        if self.order.as_ref().is_none_or(|o| o.0 != epoch) {
            let order = epoch_order(self.train_len, self.seed, epoch, self.shuffle);
            self.order = Some((epoch, order));
        }
        let n = max.max(1).min(of.saturating_sub(first));
        if n > 0 {
            let order = &self.order.as_ref().expect("drawn above").1;
            engine.set_step(self.done)?;
            let t = web_time::Instant::now();
            engine.train_steps(order, first, n)?;
            engine.tune_between_chunks(t.elapsed())?;
        }
        self.done += n;
        let done = first + n;
        let epoch_end = done >= of;
        // A run that `max_steps` ends inside an epoch stands inside it (a checkpoint saved
        // there resumes the rest of that epoch), though its last chunk closes the epoch's
        // metrics.
        self.pos = if done >= self.steps_per_epoch {
            Position {
                epoch: epoch + 1,
                step: 0,
            }
        } else {
            Position { epoch, step: done }
        };
        Ok(Chunk {
            epoch,
            done,
            of,
            epoch_end,
        })
    }
}

/// The mean loss and accuracy of `acc`, or [`Error::Diverged`] when the loss of a step in it
/// was NaN or infinite (`epoch` 1-based, for the message).
pub fn finite_summary(acc: &MetricsAcc, epoch: usize, lr: f32) -> Result<(f32, f32)> {
    let (loss, accuracy) = summarize(acc);
    if acc.nonfinite > 0 || !loss.is_finite() {
        return Err(Error::Diverged {
            epoch,
            loss,
            lr,
            kept: None,
        });
    }
    Ok((loss, accuracy))
}

/// Train until the engine's configured epochs (or `max_steps`) are done, starting at `start`,
/// evaluating the test set after each epoch if the engine holds one; returns one record per
/// epoch run. Loss becoming NaN/Inf stops with [`Error::Diverged`].
pub fn run(
    engine: &mut Engine,
    start: Position,
    obs: &mut dyn Observer,
) -> Result<Vec<EpochMetrics>> {
    let mut progress = Progress::of(engine, start);
    let mut history = Vec::new();
    while !progress.finished() {
        let t0 = Instant::now();
        let epoch = loop {
            // Every rank stops at the same step when any of them is interrupted.
            if engine.any_rank(obs.interrupted())? {
                let at = progress.position();
                return Err(obs.on_interrupt(engine, at.epoch, at.step));
            }
            let c = progress.advance(engine, CHUNK)?;
            obs.on_steps(c.epoch, c.done, c.of);
            if c.epoch_end {
                break c.epoch;
            }
        };
        let m = end_epoch(engine, epoch, t0)?;
        obs.on_epoch(engine, &m)?;
        history.push(m);
    }
    Ok(history)
}

/// Close epoch `epoch` (0-based) that started at `t0`: its training metrics (refused with
/// [`Error::Diverged`] when a loss was NaN or infinite), the replicas made identical again
/// (data-parallel), and the test set evaluated when the engine holds a non-empty one (else
/// NaN).
pub fn end_epoch(engine: &mut Engine, epoch: usize, t0: Instant) -> Result<EpochMetrics> {
    let train = engine.take_train_metrics()?;
    let seconds = t0.elapsed().as_secs_f64();
    let (train_loss, train_acc) = finite_summary(&train, epoch + 1, engine.config().lr)?;
    // Data-parallel: the replicas are made identical again before anything is saved.
    engine.sync_replicas(epoch + 1)?;
    let (test_loss, test_acc) = if engine.test_len() > 0 {
        summarize(&engine.evaluate(Which::Test)?)
    } else {
        (f32::NAN, f32::NAN)
    };
    Ok(EpochMetrics {
        epoch: epoch + 1,
        train_loss,
        train_acc,
        test_loss,
        test_acc,
        seconds,
        images_per_sec: train.seen as f64 / seconds.max(1e-9),
    })
}

/// Check a dataset against an architecture ([`Error::DataMismatch`] naming `what`, the split),
/// before anything is allocated for it: values per sample ([`Mismatch::Inputs`]), their
/// layout ([`Mismatch::Shape`]: an image network takes images of its exact C×H×W, or flat
/// samples of its length when it has one channel; a flat network takes any sample of its
/// length, an image flattened channels-last) and the labels ([`Mismatch::Classes`]).
pub fn check_data(arch: &Arch, data: &Dataset, what: &str) -> Result<()> {
    let mismatch = |mismatch| {
        Err(Error::DataMismatch {
            split: what.to_string(),
            arch: arch.to_string(),
            mismatch,
        })
    };
    let expected = crate::data::SampleShape::from(arch.input);
    let got = data.shape;
    if got.len() != expected.len() {
        return mismatch(Mismatch::Inputs {
            got: got.len(),
            expected: expected.len(),
        });
    }
    let fits = match (got, expected) {
        (_, SampleShape::Flat(_)) => true,
        (SampleShape::Flat(_), SampleShape::Image { c, .. }) => c == 1,
        (g, e) => g == e,
    };
    if !fits {
        return mismatch(Mismatch::Shape { got, expected });
    }
    if data.n_classes() > arch.classes() {
        return mismatch(Mismatch::Classes {
            max_label: data.n_classes() - 1,
            outputs: arch.classes(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_starts_at_lr_halves_midway_and_ends_near_zero() {
        let s = LrSchedule::Cosine;
        assert_eq!(s.lr(0.1, 1, 600), 0.1f32 as f64);
        assert!((s.lr(0.1, 301, 600) - 0.05).abs() < 1e-9);
        let last = s.lr(0.1, 600, 600);
        assert!(last > 0.0 && last < 1e-5, "{last}");
        let mut prev = f64::INFINITY;
        for t in 1..=600 {
            let v = s.lr(0.1, t, 600);
            assert!(v <= prev, "non-increasing at {t}");
            prev = v;
        }
        assert_eq!(LrSchedule::Constant.lr(0.1, 500, 600), 0.1f32 as f64);
    }

    #[test]
    fn one_cycle_matches_pytorchs_one_cycle_lr() {
        // torch.optim.lr_scheduler.OneCycleLR(SGD(lr=0.1), max_lr=0.1, total_steps=100,
        // cycle_momentum=False): the lr of steps 0, 1, 14, 29, 30, 50, 99 (PyTorch 2.x).
        let torch = [
            (1, 0.0040000000000000036),
            (2, 0.004281378056590748),
            (15, 0.04940133238789996),
            (30, 0.1),
            (31, 0.09994965352845243),
            (51, 0.0793893450575732),
            (100, 4e-07),
        ];
        for (t, want) in torch {
            let got = LrSchedule::OneCycle.lr(0.1, t, 100);
            // 0.1f32 is not 0.1: the base rate is 1.49e-8 relative above it.
            assert!(
                (got - want).abs() <= 2e-8 * want,
                "update {t}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn warmup_ramps_the_schedule_linearly_over_n_updates() {
        let mut cfg = TrainConfig::lecture(Arch::parse("784-10").unwrap());
        cfg.lr = 0.5;
        cfg.warmup = 4;
        let lrs: Vec<f64> = (1..=6).map(|t| cfg.lr_at(t, 100)).collect();
        assert_eq!(lrs, [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]);
        assert!(cfg.scheduled());
        cfg.warmup = 0;
        assert!(!cfg.scheduled());
        assert_eq!(cfg.lr_at(1, 100), 0.5);
    }

    #[test]
    fn schedules_are_accepted_for_every_optimizer() {
        let mut cfg = TrainConfig::lecture(Arch::parse("784-10").unwrap());
        for opt in [Optimizer::Sgd, Optimizer::Adam, Optimizer::AdamW] {
            for s in [LrSchedule::Cosine, LrSchedule::OneCycle] {
                cfg.optimizer = opt;
                cfg.lr_schedule = s;
                cfg.validate().unwrap();
            }
        }
    }

    #[test]
    fn impossible_optimizer_settings_are_refused_in_one_line_naming_the_setting() {
        let base = TrainConfig::lecture(Arch::parse("784-10").unwrap());
        type Change = Box<dyn Fn(&mut TrainConfig)>;
        let cases: Vec<(Change, Setting)> = vec![
            (Box::new(|c| c.weight_decay = 0.01), Setting::WeightDecay),
            (
                Box::new(|c| {
                    c.optimizer = Optimizer::AdamW;
                    c.weight_decay = -1.0
                }),
                Setting::WeightDecay,
            ),
            (
                Box::new(|c| {
                    c.optimizer = Optimizer::AdamW;
                    c.l2 = 1e-4
                }),
                Setting::L2,
            ),
            (
                Box::new(|c| {
                    c.nesterov = true;
                    c.momentum = 0.0
                }),
                Setting::Nesterov,
            ),
            (
                Box::new(|c| {
                    c.nesterov = true;
                    c.optimizer = Optimizer::Adam
                }),
                Setting::Nesterov,
            ),
            (
                Box::new(|c| c.label_smoothing = 1.5),
                Setting::LabelSmoothing,
            ),
            (
                Box::new(|c| c.label_smoothing = f32::NAN),
                Setting::LabelSmoothing,
            ),
        ];
        for (i, (change, want)) in cases.iter().enumerate() {
            let mut cfg = base.clone();
            change(&mut cfg);
            let e = cfg.validate().unwrap_err();
            assert!(
                matches!(e, Error::InvalidSetting { setting, .. } if setting == *want),
                "case {i}: {e}"
            );
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let mut ok = base.clone();
        ok.optimizer = Optimizer::AdamW;
        ok.weight_decay = 0.01;
        ok.validate().unwrap();
        ok = base;
        ok.nesterov = true;
        ok.label_smoothing = 0.1;
        ok.decay_scope = DecayScope::All;
        ok.validate().unwrap();
    }

    #[test]
    fn configs_without_the_new_settings_serialise_as_before_and_load() {
        // Files of runs without them are unchanged, and files written before them load.
        let cfg = TrainConfig::lecture(Arch::parse("784-10").unwrap());
        let json = serde_json::to_string(&cfg).unwrap();
        for key in [
            "weight_decay",
            "nesterov",
            "decay_scope",
            "warmup",
            "label_smoothing",
        ] {
            assert!(!json.contains(key), "{key} in {json}");
        }
        assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), cfg);
        let mut all = cfg.clone();
        all.optimizer = Optimizer::AdamW;
        all.weight_decay = 0.05;
        all.decay_scope = DecayScope::All;
        all.warmup = 7;
        all.label_smoothing = 0.1;
        all.lr_schedule = LrSchedule::OneCycle;
        let json = serde_json::to_string(&all).unwrap();
        assert!(
            json.contains("\"adamw\"") && json.contains("\"one-cycle\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), all);
    }
}
