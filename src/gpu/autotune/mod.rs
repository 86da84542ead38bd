//! Per-device choice of the matmul variant: checked against the CPU twin, timed on first use,
//! cached on disk, and checked again before a cached choice is trusted.
//!
//! Files by job: [`key`](mod@key) (what a choice is cached under), [`cache`] (the file), [`check`] (the
//! correctness check on tile-edge shapes, through [`crate::oracle`]), [`tuner`] (the choice:
//! ordering, timing, budgets, the process-wide state).
//!
//! The first time a product of a given *shape class* runs on an adapter, [`tile_for`] takes the
//! available `MatmulTile::CANDIDATES`, checks each against the CPU twin on that class's
//! [`check_shapes`] for that variant, times the ones that pass on the real shape, and remembers
//! the fastest: in memory for the process and in a JSON file for later runs, so those start at
//! once.
//!
//! What is checked ([`check_tile`]). For a product and a variant, [`check_shapes`] gives one or
//! two shapes with the product's transposes, epilogue and accumulation and with M, N, K each a
//! multiple of 4 exactly when the product's are, so the very pipeline the product uses runs
//! (same vec4 loads, same `MatmulSpec::key`). Each dimension crosses the variant's tile edges:
//! * M and N, against the rows and columns of C one workgroup covers (a swapped tile's rows run
//!   along N): full tiles, then a partial tile of 1 in one shape and tile−1 in the other (4 and
//!   tile−4 when the class is a multiple of 4, the nearest it allows; with a 4-wide tile only
//!   full tiles are possible). Two full tiles where the class reaches that far, else as many as
//!   stay inside the class. A class that never exceeds one tile is checked at its smallest and
//!   largest size instead.
//! * K, the same way against the variant's K step (BK for workgroup-memory tiles, 4 for direct
//!   and subgroup tiles, whose loop reads K four at a time).
//!
//! With the current candidates a check shape is at most 191×191×47 (64-wide tiles, BK 16).
//! Inputs are uniform in [−1, 1] from a fixed seed; every output must match the product computed
//! in f64 on the same f32 inputs within the matmul tolerance of [`crate::oracle`]
//! (γ_K·(|A|·|B|) elementwise, plus u·|C₀| when accumulating, and 2u relative), and C starts as
//! NaN (or the accumulated values), so an output never written fails.
//!
//! Re-check. The first time a process uses a cached entry, its variant runs the same check (one
//! or two small launches of the pipeline it is about to use anyway). A choice that fails or
//! errors is dropped, from memory and from the file, with a `log::warn!`, and the key is tuned
//! again; a pass is remembered for the rest of the process. A variant tuned in this process was
//! checked on the way and is not checked again.
//!
//! * Key: [`MatmulAutotuneKey`]: adapter name, backend, driver name and driver version/info, a
//!   fingerprint of the matmul shader and candidate list, the [`ShapeClass`] (M, N, K each
//!   rounded up to a power of two, plus which of them are multiples of 4, since that decides
//!   vec4 loads), the transposes, the epilogue and whether it accumulates.
//! * File: `$WGTRAIN_AUTOTUNE_CACHE`, else `autotune.json` in the crate's cache root,
//!   [`crate::util::cache_dir`]`("")` (`$WGTRAIN_CACHE_DIR`, else `wgtrain/` in the platform's
//!   per-user cache folder, e.g. `$XDG_CACHE_HOME` or `$HOME/.cache` on Linux); written
//!   atomically. Format [`CACHE_VERSION`] 2: `{"version": 2, "entries": [{"key": {..},
//!   "entry": {..}}, ..]}` (version 1 keyed entries by a string). A missing file, a file of
//!   another version, or one that does not parse just means tuning again; the next save replaces
//!   it.
//! * `WGTRAIN_AUTOTUNE=0` (or `off`/`false`/`no`) turns it off: every product then uses
//!   `MatmulTile::default_for` the device, unchecked (the test suite and `verify` check it).
//!
//! Cost: each candidate compiles one pipeline (0.1–0.8 s on lavapipe with a cold Mesa shader
//! cache), runs its check shapes and a few timed launches. Candidates are tried best guess
//! first (the algorithm suited to the adapter, little work wasted past the edges of C, wins on
//! other shapes; see `ordered_candidates`). A candidate whose first sample is more than
//! [`SLOW_FACTOR`]× slower than the best so far is dropped; a key stops once [`MIN_TIMED`]
//! candidates were timed and [`KEY_BUDGET`] has passed, and after [`TOTAL_BUDGET`] of tuning in a
//! process each new key times only its first candidate. Products under [`MIN_TIMED_FLOPS`] are
//! checked but not timed.

use std::path::PathBuf;
use std::time::Duration;

pub mod cache;
pub mod check;
pub mod key;
pub mod tuner;

pub use cache::{CacheFile, CacheRecord, Entry};
pub use check::{check_matmul_async, check_shapes, check_tile, check_tile_async};
pub use key::{key, shape_class, MatmulAutotuneKey, ShapeClass};
pub use tuner::{
    finish, start_tile, start_tile_async, tile_for, time_tile, time_tile_async, tune, Search,
    TileChoice, Timed, TuneReport, Tuning,
};

/// Environment variable: `0` turns autotuning off.
pub const ENV_AUTOTUNE: &str = "WGTRAIN_AUTOTUNE";
/// Environment variable: the most seconds a process spends tuning in the background between
/// training steps ([`background_budget`]); `0` keeps every product on its checked default.
pub const ENV_BUDGET: &str = "WGTRAIN_AUTOTUNE_BUDGET";
/// Environment variable: path of the cache file (overrides the per-user cache dir).
pub const ENV_CACHE: &str = "WGTRAIN_AUTOTUNE_CACHE";
/// Format version of the cache file (2: entries as a list of typed key and entry).
pub const CACHE_VERSION: u32 = 2;
/// A candidate whose first timed sample is this much slower than the best so far is dropped.
pub const SLOW_FACTOR: f64 = 2.5;
/// Tuning one key stops trying further candidates once this long has passed and at least
/// [`MIN_TIMED`] were timed.
pub const KEY_BUDGET: Duration = Duration::from_millis(1200);
/// Candidates timed per key before [`KEY_BUDGET`] may stop the search.
pub const MIN_TIMED: usize = 2;
/// Once tuning has taken this long in a process, further keys time only their first candidate.
pub const TOTAL_BUDGET: Duration = Duration::from_secs(6);
/// Products smaller than this (FLOP) are not timed: launch overhead dominates them. They take
/// the first candidate (the adapter default) that passes the CPU check.
pub const MIN_TIMED_FLOPS: f64 = 1e6;
/// Full tiles before the partial one in each dimension of a check shape, where the class
/// reaches that far.
pub const CHECK_FULL_TILES: usize = 2;
/// Seed of the check inputs (fixed, so a failure replays).
pub(crate) const CHECK_SEED: u64 = 0x5eed;

/// Whether autotuning is on (`WGTRAIN_AUTOTUNE` is not `0`/`off`/`false`/`no`; in the browser,
/// always, through [`start_tile_async`]).
pub fn enabled() -> bool {
    match std::env::var(ENV_AUTOTUNE) {
        Ok(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        ),
        Err(_) => true,
    }
}

/// The most time a process spends tuning in the background: `$WGTRAIN_AUTOTUNE_BUDGET`
/// seconds, else unbounded (each product's search still keeps [`KEY_BUDGET`] and the process
/// [`TOTAL_BUDGET`]). A value that is not a non-negative number is ignored with a warning.
pub fn background_budget() -> Duration {
    match std::env::var(ENV_BUDGET) {
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s >= 0.0 && s.is_finite() => Duration::from_secs_f64(s),
            _ => {
                log::warn!("{ENV_BUDGET}={v:?} is not a number of seconds; ignored");
                Duration::MAX
            }
        },
        Err(_) => Duration::MAX,
    }
}

/// Where the cache file lives (see the module docs), if anywhere.
pub fn cache_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_CACHE).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let root = crate::util::cache_dir("").ok()?;
    Some(root.join("autotune.json"))
}
