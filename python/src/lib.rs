//! `wgtrain._wgtrain`: the Python binding of wgtrain (PyO3, abi3). Thin: every step, check and
//! file format is the library's (`wgtrain::trainer::Trainer`, `wgtrain::train::session`,
//! `wgtrain::model`); this module turns NumPy arrays into datasets, keywords into settings and
//! the library's errors into Python exceptions worded with this API's names
//! (`wgtrain::error::Wording`). The pure-Python part of the package (`wgtrain/__init__.py`)
//! adds `torch_module` and the progress bar.
//!
//! Training runs one chunk of `wgtrain::train::CHUNK` steps at a time with the GIL released
//! (`Python::detach`); between chunks the callback runs and pending signals are handled, so
//! Ctrl-C raises `KeyboardInterrupt` within one chunk (after saving a checkpoint when one was
//! asked for), as `wgtrain train` stops between chunks.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use numpy::{PyArray2, PyArrayDyn, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use wgtrain::backend::DeviceChoice;
use wgtrain::error::{Setting, Wording};
use wgtrain::gpu::AdapterChoice;
use wgtrain::model::{Model, Preset};
use wgtrain::report::EpochMetrics;
use wgtrain::train::session::{self, Overrides, Start};
use wgtrain::train::{self, LrSchedule, Optimizer, TrainConfig, Which};
use wgtrain::trainer::{self as rs, Report};

create_exception!(
    _wgtrain,
    TrainingDiverged,
    PyRuntimeError,
    "The loss became NaN or infinite: a smaller learning rate (keyword lr) usually helps."
);
create_exception!(
    _wgtrain,
    DeviceError,
    PyRuntimeError,
    "The GPU or the engine failed: no adapter, an adapter limit, a kernel or device error."
);

// ---------------------------------------------------------------------------------------------
// Errors

/// How this API names what a caller can change: its arguments and keywords.
struct Keywords;

impl Wording for Keywords {
    fn setting(&self, s: Setting) -> Cow<'static, str> {
        Cow::Borrowed(match s {
            Setting::Arch => "argument arch",
            Setting::Preset => "argument arch (a preset)",
            Setting::Optimizer => "keyword optimizer",
            Setting::LrSchedule => "keyword lr_schedule",
            Setting::Lr => "keyword lr",
            Setting::Momentum => "keyword momentum",
            Setting::L2 => "keyword l2",
            Setting::WeightDecay => "keyword weight_decay",
            Setting::Nesterov => "keyword nesterov",
            Setting::LabelSmoothing => "keyword label_smoothing",
            Setting::Augment => "keyword augment",
            Setting::Normalize => "keyword normalize",
            Setting::BatchSize => "keyword batch_size",
            Setting::Epochs => "keyword epochs",
            Setting::MaxSteps => "keyword max_steps",
            Setting::Threads => "keyword threads",
            Setting::Init => "the starting weights",
            Setting::Resume => "the checkpoint",
            Setting::DataDir => "argument path",
            other => other.describe(),
        })
    }
    fn use_cpu(&self) -> Cow<'static, str> {
        "pass device=\"cpu\"".into()
    }
    fn resume(&self, path: &Path) -> String {
        format!(
            "continue with wgtrain.Trainer.resume({:?})",
            path.display().to_string()
        )
    }
    fn data_dir(&self) -> Cow<'static, str> {
        "use wgtrain.Dataset.load_dir(path) or set MNIST_DIR=DIR".into()
    }
}

/// The library's error as the Python exception its kind calls for, worded with this API's
/// names: `ValueError` for bad arguments, `OSError` for files, `TrainingDiverged` and
/// `DeviceError` (both `RuntimeError`s) for the rest.
fn py_err(e: wgtrain::Error) -> PyErr {
    use wgtrain::Error as E;
    let msg = e.worded(&Keywords);
    match e {
        E::InvalidSetting { .. }
        | E::Network { .. }
        | E::Weights { .. }
        | E::DataMismatch { .. }
        | E::KernelShape { .. }
        | E::UnknownBackend(_) => PyValueError::new_err(msg),
        E::Io { source, .. } => PyOSError::new_err((source.raw_os_error().unwrap_or(0), msg)),
        E::BadData { .. }
        | E::BadModel { .. }
        | E::BadImage { .. }
        | E::Checksum { .. }
        | E::DatasetUnavailable { .. } => PyOSError::new_err(msg),
        E::Diverged { .. } => TrainingDiverged::new_err(msg),
        E::Interrupted(_) | E::Stopped { .. } => PyKeyboardInterrupt::new_err(msg),
        E::NoAdapter { .. }
        | E::AdapterNotFound { .. }
        | E::LimitExceeded { .. }
        | E::RequestDevice { .. }
        | E::Kernel { .. }
        | E::DeviceLost { .. }
        | E::Readback { .. }
        | E::OutOfMemory { .. }
        | E::Unsupported { .. } => DeviceError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

trait OrPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> OrPy<T> for wgtrain::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(py_err)
    }
}

// ---------------------------------------------------------------------------------------------
// Datasets

/// Build the library's dataset from samples of shape `sample` (NumPy's: channels first for
/// images), values (`f32`: four little-endian bytes each) and labels. The one place this
/// binding makes a `wgtrain::data::Dataset`.
fn make_dataset(
    sample: &[usize],
    f32_values: bool,
    bytes: Vec<u8>,
    labels: Vec<u32>,
) -> wgtrain::Result<wgtrain::data::Dataset> {
    use wgtrain::data::{Dataset, FeatureType, SampleShape};
    let shape = match *sample {
        [h, w] => SampleShape::Image { c: 1, h, w },
        [c, h, w] => SampleShape::Image { c, h, w },
        _ => SampleShape::Flat(sample.iter().product()),
    };
    let kind = if f32_values {
        FeatureType::F32
    } else {
        FeatureType::U8
    };
    Dataset::from_chw_kind(shape, kind, bytes, labels)
}

/// Samples as bytes, the shape of one, the labels, and whether the bytes are `f32` values.
type Samples = (Vec<u8>, Vec<usize>, Vec<u32>, bool);

/// `(a, b, c)`, as Python writes a shape.
fn shape_str(s: &[usize]) -> String {
    match s {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `x` as a C-contiguous NumPy array (no copy when it is one already).
fn as_array<'py>(x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let np = x.py().import("numpy")?;
    np.call_method1("ascontiguousarray", (x,))
}

fn dtype_name(a: &Bound<'_, PyAny>) -> PyResult<String> {
    a.getattr("dtype")?.str()?.extract()
}

fn shape_of(a: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    a.getattr("shape")?.extract()
}

/// Samples `x` (uint8, any shape with the samples on the first axis) and labels `y` (integers,
/// one per sample, 0 to 255): the bytes, the sample shape and the labels. Errors name the
/// argument and both shapes.
fn samples_and_labels(x: &Bound<'_, PyAny>, y: &Bound<'_, PyAny>) -> PyResult<Samples> {
    let xa = as_array(x)?;
    let ya = as_array(y)?;
    let (xs, ys) = (shape_of(&xa)?, shape_of(&ya)?);
    let xd = dtype_name(&xa)?;
    if xd != "uint8" && xd != "float32" {
        return Err(PyValueError::new_err(format!(
            "x has dtype {xd} (shape {}); wgtrain takes uint8 samples (pixels 0..255, scaled \
             to [0, 1] on the device) or float32 values (used as they are)",
            shape_str(&xs)
        )));
    }
    if xs.len() < 2 || xs.contains(&0) {
        return Err(PyValueError::new_err(format!(
            "x has shape {}; expected (samples, ...) with at least one sample of at least one \
             value",
            shape_str(&xs)
        )));
    }
    if ys.len() != 1 || ys[0] != xs[0] {
        return Err(PyValueError::new_err(format!(
            "y has shape {} but x has shape {}: y must hold one label per sample, shape ({},)",
            shape_str(&ys),
            shape_str(&xs),
            xs[0]
        )));
    }
    let kind: String = ya.getattr("dtype")?.getattr("kind")?.extract()?;
    if kind != "i" && kind != "u" {
        return Err(PyValueError::new_err(format!(
            "y has dtype {} (shape {}); labels are integers, the class of each sample of x \
             (shape {})",
            dtype_name(&ya)?,
            shape_str(&ys),
            shape_str(&xs)
        )));
    }
    let y64 = ya.call_method1("astype", ("int64",))?;
    let y64 = y64
        .cast::<PyArrayDyn<i64>>()
        .map_err(|e| PyTypeError::new_err(e.to_string()))?;
    let yr = y64.readonly();
    let ys_slice = yr
        .as_slice()
        .map_err(|e| PyTypeError::new_err(e.to_string()))?;
    let mut labels = Vec::with_capacity(ys_slice.len());
    for (i, &l) in ys_slice.iter().enumerate() {
        if !(0..=i64::from(u32::MAX)).contains(&l) {
            return Err(PyValueError::new_err(format!(
                "y[{i}] is {l}: labels of y (shape {}) must be classes from 0 for x of shape {}",
                shape_str(&ys),
                shape_str(&xs)
            )));
        }
        labels.push(l as u32);
    }
    let bytes = if xd == "float32" {
        let xr = xa
            .cast::<PyArrayDyn<f32>>()
            .map_err(|e| PyTypeError::new_err(e.to_string()))?
            .readonly();
        let v = xr
            .as_slice()
            .map_err(|e| PyTypeError::new_err(e.to_string()))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "x holds {} at flat index {i} (shape {}); values must be finite",
                v[i],
                shape_str(&xs)
            )));
        }
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    } else {
        let xr = xa
            .cast::<PyArrayDyn<u8>>()
            .map_err(|e| PyTypeError::new_err(e.to_string()))?
            .readonly();
        xr.as_slice()
            .map_err(|e| PyTypeError::new_err(e.to_string()))?
            .to_vec()
    };
    Ok((bytes, xs[1..].to_vec(), labels, xd == "float32"))
}

/// Labelled samples held in memory: what `Trainer.fit` trains on and `evaluate` measures.
///
/// `Dataset(x, y)`: `x` a NumPy array of samples on its first axis, `uint8` (pixels, scaled
/// to [0, 1] on the device) or `float32` (used as they are): `(N, C, H, W)` or `(N, H, W)`
/// images, other shapes as flat vectors (`(N, 784)`); `y` integer labels, one per sample. The
/// samples are copied once into the dataset. A wrong dtype, shape or label raises `ValueError` naming the argument and both
/// shapes. `Dataset.mnist(split)` and `Dataset.load_dir(path, split)` read MNIST-format files.
#[pyclass(frozen, module = "wgtrain")]
struct Dataset {
    inner: Arc<wgtrain::data::Dataset>,
    sample: Vec<usize>,
}

impl Dataset {
    fn of(d: wgtrain::data::Dataset) -> Self {
        let sample = match d.shape {
            wgtrain::data::SampleShape::Flat(n) => vec![n],
            wgtrain::data::SampleShape::Image { c: 1, h, w } => vec![h, w],
            wgtrain::data::SampleShape::Image { c, h, w } => vec![c, h, w],
        };
        Dataset {
            inner: Arc::new(d),
            sample,
        }
    }
}

/// The split `split` names.
fn split_files(files: &wgtrain::data::MnistFiles, split: &str) -> PyResult<(PathBuf, PathBuf)> {
    match split {
        "train" => Ok((files.train_images.clone(), files.train_labels.clone())),
        "test" => Ok((files.test_images.clone(), files.test_labels.clone())),
        other => Err(bad_split(other)),
    }
}

fn bad_split(split: &str) -> PyErr {
    PyValueError::new_err(format!(
        "argument split is {split:?}; expected \"train\" or \"test\""
    ))
}

fn load_split(dir: &Path, split: &str) -> PyResult<Dataset> {
    let files = wgtrain::data::locate(dir).py()?;
    let (images, labels) = split_files(&files, split)?;
    Ok(Dataset::of(
        wgtrain::data::load_split(&images, &labels).py()?,
    ))
}

#[pymethods]
impl Dataset {
    #[new]
    fn new(x: &Bound<'_, PyAny>, y: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (bytes, sample, labels, f32_values) = samples_and_labels(x, y)?;
        let d = make_dataset(&sample, f32_values, bytes, labels).py()?;
        Ok(Dataset {
            inner: Arc::new(d),
            sample,
        })
    }

    /// MNIST's `"train"` (60,000) or `"test"` (10,000) split, found or downloaded as
    /// `wgtrain train` finds it: `MNIST_DIR`, the per-user cache, else a download checked
    /// against the canonical SHA-256 digests.
    #[staticmethod]
    #[pyo3(signature = (split = "train"))]
    fn mnist(py: Python<'_>, split: &str) -> PyResult<Self> {
        if split != "train" && split != "test" {
            return Err(bad_split(split));
        }
        let dir = py.detach(|| wgtrain::data::mnist::resolve(None)).py()?;
        load_split(&dir, split)
    }

    /// One split (`"train"` or `"test"`) of a folder holding the four MNIST-format IDX files
    /// (raw or gzipped), such as Fashion-MNIST's.
    #[staticmethod]
    #[pyo3(signature = (path, split = "train"))]
    fn load_dir(path: PathBuf, split: &str) -> PyResult<Self> {
        load_split(&path, split)
    }

    fn __len__(&self) -> usize {
        self.inner.n
    }

    /// The shape of one sample.
    #[getter]
    fn sample_shape(&self) -> Vec<usize> {
        self.sample.clone()
    }

    /// Number of classes: the largest label + 1.
    #[getter]
    fn classes(&self) -> usize {
        self.inner.n_classes()
    }

    /// The samples and labels as NumPy arrays (copies): `x` uint8 `(N, *sample_shape)`, `y`
    /// int64 `(N,)`.
    fn numpy<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        use wgtrain::data::{FeatureType, SampleShape};
        let d = &self.inner;
        let mut shape = vec![d.n];
        shape.extend(&self.sample);
        let es = d.kind.size();
        // The engine keeps images channels-last; NumPy's order is channels-first.
        let chw = match d.shape {
            SampleShape::Image { c, h, w } if c > 1 => {
                let mut out = vec![0u8; d.features.len()];
                let plane = h * w;
                for (src, dst) in d
                    .features
                    .chunks_exact(c * plane * es)
                    .zip(out.chunks_exact_mut(c * plane * es))
                {
                    for i in 0..plane {
                        for ch in 0..c {
                            let from = (i * c + ch) * es;
                            let to = (ch * plane + i) * es;
                            dst[to..to + es].copy_from_slice(&src[from..from + es]);
                        }
                    }
                }
                std::borrow::Cow::Owned(out)
            }
            _ => std::borrow::Cow::Borrowed(&d.features[..]),
        };
        let x = match d.kind {
            FeatureType::F32 => {
                let v: Vec<f32> = chw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                numpy::PyArray1::from_vec(py, v).reshape(shape)?.into_any()
            }
            _ => numpy::PyArray1::from_slice(py, &chw)
                .reshape(shape)?
                .into_any(),
        };
        let y: Vec<i64> = d.labels.iter().map(|&l| i64::from(l)).collect();
        Ok((x, numpy::PyArray1::from_vec(py, y).into_any()))
    }

    fn __repr__(&self) -> String {
        format!(
            "wgtrain.Dataset({} samples of shape {}, {} classes)",
            self.inner.n,
            shape_str(&self.sample),
            self.inner.n_classes()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

/// The keywords every way of making a `Trainer` takes (`wgtrain train`'s options).
#[derive(Default)]
struct Options {
    ov: Overrides,
    shuffle: Option<bool>,
    device: Option<String>,
    threads: Option<usize>,
    adapter: Option<String>,
    backend: Option<String>,
    checkpoint: Option<PathBuf>,
}

const KEYWORDS: [&str; 22] = [
    "epochs",
    "device",
    "optimizer",
    "lr",
    "momentum",
    "l2",
    "batch_size",
    "max_steps",
    "seed",
    "lr_schedule",
    "shuffle",
    "threads",
    "adapter",
    "backend",
    "checkpoint",
    "weight_decay",
    "nesterov",
    "decay_all",
    "warmup",
    "label_smoothing",
    "augment",
    "normalize",
];

fn options(kw: Option<&Bound<'_, PyDict>>) -> PyResult<Options> {
    let mut o = Options::default();
    let Some(kw) = kw else { return Ok(o) };
    for (k, v) in kw.iter() {
        let k: String = k.extract()?;
        if v.is_none() {
            if !KEYWORDS.contains(&k.as_str()) {
                return Err(unknown_keyword(&k));
            }
            continue;
        }
        let bad = |what: &str| {
            PyTypeError::new_err(format!(
                "keyword {k} must be {what}, not {}",
                v.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        };
        macro_rules! get {
            ($t:ty, $what:expr) => {
                v.extract::<$t>().map_err(|_| bad($what))?
            };
        }
        match k.as_str() {
            "epochs" => o.ov.epochs = Some(get!(usize, "a whole number ≥ 0")),
            "batch_size" => o.ov.batch = Some(get!(usize, "a whole number ≥ 0")),
            "max_steps" => o.ov.max_steps = Some(get!(usize, "a whole number ≥ 0")),
            "seed" => o.ov.seed = Some(get!(u64, "a whole number ≥ 0")),
            "lr" => o.ov.lr = Some(get!(f32, "a number")),
            "momentum" => o.ov.momentum = Some(get!(f32, "a number")),
            "l2" => o.ov.l2 = Some(get!(f32, "a number")),
            "shuffle" => o.shuffle = Some(get!(bool, "True or False")),
            "threads" => o.threads = Some(get!(usize, "a whole number ≥ 0")),
            "device" => o.device = Some(get!(String, "a string")),
            "adapter" => o.adapter = Some(get!(String, "a string")),
            "backend" => o.backend = Some(get!(String, "a string")),
            "checkpoint" => o.checkpoint = Some(get!(PathBuf, "a path")),
            "weight_decay" => o.ov.weight_decay = Some(get!(f32, "a number")),
            "nesterov" => o.ov.nesterov = get!(bool, "True or False"),
            "decay_all" => o.ov.decay_all = get!(bool, "True or False"),
            "warmup" => o.ov.warmup = Some(get!(usize, "a whole number ≥ 0")),
            "label_smoothing" => o.ov.label_smoothing = Some(get!(f32, "a number")),
            "augment" => {
                o.ov.augment = Some(
                    wgtrain::ops::Augment::parse(&get!(String, "a string"))
                        .map_err(|r| py_err(wgtrain::Error::setting(Setting::Augment, r)))?,
                )
            }
            "normalize" => {
                o.ov.normalize = Some(
                    wgtrain::ops::Normalize::parse(&get!(String, "a string"))
                        .map_err(|r| py_err(wgtrain::Error::setting(Setting::Normalize, r)))?,
                )
            }
            "optimizer" => {
                o.ov.optimizer = Some(match get!(String, "a string").as_str() {
                    "sgd" => Optimizer::Sgd,
                    "adam" => Optimizer::Adam,
                    "adamw" => Optimizer::AdamW,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "keyword optimizer is {other:?}; expected \"sgd\", \"adam\" or \"adamw\""
                        )))
                    }
                })
            }
            "lr_schedule" => {
                o.ov.lr_schedule = Some(match get!(String, "a string").as_str() {
                    "constant" => LrSchedule::Constant,
                    "cosine" => LrSchedule::Cosine,
                    "one-cycle" => LrSchedule::OneCycle,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "keyword lr_schedule is {other:?}; expected \"constant\", \"cosine\" or \"one-cycle\""
                        )))
                    }
                })
            }
            _ => return Err(unknown_keyword(&k)),
        }
    }
    o.ov.no_shuffle = o.shuffle == Some(false);
    Ok(o)
}

fn unknown_keyword(k: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "unexpected keyword {k}; the keywords are {}",
        KEYWORDS.join(", ")
    ))
}

impl Options {
    fn device(&self) -> PyResult<DeviceChoice> {
        match self.device.as_deref().unwrap_or("auto") {
            "auto" => Ok(DeviceChoice::Auto),
            "gpu" => Ok(DeviceChoice::Gpu),
            "cpu" => Ok(DeviceChoice::Cpu),
            other => Err(PyValueError::new_err(format!(
                "keyword device is {other:?}; expected \"auto\", \"gpu\" or \"cpu\""
            ))),
        }
    }

    fn adapter(&self) -> AdapterChoice {
        AdapterChoice {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
        }
    }
}

/// The settings stored in a model file's metadata (`Trainer.save`, `wgtrain train`), if any.
fn saved_config(meta: &wgtrain::model::io::Metadata) -> Option<TrainConfig> {
    serde_json::from_str(meta.get("config")?).ok()
}

/// The settings a model's network starts from: the file's, else its preset's, else the
/// default preset's.
fn base_for(model: &Model, meta: Option<&wgtrain::model::io::Metadata>) -> TrainConfig {
    if let Some(cfg) = meta.and_then(saved_config).filter(|c| c.arch == model.arch) {
        return cfg;
    }
    match Preset::ALL.into_iter().find(|p| p.arch() == model.arch) {
        Some(p) => TrainConfig::preset(p),
        None => TrainConfig::preset(Preset::SeedLarge),
    }
}

// ---------------------------------------------------------------------------------------------
// The trainer

/// Moves a value into `Python::detach`'s closure, which runs on this same thread,
/// synchronously: nothing in it changes threads.
struct OnThisThread<T>(T);
// SAFETY: see above.
unsafe impl<T> Send for OnThisThread<T> {}

/// A run with its data resident on the device.
struct Run {
    t: rs::Trainer,
    /// The datasets it holds (`None`: a model without data, for predict and save).
    train: Option<Py<Dataset>>,
    test: Option<Py<Dataset>>,
}

// SAFETY: the engine is not `Send` only because its backend is a `Box<dyn Backend>` (the CPU
// engine's rayon pool and wgpu's handles are `Send + Sync`) and because it holds an
// `Rc<dyn Collective>`: in one process a stateless `Solo` whose every clone lives inside this
// engine. A `Run` therefore moves between threads as a whole, with all its `Rc`s, which is
// sound; and PyO3's borrow flag gives one thread at a time `&mut` access, while `&self`
// methods read plain fields only. So a `Trainer` made in one Python thread can train in another.
unsafe impl Send for Run {}
unsafe impl Sync for Run {}

/// A network and its training settings on one device (PyTorch's or wgtrain's conventions
/// where they differ: see each method).
///
/// `Trainer(arch="seed-large", *, epochs=None, device="auto", optimizer=None, lr=None,
/// momentum=None, l2=None, batch_size=None, max_steps=None, seed=None, lr_schedule=None,
/// shuffle=None, threads=None, adapter=None, backend=None, checkpoint=None, weight_decay=None,
/// nesterov=None, decay_all=None, warmup=None, label_smoothing=None, augment=None,
/// normalize=None)`
///
/// `arch` is a preset (`seed-small`, `seed-large`, `lenet5`, `cnn`: its network and
/// hyperparameters) or an architecture string such as `784-128-10` or
/// `1x28x28-c8k3p1-m2-10` (the default preset's hyperparameters). The keywords are
/// `wgtrain train`'s options; `None` keeps the preset's value. `device`: `"auto"` (the best
/// hardware GPU, else the CPU engine), `"gpu"` or `"cpu"`. `checkpoint`: a path where a
/// resumable checkpoint is saved after every epoch and on Ctrl-C. `optimizer`: `"sgd"`,
/// `"adam"` or `"adamw"`; `lr_schedule`: `"constant"`, `"cosine"` or `"one-cycle"` (PyTorch
/// equivalents: the README's "Optimisers and schedules"); `augment`: e.g. `"crop:2,flip"`;
/// `normalize`: `"auto"` (the training set's per-channel mean and std), `"MEAN/STD"` or
/// `"off"` (as `wgtrain train --augment` and `--normalize`).
#[pyclass(module = "wgtrain")]
struct Trainer {
    cfg: TrainConfig,
    opts: Options,
    /// Where the next new run starts: weights, optimiser state, position.
    model: Model,
    state: Option<train::OptState>,
    position: train::Position,
    run: Option<Run>,
    device: String,
}

fn metrics_dict<'py>(py: Python<'py>, m: &EpochMetrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("epoch", m.epoch)?;
    d.set_item("train_loss", m.train_loss)?;
    d.set_item("train_accuracy", m.train_acc)?;
    d.set_item("test_loss", m.test_loss)?;
    d.set_item("test_accuracy", m.test_acc)?;
    d.set_item("seconds", m.seconds)?;
    d.set_item("images_per_second", m.images_per_sec)?;
    Ok(d)
}

fn same(a: &Option<Py<Dataset>>, b: Option<&Bound<'_, Dataset>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.as_ptr() == b.as_ptr(),
        (None, None) => true,
        _ => false,
    }
}

impl Trainer {
    fn from_start(start: Start, opts: Options) -> PyResult<Self> {
        opts.device()?;
        if let Some(t) = opts.threads {
            wgtrain::backend::cpu::check_threads(t).py()?;
        }
        Ok(Trainer {
            cfg: start.cfg,
            opts,
            model: start.model,
            state: start.state,
            position: start.position,
            run: None,
            device: String::new(),
        })
    }

    fn backend(&self, py: Python<'_>) -> PyResult<Box<dyn wgtrain::backend::Backend>> {
        let (choice, adapter, threads) =
            (self.opts.device()?, self.opts.adapter(), self.opts.threads);
        let (be, note) = py
            .detach(|| {
                wgtrain::backend::open(choice, &adapter, threads).map(|(b, n)| OnThisThread((b, n)))
            })
            .py()?
            .0;
        if let Some(n) = note {
            let warnings = py.import("warnings")?;
            warnings.call_method1("warn", (n.to_string(),))?;
        }
        Ok(be)
    }

    /// The weights as they are now (the run's, else the starting ones).
    fn current_model(&mut self, py: Python<'_>) -> PyResult<Model> {
        match &mut self.run {
            Some(r) => {
                let t = OnThisThread(&mut r.t);
                py.detach(move || {
                    let t = t;
                    t.0.model().map(OnThisThread)
                })
                .py()
                .map(|m| m.0)
            }
            None => Ok(self.model.clone()),
        }
    }

    /// End the run (if any), keeping its weights as the next run's start.
    fn retire(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.run.as_ref().is_some_and(|r| r.train.is_none()) {
            // Held for predict or save only: it trained nothing, the start is unchanged.
            self.run = None;
        }
        if self.run.is_some() {
            self.model = self.current_model(py)?;
            self.state = None;
            self.position = train::Position::default();
            self.run = None;
        }
        Ok(())
    }

    /// The run training on `train` (and `test`): the current one when it holds these datasets
    /// and is not finished, else a new one from the current weights.
    fn run_on(
        &mut self,
        py: Python<'_>,
        train: &Bound<'_, Dataset>,
        test: Option<&Bound<'_, Dataset>>,
    ) -> PyResult<()> {
        if let Some(r) = &self.run {
            if same(&r.train, Some(train)) && same(&r.test, test) && !r.t.done() {
                return Ok(());
            }
        }
        self.retire(py)?;
        let be = self.backend(py)?;
        let (cfg, model, state, position) = (
            self.cfg.clone(),
            &self.model,
            self.state.as_ref(),
            self.position,
        );
        let (tr, te) = (
            train.get().inner.clone(),
            test.map(|t| t.get().inner.clone()),
        );
        let be = OnThisThread(be);
        let t = py
            .detach(move || {
                let be = be;
                rs::Trainer::with_model(cfg, model, state, position, be.0, &tr, te.as_deref())
                    .map(OnThisThread)
            })
            .py()?
            .0;
        self.device = t.device();
        self.run = Some(Run {
            t,
            train: Some(train.clone().unbind()),
            test: test.map(|t| t.clone().unbind()),
        });
        Ok(())
    }

    /// The run, or one over no data for the current weights.
    fn any_run(&mut self, py: Python<'_>) -> PyResult<&mut rs::Trainer> {
        if self.run.is_none() {
            let be = self.backend(py)?;
            let t = rs::Trainer::for_model(self.cfg.clone(), &self.model, be).py()?;
            self.device = t.device();
            self.run = Some(Run {
                t,
                train: None,
                test: None,
            });
        }
        Ok(&mut self.run.as_mut().expect("a run").t)
    }
}

fn start(arch: &str, opts: &Options) -> PyResult<Start> {
    let (base, a) = rs::settings_for(arch).py()?;
    let ov = Overrides {
        arch: Some(a),
        ..opts.ov.clone()
    };
    session::start(base, &ov, None, None).py()
}

#[pymethods]
impl Trainer {
    #[new]
    #[pyo3(
        signature = (arch = "seed-large", **kwargs),
        text_signature = "(arch='seed-large', *, epochs=None, device='auto', optimizer=None, \
                          lr=None, momentum=None, l2=None, batch_size=None, max_steps=None, \
                          seed=None, lr_schedule=None, shuffle=None, threads=None, \
                          adapter=None, backend=None, checkpoint=None, weight_decay=None, \
                          nesterov=None, decay_all=None, warmup=None, label_smoothing=None)"
    )]
    fn new(arch: &str, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let opts = options(kwargs)?;
        Self::from_start(start(arch, &opts)?, opts)
    }

    /// A model file saved by `Trainer.save` or `wgtrain train` (or a checkpoint's weights),
    /// with the settings it was trained with unless keywords say otherwise. Training it starts
    /// a new run from those weights.
    #[staticmethod]
    #[pyo3(signature = (path, **kwargs))]
    fn load(path: PathBuf, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let opts = options(kwargs)?;
        let (model, meta) = Model::load(&path).py()?;
        let base = base_for(&model, Some(&meta));
        let s = session::start_from(base, &opts.ov, model, &path).py()?;
        Self::from_start(s, opts)
    }

    /// Continue the run saved in a checkpoint (`checkpoint=` on a trainer, or `wgtrain train`'s
    /// `.ckpt.safetensors`): its weights, optimiser state, settings and position; `fit` goes on
    /// where it stopped (keywords override settings; the checkpoint keeps being updated unless
    /// `checkpoint=` names another path).
    #[staticmethod]
    #[pyo3(signature = (path, **kwargs))]
    fn resume(path: PathBuf, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut opts = options(kwargs)?;
        let s = session::start(
            TrainConfig::preset(Preset::SeedLarge),
            &opts.ov,
            None,
            Some(&path),
        )
        .py()?;
        opts.checkpoint.get_or_insert(path);
        Self::from_start(s, opts)
    }

    /// Start from PyTorch weights: `state_dict` maps `layers.{i}.weight` / `layers.{i}.bias`
    /// (`i` counting the layers with parameters; `nn.Linear` and `nn.Conv2d` layouts) to NumPy
    /// arrays or torch tensors, as `state_dict()` and `torch_module(arch).state_dict()` hold
    /// them. Every tensor of `arch` must be there with its shape, and no other.
    #[staticmethod]
    #[pyo3(signature = (arch, state_dict, **kwargs))]
    fn from_state_dict(
        arch: &str,
        state_dict: &Bound<'_, PyAny>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let opts = options(kwargs)?;
        let (base, a) = rs::settings_for(arch).py()?;
        let np = state_dict.py().import("numpy")?;
        let mut tensors = wgtrain::model::io::NamedTensors::new();
        let items = state_dict.call_method0("items")?;
        for item in items.try_iter()? {
            let (k, v): (String, Bound<'_, PyAny>) = item?.extract()?;
            // A torch tensor (on any device) becomes a NumPy array; anything else goes as is.
            let v = if v.hasattr("detach")? {
                v.call_method0("detach")?
                    .call_method0("cpu")?
                    .call_method0("numpy")?
            } else {
                v
            };
            // asarray keeps a 0-d tensor (a BatchNorm's num_batches_tracked) 0-d, which
            // ascontiguousarray would make [1].
            let kw = pyo3::types::PyDict::new(state_dict.py());
            kw.set_item("dtype", "float32")?;
            kw.set_item("order", "C")?;
            let arr = np.call_method("asarray", (v,), Some(&kw))?;
            let shape = shape_of(&arr)?;
            let f = arr
                .cast::<PyArrayDyn<f32>>()
                .map_err(|e| PyTypeError::new_err(e.to_string()))?
                .readonly();
            let data = f
                .as_slice()
                .map_err(|e| PyTypeError::new_err(e.to_string()))?
                .to_vec();
            tensors.insert(k, (shape, data));
        }
        let model = Model::from_named_tensors(&a, tensors, "state_dict").py()?;
        let ov = Overrides {
            arch: Some(a),
            ..opts.ov.clone()
        };
        let s = session::start_from(base, &ov, model, Path::new("state_dict")).py()?;
        Self::from_start(s, opts)
    }

    /// Train on `train` to the end of the run (`epochs`, or `max_steps`), evaluating `test`
    /// after each epoch when given; returns one dict per epoch of the run (`epoch`,
    /// `train_loss`, `train_accuracy`, `test_loss`, `test_accuracy` (NaN without a test set),
    /// `seconds`, `images_per_second`). `on_epoch(metrics)` is called after each epoch;
    /// returning `False` stops there (`fit` again with the same datasets goes on). `progress`
    /// shows a tqdm bar (when tqdm is installed).
    ///
    /// A new run starts from the current weights (with fresh optimiser state) unless the last
    /// one was on these same Dataset objects and not finished, which `fit` continues. The GIL
    /// is released while the engine works; Ctrl-C raises `KeyboardInterrupt` within one chunk
    /// of 50 steps, after saving the checkpoint when `checkpoint=` was given, and `fit` on the
    /// same datasets continues from there. A loss that becomes NaN or infinite raises
    /// `TrainingDiverged`.
    #[pyo3(signature = (train, test = None, *, on_epoch = None, progress = false))]
    fn fit<'py>(
        &mut self,
        py: Python<'py>,
        train: &Bound<'py, Dataset>,
        test: Option<&Bound<'py, Dataset>>,
        on_epoch: Option<Bound<'py, PyAny>>,
        progress: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        self.run_on(py, train, test)?;
        let bar = if progress {
            match py.import("tqdm.auto") {
                Ok(m) => {
                    let kw = PyDict::new(py);
                    kw.set_item("unit", "step")?;
                    kw.set_item("desc", format!("{} on {}", self.cfg.arch, self.device))?;
                    Some(m.getattr("tqdm")?.call((), Some(&kw))?)
                }
                Err(_) => None,
            }
        } else {
            None
        };
        let result = self.fit_chunks(py, on_epoch, bar.as_ref());
        if let Some(bar) = &bar {
            bar.call_method0("close")?;
        }
        if let (Err(e), Some(path)) = (&result, &self.opts.checkpoint) {
            // Ctrl-C, wherever between chunks Python raised it: save where the run stands.
            if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                let t = OnThisThread(&mut self.run.as_mut().expect("a run").t);
                let p = path.clone();
                py.detach(move || {
                    let t = t;
                    t.0.save_checkpoint(&p)
                })
                .py()?;
            }
        }
        result?;
        let r = &self.run.as_ref().expect("a run").t;
        let out = PyList::empty(py);
        for m in r.history() {
            out.append(metrics_dict(py, m)?)?;
        }
        Ok(out)
    }

    /// Mean loss and accuracy (`{"loss", "accuracy", "n"}`) over `data` (default: the test set
    /// of the last `fit`). A dataset the device does not hold yet is uploaded for the call.
    #[pyo3(signature = (data = None))]
    fn evaluate<'py>(
        &mut self,
        py: Python<'py>,
        data: Option<&Bound<'py, Dataset>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let which =
            match (&self.run, data) {
                (Some(r), None) if r.test.is_some() => Some(Which::Test),
                (_, None) => return Err(PyValueError::new_err(
                    "evaluate() needs a dataset: this trainer holds no test set (give one to fit \
                     or to evaluate)",
                )),
                (Some(r), Some(d)) if same(&r.test, Some(d)) => Some(Which::Test),
                (Some(r), Some(d)) if same(&r.train, Some(d)) => Some(Which::Train),
                _ => None,
            };
        let e = match which {
            Some(w) => {
                let t = OnThisThread(&mut self.run.as_mut().expect("a run").t);
                py.detach(move || {
                    let t = t;
                    t.0.evaluate(w)
                })
                .py()?
            }
            None => {
                let d = data.expect("a dataset").get().inner.clone();
                let model = self.current_model(py)?;
                let be = self.backend(py)?;
                let cfg = self.cfg.clone();
                let be = OnThisThread(be);
                py.detach(move || {
                    let be = be;
                    let mut t = rs::Trainer::with_model(
                        cfg,
                        &model,
                        None,
                        train::Position::default(),
                        be.0,
                        &d,
                        None,
                    )?;
                    t.evaluate(Which::Train)
                })
                .py()?
            }
        };
        let d = PyDict::new(py);
        d.set_item("loss", e.loss)?;
        d.set_item("accuracy", e.accuracy)?;
        d.set_item("n", e.n)?;
        Ok(d)
    }

    /// Class probabilities, a float32 array `(N, classes)`, for the samples `x` (samples on the
    /// first axis, each the network's input: `uint8` pixels as in a `Dataset`, or `float32`
    /// values as a `Dataset` holds them, pixels / 255; a model trained with a normalisation
    /// normalises them as its training data was).
    fn predict<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let xa = as_array(x)?;
        let shape = shape_of(&xa)?;
        let input = self.cfg.arch.input_len();
        let per: usize = shape.iter().skip(1).product();
        if shape.len() < 2 || shape[0] == 0 || per != input {
            return Err(PyValueError::new_err(format!(
                "x has shape {}; {} takes samples of {input} values: shape (N, {input}) or \
                 (N, ...) with {input} values per sample",
                shape_str(&shape),
                self.cfg.arch
            )));
        }
        let values: Vec<f32> = match dtype_name(&xa)?.as_str() {
            // As the engine reads a dataset's bytes (wgtrain::cpu::gather).
            "uint8" => {
                let a = xa
                    .cast::<PyArrayDyn<u8>>()
                    .map_err(|e| PyTypeError::new_err(e.to_string()))?
                    .readonly();
                let s = a
                    .as_slice()
                    .map_err(|e| PyTypeError::new_err(e.to_string()))?;
                s.iter().map(|&v| v as f32 / 255.0).collect()
            }
            "float32" => {
                let a = xa
                    .cast::<PyArrayDyn<f32>>()
                    .map_err(|e| PyTypeError::new_err(e.to_string()))?
                    .readonly();
                a.as_slice()
                    .map_err(|e| PyTypeError::new_err(e.to_string()))?
                    .to_vec()
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "x has dtype {other} (shape {}); predict takes uint8 pixels or float32 values",
                    shape_str(&shape)
                )))
            }
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "x holds {} at flat index {i} (shape {}); values must be finite",
                values[i],
                shape_str(&shape)
            )));
        }
        let classes = self.cfg.arch.classes();
        let t = OnThisThread(self.any_run(py)?);
        let p = py
            .detach(move || {
                let t = t;
                t.0.predict(&values)
            })
            .py()?;
        numpy::PyArray1::from_vec(py, p)
            .reshape([shape[0], classes])
            .map(|a| a.cast_into::<PyArray2<f32>>().expect("2-D"))
    }

    /// Save the weights as a safetensors model file (PyTorch's layouts, the network and the
    /// settings in its metadata; `Trainer.load` and `wgtrain eval --model` read it). Weights
    /// holding NaN or infinity are refused.
    fn save(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let t = OnThisThread(self.any_run(py)?);
        py.detach(move || {
            let t = t;
            t.0.save(&path)
        })
        .py()
    }

    /// The weights as a dict of float32 NumPy arrays with PyTorch's names and layouts
    /// (`layers.{i}.weight` `[out, in]` or `[out, channels, k, k]`, `layers.{i}.bias`):
    /// `torch_module(arch).load_state_dict({k: torch.from_numpy(v) ...}, strict=True)` takes
    /// it.
    fn state_dict<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let model = self.current_model(py)?;
        let d = PyDict::new(py);
        for (name, shape, data) in model.named_tensors() {
            let a = numpy::PyArray1::from_vec(py, data).reshape(shape)?;
            d.set_item(name, a)?;
        }
        Ok(d)
    }

    /// The network as an architecture string (`784-512-512-512-10`).
    #[getter]
    fn arch(&self) -> String {
        self.cfg.arch.to_string()
    }

    /// Where the engine runs, in words (empty until the first call that needs the device).
    #[getter]
    fn device(&self) -> String {
        self.device.clone()
    }

    /// The run's settings (every `wgtrain train` option, as keywords).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.cfg;
        let d = PyDict::new(py);
        d.set_item("arch", c.arch.to_string())?;
        d.set_item("optimizer", c.optimizer.to_string())?;
        d.set_item("lr", c.lr)?;
        d.set_item("momentum", c.momentum)?;
        d.set_item("l2", c.l2)?;
        d.set_item("batch_size", c.batch)?;
        d.set_item("epochs", c.epochs)?;
        d.set_item("max_steps", c.max_steps)?;
        d.set_item("seed", c.seed)?;
        d.set_item("lr_schedule", c.lr_schedule.to_string())?;
        d.set_item("shuffle", c.shuffle)?;
        d.set_item("weight_decay", c.weight_decay)?;
        d.set_item("nesterov", c.nesterov)?;
        d.set_item("decay_all", c.decay_scope == train::DecayScope::All)?;
        d.set_item("warmup", c.warmup)?;
        d.set_item("label_smoothing", c.label_smoothing)?;
        Ok(d)
    }

    /// `(epochs completed, steps into the next)` of the current run.
    #[getter]
    fn position(&self) -> (usize, usize) {
        let p = match &self.run {
            Some(r) => r.t.position(),
            None => self.position,
        };
        (p.epoch, p.step)
    }

    fn __repr__(&self) -> String {
        format!(
            "wgtrain.Trainer({:?}, epochs={}, device={:?})",
            self.cfg.arch.to_string(),
            self.cfg.epochs,
            self.opts.device.as_deref().unwrap_or("auto")
        )
    }
}

impl Trainer {
    fn fit_chunks(
        &mut self,
        py: Python<'_>,
        on_epoch: Option<Bound<'_, PyAny>>,
        bar: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let checkpoint = self.opts.checkpoint.clone();
        loop {
            let run = self.run.as_mut().expect("a run");
            if run.t.done() {
                return Ok(());
            }
            let t = OnThisThread(&mut run.t);
            let report: Report = py
                .detach(move || {
                    let t = t;
                    t.0.advance(train::CHUNK)
                })
                .map_err(|e| match (e, &checkpoint) {
                    // As `wgtrain train` says it: the last checkpoint kept, if one was.
                    (
                        wgtrain::Error::Diverged {
                            epoch, loss, lr, ..
                        },
                        Some(p),
                    ) => wgtrain::Error::Diverged {
                        epoch,
                        loss,
                        lr,
                        kept: p.exists().then(|| p.clone()),
                    },
                    (e, _) => e,
                })
                .py()?;
            if let Some(bar) = bar {
                bar.setattr("total", report.total_steps)?;
                bar.setattr("n", report.step)?;
                bar.call_method0("refresh")?;
            }
            if let (true, Some(path)) = (report.epoch_end, &checkpoint) {
                let t = OnThisThread(&mut run.t);
                let p = path.clone();
                py.detach(move || {
                    let t = t;
                    t.0.save_checkpoint(&p)
                })
                .py()?;
            }
            if let (Some(m), Some(cb)) = (&report.metrics, &on_epoch) {
                let r = cb.call1((metrics_dict(py, m)?,))?;
                if let Ok(false) = r.extract::<bool>() {
                    return Ok(());
                }
            }
            // Ctrl-C during the chunk raises KeyboardInterrupt here (`fit` saves the
            // checkpoint).
            py.check_signals()?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Functions

/// The GPU adapters wgpu finds, best first, as `wgtrain devices --json` lists them: index,
/// name, backend, device type, driver, limits and features.
#[pyfunction]
#[pyo3(signature = (backend = None))]
fn devices(py: Python<'_>, backend: Option<String>) -> PyResult<Bound<'_, PyList>> {
    let choice = AdapterChoice {
        backend,
        adapter: None,
    };
    let list = py
        .detach(|| wgtrain::gpu::context::adapter_reports(&choice))
        .py()?;
    let json = py.import("json")?;
    let out = PyList::empty(py);
    for v in list {
        out.append(json.call_method1("loads", (v.to_string(),))?)?;
    }
    Ok(out)
}

/// The presets, in order of size.
#[pyfunction]
fn presets() -> Vec<&'static str> {
    Preset::ALL.map(|p| p.name()).to_vec()
}

/// Every kernel family (or those in `families`) on `device` (`"gpu"`, the default, or
/// `"cpu"`: the CPU engine) against the CPU twins on random inputs from `seed`, as
/// `wgtrain verify` runs them; returns `{"device", "seed", "passed", "failed", "checks":
/// [{"family", "name", "shape", "ok", "detail"}]}`.
#[pyfunction]
#[pyo3(signature = (device = "gpu", families = None, seed = None))]
fn verify<'py>(
    py: Python<'py>,
    device: &str,
    families: Option<Vec<String>>,
    seed: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    use wgtrain::backend::{cpu::CpuBackend, gpu::GpuBackend, Backend};
    use wgtrain::verify::Family;
    let all = Family::ALL;
    let fams: Vec<Family> = match &families {
        None => all.to_vec(),
        Some(f) => f
            .iter()
            .map(|name| {
                all.into_iter().find(|a| a.name() == name).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "argument families: unknown kernel family {name:?}; expected some of {:?}",
                        all.map(|a| a.name())
                    ))
                })
            })
            .collect::<PyResult<_>>()?,
    };
    let gpu = match device {
        "gpu" => true,
        "cpu" => false,
        other => {
            return Err(PyValueError::new_err(format!(
                "argument device is {other:?}; expected \"gpu\" or \"cpu\""
            )))
        }
    };
    let seed = seed.unwrap_or_else(wgtrain::verify::run_seed);
    let (described, checks) = py
        .detach(|| -> wgtrain::Result<_> {
            let mut be: Box<dyn Backend> = if gpu {
                Box::new(GpuBackend::new(wgtrain::gpu::GpuContext::new(
                    &AdapterChoice::default(),
                )?))
            } else {
                Box::new(CpuBackend::new())
            };
            let mut out = Vec::new();
            for fam in fams {
                let got = wgtrain::verify::run_backend_family(be.as_mut(), fam, seed, true)?;
                out.extend(got.into_iter().map(|c| {
                    (
                        fam.name(),
                        c.name(),
                        c.shape.clone(),
                        c.pass(),
                        format!(
                            "max |Δ| {:.3e}, error/tolerance {:.3}, {} of {} out of tolerance",
                            c.max_abs, c.worst, c.bad, c.elements
                        ),
                    )
                }));
            }
            Ok(OnThisThread((be.describe(), out)))
        })
        .py()?
        .0;
    let d = PyDict::new(py);
    let list = PyList::empty(py);
    let passed = checks.iter().filter(|c| c.3).count();
    let failed = checks.len() - passed;
    for (family, name, shape, ok, detail) in checks {
        let c = PyDict::new(py);
        c.set_item("family", family)?;
        c.set_item("name", name)?;
        c.set_item("shape", shape)?;
        c.set_item("ok", ok)?;
        c.set_item("detail", detail)?;
        list.append(c)?;
    }
    d.set_item("device", described)?;
    d.set_item("seed", seed)?;
    d.set_item("passed", passed)?;
    d.set_item("failed", failed)?;
    d.set_item("checks", list)?;
    Ok(d)
}

/// The layers of `arch` for building the matching `torch.nn` module (`torch_module`): the
/// input shape and, per layer, `("dense", in, out, relu)`, `("conv", in_channels, out, k,
/// stride, pad)`, `("maxpool", k)`, `("avgpool", k)`, `("global",)`, with `("flatten",)` before
/// the first dense layer after an image. A residual block adds `("block_in",)` before its
/// first layer (keep the block's input), `("main_out",)` before a projection (keep the main
/// path's output, continue from the block's input) and `("join", relu)` (add the two).
#[pyfunction]
fn _torch_plan<'py>(py: Python<'py>, arch: &str) -> PyResult<(Vec<usize>, Bound<'py, PyList>)> {
    use wgtrain::model::{LayerSpec, Shape};
    let (_, a) = rs::settings_for(arch).py()?;
    let shapes = a.shapes().py()?;
    let input = match shapes[0] {
        Shape::Flat(n) => vec![n],
        Shape::Image { c, h, w } => vec![c, h, w],
    };
    let plan = PyList::empty(py);
    let relus = wgtrain::nn::relu_flags(&a.layers);
    let inputs = a.input_shapes();
    let wires = wgtrain::nn::residual::wiring(&a.layers)
        .map_err(|(_, reason)| PyValueError::new_err(reason))?;
    for (i, l) in a.layers.iter().enumerate() {
        let (inp, relu) = (inputs[i], relus[i]);
        if wires[i].opens {
            plan.append(("block_in",))?;
        }
        if wires[i].projection && matches!(l, LayerSpec::Conv(_)) {
            plan.append(("main_out",))?;
        }
        match l {
            LayerSpec::Dense(d) => {
                if let Shape::Image { .. } = inp {
                    plan.append(("flatten",))?;
                }
                plan.append(("dense", inp.len(), d.out, relu))?;
            }
            LayerSpec::Conv(c) => {
                let Shape::Image { c: cin, .. } = inp else {
                    return Err(PyValueError::new_err("a convolution on a flat input"));
                };
                plan.append(("conv", cin, c.out, c.k, c.stride, c.pad, relu))?;
            }
            LayerSpec::MaxPool(p) => plan.append(("maxpool", p.k))?,
            LayerSpec::AvgPool(p) => plan.append(("avgpool", p.k))?,
            LayerSpec::GlobalAvgPool(_) => plan.append(("global",))?,
            LayerSpec::Dropout(d) => plan.append(("dropout", d.p()))?,
            LayerSpec::Residual(_) => plan.append(("join", relu))?,
            LayerSpec::BatchNorm(_) => {
                let channels = match inp {
                    Shape::Image { c, .. } => c,
                    Shape::Flat(n) => n,
                };
                let image = matches!(inp, Shape::Image { .. });
                plan.append((
                    "batchnorm",
                    channels,
                    image,
                    wgtrain::nn::batchnorm::EPS,
                    wgtrain::nn::batchnorm::MOMENTUM,
                    relu,
                ))?
            }
        }
    }
    Ok((input, plan))
}

#[pymodule]
fn _wgtrain(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Dataset>()?;
    m.add_class::<Trainer>()?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(presets, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(_torch_plan, m)?)?;
    m.add("TrainingDiverged", m.py().get_type::<TrainingDiverged>())?;
    m.add("DeviceError", m.py().get_type::<DeviceError>())?;
    m.add("CHUNK", train::CHUNK)?;
    Ok(())
}
