//! A training run as the CLI (or any caller) starts it: fresh, from an `--init` model, or from
//! a `--resume` checkpoint; checkpoints every N epochs and on interrupt; divergence reported
//! with the checkpoint that was kept; the model, metrics CSV, plot and JSON summary written at
//! the end. All typed: the checkpoint stores a [`RunState`] as JSON.

use super::{
    Engine, EpochMetrics, Observer, OptState, Optimizer, Position, Slot, TrainConfig, Which,
};
use crate::error::Setting;
use crate::model::io::{Checkpoint, Metadata};
use crate::model::{Arch, Model};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a checkpoint records besides the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run's settings, as resumed.
    pub config: TrainConfig,
    /// Epochs completed and steps into the next.
    pub position: Position,
    /// Optimiser updates done (Adam's t).
    pub optimizer_step: u64,
}

/// Settings given on the command line; `None` keeps the preset's (or the checkpoint's) value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--arch`: the network (a conv net also switches to PyTorch's initialisation).
    pub arch: Option<Arch>,
    /// `--optimizer`: the update rule.
    pub optimizer: Option<Optimizer>,
    /// `--lr-schedule`: how the learning rate changes over the run.
    pub lr_schedule: Option<super::LrSchedule>,
    /// `--lr`: learning rate α.
    pub lr: Option<f32>,
    /// `--momentum`: SGD's momentum μ.
    pub momentum: Option<f32>,
    /// `--l2`: L2 coefficient λ on the weights.
    pub l2: Option<f32>,
    /// `--epochs`: epochs T.
    pub epochs: Option<usize>,
    /// `--batch-size`: minibatch size m.
    pub batch: Option<usize>,
    /// `--max-steps`: stop after this many steps in total.
    pub max_steps: Option<usize>,
    /// `--seed`: seed of the initialisation and the shuffles.
    pub seed: Option<u64>,
    /// `--no-shuffle`: take minibatches in file order (false keeps the configured setting).
    pub no_shuffle: bool,
    /// `--augment`: training-time augmentation of image samples.
    pub augment: Option<crate::ops::Augment>,
    /// `--weight-decay`: AdamW's decoupled weight decay λ (AdamW chosen without it: 0.01).
    pub weight_decay: Option<f32>,
    /// `--nesterov`: SGD with Nesterov momentum (false keeps the configured setting).
    pub nesterov: bool,
    /// `--decay-all`: L2 / weight decay on every parameter, biases too (false keeps the
    /// configured scope).
    pub decay_all: bool,
    /// `--warmup`: learning-rate warm-up over the first N updates.
    pub warmup: Option<usize>,
    /// `--label-smoothing`: label smoothing ε of the training loss.
    pub label_smoothing: Option<f32>,
    /// `--normalize`: per-channel normalisation of the samples.
    pub normalize: Option<crate::ops::Normalize>,
}

impl Overrides {
    /// Set the fields given on `cfg` (the architecture is handled by [`start`]).
    pub fn apply(&self, cfg: &mut TrainConfig) {
        if let Some(o) = self.optimizer {
            if o == Optimizer::AdamW && cfg.optimizer != Optimizer::AdamW {
                // PyTorch's AdamW default.
                cfg.weight_decay = 0.01;
            } else if o != Optimizer::AdamW {
                cfg.weight_decay = 0.0;
            }
            cfg.optimizer = o;
        }
        cfg.weight_decay = self.weight_decay.unwrap_or(cfg.weight_decay);
        if self.nesterov {
            cfg.nesterov = true;
        }
        if self.decay_all {
            cfg.decay_scope = super::DecayScope::All;
        }
        cfg.warmup = self.warmup.unwrap_or(cfg.warmup);
        cfg.label_smoothing = self.label_smoothing.unwrap_or(cfg.label_smoothing);
        if let Some(s) = self.lr_schedule {
            cfg.lr_schedule = s;
        }
        cfg.lr = self.lr.unwrap_or(cfg.lr);
        cfg.momentum = self.momentum.unwrap_or(cfg.momentum);
        cfg.l2 = self.l2.unwrap_or(cfg.l2);
        cfg.epochs = self.epochs.unwrap_or(cfg.epochs);
        cfg.batch = self.batch.unwrap_or(cfg.batch);
        if self.max_steps.is_some() {
            cfg.max_steps = self.max_steps;
        }
        cfg.seed = self.seed.unwrap_or(cfg.seed);
        if self.no_shuffle {
            cfg.shuffle = false;
        }
        if let Some(a) = self.augment {
            cfg.augment = a;
        }
        if let Some(n) = &self.normalize {
            cfg.normalize = n.clone();
        }
    }
}

/// Where a run starts.
pub struct Start {
    /// The resolved settings (validated).
    pub cfg: TrainConfig,
    /// The starting weights: fresh, the `init` model's or the checkpoint's.
    pub model: Model,
    /// The checkpoint's optimiser state; `None` starts with zeroed slots and step 0.
    pub state: Option<OptState>,
    /// Where in the run to continue (zero unless resuming).
    pub position: Position,
}

/// Resolve the run: `preset` (its arch and hyperparameters) with `ov` on top, starting fresh,
/// from the model file `init`, or from the checkpoint `resume` (whose settings win over the
/// preset's, flags over both).
pub fn start(
    preset: TrainConfig,
    ov: &Overrides,
    init: Option<&Path>,
    resume: Option<&Path>,
) -> Result<Start> {
    if init.is_some() && resume.is_some() {
        return Err(Error::InvalidSetting {
            setting: Setting::Init,
            reason:
                "cannot be combined with resuming a checkpoint (the checkpoint holds the weights)"
                    .into(),
        });
    }
    let mut cfg = preset;
    if let Some(a) = &ov.arch {
        cfg.arch = a.clone();
        if !a.is_mlp() {
            // The lecture's ±0.07 suits MLPs; conv nets start as PyTorch's would.
            cfg.init = super::Init::Pytorch;
        }
    }
    if let Some(path) = resume {
        let ck = Checkpoint::load(path)?;
        if let Some(a) = &ov.arch {
            ck.model.check_compatible(a, path)?;
        }
        let run = run_state(&ck, cfg, path)?;
        let mut cfg = run.config;
        ov.apply(&mut cfg);
        cfg.validate()?;
        let names: Vec<&str> = ck.slots.iter().map(|(s, _)| s.as_str()).collect();
        let slots: Vec<Slot> = names.iter().filter_map(|n| Slot::from_name(n)).collect();
        if slots.len() != names.len() || slots != cfg.optimizer.slots() {
            return Err(Error::InvalidSetting {
                setting: Setting::Optimizer,
                reason: format!(
                    "{} cannot resume {}: it holds optimiser state {names:?}",
                    cfg.optimizer,
                    path.display()
                ),
            });
        }
        let state = OptState {
            slots: slots
                .into_iter()
                .zip(ck.slots)
                .map(|(s, p)| (s, p.1))
                .collect(),
            step: run.optimizer_step,
        };
        return Ok(Start {
            cfg,
            model: ck.model,
            state: Some(state),
            position: run.position,
        });
    }
    if let Some(path) = init {
        let (model, meta) = Model::load(path)?;
        // The weights were trained on inputs normalised so: go on with them (unless a flag
        // says otherwise).
        let n = super::saved_normalize(&meta)?;
        if !n.is_off() {
            cfg.normalize = n;
        }
        return start_from(cfg, ov, model, path);
    }
    ov.apply(&mut cfg);
    cfg.validate()?;
    let model = cfg.init_model();
    Ok(Start {
        cfg,
        model,
        state: None,
        position: Position::default(),
    })
}

/// [`start`] from the weights `model` (`--init`; read from `name`, which errors name): the
/// architecture is the model's, and one asked for in `ov` must be the same.
pub fn start_from(preset: TrainConfig, ov: &Overrides, model: Model, name: &Path) -> Result<Start> {
    if let Some(a) = &ov.arch {
        model.check_compatible(a, name)?;
    }
    let mut cfg = preset;
    ov.apply(&mut cfg);
    cfg.arch = model.arch.clone();
    cfg.validate()?;
    Ok(Start {
        cfg,
        model,
        state: None,
        position: Position::default(),
    })
}

/// The checkpoint's [`RunState`]; checkpoints from before it existed (flat string metadata,
/// converted to a JSON object by the loader) are read field by field over `base`.
fn run_state(ck: &Checkpoint, base: TrainConfig, path: &Path) -> Result<RunState> {
    let bad = |r: String| Error::bad_model(path, r);
    if ck.run.get("config").is_some() {
        return serde_json::from_value(ck.run.clone())
            .map_err(|e| bad(format!("checkpoint run state: {e}")));
    }
    let mut cfg = base;
    cfg.arch = ck.model.arch.clone();
    let num = |k: &str| ck.run.get(k).and_then(|v| v.as_f64());
    let int = |k: &str| ck.run.get(k).and_then(|v| v.as_u64());
    cfg.lr = num("lr").map_or(cfg.lr, |v| v as f32);
    cfg.momentum = num("momentum").map_or(cfg.momentum, |v| v as f32);
    cfg.l2 = num("l2").map_or(cfg.l2, |v| v as f32);
    cfg.batch = int("batch_size").map_or(cfg.batch, |v| v as usize);
    cfg.epochs = int("epochs").map_or(cfg.epochs, |v| v as usize);
    cfg.seed = int("seed").unwrap_or(cfg.seed);
    cfg.shuffle = ck
        .run
        .get("shuffle")
        .and_then(|v| v.as_bool())
        .unwrap_or(cfg.shuffle);
    cfg.optimizer = Optimizer::Sgd;
    let epoch = int("epoch").ok_or_else(|| bad("checkpoint has no epoch".into()))?;
    Ok(RunState {
        config: cfg,
        position: Position {
            epoch: epoch as usize,
            step: int("step").unwrap_or(0) as usize,
        },
        optimizer_step: 0,
    })
}

/// Save weights, optimiser state and `position` to `path` (atomically).
pub fn save_checkpoint(
    engine: &mut Engine,
    cfg: &TrainConfig,
    path: &Path,
    position: Position,
) -> Result<()> {
    let state = engine.opt_state()?;
    let run = RunState {
        config: cfg.clone(),
        position,
        optimizer_step: state.step,
    };
    Checkpoint {
        model: engine.model()?,
        slots: state
            .slots
            .into_iter()
            .map(|(s, p)| (s.name().to_string(), p))
            .collect(),
        run: serde_json::to_value(&run).expect("run state serialises"),
    }
    .save(path)
}

/// `out` with `.safetensors` replaced by `suffix` (e.g. `.ckpt.safetensors`, `.png`).
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .trim_end_matches(".safetensors");
    out.with_file_name(format!("{stem}{suffix}"))
}

/// Checkpointing around a caller's observer (progress display, Ctrl-C flag).
struct Checkpointing<'a> {
    inner: &'a mut dyn Observer,
    /// The engine's settings, recorded in every checkpoint.
    cfg: TrainConfig,
    path: PathBuf,
    every: usize,
    /// Where the run ends ([`super::Progress::end`]): inside its last epoch when `max_steps`
    /// stops it there.
    end: Position,
}

impl Observer for Checkpointing<'_> {
    fn on_steps(&mut self, epoch: usize, done: usize, total: usize) {
        self.inner.on_steps(epoch, done, total)
    }

    fn on_epoch(&mut self, engine: &mut Engine, m: &EpochMetrics) -> Result<()> {
        self.inner.on_epoch(engine, m)?;
        // Data-parallel: rank 0 writes for all (the replicas are identical).
        // The epoch `max_steps` cuts short leaves the run inside it: the checkpoint resumes
        // its remaining steps, not the next epoch.
        let at = if m.epoch > self.end.epoch {
            self.end
        } else {
            Position {
                epoch: m.epoch,
                step: 0,
            }
        };
        if engine.rank() == 0
            && self.every > 0
            && (m.epoch.is_multiple_of(self.every) || at == self.end)
        {
            save_checkpoint(engine, &self.cfg, &self.path, at)?;
        }
        Ok(())
    }

    fn interrupted(&self) -> bool {
        self.inner.interrupted()
    }

    fn on_interrupt(&mut self, engine: &mut Engine, epoch: usize, step: usize) -> Error {
        let _ = self.inner.on_interrupt(engine, epoch, step);
        if engine.rank() != 0 {
            return Error::Interrupted(self.path.clone());
        }
        match save_checkpoint(engine, &self.cfg, &self.path, Position { epoch, step }) {
            Ok(()) => Error::Interrupted(self.path.clone()),
            Err(e) => e,
        }
    }
}

/// Train from `position` to the end of the engine's run, checkpointing to `ckpt` every
/// `every` epochs (0 = never; an interrupt always saves). Divergence names the checkpoint
/// kept, if any.
pub fn train(
    engine: &mut Engine,
    position: Position,
    ckpt: &Path,
    every: usize,
    obs: &mut dyn Observer,
) -> Result<Vec<EpochMetrics>> {
    let mut wrapped = Checkpointing {
        inner: obs,
        cfg: engine.config().clone(),
        path: ckpt.to_path_buf(),
        every,
        end: super::Progress::of(engine, position).end(),
    };
    match super::run(engine, position, &mut wrapped) {
        Err(Error::Diverged {
            epoch, loss, lr, ..
        }) => Err(Error::Diverged {
            epoch,
            loss,
            lr,
            kept: ckpt.exists().then(|| ckpt.to_path_buf()),
        }),
        r => r,
    }
}

/// What a finished run wrote and measured.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The network as its `--arch` string.
    pub arch: String,
    /// GPU or CPU engine.
    pub engine: crate::backend::EngineKind,
    /// Human-readable device ([`crate::backend::Backend::describe`]).
    pub device: String,
    /// Adapter name ("cpu" on the CPU).
    pub adapter: String,
    /// Graphics backend (Vulkan, Metal, …; "ndarray" on the CPU).
    pub backend: String,
    /// The run's settings.
    pub hyperparameters: TrainConfig,
    /// Data-parallel ranks (1: one process).
    pub ranks: usize,
    /// Time rank 0 spent reading, summing and writing gradients (zero in one process).
    pub communication: super::CommTime,
    /// Training set size (samples).
    pub train_images: usize,
    /// Test set size (samples).
    pub test_images: usize,
    /// One entry per epoch trained in this process (a resumed run: from the resume point).
    pub epochs: Vec<EpochMetrics>,
    /// The final figures (`final` in JSON).
    #[serde(rename = "final")]
    pub last: Final,
    /// Wall-clock seconds of the training, as the caller measured them.
    pub seconds: f64,
    /// Seconds from the process's start ([`crate::util::since_start`]) until the engine was
    /// ready for its first step (data loaded, buffers allocated, programs prepared).
    pub startup_seconds: f64,
    /// Background tuning on the GPU: each product that started on the adapter's checked
    /// default, and the variant its search chose (absent when every product was tuned
    /// already, or on the CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuning: Option<crate::gpu::autotune::TuneReport>,
    /// The model file written (safetensors).
    pub model: PathBuf,
    /// The per-epoch metrics CSV written next to it.
    pub metrics_csv: PathBuf,
    /// The PNG plot of the metrics written next to it.
    pub plot: PathBuf,
}

/// The final figures: training set re-evaluated with the final weights, test from the last
/// epoch.
#[derive(Clone, Debug, Serialize)]
pub struct Final {
    /// Mean cross-entropy over the whole training set, final weights.
    pub train_loss: f32,
    /// Accuracy (fraction in [0, 1]) over the whole training set, final weights.
    pub train_acc: f32,
    /// Mean test cross-entropy of the last epoch (`None` if no epoch ran).
    pub test_loss: Option<f32>,
    /// Test accuracy (fraction in [0, 1]) of the last epoch (`None` if no epoch ran).
    pub test_acc: Option<f32>,
}

/// After training: accuracy over the whole training set, then the model (safetensors, with
/// the run's settings as metadata), the metrics CSV, the PNG plot and the JSON summary next
/// to `out`. Data-parallel: every rank evaluates its part, rank 0 alone writes.
pub fn finish(
    engine: &mut Engine,
    history: Vec<EpochMetrics>,
    seconds: f64,
    out: &Path,
) -> Result<Summary> {
    finish_with(engine, history, seconds, out, &Metadata::new())
}

/// [`finish`], with `extra` metadata saved in the model file beside the run's settings (the
/// class names of the data, say).
pub fn finish_with(
    engine: &mut Engine,
    history: Vec<EpochMetrics>,
    seconds: f64,
    out: &Path,
    extra: &Metadata,
) -> Result<Summary> {
    let cfg = engine.config().clone();
    let lens = (engine.train_len(), engine.test_len());
    let (train_loss, train_acc) = super::summarize(&engine.evaluate(Which::Train)?);
    let leader = engine.rank() == 0;
    let model = engine.model()?;
    let mut meta = extra.clone();
    meta.insert(
        "config".into(),
        serde_json::to_string(&cfg).expect("config serialises"),
    );
    meta.insert("device".into(), engine.device());
    let csv = sibling(out, ".metrics.csv");
    let png = sibling(out, ".png");
    let (adapter, backend) = engine.adapter();
    if leader {
        model.save(out, &meta)?;
        crate::report::csv::write_metrics_csv(&csv, &history)?;
        // Short enough for the plot's width: the adapter's name without its details in brackets.
        let short = adapter.split(" (").next().unwrap_or(&adapter);
        let ranks = match engine.ranks() {
            1 => String::new(),
            n => format!(", rank 0 of {n}"),
        };
        #[cfg(not(target_arch = "wasm32"))]
        crate::report::plot::plot_metrics(
            &png,
            &history,
            &format!("{} on {short} ({backend}{ranks})", cfg.arch),
        )?;
        #[cfg(target_arch = "wasm32")]
        let _ = (&png, short, ranks);
    }
    let last = history.last().cloned();
    let s = Summary {
        arch: cfg.arch.to_string(),
        engine: engine.kind(),
        device: engine.device(),
        adapter,
        backend,
        hyperparameters: cfg.clone(),
        ranks: engine.ranks(),
        communication: engine.comm_time(),
        train_images: lens.0,
        test_images: lens.1,
        epochs: history,
        last: Final {
            train_loss,
            train_acc,
            test_loss: last.as_ref().map(|m| m.test_loss),
            test_acc: last.as_ref().map(|m| m.test_acc),
        },
        seconds,
        startup_seconds: engine.ready_seconds(),
        tuning: engine.tuning_report(),
        model: out.to_path_buf(),
        metrics_csv: csv,
        plot: png,
    };
    if !leader {
        return Ok(s);
    }
    crate::util::atomic_write(
        &sibling(out, ".json"),
        serde_json::to_string_pretty(&s)
            .expect("summary serialises")
            .as_bytes(),
    )?;
    Ok(s)
}

/// Data-parallel start-up: refuse to train unless every rank has the same architecture,
/// hyperparameters, data (SHA-256 of images and labels) and starting point (weights,
/// optimiser state, position), naming the first rank and item that differ. A collective:
/// every rank gets the same verdict before any training.
pub fn check_ranks_agree(
    comm: &dyn crate::dist::Collective,
    start: &Start,
    train: &crate::data::Dataset,
    test: Option<&crate::data::Dataset>,
) -> Result<()> {
    use sha2::{Digest, Sha256};
    let data = |d: &crate::data::Dataset| {
        let mut h = Sha256::new();
        h.update((d.n as u64).to_le_bytes());
        h.update(format!("{:?}", d.kind).as_bytes());
        h.update(&d.features);
        for l in &d.labels {
            h.update(l.to_le_bytes());
        }
        format!("{} images, sha256 {:x}", d.n, h.finalize())
    };
    // Through text, so an f32 reads as written (0.1, not 0.10000000149011612).
    let text = serde_json::to_string(&start.cfg).expect("config serialises");
    let mut hyper: serde_json::Value = serde_json::from_str(&text).expect("config parses");
    if let Some(m) = hyper.as_object_mut() {
        m.remove("arch");
    }
    let mut h = Sha256::new();
    let params = |h: &mut Sha256, ps: &[crate::model::Param]| {
        for p in ps {
            for v in p.weight.iter().chain(p.bias.iter()) {
                h.update(v.to_le_bytes());
            }
        }
    };
    params(&mut h, &start.model.params);
    if let Some(st) = &start.state {
        h.update(st.step.to_le_bytes());
        for (slot, ps) in &st.slots {
            h.update(slot.name().as_bytes());
            params(&mut h, ps);
        }
    }
    let position = format!(
        "epoch {} step {}, weights and optimiser state sha256 {:x}",
        start.position.epoch,
        start.position.step,
        h.finalize()
    );
    crate::dist::check_agreement(
        comm,
        &[
            ("architecture", start.cfg.arch.to_string()),
            ("hyperparameters", hyper.to_string()),
            ("training data", data(train)),
            ("test data", test.map_or("none".into(), data)),
            ("starting point", position),
        ],
    )
}
