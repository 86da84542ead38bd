//! The seeded random source of a verification run ([`Inputs`]) and the run's seed.

use crate::ops::PADDING_LABEL;
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The random source for one verification run.
pub struct Inputs {
    rng: ChaCha8Rng,
}

impl Inputs {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Inputs {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
    /// Uniform in [-1, 1].
    pub fn matrix(&mut self, rows: usize, cols: usize) -> Array2<f32> {
        Array2::from_shape_simple_fn((rows, cols), || self.rng.random_range(-1.0f32..=1.0))
    }
    /// Uniform in [lo, hi].
    pub fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.random_range(lo..=hi)).collect()
    }
    /// Labels in 0..classes, with about one in eight replaced by a padding label (the
    /// gather's marker or C).
    pub fn labels(&mut self, n: usize, classes: usize, padding: bool) -> Array1<u32> {
        (0..n)
            .map(|_| {
                if padding && self.rng.random_range(0..8) == 0 {
                    // Any label ≥ C is padding: the gather's own marker, or C itself, where
                    // a `< C` test and a `≤ C` test differ (found by cargo-mutants).
                    if self.rng.random() {
                        PADDING_LABEL
                    } else {
                        classes as u32
                    }
                } else {
                    self.rng.random_range(0..classes as u32)
                }
            })
            .collect()
    }
    /// Raw random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.random()
    }
}

/// A seed for this run: `WGTRAIN_SEED` if set (to replay a failure), else fresh from the clock.
pub fn run_seed() -> u64 {
    if let Some(s) = std::env::var("WGTRAIN_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return s;
    }
    let t = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    #[cfg(not(target_arch = "wasm32"))]
    let t = t ^ (std::process::id() as u64).rotate_left(32);
    t
}
