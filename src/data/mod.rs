//! Datasets: the general in-memory [`Dataset`], the sources it is read from, and
//! single-image input.
//!
//! [`load_dir`] reads the four standard IDX files from a folder; [`mnist::resolve`] finds or
//! downloads that folder; [`image::load_digit`] turns a PNG/JPEG into a network input. Nothing
//! here assumes ten classes: Fashion-MNIST and other sets in the same format load the same way.
//! The other sources, one module each, give [`Splits`]: IDX files of any rank ([`idx`]), NumPy
//! arrays ([`npy`], [`npz`]), the CIFAR binary files ([`cifar`]), image folders in
//! torchvision's `ImageFolder` layout ([`folder`]) and CSV tables ([`csv`]); [`Source`] names
//! one of them as the command line's `--data` does.

pub mod cifar;
pub mod csv;
pub mod folder;
pub mod idx;
pub mod image;
pub mod npy;
#[cfg(not(target_arch = "wasm32"))]
pub mod npz;
#[cfg(not(target_arch = "wasm32"))]
mod source;
#[cfg(not(target_arch = "wasm32"))]
pub use source::Source;
// Finding or downloading MNIST on disk: native only (the browser hands over bytes).
#[cfg(not(target_arch = "wasm32"))]
pub mod mnist;

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Standard file names (without `.gz`) in the order train images, train labels, test images,
/// test labels.
pub const FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

pub use crate::ops::SampleShape;

pub use crate::ops::FeatureType;

/// One split: `n` samples of [`SampleShape`] values and their class indices. The values are
/// bytes (scaled to [0, 1] on the device, as image pixels) or `f32` (used as they are): see
/// [`FeatureType`].
///
/// `features` are in the engine's layout: an image's values channels-last (H×W×C, row after
/// row, the channels of a pixel together), as the engine's activations are. For one channel
/// that is plain row-major order, so grayscale sets are stored exactly as their files hold
/// them. Build a set from channels-first (C×H×W, PyTorch's and NumPy's usual order) samples
/// with [`Dataset::from_chw`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// `n * shape.len()` values, sample after sample, each in the engine's layout, as bytes
    /// (one a value, or four little-endian bytes a value for `f32`).
    pub features: Vec<u8>,
    /// One class index per sample.
    pub labels: Vec<u32>,
    /// Number of samples.
    pub n: usize,
    /// What one sample is.
    pub shape: SampleShape,
    /// How the values are stored.
    pub kind: FeatureType,
}

impl Dataset {
    /// A set of byte values already in the engine's layout (channels-last for images; see
    /// [`Dataset`]). The sample count is `labels.len()`; [`Error::KernelShape`] when `features`
    /// does not hold that many samples of `shape` or a sample is empty.
    pub fn new(shape: SampleShape, features: Vec<u8>, labels: Vec<u32>) -> Result<Dataset> {
        Dataset::with_kind(shape, FeatureType::U8, features, labels)
    }

    /// A set of `f32` values already in the engine's layout, used as they are;
    /// [`Error::KernelShape`] as [`Dataset::new`], and [`Error::BadData`] (naming no file:
    /// sources check their values first, naming theirs) for a NaN or infinite value.
    pub fn from_f32(shape: SampleShape, values: &[f32], labels: Vec<u32>) -> Result<Dataset> {
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::bad_data(
                "features",
                format!("value {i} is {}; features must be finite", values[i]),
            ));
        }
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Dataset::with_kind(shape, FeatureType::F32, bytes, labels)
    }

    /// A set of values stored as `kind` (raw bytes, little-endian for `f32`).
    pub fn with_kind(
        shape: SampleShape,
        kind: FeatureType,
        features: Vec<u8>,
        labels: Vec<u32>,
    ) -> Result<Dataset> {
        let n = labels.len();
        let len = shape.len();
        let bytes = len * kind.size();
        if len == 0 || n.checked_mul(bytes) != Some(features.len()) {
            return Err(Error::KernelShape {
                kernel: "dataset".into(),
                reason: format!(
                    "{} feature bytes are not {n} samples of {shape} ({len} values of {} bytes each)",
                    features.len(),
                    kind.size()
                ),
            });
        }
        Ok(Dataset {
            features,
            labels,
            n,
            shape,
            kind,
        })
    }

    /// A set of byte values from channels-first samples (C×H×W each, as NumPy arrays, CIFAR
    /// files and PyTorch hold images), converted once here to the engine's channels-last
    /// layout. For a flat shape or one channel nothing moves.
    pub fn from_chw(shape: SampleShape, chw: Vec<u8>, labels: Vec<u32>) -> Result<Dataset> {
        Dataset::from_chw_kind(shape, FeatureType::U8, chw, labels)
    }

    /// [`Dataset::from_chw`] for values stored as `kind`.
    pub fn from_chw_kind(
        shape: SampleShape,
        kind: FeatureType,
        chw: Vec<u8>,
        labels: Vec<u32>,
    ) -> Result<Dataset> {
        let mut d = Dataset::with_kind(shape, kind, chw, labels)?;
        if let SampleShape::Image { c, h, w } = shape {
            if c > 1 {
                let (plane, es) = (h * w, kind.size());
                let mut hwc = vec![0u8; d.features.len()];
                for (src, dst) in d
                    .features
                    .chunks_exact(c * plane * es)
                    .zip(hwc.chunks_exact_mut(c * plane * es))
                {
                    for (ch, p) in src.chunks_exact(plane * es).enumerate() {
                        for (i, v) in p.chunks_exact(es).enumerate() {
                            let at = (i * c + ch) * es;
                            dst[at..at + es].copy_from_slice(v);
                        }
                    }
                }
                d.features = hwc;
            }
        }
        Ok(d)
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.shape.len()
    }

    /// Bytes per sample.
    pub fn sample_bytes(&self) -> usize {
        self.shape.len() * self.kind.size()
    }

    /// The first `n` samples (all of them when `n >= self.n`).
    pub fn subset(&self, n: usize) -> Dataset {
        self.range(0, n.min(self.n))
    }

    /// Samples `start .. start + len` (clamped to the set).
    pub fn range(&self, start: usize, len: usize) -> Dataset {
        let start = start.min(self.n);
        let end = start.saturating_add(len).min(self.n);
        let p = self.sample_bytes();
        Dataset {
            features: self.features[start * p..end * p].to_vec(),
            labels: self.labels[start..end].to_vec(),
            n: end - start,
            shape: self.shape,
            kind: self.kind,
        }
    }

    /// Number of classes, taken as the largest label + 1 (0 for an empty set).
    pub fn n_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// The bytes of sample `i`, in the engine's layout.
    ///
    /// # Panics
    /// When `i >= self.n`, like slice indexing.
    pub fn sample(&self, i: usize) -> &[u8] {
        let p = self.sample_bytes();
        &self.features[i * p..(i + 1) * p]
    }
}

/// The training and test splits of an MNIST-format dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mnist {
    /// Training split (`train-*` files).
    pub train: Dataset,
    /// Test split (`t10k-*` files).
    pub test: Dataset,
}

/// A training split, a test split when the source has one, and the class names when the
/// source names its classes (image folders, CIFAR's names files, CSV label names; empty
/// otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splits {
    /// The training samples.
    pub train: Dataset,
    /// The test samples, when the source has them.
    pub test: Option<Dataset>,
    /// Class `k`'s name at index `k`; empty when the source names no classes.
    pub class_names: Vec<String>,
}

impl Splits {
    /// Checked splits from `source` (named in errors): a training split with samples, a test
    /// split of the same sample shape, and labels within the class names when there are any.
    pub fn new(
        train: Dataset,
        test: Option<Dataset>,
        class_names: Vec<String>,
        source: &Path,
    ) -> Result<Splits> {
        if train.n == 0 {
            return Err(Error::bad_data(source, "holds no training samples"));
        }
        if let Some(t) = &test {
            if t.shape != train.shape {
                return Err(Error::bad_data(
                    source,
                    format!(
                        "test samples are {} but training samples are {}",
                        t.shape, train.shape
                    ),
                ));
            }
        }
        if !class_names.is_empty() {
            for (split, d) in [("training", Some(&train)), ("test", test.as_ref())] {
                let Some(d) = d else { continue };
                if d.n_classes() > class_names.len() {
                    return Err(Error::bad_data(
                        source,
                        format!(
                            "{split} label {} is beyond the {} class names",
                            d.n_classes() - 1,
                            class_names.len()
                        ),
                    ));
                }
            }
        }
        Ok(Splits {
            train,
            test,
            class_names,
        })
    }

    /// Hold out the last `fraction` of the training samples as the test split, for a source
    /// without one. [`Error::InvalidSetting`] ([`Setting::ValSplit`](crate::error::Setting))
    /// for a fraction outside (0, 1), one that leaves either split empty, or a source that has
    /// a test split already.
    pub fn hold_out(&mut self, fraction: f64) -> Result<()> {
        let bad = |r: String| Error::setting(crate::error::Setting::ValSplit, r);
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(bad(format!(
                "{fraction} is not a fraction between 0 and 1 (exclusive)"
            )));
        }
        if self.test.is_some() {
            return Err(bad(
                "the data has a test split already; a fraction is held out only from data without one"
                    .into(),
            ));
        }
        let n = self.train.n;
        let held = (n as f64 * fraction).round() as usize;
        if held == 0 || held >= n {
            return Err(bad(format!(
                "{fraction} of {n} training samples leaves {held} to hold out and {} to train on",
                n.saturating_sub(held)
            )));
        }
        self.test = Some(self.train.range(n - held, held));
        self.train = self.train.subset(n - held);
        Ok(())
    }
}

impl From<Mnist> for Splits {
    fn from(m: Mnist) -> Self {
        Splits {
            train: m.train,
            test: Some(m.test),
            class_names: Vec::new(),
        }
    }
}

/// Load IDX files of any rank: features `[N, F]`, `[N, H, W]` or `[N, C, H, W]` (channels
/// first), labels `[N]`; raw or gzipped.
pub fn load_idx(features: &Path, labels: &Path) -> Result<Dataset> {
    let x = idx::read_idx_array(features)?;
    let y = idx::read_idx_array(labels)?;
    let shape = npy::sample_shape(&x.dims, features)?;
    if y.dims.len() != 1 {
        return Err(Error::bad_data(
            labels,
            format!(
                "labels have dims {:?}; expected one per sample, [N]",
                y.dims
            ),
        ));
    }
    if y.dims[0] != x.dims[0] {
        return Err(Error::bad_data(
            labels,
            format!(
                "holds {} labels but {} holds {} samples",
                y.dims[0],
                features.display(),
                x.dims[0]
            ),
        ));
    }
    Dataset::from_chw(shape, x.data, y.data.into_iter().map(u32::from).collect())
}

/// Where the four files of a dataset folder are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistFiles {
    /// `train-images-idx3-ubyte[.gz]`.
    pub train_images: PathBuf,
    /// `train-labels-idx1-ubyte[.gz]`.
    pub train_labels: PathBuf,
    /// `t10k-images-idx3-ubyte[.gz]`.
    pub test_images: PathBuf,
    /// `t10k-labels-idx1-ubyte[.gz]`.
    pub test_labels: PathBuf,
}

/// The names a standard file may be stored under: with or without `.gz`, and with the
/// `train-images.idx3-ubyte` spelling some mirrors (e.g. Kaggle) use.
fn candidates(stem: &str) -> [String; 4] {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
}

/// Find the file for a standard name in `dir`, in any of its accepted spellings.
pub fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    candidates(stem)
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// Locate the four standard files in `dir`; the error lists every missing one.
pub fn locate(dir: &Path) -> Result<MnistFiles> {
    if !dir.is_dir() {
        return Err(Error::dataset(format!(
            "dataset folder {} does not exist or is not a folder",
            dir.display()
        )));
    }
    let found = FILE_NAMES.map(|s| find_file(dir, s));
    let [Some(train_images), Some(train_labels), Some(test_images), Some(test_labels)] = found
    else {
        let missing: Vec<String> = FILE_NAMES
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(s, _)| format!("{s}[.gz]"))
            .collect();
        return Err(Error::dataset(format!(
            "{} lacks {} (a dataset folder holds the four standard MNIST-format files {}, each raw or gzipped)",
            dir.display(),
            missing.join(", "),
            FILE_NAMES.join(", ")
        )));
    };
    Ok(MnistFiles {
        train_images,
        train_labels,
        test_images,
        test_labels,
    })
}

/// Load one split from an images file and a labels file (each raw or gzipped), checking that
/// they hold the same number of samples. The images are `[N, H, W]` as MNIST's, or of another
/// rank [`load_idx`] reads (`[N, C, H, W]` channels first, `[N, F]`), so a folder in MNIST's
/// layout may hold colour images too.
pub fn load_split(images: &Path, labels: &Path) -> Result<Dataset> {
    let arr = idx::read_idx_array(images)?;
    if matches!(arr.dims.len(), 2 | 4) {
        return load_idx(images, labels);
    }
    // Rank 3 as MNIST's; any other rank is refused with the images reader's own words.
    let img = match arr.dims[..] {
        [n, rows, cols] => idx::IdxImages {
            n,
            rows,
            cols,
            data: arr.data,
        },
        _ => idx::read_idx_images(images)?,
    };
    let lab = idx::read_idx_labels(labels)?;
    split_of(img, lab, images, labels)
}

/// [`load_split`] from the two files' bytes (files dropped onto a web page); the names only
/// name them in errors.
pub fn split_from_bytes(
    images: &[u8],
    images_name: &Path,
    labels: &[u8],
    labels_name: &Path,
) -> Result<Dataset> {
    let img = idx::parse_idx_images(images, images_name)?;
    let lab = idx::parse_idx_labels(labels, labels_name)?;
    split_of(img, lab, images_name, labels_name)
}

fn split_of(img: idx::IdxImages, lab: Vec<u8>, images: &Path, labels: &Path) -> Result<Dataset> {
    if img.n != lab.len() {
        return Err(Error::bad_data(
            labels,
            format!(
                "holds {} labels but {} holds {} images",
                lab.len(),
                images.display(),
                img.n
            ),
        ));
    }
    if img.n == 0 {
        return Err(Error::bad_data(images, "holds no images"));
    }
    Dataset::new(
        SampleShape::gray(img.rows, img.cols),
        img.data,
        lab.into_iter().map(u32::from).collect(),
    )
}

/// Load the training and test splits from a folder holding the four standard files (see
/// [`locate`]); the two splits must have the same image size.
pub fn load_dir(dir: &Path) -> Result<Mnist> {
    let f = locate(dir)?;
    // The two splits are independent; decompressing them side by side halves the wait.
    let (train, test) = std::thread::scope(|s| {
        let train = s.spawn(|| load_split(&f.train_images, &f.train_labels));
        let test = load_split(&f.test_images, &f.test_labels);
        let train = train.join().unwrap_or_else(|_| {
            Err(Error::dataset(format!(
                "loading {} failed unexpectedly",
                f.train_images.display()
            )))
        });
        (train, test)
    });
    let (train, test) = (train?, test?);
    if train.shape != test.shape {
        let size = |s: SampleShape| match s {
            SampleShape::Image { c: 1, h, w } => format!("{h}×{w}"),
            other => other.to_string(),
        };
        return Err(Error::bad_data(
            &f.test_images,
            format!(
                "images are {} but the training images ({}) are {}",
                size(test.shape),
                f.train_images.display(),
                size(train.shape)
            ),
        ));
    }
    Ok(Mnist { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds() -> Dataset {
        Dataset::new(SampleShape::gray(2, 2), (0..12).collect(), vec![2, 0, 5]).unwrap()
    }

    #[test]
    fn subset_and_classes() {
        let d = ds();
        assert_eq!(d.sample_len(), 4);
        assert_eq!(d.n_classes(), 6);
        let s = d.subset(2);
        assert_eq!(
            (s.n, s.features.len(), s.labels.clone()),
            (2, 8, vec![2, 0])
        );
        assert_eq!(d.subset(10), d);
        assert_eq!(d.sample(1), &[4, 5, 6, 7]);
        assert_eq!(d.subset(0).n_classes(), 0);
        let tail = d.range(1, 5);
        assert_eq!((tail.n, tail.labels), (2, vec![0, 5]));
    }

    #[test]
    fn new_refuses_a_length_that_is_not_whole_samples() {
        let e = Dataset::new(SampleShape::Flat(3), vec![0; 7], vec![0, 1]).unwrap_err();
        assert!(e.to_string().contains("7 feature bytes"), "{e}");
        assert!(Dataset::new(SampleShape::Flat(0), vec![], vec![0]).is_err());
    }

    #[test]
    fn from_chw_moves_channels_last_and_leaves_one_channel_alone() {
        // Two samples of 2 channels × 1 row × 3 columns: channel planes [0 1 2] and [10 11 12].
        let chw = vec![0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32];
        let shape = SampleShape::Image { c: 2, h: 1, w: 3 };
        let d = Dataset::from_chw(shape, chw, vec![0, 1]).unwrap();
        assert_eq!(d.sample(0), &[0, 10, 1, 11, 2, 12]);
        assert_eq!(d.sample(1), &[20, 30, 21, 31, 22, 32]);
        let gray: Vec<u8> = (0..12).collect();
        let g = Dataset::from_chw(SampleShape::gray(2, 3), gray.clone(), vec![0, 1]).unwrap();
        assert_eq!(g.features, gray);
        // f32 values move as whole values.
        let v: Vec<f32> = vec![0.5, 1.5, -2.0, 7.0];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let two = SampleShape::Image { c: 2, h: 1, w: 2 };
        let f = Dataset::from_chw_kind(two, FeatureType::F32, bytes, vec![3]).unwrap();
        let got: Vec<f32> = f
            .sample(0)
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got, vec![0.5, -2.0, 1.5, 7.0]);
        let e = Dataset::from_f32(SampleShape::Flat(2), &[1.0, f32::NAN], vec![0]).unwrap_err();
        assert!(e.to_string().contains("value 1 is NaN"), "{e}");
    }

    #[test]
    fn hold_out_takes_the_last_fraction_and_refuses_bad_fractions() {
        let d = Dataset::new(SampleShape::Flat(1), (0..10).collect(), (0..10).collect()).unwrap();
        let mut s = Splits::new(d, None, Vec::new(), Path::new("x")).unwrap();
        for f in [0.0, 1.0, -0.5, f64::NAN, 0.01] {
            assert!(s.clone().hold_out(f).is_err(), "{f}");
        }
        s.hold_out(0.2).unwrap();
        assert_eq!(s.train.labels, (0..8).collect::<Vec<u32>>());
        assert_eq!(s.test.as_ref().unwrap().features, vec![8, 9]);
        let e = s.hold_out(0.5).unwrap_err().to_string();
        assert!(e.contains("test split already"), "{e}");
    }

    #[test]
    fn candidate_spellings() {
        let c = candidates("train-images-idx3-ubyte");
        assert!(c.contains(&"train-images.idx3-ubyte.gz".to_string()));
    }

    #[test]
    fn split_from_bytes_reads_raw_and_gzipped_and_refuses_mismatched_counts() {
        let d = ds();
        let images = idx::encode_idx_images(d.n, 2, 2, &d.features).unwrap();
        let l8: Vec<u8> = d.labels.iter().map(|&l| l as u8).collect();
        let labels = idx::encode_idx_labels(&l8).unwrap();
        let (i, l) = (Path::new("img"), Path::new("lab"));
        let raw = split_from_bytes(&images, i, &labels, l).unwrap();
        let gz = split_from_bytes(&idx::gzip(&images), i, &idx::gzip(&labels), l).unwrap();
        assert_eq!(
            (raw.features.clone(), raw.labels.clone()),
            (d.features.clone(), d.labels.clone())
        );
        assert_eq!((gz.features, gz.labels), (d.features, d.labels));
        let short = idx::encode_idx_labels(&[1, 2]).unwrap();
        let e = split_from_bytes(&images, i, &short, l)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "lab: holds 2 labels but img holds 3 images");
        let e = split_from_bytes(&labels, i, &labels, l)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("img: "), "{e}");
    }
}
