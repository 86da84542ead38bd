//! The CIFAR-10 and CIFAR-100 binary formats (the `*-binary.tar.gz` releases, unpacked).
//!
//! CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`, each record one
//! label byte then 3072 pixel bytes (3×32×32, channels first: the red plane, green, blue, each
//! row-major); class names in `batches.meta.txt`. CIFAR-100: `train.bin` and `test.bin`, each
//! record a coarse label byte, a fine label byte, then the 3072 pixels; class names in
//! `fine_label_names.txt` / `coarse_label_names.txt`. The folder given may be the one holding
//! the files or the one the tarball unpacks into it (`cifar-10-batches-bin`, `cifar-100-binary`).

use std::path::{Path, PathBuf};

use super::{Dataset, SampleShape, Splits};
use crate::{Error, Result};

/// Bytes of one image (3×32×32).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which set, and for CIFAR-100 which labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar {
    /// CIFAR-10: 10 classes.
    Ten,
    /// CIFAR-100 with its 100 fine labels.
    Fine,
    /// CIFAR-100 with its 20 coarse labels (superclasses).
    Coarse,
}

impl Cifar {
    fn sub_folder(self) -> &'static str {
        match self {
            Cifar::Ten => "cifar-10-batches-bin",
            Cifar::Fine | Cifar::Coarse => "cifar-100-binary",
        }
    }

    fn train_files(self) -> Vec<String> {
        match self {
            Cifar::Ten => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            Cifar::Fine | Cifar::Coarse => vec!["train.bin".into()],
        }
    }

    fn test_file(self) -> &'static str {
        match self {
            Cifar::Ten => "test_batch.bin",
            Cifar::Fine | Cifar::Coarse => "test.bin",
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            Cifar::Ten => "batches.meta.txt",
            Cifar::Fine => "fine_label_names.txt",
            Cifar::Coarse => "coarse_label_names.txt",
        }
    }

    /// Bytes of one record (labels, then the image).
    pub fn record_bytes(self) -> usize {
        match self {
            Cifar::Ten => 1 + IMAGE_BYTES,
            Cifar::Fine | Cifar::Coarse => 2 + IMAGE_BYTES,
        }
    }
}

/// Parse the records of one file: images (channels first) and labels.
pub fn parse(bytes: &[u8], which: Cifar, path: &Path) -> Result<(Vec<u8>, Vec<u32>)> {
    let rec = which.record_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        return Err(Error::bad_data(
            path,
            format!(
                "{} bytes are not whole records of {rec} bytes (label{} then a 3×32×32 image)",
                bytes.len(),
                if rec == 1 + IMAGE_BYTES { "" } else { "s" }
            ),
        ));
    }
    let skip = rec - IMAGE_BYTES;
    let mut images = Vec::with_capacity(bytes.len() / rec * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(bytes.len() / rec);
    for r in bytes.chunks_exact(rec) {
        labels.push(match which {
            Cifar::Ten | Cifar::Coarse => r[0] as u32,
            Cifar::Fine => r[1] as u32,
        });
        images.extend_from_slice(&r[skip..]);
    }
    Ok((images, labels))
}

/// Load a CIFAR folder (see the module's description): the training files, the test file when
/// present, and the class names when the names file is there.
pub fn load(dir: &Path, which: Cifar) -> Result<Splits> {
    let dir = if dir.join(which.sub_folder()).is_dir() {
        dir.join(which.sub_folder())
    } else {
        dir.to_path_buf()
    };
    if !dir.is_dir() {
        return Err(Error::bad_data(&dir, "is not a folder"));
    }
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| Error::io(p, e));
    let mut images = Vec::new();
    let mut labels = Vec::new();
    let train_files: Vec<PathBuf> = which.train_files().iter().map(|f| dir.join(f)).collect();
    if !train_files.iter().any(|f| f.is_file()) {
        return Err(Error::bad_data(
            &dir,
            format!(
                "holds none of {} (the CIFAR binary version)",
                which.train_files().join(", ")
            ),
        ));
    }
    for f in train_files.iter().filter(|f| f.is_file()) {
        let (i, l) = parse(&read(f)?, which, f)?;
        images.extend(i);
        labels.extend(l);
    }
    let shape = SampleShape::Image { c: 3, h: 32, w: 32 };
    let train = Dataset::from_chw(shape, images, labels)?;
    let test_path = dir.join(which.test_file());
    let test = if test_path.is_file() {
        let (i, l) = parse(&read(&test_path)?, which, &test_path)?;
        Some(Dataset::from_chw(shape, i, l)?)
    } else {
        None
    };
    let names_path = dir.join(which.names_file());
    let names = if names_path.is_file() {
        let text = std::fs::read_to_string(&names_path).map_err(|e| Error::io(&names_path, e))?;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        Vec::new()
    };
    Splits::new(train, test, names, &dir)
}
