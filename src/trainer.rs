//! [`Trainer`]: wgtrain as a library. Build one from a [`TrainConfig`] (a [`Preset`]'s, or
//! your own network and settings), a backend and a [`Dataset`] held in memory; it owns the
//! engine, trains with a progress callback, evaluates, predicts, saves and loads. The CLI's
//! `train` and the web page's JavaScript `Trainer` drive the same pieces ([`Progress`],
//! [`Engine`]): the same chunks of steps, epoch orders and metrics.
//!
//! ```
//! use wgtrain::data::{Dataset, SampleShape};
//! use wgtrain::model::Arch;
//! use wgtrain::train::TrainConfig;
//! use wgtrain::trainer::{Trainer, Which};
//!
//! // 200 images of 2×2 pixels: class 1 is bright on the left, class 0 on the right.
//! let mut images = Vec::new();
//! let mut labels = Vec::new();
//! for i in 0..200 {
//!     let left = i % 2 == 1;
//!     let (a, b) = if left { (230, 20) } else { (20, 230) };
//!     images.extend_from_slice(&[a, b, a, b]);
//!     labels.push(left as u32);
//! }
//! let data = Dataset::new(SampleShape::gray(2, 2), images, labels)?;
//!
//! let mut cfg = TrainConfig::lecture(Arch::parse("4-8-2")?);
//! cfg.epochs = 5;
//! cfg.batch = 20;
//! let mut trainer = Trainer::on_cpu(cfg, &data, None)?;
//! let history = trainer.fit(|_report| true)?;
//! assert_eq!(history.len(), 5);
//! let eval = trainer.evaluate(Which::Train)?;
//! assert!(eval.accuracy > 0.99, "{eval:?}");
//! let p = trainer.predict(&[0.9, 0.1, 0.9, 0.1])?;
//! assert!(p[1] > 0.9, "{p:?}");
//! # Ok::<(), wgtrain::Error>(())
//! ```

use std::path::Path;

use web_time::Instant;

use crate::backend::Backend;
use crate::data::Dataset;
use crate::model::io::Metadata;
use crate::model::{Arch, Model, Preset};
use crate::report::EpochMetrics;
use crate::train::{self, Engine, OptState, Position, Progress, TrainConfig};
use crate::{Error, Result};

pub use crate::train::Which;

/// What [`Trainer::fit`]'s callback and [`Trainer::advance`] report after each chunk of steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The epoch the chunk belongs to, counting from 1.
    pub epoch: usize,
    /// Steps done in the whole run, and how many it takes.
    pub step: usize,
    /// Steps the whole run takes.
    pub total_steps: usize,
    /// The chunk ended its epoch; `metrics` holds the epoch's record.
    pub epoch_end: bool,
    /// The finished epoch's metrics (test loss and accuracy NaN without a test set).
    pub metrics: Option<EpochMetrics>,
}

/// Mean loss and accuracy over a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction classified correctly, in 0..=1.
    pub accuracy: f32,
    /// Samples evaluated.
    pub n: usize,
}

/// A training run held in memory: the engine with its resident data, the run's settings and
/// where it stands.
pub struct Trainer {
    /// The engine, which holds the run's settings and the datasets.
    engine: Engine,
    progress: Progress,
    history: Vec<EpochMetrics>,
    /// When the epoch under way started (its first chunk).
    epoch_start: Option<Instant>,
}

impl Trainer {
    /// Fresh weights ([`TrainConfig::init_model`]) on `backend`, training on `train` and
    /// evaluating on `test` after each epoch.
    pub fn new(
        cfg: TrainConfig,
        backend: Box<dyn Backend>,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Result<Self> {
        cfg.validate()?;
        let model = cfg.init_model();
        Self::with_model(cfg, &model, None, Position::default(), backend, train, test)
    }

    /// A preset's network and settings on `backend`.
    pub fn from_preset(
        preset: Preset,
        backend: Box<dyn Backend>,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Result<Self> {
        Self::new(TrainConfig::preset(preset), backend, train, test)
    }

    /// On the CPU engine (every core; the CPU twins in the browser).
    pub fn on_cpu(cfg: TrainConfig, train: &Dataset, test: Option<&Dataset>) -> Result<Self> {
        #[cfg(not(target_arch = "wasm32"))]
        let be = Box::new(crate::backend::cpu::CpuBackend::new());
        #[cfg(target_arch = "wasm32")]
        let be = Box::new(crate::backend::reference::ReferenceBackend::new());
        Self::new(cfg, be, train, test)
    }

    /// On the device `choice` picks ([`crate::backend::open`]: the best hardware GPU, else the
    /// CPU engine, for [`DeviceChoice::Auto`](crate::backend::DeviceChoice::Auto)).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn on_device(
        cfg: TrainConfig,
        choice: crate::backend::DeviceChoice,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Result<Self> {
        let (be, _) = crate::backend::open(choice, &crate::gpu::AdapterChoice::default(), None)?;
        Self::new(cfg, be, train, test)
    }

    /// Starting from `model`'s weights (and optimiser `state`, at `position`, when continuing a
    /// run), which must have `cfg`'s network.
    pub fn with_model(
        cfg: TrainConfig,
        model: &Model,
        state: Option<&OptState>,
        position: Position,
        backend: Box<dyn Backend>,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Result<Self> {
        cfg.validate()?;
        if model.arch != cfg.arch {
            return Err(Error::setting(
                crate::error::Setting::Arch,
                format!(
                    "{} disagrees with the starting model's network ({})",
                    cfg.arch, model.arch
                ),
            ));
        }
        model.check_finite("the starting model")?;
        train::check_data(&cfg.arch, train, "training")?;
        if let Some(t) = test {
            train::check_data(&cfg.arch, t, "test")?;
        }
        let mut backend = backend;
        // Start at once on checked defaults; tune between steps (GpuBackend::tune_pending).
        if let Some(g) = backend.as_gpu() {
            g.tune_in_background(true);
        }
        let engine = Engine::new(backend, &cfg, model, state, train, test)?;
        Ok(Trainer {
            progress: Progress::of(&engine, position),
            engine,
            history: Vec::new(),
            epoch_start: None,
        })
    }

    /// A trainer for `model` that holds no data of its own (one blank sample stands in for the
    /// training set): for [`Trainer::predict`], [`Trainer::save`] and [`Trainer::model`] on
    /// `backend` before any data is at hand. Training it fits that one sample.
    pub fn for_model(cfg: TrainConfig, model: &Model, backend: Box<dyn Backend>) -> Result<Self> {
        let len = cfg.arch.input_len();
        let blank = Dataset::new(crate::data::SampleShape::Flat(len), vec![0; len], vec![0])?;
        Self::with_model(cfg, model, None, Position::default(), backend, &blank, None)
    }

    /// Save a resumable checkpoint (weights, optimiser state, settings and where the run
    /// stands, as `wgtrain train` writes on Ctrl-C) to `path`, atomically.
    pub fn save_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let cfg = self.engine.config().clone();
        let at = self.progress.position();
        train::session::save_checkpoint(&mut self.engine, &cfg, path.as_ref(), at)
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        self.engine.config()
    }

    /// Where the engine runs, in words.
    pub fn device(&self) -> String {
        self.engine.device()
    }

    /// The engine, for what this type does not cover.
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// One record per epoch finished by this trainer.
    pub fn history(&self) -> &[EpochMetrics] {
        &self.history
    }

    /// Every step of the run is done.
    pub fn done(&self) -> bool {
        self.progress.finished()
    }

    /// Epochs completed and steps into the next.
    pub fn position(&self) -> Position {
        self.progress.position()
    }

    /// Run the next chunk of at most `max_steps` steps (never past its epoch's end); at an
    /// epoch's end, evaluate the test set and record the epoch. Loss becoming NaN or infinite
    /// ends the run with [`Error::Diverged`].
    pub fn advance(&mut self, max_steps: usize) -> Result<Report> {
        let start = *self.epoch_start.get_or_insert_with(Instant::now);
        let c = self.progress.advance(&mut self.engine, max_steps)?;
        let (step, total_steps) = self.progress.steps();
        let mut report = Report {
            epoch: c.epoch + 1,
            step,
            total_steps,
            epoch_end: c.epoch_end,
            metrics: None,
        };
        if c.epoch_end {
            self.epoch_start = None;
            let m = train::end_epoch(&mut self.engine, c.epoch, start)?;
            self.history.push(m.clone());
            report.metrics = Some(m);
        }
        Ok(report)
    }

    /// Train to the end of the run, calling `on_progress` after every chunk of
    /// [`train::CHUNK`] steps; it returns false to stop early (the run can go on with another
    /// call). Returns every epoch's record so far.
    pub fn fit(&mut self, mut on_progress: impl FnMut(&Report) -> bool) -> Result<&[EpochMetrics]> {
        while !self.done() {
            let r = self.advance(train::CHUNK)?;
            if !on_progress(&r) {
                break;
            }
        }
        Ok(&self.history)
    }

    /// Mean loss and accuracy over the training or test set.
    pub fn evaluate(&mut self, which: Which) -> Result<Evaluation> {
        let n = match which {
            Which::Train => self.engine.train_len(),
            Which::Test => self.engine.test_len(),
        };
        let (loss, accuracy) = train::summarize(&self.engine.evaluate(which)?);
        Ok(Evaluation { loss, accuracy, n })
    }

    /// Class probabilities for the samples in `x` (each the network's input length, values in
    /// [0, 1] as [`crate::data::image`] makes them), one row of `classes` per sample.
    pub fn predict(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        let arch = &self.engine.config().arch;
        let input = arch.input_len();
        if x.is_empty() || !x.len().is_multiple_of(input) {
            return Err(Error::DataMismatch {
                split: "prediction".into(),
                arch: arch.to_string(),
                mismatch: crate::error::Mismatch::Inputs {
                    got: x.len(),
                    expected: input,
                },
            });
        }
        let rows = self.engine.rows();
        let classes = arch.classes();
        let mut out = Vec::with_capacity(x.len() / input * classes);
        for chunk in x.chunks(rows * input) {
            let n = chunk.len() / input;
            let mut batch = chunk.to_vec();
            batch.resize(rows * input, 0.0);
            let p = self.engine.probabilities(&batch)?;
            out.extend_from_slice(&p[..n * classes]);
        }
        Ok(out)
    }

    /// The weights as they are now.
    pub fn model(&mut self) -> Result<Model> {
        self.engine.model()
    }

    /// Save the weights as a safetensors model file (PyTorch's layouts, the network and the
    /// run's settings in its metadata; `wgtrain eval`/`predict` and [`Trainer::load`] read it).
    pub fn save(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let model = self.engine.model()?;
        model.check_finite("the trained model")?;
        let mut meta = Metadata::new();
        meta.insert(
            "config".into(),
            serde_json::to_string(self.engine.config()).expect("config serialises"),
        );
        meta.insert("device".into(), self.engine.device());
        model.save(path, &meta)
    }

    /// Continue from a model file saved by [`Trainer::save`] or `wgtrain train`: its weights,
    /// with `cfg`'s settings (whose network must be the file's), as a fresh run.
    pub fn load(
        path: impl AsRef<Path>,
        cfg: TrainConfig,
        backend: Box<dyn Backend>,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Result<Self> {
        let (model, _) = Model::load(path.as_ref())?;
        Self::with_model(cfg, &model, None, Position::default(), backend, train, test)
    }
}

/// The settings a name stands for, as `wgtrain train` resolves `--preset NAME` or
/// `--arch NAME`: a preset ([`Preset::from_name`]) brings its network and hyperparameters; any
/// other name is parsed as an architecture, which takes the default preset's hyperparameters
/// ([`train::session::start`] switches a conv net to PyTorch's initialisation). Returns the
/// base settings and the network, for [`train::session::Overrides::arch`].
pub fn settings_for(name: &str) -> Result<(TrainConfig, Arch)> {
    let name = name.trim();
    Ok(match Preset::from_name(name) {
        Some(p) => {
            let cfg = TrainConfig::preset(p);
            let arch = cfg.arch.clone();
            (cfg, arch)
        }
        None => (TrainConfig::preset(Preset::SeedLarge), Arch::parse(name)?),
    })
}
