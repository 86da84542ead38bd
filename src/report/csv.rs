//! Per-epoch metrics as CSV, one row per epoch, for spreadsheets and pandas.

use super::EpochMetrics;
use crate::Result;
use std::fmt::Write;
use std::path::Path;

/// Column names, in the order [`write_metrics_csv`] writes them.
pub const HEADER: &str = "epoch,train_loss,train_acc,test_loss,test_acc,seconds,images_per_sec";

/// The CSV text for `metrics`: [`HEADER`], then one row per epoch. Floats use Rust's shortest
/// round-trip form; a NaN is written `NaN` and infinities `inf`/`-inf`, which pandas reads.
pub fn metrics_csv(metrics: &[EpochMetrics]) -> String {
    let mut out = String::with_capacity(64 * (metrics.len() + 1));
    out.push_str(HEADER);
    out.push('\n');
    for m in metrics {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            m.epoch,
            m.train_loss,
            m.train_acc,
            m.test_loss,
            m.test_acc,
            m.seconds,
            m.images_per_sec
        );
    }
    out
}

/// Write `metrics` to `path` as CSV (see [`metrics_csv`]), atomically, so a crash mid-run
/// leaves the previous epoch's complete file rather than a truncated one.
pub fn write_metrics_csv(path: impl AsRef<Path>, metrics: &[EpochMetrics]) -> Result<()> {
    crate::util::atomic_write(path.as_ref(), metrics_csv(metrics).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 0.5,
            train_acc: 0.875,
            test_loss: 0.25,
            test_acc: 0.9375,
            seconds: 1.5,
            images_per_sec: 40000.0,
        }
    }

    #[test]
    fn header_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.csv");
        let mut second = row(2);
        second.test_loss = f32::NAN;
        write_metrics_csv(&p, &[row(1), second]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "epoch,train_loss,train_acc,test_loss,test_acc,seconds,images_per_sec\n\
             1,0.5,0.875,0.25,0.9375,1.5,40000\n\
             2,0.5,0.875,NaN,0.9375,1.5,40000\n"
        );
    }

    #[test]
    fn empty_has_header_only() {
        assert_eq!(metrics_csv(&[]), format!("{HEADER}\n"));
    }

    #[test]
    fn values_round_trip() {
        let mut m = row(3);
        m.train_loss = 0.1 + 0.2;
        m.seconds = 1.0 / 3.0;
        let text = metrics_csv(&[m.clone()]);
        let cells: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
        assert_eq!(cells[1].parse::<f32>().unwrap(), m.train_loss);
        assert_eq!(cells[5].parse::<f64>().unwrap(), m.seconds);
    }
}
