//! The crate's one error type. Every variant renders as a single line that names the
//! problem (file, kernel, limit, flag), because the CLI prints it as-is and exits non-zero.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in wgtrain, with enough structure for callers to react.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter on any enabled backend.
    #[error("no GPU adapter found on {backends}; on Linux without a GPU install a CPU Vulkan driver with `apt-get install mesa-vulkan-drivers`, or use `--device cpu`")]
    NoAdapter { backends: String },

    /// `--adapter`/`WGPU_ADAPTER_NAME` matched nothing.
    #[error("no adapter matches {wanted:?}; available: {available}")]
    AdapterNotFound { wanted: String, available: String },

    /// Bad `--backend` value.
    #[error("unknown backend {0:?}: expected one of vulkan, metal, dx12, gl, all")]
    UnknownBackend(String),

    /// The work needs more of a limit than the adapter offers.
    #[error("adapter {adapter:?} cannot run this: {limit} is {have}, but {need} is needed ({short} short){hint}")]
    LimitExceeded {
        adapter: String,
        limit: &'static str,
        have: u64,
        need: u64,
        short: u64,
        hint: String,
    },

    /// `request_device` failed.
    #[error("could not open adapter {adapter:?}: {reason}")]
    RequestDevice { adapter: String, reason: String },

    /// A wgpu validation / out-of-memory / internal error raised while running a kernel.
    #[error("GPU error in kernel `{kernel}` on {adapter}: {reason}{hint}")]
    Kernel {
        kernel: String,
        adapter: String,
        reason: String,
        hint: String,
    },

    /// The device was lost (driver reset, timeout, ...).
    #[error("GPU device {adapter:?} was lost: {reason}; retry, use a smaller --batch-size, or run with --device cpu")]
    DeviceLost { adapter: String, reason: String },

    /// Reading a result back from the GPU failed.
    #[error("reading back `{what}` from the GPU failed: {reason}")]
    Readback { what: String, reason: String },

    /// A shape that cannot work (mismatched dimensions, zero sizes, ...).
    #[error("invalid shape: {0}")]
    Shape(String),

    /// Data-parallel ranks that disagree: a verdict every rank reaches together.
    #[error("distributed training: {0}")]
    Distributed(String),

    /// Communication between data-parallel ranks failed on this rank (a rank left, the
    /// communication thread stopped): the others may not know yet.
    #[error("communication between ranks failed: {0}")]
    Collective(String),

    /// A bad argument or hyperparameter.
    #[error("invalid argument {name}: {reason}")]
    InvalidArg { name: &'static str, reason: String },

    /// A malformed IDX / gzip data file.
    #[error("{}: {reason}", path.display())]
    BadData { path: PathBuf, reason: String },

    /// A file whose SHA-256 does not match the canonical value.
    #[error("{}: SHA-256 mismatch (expected {expected}, got {actual})", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// The dataset could not be found or downloaded.
    #[error("{0}")]
    DatasetUnavailable(String),

    /// A malformed or incompatible model / checkpoint file.
    #[error("{}: {reason}", path.display())]
    BadModel { path: PathBuf, reason: String },

    /// An image that cannot be decoded.
    #[error("{}: {reason}", path.display())]
    BadImage { path: PathBuf, reason: String },

    /// Loss became NaN or infinite.
    #[error("training diverged at epoch {epoch}: loss is {loss}; lower --lr (now {lr}) or add --l2{kept}")]
    Diverged {
        epoch: usize,
        loss: f32,
        lr: f32,
        kept: String,
    },

    /// Training was interrupted (Ctrl-C).
    #[error("interrupted; checkpoint saved to {} (continue with --resume {})", .0.display(), .0.display())]
    Interrupted(PathBuf),

    /// Plain I/O with the path that failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
}
