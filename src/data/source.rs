//! A dataset source named in one string (the command line's `--data`): a format, a colon and
//! its files.

use std::path::PathBuf;
use std::str::FromStr;

use super::cifar::Cifar;
use super::{cifar, csv, folder, npy, npz, Splits};
use crate::error::Setting;
use crate::{Error, Result};

/// A features file and its labels file.
type Pair = (PathBuf, PathBuf);

/// Where a dataset is read from. The text forms ([`Source::from_str`], [`Source::FORMS`]):
///
/// - `idx:TRAIN_X,TRAIN_Y[,TEST_X,TEST_Y]`: IDX files of any rank (`[N, F]`, `[N, H, W]`,
///   `[N, C, H, W]`), raw or gzipped;
/// - `npy:X,Y[,TEST_X,TEST_Y]`: NumPy arrays, features uint8 (C order), labels any integer type;
/// - `npz:FILE` or a path ending in `.npz`: an archive of `x_train`, `y_train` and optionally
///   `x_test`, `y_test`;
/// - `cifar10:DIR`, `cifar100:DIR` (fine labels), `cifar100-coarse:DIR`: the binary releases;
/// - `images:ROOT[,HxW]`: torchvision's `ImageFolder` layout, resized to H×W when given;
/// - `csv:TRAIN[,TEST]`: a table of byte features and a label column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// IDX features and labels, training then optionally test.
    Idx {
        /// Training features and labels.
        train: (PathBuf, PathBuf),
        /// Test features and labels.
        test: Option<(PathBuf, PathBuf)>,
    },
    /// NumPy `.npy` features and labels, training then optionally test.
    Npy {
        /// Training features and labels.
        train: (PathBuf, PathBuf),
        /// Test features and labels.
        test: Option<(PathBuf, PathBuf)>,
    },
    /// A NumPy `.npz` archive.
    Npz(PathBuf),
    /// A CIFAR binary folder.
    Cifar(PathBuf, Cifar),
    /// An image folder, with the size to resize to.
    Images(PathBuf, Option<(usize, usize)>),
    /// CSV tables, training then optionally test.
    Csv(PathBuf, Option<PathBuf>),
}

impl Source {
    /// The text forms, for help and errors.
    pub const FORMS: &'static str =
        "idx:TRAIN_X,TRAIN_Y[,TEST_X,TEST_Y], npy:X,Y[,TEST_X,TEST_Y], \
         npz:FILE (or FILE.npz), cifar10:DIR, cifar100:DIR, cifar100-coarse:DIR, \
         images:ROOT[,HxW], csv:TRAIN[,TEST]";

    /// Read the source.
    pub fn load(&self) -> Result<Splits> {
        let pair = |(x, y): &(PathBuf, PathBuf), idx: bool| {
            if idx {
                super::load_idx(x, y)
            } else {
                npy::load_pair(x, y)
            }
        };
        match self {
            Source::Idx { train, test } | Source::Npy { train, test } => {
                let idx = matches!(self, Source::Idx { .. });
                let tr = pair(train, idx)?;
                let te = test.as_ref().map(|t| pair(t, idx)).transpose()?;
                Splits::new(tr, te, Vec::new(), &train.0)
            }
            Source::Npz(p) => npz::load(p),
            Source::Cifar(d, which) => cifar::load(d, *which),
            Source::Images(root, size) => folder::load(root, *size),
            Source::Csv(train, test) => csv::load(train, test.as_deref()),
        }
    }

    /// Whether the samples are photographs brought to the network's size by resizing (an
    /// image folder, CIFAR), rather than digits prepared as MNIST's were: how `predict` should
    /// prepare a picture for a model trained on them.
    pub fn pictures_resized(&self) -> bool {
        matches!(self, Source::Images(..) | Source::Cifar(..))
    }
}

impl FromStr for Source {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |r: String| Error::setting(Setting::Data, r);
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) if !k.is_empty() && !k.contains(['/', '\\', '.']) => (k, r),
            _ if s.ends_with(".npz") => ("npz", s),
            _ => {
                return Err(bad(format!(
                    "`{s}` names no format; expected one of {}",
                    Source::FORMS
                )))
            }
        };
        let parts: Vec<PathBuf> = rest
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        let count = |want: &[usize], form: &str| -> Result<()> {
            if want.contains(&parts.len()) {
                Ok(())
            } else {
                Err(bad(format!(
                    "`{s}` gives {} path{}; the form is {form}",
                    parts.len(),
                    if parts.len() == 1 { "" } else { "s" }
                )))
            }
        };
        let pairs = |form: &str| -> Result<(Pair, Option<Pair>)> {
            count(&[2, 4], form)?;
            let train = (parts[0].clone(), parts[1].clone());
            let test = (parts.len() == 4).then(|| (parts[2].clone(), parts[3].clone()));
            Ok((train, test))
        };
        Ok(match kind {
            "idx" => {
                let (train, test) = pairs("idx:TRAIN_X,TRAIN_Y[,TEST_X,TEST_Y]")?;
                Source::Idx { train, test }
            }
            "npy" => {
                let (train, test) = pairs("npy:X,Y[,TEST_X,TEST_Y]")?;
                Source::Npy { train, test }
            }
            "npz" => {
                count(&[1], "npz:FILE")?;
                Source::Npz(parts[0].clone())
            }
            "cifar10" | "cifar100" | "cifar100-coarse" => {
                count(&[1], &format!("{kind}:DIR"))?;
                let which = match kind {
                    "cifar10" => Cifar::Ten,
                    "cifar100" => Cifar::Fine,
                    _ => Cifar::Coarse,
                };
                Source::Cifar(parts[0].clone(), which)
            }
            "images" => {
                count(&[1, 2], "images:ROOT[,HxW]")?;
                let size = match parts.get(1) {
                    None => None,
                    Some(p) => {
                        let t = p.to_string_lossy();
                        Some(folder::parse_size(&t).ok_or_else(|| {
                            bad(format!(
                                "`{t}` in `{s}` is not an image size HxW like 32x32 (1 to 4096 each)"
                            ))
                        })?)
                    }
                };
                Source::Images(parts[0].clone(), size)
            }
            "csv" => {
                count(&[1, 2], "csv:TRAIN[,TEST]")?;
                Source::Csv(parts[0].clone(), parts.get(1).cloned())
            }
            other => {
                return Err(bad(format!(
                    "`{other}` in `{s}` is not a format; expected one of {}",
                    Source::FORMS
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_and_bad_ones_name_the_form() {
        let s: Source = "images:/d/pets,64x48".parse().unwrap();
        assert_eq!(s, Source::Images("/d/pets".into(), Some((64, 48))));
        let s: Source = "data/mine.npz".parse().unwrap();
        assert_eq!(s, Source::Npz("data/mine.npz".into()));
        let s: Source = "idx:a,b,c,d".parse().unwrap();
        assert!(matches!(s, Source::Idx { test: Some(_), .. }));
        assert_eq!(
            "cifar100-coarse:x".parse::<Source>().unwrap(),
            Source::Cifar("x".into(), Cifar::Coarse)
        );
        for (text, want) in [
            (
                "npy:a,b,c",
                "gives 3 paths; the form is npy:X,Y[,TEST_X,TEST_Y]",
            ),
            ("images:r,32", "is not an image size HxW"),
            ("tiff:x", "`tiff` in `tiff:x` is not a format"),
            ("plain/folder", "names no format"),
        ] {
            let e = text.parse::<Source>().unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.starts_with("invalid argument data source: "), "{e}");
        }
    }
}
