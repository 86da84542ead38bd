//! Training curves as a PNG: loss on the left, accuracy on the right, train and test in each.
//!
//! Drawn with `plotters` into an in-memory RGB buffer, with an embedded DejaVu Sans registered
//! through plotters' `ab_glyph` support, so plotting needs no system fonts and looks the same
//! everywhere. The PNG is encoded with `image` and written atomically.

use super::EpochMetrics;
use crate::{Error, Result};
use image::RgbImage;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

/// Width of the image in pixels.
pub const WIDTH: u32 = 900;
/// Height of the image in pixels.
pub const HEIGHT: u32 = 400;

/// DejaVu Sans (Bitstream Vera license, see `assets/fonts/README.md`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The family name the embedded font is registered under.
const FAMILY: &str = "sans-serif";

const TEXT: RGBColor = RGBColor(30, 30, 30);
const AXIS: RGBColor = RGBColor(80, 80, 80);
const GRID: RGBColor = RGBColor(228, 228, 228);
const MUTED: RGBColor = RGBColor(150, 150, 150);
/// matplotlib's first two colours, familiar to most readers.
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const TEST: RGBColor = RGBColor(255, 127, 14);

/// Series with at most this many points get a marker on every point; longer ones only on
/// isolated points (which would otherwise be invisible).
const MARKERS_UP_TO: usize = 30;
/// Marker radius and line width in pixels.
const MARKER_R: i32 = 3;
const LINE_W: u32 = 2;

/// Any plotters drawing error, as text.
type DrawResult<T> = std::result::Result<T, String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("drawing the plot failed: {e}")
}

/// Register the embedded font with plotters (once per process).
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in, so parsing it cannot fail at run time if it did in the tests.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            log::warn!("the embedded plot font did not parse; text will be missing");
        }
    });
}

fn font(size: f64) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&TEXT)
}

/// Plot `metrics` to a [`WIDTH`]×[`HEIGHT`] PNG at `path` (written atomically) with `title` on
/// top. Handles any number of epochs including none; NaN and infinite values are left out of
/// the curves.
pub fn plot_metrics(path: impl AsRef<Path>, metrics: &[EpochMetrics], title: &str) -> Result<()> {
    let path = path.as_ref();
    let fail = |e: String| Error::io(path, std::io::Error::other(e));
    let img = render_metrics(metrics, title).map_err(fail)?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))?;
    crate::util::atomic_write(path, &png)
}

/// Draw the plot that [`plot_metrics`] saves.
pub fn render_metrics(metrics: &[EpochMetrics], title: &str) -> DrawResult<RgbImage> {
    register_font();
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, metrics, title)?;
        root.present().map_err(err)?;
    }
    RgbImage::from_raw(WIDTH, HEIGHT, buf).ok_or_else(|| err("buffer size"))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    metrics: &[EpochMetrics],
    title: &str,
) -> DrawResult<()> {
    root.fill(&WHITE).map_err(err)?;
    let body = root
        .margin(6, 0, 0, 0)
        .titled(title, font(22.0).pos(Pos::new(HPos::Center, VPos::Top)))
        .map_err(err)?;

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

    let halves = body.split_evenly((1, 2));
    let panels = [
        Panel {
            title: "Cross-entropy loss".into(),
            series: &loss,
            limits: (f64::NEG_INFINITY, f64::INFINITY),
            percent: false,
        },
        Panel {
            title: acc_title,
            series: &acc,
            limits: (0.0, 1.0),
            percent: true,
        },
    ];
    for (p, area) in panels.iter().zip(&halves) {
        p.draw(root, area)?;
    }
    Ok(())
}

/// One line on a panel; points are (epoch, value), values may be NaN.
struct Series {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

impl Series {
    /// Whether every point gets a marker (short series), not just isolated ones.
    fn marks_all(&self) -> bool {
        self.points.iter().filter(|p| finite(p)).count() <= MARKERS_UP_TO
    }
}

fn finite(p: &(f64, f64)) -> bool {
    p.0.is_finite() && p.1.is_finite()
}

/// One half of the image.
struct Panel<'a> {
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

/// Plotters maps values with the axis range and puts grid lines and labels at its ticks (bold
/// lines only; there are no light ones).
impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Axis, Axis>>;

impl Panel<'_> {
    /// Draw the panel into `area`; `root` is the whole image, for the legend's pixel geometry.
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        area: &DrawingArea<DB, Shift>,
    ) -> DrawResult<()> {
        let coords = |f: fn(&(f64, f64)) -> f64| {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|p| finite(p))
                .map(f)
                .collect::<Vec<f64>>()
        };
        let xs = coords(|p| p.0);
        let ys = coords(|p| p.1);
        let has_data = !xs.is_empty();

        let mut x_axis = epoch_axis(&xs);
        let mut y_axis = value_axis(&ys, self.limits);
        if !has_data {
            x_axis.ticks.clear();
            y_axis.ticks.clear();
        }
        let step_exp = y_axis.step_exp;
        let y_label = |v: &f64| tick_label(*v, step_exp, self.percent);
        let label_w = y_axis
            .ticks
            .iter()
            .map(|v| text_width(area, &y_label(v), &font(13.0)))
            .max()
            .unwrap_or(0);

        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, font(16.0))
            .margin_left(12)
            .margin_right(22)
            .margin_top(4)
            .x_label_area_size(40)
            .y_label_area_size(label_w + 12)
            .build_cartesian_2d(x_axis, y_axis)
            .map_err(err)?;
        chart
            .configure_mesh()
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .set_all_tick_mark_size(4)
            .label_style(font(13.0))
            .axis_desc_style(font(13.0))
            .x_desc("epoch")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&y_label)
            .draw()
            .map_err(err)?;

        // A frame all round (the mesh draws only the left and bottom axes).
        let plot = chart.plotting_area();
        let (px, py) = plot.get_pixel_range();
        let (left, right, top, bottom) = (px.start, px.end - 1, py.start, py.end - 1);
        root.draw(&Rectangle::new(
            [(left, top), (right, bottom)],
            AXIS.stroke_width(1),
        ))
        .map_err(err)?;

        if !has_data {
            let style = font(16.0)
                .color(&MUTED)
                .pos(Pos::new(HPos::Center, VPos::Center));
            root.draw_text("no data", &style, ((left + right) / 2, (top + bottom) / 2))
                .map_err(err)?;
            return Ok(());
        }

        let mut pixels = Vec::new();
        for s in self.series {
            self.draw_series(&mut chart, s, &mut pixels)?;
        }
        self.legend(root, (left, top, right, bottom), &pixels)
    }

    /// Draw one series: a line through each run of finite points, and markers on every point
    /// of a short series (else only on isolated points). Adds the pixels the series covers
    /// (points and samples along its lines) to `pixels`.
    fn draw_series<DB: DrawingBackend>(
        &self,
        chart: &mut Chart<'_, DB>,
        s: &Series,
        pixels: &mut Vec<(i32, i32)>,
    ) -> DrawResult<()> {
        let line = s.color.stroke_width(LINE_W);
        for run in s.points.split(|p| !finite(p)).filter(|r| !r.is_empty()) {
            if run.len() > 1 {
                chart
                    .draw_series(LineSeries::new(run.iter().copied(), line))
                    .map_err(err)?;
            }
            for w in run.windows(2) {
                // Sample the segment too, so the legend avoids lines as well as points.
                let (p, q) = (chart.backend_coord(&w[0]), chart.backend_coord(&w[1]));
                let (dx, dy) = ((q.0 - p.0) as f32, (q.1 - p.1) as f32);
                let steps = (dx.hypot(dy) / 4.0).ceil() as i32;
                pixels.extend((1..steps).map(|k| {
                    let t = k as f32 / steps as f32;
                    (p.0 + (t * dx) as i32, p.1 + (t * dy) as i32)
                }));
            }
            pixels.extend(run.iter().map(|p| chart.backend_coord(p)));
        }
        let all = s.marks_all();
        let isolated = |i: usize| {
            let prev = i
                .checked_sub(1)
                .and_then(|j| s.points.get(j))
                .filter(|p| finite(p));
            let next = s.points.get(i + 1).filter(|p| finite(p));
            prev.is_none() && next.is_none()
        };
        let markers = s
            .points
            .iter()
            .enumerate()
            .filter(|&(i, p)| finite(p) && (all || isolated(i)))
            .map(|(_, &p)| Circle::new(p, MARKER_R, s.color.filled()));
        chart.draw_series(markers).map_err(err)?;
        Ok(())
    }

    /// Draw the legend in a corner of the plot area that no curve passes through (`points`:
    /// markers and samples along the lines), or, if every corner is busy, in one row under the
    /// axes, right-aligned beside the `epoch` label, so it never hides data.
    fn legend<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        (left, top, right, bottom): (i32, i32, i32, i32),
        points: &[(i32, i32)],
    ) -> DrawResult<()> {
        let style = font(13.0).pos(Pos::new(HPos::Left, VPos::Center));
        let row_h = 18;
        // Each entry is a line sample (32 px, with a marker if the series has them), a gap, then
        // the label.
        let entry_w = |s: &Series| 38 + text_width(root, s.label, &style);
        let draw_entry = |s: &Series, x: i32, cy: i32| -> DrawResult<()> {
            let line = s.color.stroke_width(LINE_W);
            root.draw(&PathElement::new([(x + 8, cy), (x + 32, cy)], line))
                .map_err(err)?;
            if s.marks_all() {
                root.draw(&Circle::new((x + 20, cy), MARKER_R, s.color.filled()))
                    .map_err(err)?;
            }
            root.draw_text(s.label, &style, (x + 38, cy)).map_err(err)
        };

        let w = self.series.iter().map(entry_w).max().unwrap_or(0) + 6;
        let h = row_h * self.series.len() as i32 + 8;
        let margin = 8;
        let corners = [
            (right - margin - w, top + margin),
            (right - margin - w, bottom - margin - h),
            (left + margin, top + margin),
            (left + margin, bottom - margin - h),
        ];
        let free = |&(x, y): &(i32, i32)| {
            !points.iter().any(|p| {
                (x - margin..=x + w + margin).contains(&p.0)
                    && (y - margin..=y + h + margin).contains(&p.1)
            })
        };
        if let Some((x, y)) = corners.into_iter().find(free) {
            root.draw(&Rectangle::new([(x, y), (x + w, y + h)], WHITE.filled()))
                .map_err(err)?;
            root.draw(&Rectangle::new(
                [(x, y), (x + w, y + h)],
                MUTED.stroke_width(1),
            ))
            .map_err(err)?;
            for (i, s) in self.series.iter().enumerate() {
                draw_entry(s, x, y + 4 + row_h * i as i32 + row_h / 2)?;
            }
        } else {
            let total: i32 = self.series.iter().map(entry_w).sum();
            let mut x = right - total;
            for s in self.series {
                draw_entry(s, x, bottom + 34)?;
                x += entry_w(s);
            }
        }
        Ok(())
    }
}

/// Width of `text` in pixels (0 if it cannot be measured).
fn text_width<DB: DrawingBackend, S: plotters::coord::CoordTranslate>(
    area: &DrawingArea<DB, S>,
    text: &str,
    style: &TextStyle<'_>,
) -> i32 {
    area.estimate_text_size(text, style)
        .map_or(0, |(w, _)| w as i32)
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
    fn has_colour(img: &RgbImage, c: RGBColor) -> bool {
        let c = [c.0, c.1, c.2];
        img.pixels()
            .any(|p| p.0.iter().zip(c).all(|(&a, b)| a.abs_diff(b) < 8))
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
            let mut gaps = metrics(12);
            for i in [3, 5, 6] {
                gaps[i].test_loss = f32::NAN;
            }
            gaps[8].train_acc = f32::INFINITY;
            let cases = [
                ("1", metrics(1)),
                ("10", metrics(10)),
                ("60", metrics(60)),
                ("gaps", gaps),
                ("empty", vec![]),
            ];
            for (name, m) in cases {
                let img = render_metrics(&m, &format!("{name} epochs")).unwrap();
                img.save(Path::new(&d).join(format!("wgtrain_plot_{name}.png")))
                    .unwrap();
            }
        }
    }

    #[test]
    fn single_epoch_is_drawn_with_markers() {
        let img = render_metrics(&metrics(1), "one").unwrap();
        assert!(has_colour(&img, TRAIN));
        assert!(has_colour(&img, TEST));
    }

    #[test]
    fn title_is_drawn_with_the_embedded_font() {
        // Dark text pixels in the title band only when there is a title: the font was found.
        let band = |img: &RgbImage| {
            (0..28).any(|y| (0..WIDTH).any(|x| img.get_pixel(x, y).0.iter().all(|&c| c < 90)))
        };
        assert!(band(
            &render_metrics(&metrics(3), "Training curves").unwrap()
        ));
        assert!(!band(&render_metrics(&metrics(3), "").unwrap()));
    }

    #[test]
    fn nan_constant_and_empty_series_do_not_panic() {
        let mut m = metrics(5);
        m[2].test_loss = f32::NAN;
        m[3].train_loss = f32::INFINITY;
        for x in &mut m {
            x.train_acc = 1.0;
        }
        render_metrics(&m, "odd values").unwrap();
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
        render_metrics(&all_nan, "all NaN").unwrap();
        let img = render_metrics(&[], "empty").unwrap();
        assert!(!has_colour(&img, TRAIN));
        let mut huge = metrics(4);
        huge[0].train_loss = 1e30;
        render_metrics(&huge, "diverged").unwrap();
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
