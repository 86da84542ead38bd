//! Turning a picture of a digit into a network input shaped like an MNIST sample.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageReader, Luma};

use crate::{Error, Result};

/// Load a PNG or JPEG of a single digit as `rows * cols` floats in `[0, 1]`, row-major,
/// bright digit on a dark background like MNIST.
///
/// The image is converted to grayscale (transparent areas count as white paper), resized to
/// `rows × cols` with a triangle filter (aspect ratio is not kept), and inverted when its border
/// is light on average, so that both "white on black" and "pen on paper" pictures work.
pub fn load_digit(path: &Path, rows: usize, cols: usize) -> Result<Vec<f32>> {
    let bad = |reason: String| Error::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    if rows == 0 || cols == 0 {
        return Err(Error::InvalidSetting {
            setting: crate::error::Setting::ImageSize,
            reason: format!("target size {rows}×{cols} is empty"),
        });
    }
    let (w, h) = match (u32::try_from(cols), u32::try_from(rows)) {
        (Ok(w), Ok(h)) => (w, h),
        _ => {
            return Err(Error::InvalidSetting {
                setting: crate::error::Setting::ImageSize,
                reason: format!("target size {rows}×{cols} is too large"),
            })
        }
    };
    let reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(bad("not a PNG or JPEG image (unrecognised content)".into()));
    }
    let img = reader
        .decode()
        .map_err(|e| bad(format!("cannot decode image: {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(bad("image is empty".into()));
    }

    let gray = flatten_on_white(&img);
    let invert = border_mean(&gray) > 127.0;
    let small = image::imageops::resize(&gray, w, h, FilterType::Triangle);
    // Invert in the integer domain so a picture and its negative give identical inputs.
    Ok(small
        .pixels()
        .map(|p| {
            let v = if invert { 255 - p.0[0] } else { p.0[0] };
            v as f32 / 255.0
        })
        .collect())
}

/// Grayscale with any alpha composited over white (a digit drawn on a transparent canvas is
/// almost always meant to be seen on white).
fn flatten_on_white(img: &DynamicImage) -> GrayImage {
    if !img.color().has_alpha() {
        return img.to_luma8();
    }
    let la = img.to_luma_alpha8();
    GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let [l, a] = la.get_pixel(x, y).0;
        let (l, a) = (l as u32, a as u32);
        Luma([((l * a + 255 * (255 - a) + 127) / 255) as u8])
    })
}

/// Mean of the outermost rows and columns: the background of a centred digit.
fn border_mean(g: &GrayImage) -> f32 {
    let (w, h) = g.dimensions();
    let (mut sum, mut count) = (0u64, 0u64);
    for y in 0..h {
        for x in 0..w {
            if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
                sum += g.get_pixel(x, y).0[0] as u64;
                count += 1;
            }
        }
    }
    sum as f32 / count.max(1) as f32
}
