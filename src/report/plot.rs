//! Training curves as a PNG: loss on the left, accuracy on the right, train and test in each.
//!
//! Drawn with `imageproc` and an embedded DejaVu Sans, so plotting needs no system fonts and
//! looks the same everywhere.

use super::EpochMetrics;
use crate::{Error, Result};
use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{
    draw_antialiased_line_segment_mut, draw_filled_circle_mut, draw_filled_rect_mut,
    draw_hollow_rect_mut, draw_line_segment_mut, draw_text_mut, text_size,
};
use imageproc::pixelops::interpolate;
use imageproc::rect::Rect;
use std::path::Path;

/// Width of the image in pixels.
pub const WIDTH: u32 = 900;
/// Height of the image in pixels.
pub const HEIGHT: u32 = 400;

/// DejaVu Sans (Bitstream Vera license, see `assets/fonts/README.md`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const TEXT: Rgb<u8> = Rgb([30, 30, 30]);
const AXIS: Rgb<u8> = Rgb([80, 80, 80]);
const GRID: Rgb<u8> = Rgb([228, 228, 228]);
const MUTED: Rgb<u8> = Rgb([150, 150, 150]);
/// matplotlib's first two colours, familiar to most readers.
const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
const TEST: Rgb<u8> = Rgb([255, 127, 14]);

/// Series with at most this many points get a marker on every point; longer ones only on
/// isolated points (which would otherwise be invisible).
const MARKERS_UP_TO: usize = 30;

/// Plot `metrics` to a [`WIDTH`]×[`HEIGHT`] PNG at `path` (written atomically) with `title` on
/// top. Handles any number of epochs including none; NaN and infinite values are left out of
/// the curves.
pub fn plot_metrics(path: impl AsRef<Path>, metrics: &[EpochMetrics], title: &str) -> Result<()> {
    let path = path.as_ref();
    let img = render_metrics(metrics, title);
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    crate::util::atomic_write(path, &png)
}

/// Draw the plot that [`plot_metrics`] saves.
pub fn render_metrics(metrics: &[EpochMetrics], title: &str) -> RgbImage {
    let font = FontRef::try_from_slice(FONT).expect("the embedded font parses");
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, WHITE);

    let (tw, _) = text_size(PxScale::from(22.0), &font, title);
    draw_text_mut(
        &mut img,
        TEXT,
        (WIDTH as i32 - tw as i32) / 2,
        8,
        PxScale::from(22.0),
        &font,
        title,
    );

    let series = |label, color, get: fn(&EpochMetrics) -> f32| Series {
        label,
        color,
        points: metrics
            .iter()
            .map(|m| (m.epoch as f64, get(m) as f64))
            .collect(),
    };
    let loss = [
        series("train", TRAIN, |m| m.train_loss),
        series("test", TEST, |m| m.test_loss),
    ];
    let acc = [
        series("train", TRAIN, |m| m.train_acc),
        series("test", TEST, |m| m.test_acc),
    ];
    let last_test_acc = metrics
        .iter()
        .rev()
        .map(|m| m.test_acc)
        .find(|a| a.is_finite());
    let acc_title = match last_test_acc {
        Some(a) => format!("Accuracy (last test {:.2}%)", 100.0 * a),
        None => "Accuracy".to_string(),
    };

    let half = WIDTH / 2;
    let panels = [
        Panel {
            x0: 0,
            title: "Cross-entropy loss".into(),
            series: &loss,
            limits: (f64::NEG_INFINITY, f64::INFINITY),
            percent: false,
        },
        Panel {
            x0: half,
            title: acc_title,
            series: &acc,
            limits: (0.0, 1.0),
            percent: true,
        },
    ];
    for p in &panels {
        p.draw(&mut img, &font, half);
    }
    img
}

/// One line on a panel; points are (epoch, value), values may be NaN.
struct Series {
    label: &'static str,
    color: Rgb<u8>,
    points: Vec<(f64, f64)>,
}

/// One half of the image.
struct Panel<'a> {
    /// Left edge of the panel in the image.
    x0: u32,
    title: String,
    series: &'a [Series],
    /// Bounds the y axis may not cross (accuracy cannot leave 0..=1).
    limits: (f64, f64),
    /// Label y ticks as percentages.
    percent: bool,
}

/// A linear axis: its range and the tick positions inside it.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    /// Decimal exponent of the tick step, for choosing label precision.
    step_exp: i32,
}

impl Panel<'_> {
    fn draw(&self, img: &mut RgbImage, font: &FontRef<'_>, width: u32) {
        let small = PxScale::from(13.0);
        let finite = |f: fn(&(f64, f64)) -> f64| {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(f)
                .collect::<Vec<f64>>()
        };
        let xs = finite(|p| p.0);
        let ys = finite(|p| p.1);

        let x_axis = epoch_axis(&xs);
        let y_axis = value_axis(&ys, self.limits);
        let y_labels: Vec<String> = y_axis
            .ticks
            .iter()
            .map(|&v| tick_label(v, y_axis.step_exp, self.percent))
            .collect();
        let label_w = y_labels
            .iter()
            .map(|l| text_size(small, font, l).0)
            .max()
            .unwrap_or(0);

        // The plot area; its left edge leaves room for the widest y label.
        let left = (self.x0 + 16 + label_w + 6) as f32;
        let right = (self.x0 + width - 22) as f32;
        let (top, bottom) = (72.0f32, (HEIGHT - 52) as f32);
        let px =
            |x: f64| left + ((x - x_axis.lo) / (x_axis.hi - x_axis.lo)) as f32 * (right - left);
        let py =
            |y: f64| bottom - ((y - y_axis.lo) / (y_axis.hi - y_axis.lo)) as f32 * (bottom - top);

        let title = PxScale::from(16.0);
        let (tw, _) = text_size(title, font, &self.title);
        let cx = ((left + right) / 2.0) as i32;
        draw_text_mut(img, TEXT, cx - tw as i32 / 2, 44, title, font, &self.title);

        let has_data = !xs.is_empty();
        if has_data {
            for (&v, label) in y_axis.ticks.iter().zip(&y_labels) {
                let y = py(v);
                draw_line_segment_mut(img, (left, y), (right, y), GRID);
                draw_line_segment_mut(img, (left - 4.0, y), (left, y), AXIS);
                let (w, h) = text_size(small, font, label);
                draw_text_mut(
                    img,
                    TEXT,
                    left as i32 - 7 - w as i32,
                    y as i32 - h as i32 / 2,
                    small,
                    font,
                    label,
                );
            }
            for &v in &x_axis.ticks {
                let x = px(v);
                draw_line_segment_mut(img, (x, top), (x, bottom), GRID);
                draw_line_segment_mut(img, (x, bottom), (x, bottom + 4.0), AXIS);
                let label = format!("{v:.0}");
                let (w, _) = text_size(small, font, &label);
                draw_text_mut(
                    img,
                    TEXT,
                    x as i32 - w as i32 / 2,
                    bottom as i32 + 6,
                    small,
                    font,
                    &label,
                );
            }
        }
        let (w, _) = text_size(small, font, "epoch");
        draw_text_mut(
            img,
            TEXT,
            cx - w as i32 / 2,
            bottom as i32 + 26,
            small,
            font,
            "epoch",
        );
        draw_hollow_rect_mut(
            img,
            Rect::at(left as i32, top as i32)
                .of_size((right - left) as u32 + 1, (bottom - top) as u32 + 1),
            AXIS,
        );
        if !has_data {
            let (w, h) = text_size(title, font, "no data");
            let cy = ((top + bottom) / 2.0) as i32;
            draw_text_mut(
                img,
                MUTED,
                cx - w as i32 / 2,
                cy - h as i32 / 2,
                title,
                font,
                "no data",
            );
            return;
        }

        let mut pixels = Vec::new();
        for s in self.series {
            let pts: Vec<Option<(f32, f32)>> = s
                .points
                .iter()
                .map(|&(x, y)| (x.is_finite() && y.is_finite()).then(|| (px(x), py(y))))
                .collect();
            let n_finite = pts.iter().flatten().count();
            for (i, p) in pts.iter().enumerate() {
                let Some(p) = *p else { continue };
                pixels.push(p);
                let next = pts.get(i + 1).copied().flatten();
                if let Some(q) = next {
                    thick_line(img, p, q, s.color);
                    // Sample the segment too, so the legend avoids lines as well as points.
                    let steps = ((q.0 - p.0).hypot(q.1 - p.1) / 4.0).ceil() as usize;
                    pixels.extend((1..steps).map(|k| {
                        let t = k as f32 / steps as f32;
                        (p.0 + t * (q.0 - p.0), p.1 + t * (q.1 - p.1))
                    }));
                }
                let prev = i.checked_sub(1).and_then(|j| pts[j]);
                if n_finite <= MARKERS_UP_TO || (prev.is_none() && next.is_none()) {
                    draw_filled_circle_mut(
                        img,
                        (p.0.round() as i32, p.1.round() as i32),
                        3,
                        s.color,
                    );
                }
            }
        }
        self.legend(img, font, (left, top, right, bottom), &pixels);
    }

    /// Draw the legend in a corner of the plot area that no curve passes through (`points`:
    /// markers and samples along the lines), or, if every corner is busy, in one row under the
    /// axes, right-aligned beside the `epoch` label, so it never hides data.
    fn legend(
        &self,
        img: &mut RgbImage,
        font: &FontRef<'_>,
        (left, top, right, bottom): (f32, f32, f32, f32),
        points: &[(f32, f32)],
    ) {
        let scale = PxScale::from(13.0);
        let row_h = 18;
        // Each entry is a line sample with a marker (32 px), a gap, then the label.
        let entry_w = |s: &Series| 38 + text_size(scale, font, s.label).0 as i32;
        let draw_entry = |img: &mut RgbImage, s: &Series, x: i32, cy: i32| {
            let (xf, yf) = (x as f32, cy as f32);
            thick_line(img, (xf + 8.0, yf), (xf + 32.0, yf), s.color);
            draw_filled_circle_mut(img, (x + 20, cy), 3, s.color);
            let (_, th) = text_size(scale, font, s.label);
            draw_text_mut(img, TEXT, x + 38, cy - th as i32 / 2, scale, font, s.label);
        };

        let w = self.series.iter().map(entry_w).max().unwrap_or(0) + 6;
        let h = row_h * self.series.len() as i32 + 8;
        let margin = 8;
        let corners = [
            (right as i32 - margin - w, top as i32 + margin),
            (right as i32 - margin - w, bottom as i32 - margin - h),
            (left as i32 + margin, top as i32 + margin),
            (left as i32 + margin, bottom as i32 - margin - h),
        ];
        let free = |&(x, y): &(i32, i32)| {
            !points.iter().any(|p| {
                (x - margin..=x + w + margin).contains(&(p.0 as i32))
                    && (y - margin..=y + h + margin).contains(&(p.1 as i32))
            })
        };
        if let Some((x, y)) = corners.into_iter().find(free) {
            let rect = Rect::at(x, y).of_size(w as u32, h as u32);
            draw_filled_rect_mut(img, rect, WHITE);
            draw_hollow_rect_mut(img, rect, MUTED);
            for (i, s) in self.series.iter().enumerate() {
                draw_entry(img, s, x, y + 4 + row_h * i as i32 + row_h / 2);
            }
        } else {
            let total: i32 = self.series.iter().map(entry_w).sum();
            let mut x = right as i32 - total;
            for s in self.series {
                draw_entry(img, s, x, bottom as i32 + 34);
                x += entry_w(s);
            }
        }
    }
}

/// A two-pixel antialiased line: the segment plus a copy shifted across its main direction.
fn thick_line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), color: Rgb<u8>) {
    let r = |p: (f32, f32)| (p.0.round() as i32, p.1.round() as i32);
    let (a, b) = (r(a), r(b));
    let shift = if (b.0 - a.0).abs() >= (b.1 - a.1).abs() {
        (0, 1)
    } else {
        (1, 0)
    };
    draw_antialiased_line_segment_mut(img, a, b, color, interpolate);
    let s = |p: (i32, i32)| (p.0 + shift.0, p.1 + shift.1);
    draw_antialiased_line_segment_mut(img, s(a), s(b), color, interpolate);
}

/// Round `raw` up to 1, 2 or 5 × 10^k; returns the step and k.
fn nice_step(raw: f64) -> (f64, i32) {
    let k = raw.log10().floor() as i32;
    let base = 10f64.powi(k);
    match raw / base {
        f if f <= 1.0 => (base, k),
        f if f <= 2.0 => (2.0 * base, k),
        f if f <= 5.0 => (5.0 * base, k),
        _ => (10.0 * base, k + 1),
    }
}

/// Multiples of a nice step inside [lo, hi], about `target` of them.
fn ticks_in(lo: f64, hi: f64, target: f64, min_step: f64) -> (Vec<f64>, i32) {
    let (mut step, mut k) = nice_step((hi - lo) / target);
    if step < min_step {
        (step, k) = (min_step, min_step.log10().floor() as i32);
    }
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|i| i as f64 * step).collect(), k)
}

/// The x axis: epochs, integer ticks, a little margin so end markers clear the frame.
fn epoch_axis(xs: &[f64]) -> Axis {
    let (lo, hi) = min_max(xs).unwrap_or((1.0, 1.0));
    let (lo, hi) = if hi > lo {
        let pad = (hi - lo) * 0.03;
        (lo - pad, hi + pad)
    } else {
        // A single epoch: centre it.
        (lo - 0.5, hi + 0.5)
    };
    // Ticks only where there are epochs: no "0" left of epoch 1.
    let (ticks, step_exp) = match min_max(xs) {
        Some((a, b)) if b > a => ticks_in(a, b, 10.0, 1.0),
        _ => ticks_in(lo, hi, 10.0, 1.0),
    };
    Axis {
        lo,
        hi,
        ticks,
        step_exp,
    }
}

/// The y axis: data range plus 5% margin, never zero-width, kept within `limits`.
fn value_axis(ys: &[f64], limits: (f64, f64)) -> Axis {
    let (lo, hi) = match min_max(ys) {
        None => (0.0, 1.0),
        Some((lo, hi)) => {
            let spread = hi - lo;
            // A constant series still needs a visible range around it.
            let pad = if spread > 1e-9 * hi.abs().max(1.0) {
                spread * 0.05
            } else {
                (hi.abs() * 0.05).max(0.05)
            };
            let lo = (lo - pad).max(limits.0);
            let hi = (hi + pad).min(limits.1);
            if hi > lo {
                (lo, hi)
            } else {
                // Clamping collapsed it (data outside `limits`): fall back to the data range.
                (lo - pad, hi + pad)
            }
        }
    };
    let (ticks, step_exp) = ticks_in(lo, hi, 5.0, 0.0);
    Axis {
        lo,
        hi,
        ticks,
        step_exp,
    }
}

fn min_max(v: &[f64]) -> Option<(f64, f64)> {
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

/// Label a y tick with just enough decimals for its step (`step_exp` = log10 of the step).
fn tick_label(v: f64, step_exp: i32, percent: bool) -> String {
    let (v, exp) = if percent {
        (v * 100.0, step_exp + 2)
    } else {
        (v, step_exp)
    };
    let suffix = if percent { "%" } else { "" };
    if v == 0.0 {
        return format!("0{suffix}");
    }
    // Very large or small steps (a diverged loss) read better in scientific notation.
    if !(-5..=6).contains(&exp) {
        return format!("{v:.1e}{suffix}");
    }
    let decimals = (-exp).max(0) as usize;
    format!("{v:.decimals$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(n: usize) -> Vec<EpochMetrics> {
        (1..=n)
            .map(|e| {
                let t = e as f32;
                EpochMetrics {
                    epoch: e,
                    train_loss: 0.6 / t,
                    train_acc: 1.0 - 0.08 / t,
                    test_loss: 0.5 / t + 0.02,
                    test_acc: 1.0 - 0.07 / t - 0.005,
                    seconds: 2.0,
                    images_per_sec: 30000.0,
                }
            })
            .collect()
    }

    fn check_png(path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
    }

    /// Whether `img` has a pixel close to `c`.
    fn has_colour(img: &RgbImage, c: Rgb<u8>) -> bool {
        img.pixels()
            .any(|p| p.0.iter().zip(c.0).all(|(&a, b)| a.abs_diff(b) < 8))
    }

    #[test]
    fn writes_pngs_for_one_and_ten_epochs() {
        let dir = tempfile::tempdir().unwrap();
        for n in [1, 10] {
            let p = dir.path().join(format!("curves{n}.png"));
            plot_metrics(&p, &metrics(n), "784-512-10, SGD lr 0.1").unwrap();
            check_png(&p);
        }
        if let Ok(d) = std::env::var("WGTRAIN_PLOT_DIR") {
            // Handy for looking at the result: WGTRAIN_PLOT_DIR=/tmp cargo test --lib report
            for n in [1, 10, 60] {
                let img = render_metrics(&metrics(n), &format!("{n} epochs"));
                img.save(Path::new(&d).join(format!("wgtrain_plot_{n}.png")))
                    .unwrap();
            }
        }
    }

    #[test]
    fn single_epoch_is_drawn_with_markers() {
        let img = render_metrics(&metrics(1), "one");
        assert!(has_colour(&img, TRAIN));
        assert!(has_colour(&img, TEST));
    }

    #[test]
    fn nan_constant_and_empty_series_do_not_panic() {
        let mut m = metrics(5);
        m[2].test_loss = f32::NAN;
        m[3].train_loss = f32::INFINITY;
        for x in &mut m {
            x.train_acc = 1.0;
        }
        let _ = render_metrics(&m, "odd values");
        let all_nan: Vec<_> = metrics(3)
            .into_iter()
            .map(|mut x| {
                x.train_loss = f32::NAN;
                x.test_loss = f32::NAN;
                x.train_acc = f32::NAN;
                x.test_acc = f32::NAN;
                x
            })
            .collect();
        let _ = render_metrics(&all_nan, "all NaN");
        let img = render_metrics(&[], "empty");
        assert!(!has_colour(&img, TRAIN));
        let mut huge = metrics(4);
        huge[0].train_loss = 1e30;
        let _ = render_metrics(&huge, "diverged");
    }

    #[test]
    fn axes_are_never_zero_width() {
        for ys in [vec![0.0], vec![1.0, 1.0], vec![-3.0], vec![1e30], vec![]] {
            let a = value_axis(&ys, (f64::NEG_INFINITY, f64::INFINITY));
            assert!(a.hi > a.lo, "{ys:?}");
            assert!(!a.ticks.is_empty(), "{ys:?}");
        }
        let a = value_axis(&[1.0], (0.0, 1.0));
        assert!(a.hi > a.lo && a.hi <= 1.0);
        let a = epoch_axis(&[7.0]);
        assert_eq!(a.ticks, vec![7.0]);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick_label(0.25, -2, false), "0.25");
        assert_eq!(tick_label(0.975, -3, true), "97.5%");
        assert_eq!(tick_label(1.0, -1, true), "100%");
        assert_eq!(tick_label(-0.0, -1, false), "0");
        assert_eq!(tick_label(0.4, -1, false), "0.4");
        assert_eq!(tick_label(2e9, 9, false), "2.0e9");
    }
}
