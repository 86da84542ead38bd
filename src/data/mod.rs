//! Datasets in the MNIST file layout: loading, acquisition and single-image input.
//!
//! [`load_dir`] reads the four standard IDX files from a folder; [`mnist::resolve`] finds or
//! downloads that folder; [`image::load_digit`] turns a PNG/JPEG into a network input. Nothing
//! here assumes ten classes: Fashion-MNIST and other sets in the same format load the same way.

pub mod idx;
pub mod image;
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

/// One split: `n` grayscale images of `rows × cols` bytes and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// `n * rows * cols` pixels, image after image, each row-major.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u8>,
    /// Number of images.
    pub n: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl Dataset {
    /// Pixels per image (`rows * cols`).
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// The first `n` samples (all of them when `n >= self.n`).
    pub fn subset(&self, n: usize) -> Dataset {
        let n = n.min(self.n);
        Dataset {
            images: self.images[..n * self.pixels()].to_vec(),
            labels: self.labels[..n].to_vec(),
            n,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Number of classes, taken as the largest label + 1 (0 for an empty set).
    pub fn n_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// Pixels of image `i`.
    ///
    /// # Panics
    /// When `i >= self.n`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let p = self.pixels();
        &self.images[i * p..(i + 1) * p]
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
/// they hold the same number of samples.
pub fn load_split(images: &Path, labels: &Path) -> Result<Dataset> {
    let img = idx::read_idx_images(images)?;
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
    Ok(Dataset {
        images: img.data,
        labels: lab,
        n: img.n,
        rows: img.rows,
        cols: img.cols,
    })
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
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(Error::bad_data(
            &f.test_images,
            format!(
                "images are {}×{} but the training images ({}) are {}×{}",
                test.rows,
                test.cols,
                f.train_images.display(),
                train.rows,
                train.cols
            ),
        ));
    }
    Ok(Mnist { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds() -> Dataset {
        Dataset {
            images: (0..12).collect(),
            labels: vec![2, 0, 5],
            n: 3,
            rows: 2,
            cols: 2,
        }
    }

    #[test]
    fn subset_and_classes() {
        let d = ds();
        assert_eq!(d.pixels(), 4);
        assert_eq!(d.n_classes(), 6);
        let s = d.subset(2);
        assert_eq!((s.n, s.images.len(), s.labels.clone()), (2, 8, vec![2, 0]));
        assert_eq!(d.subset(10), d);
        assert_eq!(d.image(1), &[4, 5, 6, 7]);
        assert_eq!(d.subset(0).n_classes(), 0);
    }

    #[test]
    fn candidate_spellings() {
        let c = candidates("train-images-idx3-ubyte");
        assert!(c.contains(&"train-images.idx3-ubyte.gz".to_string()));
    }

    #[test]
    fn split_from_bytes_reads_raw_and_gzipped_and_refuses_mismatched_counts() {
        let d = ds();
        let images = idx::encode_idx_images(d.n, d.rows, d.cols, &d.images).unwrap();
        let labels = idx::encode_idx_labels(&d.labels).unwrap();
        let (i, l) = (Path::new("img"), Path::new("lab"));
        let raw = split_from_bytes(&images, i, &labels, l).unwrap();
        let gz = split_from_bytes(&idx::gzip(&images), i, &idx::gzip(&labels), l).unwrap();
        assert_eq!(
            (raw.images.clone(), raw.labels.clone()),
            (d.images.clone(), d.labels.clone())
        );
        assert_eq!((gz.images, gz.labels), (d.images, d.labels));
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
