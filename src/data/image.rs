//! Turning a picture of a digit into a network input prepared the way MNIST's creators
//! prepared theirs.
//!
//! One pipeline, [`digit_input`], serves every front end: `wgtrain predict` reaches it through
//! [`load_digit`] (a PNG or JPEG file), the web page and the JavaScript API through
//! [`rgba_input`] (the RGBA bytes a canvas gives). The steps, after LeCun, Cortes and Burges'
//! description of MNIST (digits "size normalized to fit in a 20x20 pixel box while preserving
//! their aspect ratio", anti-aliased, then "centered in a 28x28 image by computing the center of
//! mass of the pixels"):
//!
//! 1. grayscale, any alpha composited over white paper (`flatten_on_white`);
//! 2. inverted when the border is light on average, in integers, so that pen on paper becomes
//!    bright ink on black and a picture and its negative give identical inputs;
//! 3. the background level (the border's median) mapped to black, levels stretched linearly so
//!    full ink stays full: a photo of grey paper gets a black background; a picture whose border
//!    is black, such as every MNIST digit and the page's drawing pad, is left as it is;
//! 4. cropped to the bounding box of the ink, the pixels brighter than [`INK_LEVEL`], plus a
//!    margin of one output pixel for the fainter fringe;
//! 5. resized, keeping the aspect ratio, so that the ink's longer side fills the box (20 pixels
//!    for a 28×28 input, 20/28 of the target in general), with a triangle filter that the
//!    `image` crate widens by the shrink factor when shrinking (area averaging: anti-aliased);
//! 6. placed in the `rows × cols` input with its centre of mass on pixel `(rows/2, cols/2)`
//!    (integer division), the shift rounded to whole pixels.
//!
//! A digit written anywhere on a large canvas, at any size, thus gives the same kind of input
//! as the centred MNIST digits the network was trained on. MNIST's own digits pass through
//! unchanged: their ink's box is already 20 pixels on its longer side, their fringe lies within
//! a pixel of it and their centre of mass rounds to pixel (14, 14). That holds for all 1,000
//! test digits of the committed sample (`tests/data.rs` checks the ones in `assets/digits`);
//! of its 2,000 training digits, 4 change slightly (a box of 19, a fringe 2 pixels out).

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageReader, Luma, RgbaImage};

use crate::{Error, Result};

/// A pixel is ink when it is brighter than this (of 255) once the background is black.
///
/// Any level from 0 to 64 gives every digit of the committed MNIST sample the same bounding box
/// (20 pixels on the longer side), so the level does not matter for MNIST-like input. It has to
/// stay above what is not ink on a real picture: JPEG ringing and noise on flat paper, a few
/// levels to a few tens; a scanner's or camera's noise once the paper's level is mapped to
/// black. At 1/8 of full scale the faint anti-aliased fringe of a stroke may fall outside the
/// box and be cropped, which loses at most 1/8 of a pixel's brightness per fringe pixel.
pub const INK_LEVEL: u8 = 32;

/// Why a picture gives no network input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PictureError {
    /// The requested input size is empty or too large.
    #[error("target size {rows}×{cols} is empty or too large")]
    Target {
        /// Requested rows.
        rows: usize,
        /// Requested columns.
        cols: usize,
    },
    /// The picture has no pixels.
    #[error("image is empty")]
    Empty,
    /// RGBA bytes whose count is not `width · height · 4`.
    #[error("{len} bytes of RGBA are not {width}×{height} pixels of 4 bytes")]
    RgbaSize {
        /// Bytes given.
        len: usize,
        /// Width given.
        width: u32,
        /// Height given.
        height: u32,
    },
    /// Nothing stands out from the background: a blank picture holds no digit to read.
    #[error("no digit found: every pixel is within {INK_LEVEL} levels (of 255) of the background")]
    NoInk,
}

/// Load a PNG or JPEG of a single digit as `rows * cols` floats in `[0, 1]`, row-major,
/// bright digit on a dark background like MNIST, prepared by [`digit_input`].
///
/// Errors: [`Error::InvalidSetting`] for an empty target size, an I/O error for a file that cannot
/// be read, and [`Error::BadImage`] naming the file for one that is not a PNG or JPEG, cannot be
/// decoded, is empty, or shows no digit ([`PictureError::NoInk`]).
pub fn load_digit(path: &Path, rows: usize, cols: usize) -> Result<Vec<f32>> {
    let bad = |reason: String| Error::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    if let Err(e) = target_dims(rows, cols) {
        return Err(Error::setting(
            crate::error::Setting::ImageSize,
            e.to_string(),
        ));
    }
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
    digit_input(&flatten_on_white(&img), rows, cols).map_err(|e| bad(e.to_string()))
}

/// The network input for a picture given as RGBA bytes, row-major, 4 bytes a pixel (what a
/// browser canvas's `getImageData` gives): the same input [`load_digit`] makes from a PNG of
/// the same pixels.
pub fn rgba_input(
    rgba: &[u8],
    width: u32,
    height: u32,
    rows: usize,
    cols: usize,
) -> std::result::Result<Vec<f32>, PictureError> {
    let size = PictureError::RgbaSize {
        len: rgba.len(),
        width,
        height,
    };
    let want = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(4));
    if want != Some(rgba.len()) {
        return Err(size);
    }
    let img = RgbaImage::from_raw(width, height, rgba.to_vec()).ok_or(size)?;
    digit_input(
        &flatten_on_white(&DynamicImage::ImageRgba8(img)),
        rows,
        cols,
    )
}

/// The network input for a grayscale picture of one digit: `rows * cols` floats in `[0, 1]`,
/// row-major, bright ink on black, inverted, cropped, scaled and centred as the module's
/// documentation describes.
///
/// A picture with no pixel brighter than [`INK_LEVEL`] above its background is refused with
/// [`PictureError::NoInk`] rather than read as some digit: a blank canvas holds none, and the
/// network's answer for an all-black input means nothing.
pub fn digit_input(
    gray: &GrayImage,
    rows: usize,
    cols: usize,
) -> std::result::Result<Vec<f32>, PictureError> {
    let (box_h, box_w) = target_dims(rows, cols)?;
    if gray.width() == 0 || gray.height() == 0 {
        return Err(PictureError::Empty);
    }
    // Invert in the integer domain so a picture and its negative give identical inputs.
    let invert = border_is_light(gray);
    let mut ink = gray.clone();
    if invert {
        image::imageops::invert(&mut ink);
    }
    let bg = border_median(&ink);
    if bg == u8::MAX {
        return Err(PictureError::NoInk);
    }
    if bg > 0 {
        // [bg, 255] → [0, 255], rounded; below bg → 0.
        let span = 255 - bg as u32;
        for p in ink.pixels_mut() {
            let v = p.0[0].saturating_sub(bg) as u32;
            p.0[0] = ((v * 255 + span / 2) / span) as u8;
        }
    }
    let (x0, y0, bw, bh) = ink_box(&ink).ok_or(PictureError::NoInk)?;
    // Fit bw × bh into the box keeping its aspect ratio: the longer side (relative to the
    // box) fills it.
    let scale = f64::min(box_w as f64 / bw as f64, box_h as f64 / bh as f64);
    let tw = ((bw as f64 * scale).round() as u32).clamp(1, box_w);
    let th = ((bh as f64 * scale).round() as u32).clamp(1, box_h);
    // The crop keeps a margin of one target pixel (1/scale source pixels rounded up, at
    // least one; fewer at the picture's edge) around the ink's box: the fringe fainter than INK_LEVEL, and what the
    // filter needs to anti-alias the box's edges, stay in; at scale 1 the crop is copied as it
    // is.
    let m = (1.0 / scale).ceil() as u32;
    let (w, h) = ink.dimensions();
    let side = |room: u32| {
        let src = m.min(room);
        (src, (src as f64 * scale).round() as u32)
    };
    let (left, left_t) = side(x0);
    let (right, right_t) = side(w - x0 - bw);
    let (top, top_t) = side(y0);
    let (bottom, bottom_t) = side(h - y0 - bh);
    let crop = image::imageops::crop_imm(
        &ink,
        x0 - left,
        y0 - top,
        left + bw + right,
        top + bh + bottom,
    )
    .to_image();
    let small = image::imageops::resize(
        &crop,
        left_t + tw + right_t,
        top_t + th + bottom_t,
        FilterType::Triangle,
    );

    // Centre of mass in pixel-index coordinates, moved onto (rows/2, cols/2).
    let (mut m, mut mx, mut my) = (0u64, 0u64, 0u64);
    for (x, y, p) in small.enumerate_pixels() {
        let v = p.0[0] as u64;
        m += v;
        mx += v * x as u64;
        my += v * y as u64;
    }
    let (cx, cy) = if m > 0 {
        (mx as f64 / m as f64, my as f64 / m as f64)
    } else {
        // The box held ink, but the filter can fade a thin faint stroke to nothing.
        (
            (small.width() - 1) as f64 / 2.0,
            (small.height() - 1) as f64 / 2.0,
        )
    };
    let ox = ((cols / 2) as f64 - cx).round() as i64;
    let oy = ((rows / 2) as f64 - cy).round() as i64;
    let mut out = vec![0f32; rows * cols];
    for (x, y, p) in small.enumerate_pixels() {
        let (tx, ty) = (x as i64 + ox, y as i64 + oy);
        if (0..cols as i64).contains(&tx) && (0..rows as i64).contains(&ty) {
            out[ty as usize * cols + tx as usize] = p.0[0] as f32 / 255.0;
        }
    }
    Ok(out)
}

/// The box the digit is fitted into for a `rows × cols` input, as (height, width): 20/28 of
/// each side, rounded, at least one pixel.
fn target_dims(rows: usize, cols: usize) -> std::result::Result<(u32, u32), PictureError> {
    let err = PictureError::Target { rows, cols };
    if rows == 0 || cols == 0 {
        return Err(err);
    }
    let side = |n: usize| -> Option<u32> {
        let b = n.checked_mul(20)?.checked_add(14)? / 28;
        u32::try_from(b.max(1)).ok()
    };
    // The input itself must be addressable.
    rows.checked_mul(cols).ok_or(err.clone())?;
    Ok((side(rows).ok_or(err.clone())?, side(cols).ok_or(err)?))
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

/// The outermost rows and columns, each pixel once.
fn border(g: &GrayImage) -> impl Iterator<Item = u8> + '_ {
    let (w, h) = g.dimensions();
    g.enumerate_pixels()
        .filter(move |(x, y, _)| *x == 0 || *y == 0 || *x == w - 1 || *y == h - 1)
        .map(|(_, _, p)| p.0[0])
}

/// Whether the border's mean is above mid-grey (exactly: its sum above 127.5 per pixel), the
/// test for "dark pen on light paper". A picture whose border mean is exactly 127.5 is the
/// one case where it and its negative are both left as they are.
fn border_is_light(g: &GrayImage) -> bool {
    let (sum, count) = border(g).fold((0u64, 0u64), |(s, c), v| (s + v as u64, c + 1));
    2 * sum > 255 * count
}

/// The border's median (the lower one for an even count): the background's level, robust to
/// a stroke that runs off the edge.
fn border_median(g: &GrayImage) -> u8 {
    let mut hist = [0u64; 256];
    let mut count = 0u64;
    for v in border(g) {
        hist[v as usize] += 1;
        count += 1;
    }
    let mut seen = 0;
    for (v, n) in hist.iter().enumerate() {
        seen += n;
        if 2 * seen >= count {
            return v as u8;
        }
    }
    u8::MAX
}

/// The bounding box `(x0, y0, width, height)` of the pixels brighter than [`INK_LEVEL`];
/// `None` when there are none.
fn ink_box(g: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in g.enumerate_pixels() {
        if p.0[0] > INK_LEVEL {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    (x0 != u32::MAX).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w × h` picture of `bg` with the rectangles `(x, y, w, h)` filled with `ink`.
    fn picture(w: u32, h: u32, bg: u8, ink: u8, rects: &[(u32, u32, u32, u32)]) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let inside = rects
                .iter()
                .any(|&(rx, ry, rw, rh)| (rx..rx + rw).contains(&x) && (ry..ry + rh).contains(&y));
            Luma([if inside { ink } else { bg }])
        })
    }

    /// An "L" of two strokes, `s` pixels thick, its corner at `(x, y)`, `len` long.
    fn ell(x: u32, y: u32, len: u32, s: u32) -> Vec<(u32, u32, u32, u32)> {
        vec![(x, y, s, len), (x, y + len - s, len / 2, s)]
    }

    /// Rows and columns of an input holding a value above half its maximum (the filter's
    /// anti-aliased fringe is fainter), and its centre of mass.
    fn extent(v: &[f32], cols: usize) -> (usize, usize, f64, f64) {
        let (mut rows_lit, mut cols_lit) = (vec![false; v.len() / cols], vec![false; cols]);
        let (mut m, mut mx, mut my) = (0.0, 0.0, 0.0);
        let half = v.iter().fold(0f32, |a, &b| a.max(b)) / 2.0;
        for (i, &p) in v.iter().enumerate() {
            if p > half {
                rows_lit[i / cols] = true;
                cols_lit[i % cols] = true;
            }
            m += p as f64;
            mx += p as f64 * (i % cols) as f64;
            my += p as f64 * (i / cols) as f64;
        }
        let count = |l: &[bool]| l.iter().filter(|&&b| b).count();
        (count(&rows_lit), count(&cols_lit), mx / m, my / m)
    }

    #[test]
    fn the_centre_of_mass_lands_on_the_centre_wherever_the_digit_was() {
        let corner = digit_input(&picture(200, 150, 0, 255, &ell(3, 2, 40, 6)), 28, 28).unwrap();
        let middle = digit_input(&picture(200, 150, 0, 255, &ell(120, 90, 40, 6)), 28, 28).unwrap();
        assert_eq!(corner, middle, "the same digit elsewhere on the canvas");
        let (r, c, cx, cy) = extent(&corner, 28);
        assert_eq!((r, c), (20, 10), "the longer side fills the 20-pixel box");
        // The shift is rounded to whole pixels: within half a pixel of (14, 14).
        assert!(
            (cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5,
            "{cx} {cy}"
        );
        // An "L" has its mass low and left of its box's centre: centring the mass, not the
        // box, puts the box's centre right of and above the input's centre.
        let lit = |x: usize, y: usize| corner[y * 28 + x] > 0.5;
        let left = (0..28).find(|&x| (0..28).any(|y| lit(x, y))).unwrap();
        let top = (0..28).find(|&y| (0..28).any(|x| lit(x, y))).unwrap();
        assert!(left + 5 > 15, "box from column {left}");
        assert!(top + 10 < 14, "box from row {top}");
    }

    #[test]
    fn a_thin_tall_stroke_stays_thin_and_tall() {
        let g = picture(100, 100, 0, 255, &[(30, 20, 1, 60)]);
        let v = digit_input(&g, 28, 28).unwrap();
        let (r, c, cx, cy) = extent(&v, 28);
        assert_eq!((r, c), (20, 1), "aspect ratio kept: 20 rows, 1 column");
        // 20 rows of equal mass: the centre is 9.5 rows into the stroke, the shift 4.5 rounds
        // to 5, so the mass sits half a pixel below row 14.
        assert!(
            (cx - 14.0).abs() < 1e-9 && (cy - 14.5).abs() < 1e-9,
            "{cx} {cy}"
        );
        // A wide one: 1 row, 20 columns.
        let g = picture(100, 100, 0, 255, &[(10, 70, 60, 1)]);
        let (r, c, _, _) = extent(&digit_input(&g, 28, 28).unwrap(), 28);
        assert_eq!((r, c), (1, 20));
    }

    #[test]
    fn a_light_background_is_inverted_and_a_negative_reads_the_same() {
        let strokes = ell(40, 30, 50, 7);
        let bright = digit_input(&picture(160, 120, 0, 255, &strokes), 28, 28).unwrap();
        let pen = digit_input(&picture(160, 120, 255, 0, &strokes), 28, 28).unwrap();
        assert_eq!(
            bright, pen,
            "dark ink on white reads as bright ink on black"
        );

        // A picture with grey levels everywhere and its exact negative: identical inputs.
        let g = GrayImage::from_fn(90, 70, |x, y| {
            let ink = (30..40).contains(&x) && (10..60).contains(&y);
            Luma([if ink {
                ((x * 5 + y) % 60) as u8
            } else {
                200 + ((x * 7 + y * 3) % 40) as u8
            }])
        });
        let mut neg = g.clone();
        image::imageops::invert(&mut neg);
        let a = digit_input(&g, 28, 28).unwrap();
        assert_eq!(a, digit_input(&neg, 28, 28).unwrap());
        assert!(a.iter().any(|&v| v > 0.5), "ink survives");
    }

    #[test]
    fn grey_paper_is_mapped_to_black() {
        // Pen at 40 on paper at 200, as a photo might be: inverted, paper at 55 and ink at 215;
        // the paper's level becomes 0, 255 stays 255, so the ink becomes 160·255/200 = 204:
        // the input of ink at 204 on black.
        let strokes = ell(20, 25, 30, 5);
        let photo = digit_input(&picture(120, 100, 200, 40, &strokes), 28, 28).unwrap();
        let clean = digit_input(&picture(120, 100, 0, 204, &strokes), 28, 28).unwrap();
        assert_eq!(photo, clean);
        // Without the mapping the grey paper would be ink and fill the box.
        assert_eq!(
            photo.iter().filter(|&&v| v > 0.0).count(),
            clean.iter().filter(|&&v| v > 0.0).count()
        );
        assert!(photo.iter().filter(|&&v| v > 0.0).count() < 28 * 28 / 4);
    }

    #[test]
    fn transparency_counts_as_white_paper() {
        let strokes = ell(15, 12, 36, 5);
        let (w, h) = (80, 64);
        let opaque = picture(w, h, 255, 0, &strokes);
        // Black ink on a transparent canvas, and grey semi-transparent paint where the paper
        // shows through at full strength: each pixel's composite over white is the opaque one.
        let mut rgba = Vec::new();
        for p in opaque.pixels() {
            rgba.extend_from_slice(&if p.0[0] == 0 {
                [0, 0, 0, 255]
            } else {
                [90, 10, 200, 0]
            });
        }
        let want = digit_input(&opaque, 28, 28).unwrap();
        assert_eq!(rgba_input(&rgba, w, h, 28, 28).unwrap(), want);
        // Opaque RGBA gives what the grayscale picture gives.
        let mut rgba = Vec::new();
        for p in opaque.pixels() {
            let v = p.0[0];
            rgba.extend_from_slice(&[v, v, v, 255]);
        }
        assert_eq!(rgba_input(&rgba, w, h, 28, 28).unwrap(), want);
    }

    #[test]
    fn a_blank_picture_is_refused_not_read() {
        for bg in [0, 128, 255] {
            let g = picture(50, 40, bg, bg, &[]);
            assert_eq!(
                digit_input(&g, 28, 28),
                Err(PictureError::NoInk),
                "level {bg}"
            );
        }
        // Faint marks within INK_LEVEL of the background are not ink.
        let faint = picture(50, 40, 255, 255 - INK_LEVEL, &[(10, 10, 5, 5)]);
        assert_eq!(digit_input(&faint, 28, 28), Err(PictureError::NoInk));
        let just = picture(50, 40, 255, 255 - INK_LEVEL - 1, &[(10, 10, 5, 5)]);
        assert!(digit_input(&just, 28, 28).is_ok());
        // All-transparent RGBA is white paper: blank too.
        assert_eq!(
            rgba_input(&[0; 4 * 6], 3, 2, 28, 28),
            Err(PictureError::NoInk)
        );
    }

    #[test]
    fn sizes_are_checked() {
        let g = picture(30, 30, 0, 255, &ell(5, 5, 20, 3));
        assert_eq!(
            digit_input(&g, 0, 28),
            Err(PictureError::Target { rows: 0, cols: 28 })
        );
        assert_eq!(
            digit_input(&GrayImage::new(0, 5), 28, 28),
            Err(PictureError::Empty)
        );
        assert!(matches!(
            rgba_input(&[0; 23], 3, 2, 28, 28),
            Err(PictureError::RgbaSize {
                len: 23,
                width: 3,
                height: 2
            })
        ));
        assert!(rgba_input(&[], u32::MAX, u32::MAX, 28, 28).is_err());
        // Other sizes: 16×20 fits the digit in an 11×14 box.
        let v = digit_input(&g, 16, 20).unwrap();
        assert_eq!(v.len(), 320);
        let (r, _, _, _) = extent(&v, 20);
        assert_eq!(r, 11);
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
    }
}
