//! Image folders in torchvision's `ImageFolder` layout: `ROOT/train/<class>/*.png|jpg` and,
//! optionally, `ROOT/test/<class>/...`.
//!
//! As torchvision does: the classes are the sub-folders of `train`, sorted by name (Python's
//! `sorted`, i.e. by code point, which is byte order in UTF-8), a class's index its place in
//! that order; the images of a class are every PNG or JPEG file under its folder, nested
//! folders included, in sorted path order; other files are skipped. The test split uses the
//! training split's classes (a test class the training split lacks is an error).
//!
//! The images become 8-bit samples: one channel when every image of both splits is grayscale,
//! else three (RGB; grayscale images are repeated into three channels, alpha is dropped, as
//! torchvision's loader does with `convert("RGB")`). They are resized to the size given
//! (a triangle filter, widened when shrinking: anti-aliased, like torchvision's bilinear
//! `Resize`), or else must all share one size.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};

use super::{Dataset, SampleShape, Splits};
use crate::{Error, Result};

/// File extensions read (compared without case).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The sorted class folders of `split` (a `train` or `test` folder).
fn classes(split: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(split).map_err(|e| Error::io(split, e))? {
        let e = e.map_err(|e| Error::io(split, e))?;
        if e.path().is_dir() {
            let name = e.file_name().into_string().map_err(|n| {
                Error::bad_data(split.join(&n), "class folder name is not valid UTF-8")
            })?;
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Every image file under `dir`, nested folders included, in sorted path order.
fn image_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            image_files(&p, out)?;
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| EXTENSIONS.iter().any(|e| x.eq_ignore_ascii_case(e)))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// The (file, class index) pairs of one split, checking each class has an image.
fn list(split: &Path, names: &[String]) -> Result<Vec<(PathBuf, u32)>> {
    let mut files = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let dir = split.join(name);
        let before = files.len();
        let mut found = Vec::new();
        image_files(&dir, &mut found)?;
        files.extend(found.into_iter().map(|p| (p, k as u32)));
        if files.len() == before {
            return Err(Error::bad_data(
                &dir,
                format!("class folder holds no image ({})", EXTENSIONS.join(", ")),
            ));
        }
    }
    Ok(files)
}

fn decode(path: &Path) -> Result<DynamicImage> {
    let bad = |reason: String| Error::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| bad(format!("cannot decode image: {e}")))
}

/// Whether an image is grayscale (one channel, with or without alpha).
fn is_gray(img: &DynamicImage) -> bool {
    !img.color().has_color()
}

/// The bytes of `img` as `c` channels of `h × w`, channels-last, resized when its size differs.
pub fn pixels(img: &DynamicImage, c: usize, h: usize, w: usize) -> Vec<u8> {
    let img = if (img.height() as usize, img.width() as usize) != (h, w) {
        img.resize_exact(w as u32, h as u32, FilterType::Triangle)
    } else {
        img.clone()
    };
    if c == 1 {
        img.into_luma8().into_raw()
    } else {
        img.into_rgb8().into_raw()
    }
}

/// Load `root` (see the module's description), resizing every image to `size` (`(h, w)`) when
/// given. The class names are the training split's folder names.
pub fn load(root: &Path, size: Option<(usize, usize)>) -> Result<Splits> {
    let train_dir = root.join("train");
    if !train_dir.is_dir() {
        return Err(Error::bad_data(
            root,
            "has no `train` folder (an image folder holds train/<class>/*.png|jpg and optionally test/<class>/...)",
        ));
    }
    let names = classes(&train_dir)?;
    if names.is_empty() {
        return Err(Error::bad_data(&train_dir, "holds no class folders"));
    }
    let train_files = list(&train_dir, &names)?;
    let test_dir = root.join("test");
    let test_files = if test_dir.is_dir() {
        let test_names = classes(&test_dir)?;
        if let Some(extra) = test_names.iter().find(|n| !names.contains(n)) {
            return Err(Error::bad_data(
                test_dir.join(extra),
                "is a test class the training folder lacks",
            ));
        }
        let mut files = Vec::new();
        for n in &test_names {
            let k = names.iter().position(|m| m == n).expect("checked") as u32;
            let mut found = Vec::new();
            image_files(&test_dir.join(n), &mut found)?;
            files.extend(found.into_iter().map(|p| (p, k)));
        }
        files.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Some(files)
    } else {
        None
    };

    // Decode everything once; the channel count and size are decided over both splits.
    let decode_all = |files: &[(PathBuf, u32)]| -> Result<Vec<DynamicImage>> {
        files.iter().map(|(p, _)| decode(p)).collect()
    };
    let train_imgs = decode_all(&train_files)?;
    let test_imgs = match &test_files {
        Some(f) => decode_all(f)?,
        None => Vec::new(),
    };
    let all = train_files
        .iter()
        .zip(&train_imgs)
        .chain(test_files.iter().flatten().zip(&test_imgs));
    let c = if train_imgs.iter().chain(&test_imgs).all(is_gray) {
        1
    } else {
        3
    };
    let (h, w) = match size {
        Some(s) => s,
        None => {
            let mut first: Option<(&Path, u32, u32)> = None;
            for ((p, _), img) in all {
                match first {
                    None => first = Some((p.as_path(), img.width(), img.height())),
                    Some((q, w0, h0)) if (w0, h0) != (img.width(), img.height()) => {
                        return Err(Error::bad_data(
                            root,
                            format!(
                                "images differ in size: {} is {w0}×{h0} but {} is {}×{}; give a size to resize them to",
                                q.display(),
                                p.display(),
                                img.width(),
                                img.height()
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            let (_, w, h) = first.expect("a class holds an image");
            (h as usize, w as usize)
        }
    };
    let shape = SampleShape::Image { c, h, w };
    let build = |files: &[(PathBuf, u32)], imgs: &[DynamicImage]| -> Result<Dataset> {
        let mut features = Vec::with_capacity(imgs.len() * shape.len());
        for img in imgs {
            features.extend(pixels(img, c, h, w));
        }
        Dataset::new(shape, features, files.iter().map(|f| f.1).collect())
    };
    let train = build(&train_files, &train_imgs)?;
    let test = match &test_files {
        Some(f) if !f.is_empty() => Some(build(f, &test_imgs)?),
        _ => None,
    };
    Splits::new(train, test, names, root)
}

/// A picture file as a network input of `c` channels of `h × w` (channels-last, values in
/// [0, 1]), prepared as [`load`] prepares a folder's images: converted to gray or RGB and
/// resized.
pub fn load_picture(path: &Path, c: usize, h: usize, w: usize) -> Result<Vec<f32>> {
    if !matches!(c, 1 | 3) {
        return Err(Error::BadImage {
            path: path.to_path_buf(),
            reason: format!("the model takes {c} channels; pictures give 1 (gray) or 3 (RGB)"),
        });
    }
    let img = decode(path)?;
    Ok(pixels(&img, c, h, w)
        .into_iter()
        .map(|v| v as f32 / 255.0)
        .collect())
}

/// Parse an image size `HxW` (e.g. `32x32`).
pub fn parse_size(s: &str) -> Option<(usize, usize)> {
    let (h, w) = s.split_once(['x', 'X'])?;
    let (h, w) = (h.trim().parse().ok()?, w.trim().parse().ok()?);
    (h > 0 && w > 0 && h <= 4096 && w <= 4096).then_some((h, w))
}
