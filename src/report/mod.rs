//! Training reports: per-epoch metrics, written as CSV and plotted as a PNG.

pub mod csv;
// A PNG file with plotters' embedded font: native only (the browser draws on a canvas).
#[cfg(not(target_arch = "wasm32"))]
pub mod plot;

use serde::{Deserialize, Serialize};

pub use csv::write_metrics_csv;
#[cfg(not(target_arch = "wasm32"))]
pub use plot::plot_metrics;

/// What one epoch of training measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, counting from 1.
    pub epoch: usize,
    /// Mean cross-entropy over the training set.
    pub train_loss: f32,
    /// Training accuracy as a fraction in 0..=1.
    pub train_acc: f32,
    /// Mean cross-entropy over the test set.
    pub test_loss: f32,
    /// Test accuracy as a fraction in 0..=1.
    pub test_acc: f32,
    /// Wall-clock seconds the epoch took.
    pub seconds: f64,
    /// Training throughput.
    pub images_per_sec: f64,
}
