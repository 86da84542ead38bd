//! Per-device choice of the matmul variant, timed on first use and cached on disk.
//!
//! The first time a product of a given *shape class* runs on an adapter, [`tile_for`] checks
//! each available [`MatmulTile::CANDIDATES`] entry against the CPU twin on a small shape with
//! the same flavour (transposes, epilogue, alignment), times the ones that pass on the real
//! shape, and remembers the fastest: in memory for the process and in a JSON file for later runs,
//! so those start at once.
//!
//! * Key: adapter name, backend, driver (name and version), a fingerprint of the matmul shader
//!   and candidate list, the shape class (M, N, K each rounded up to a power of two, plus which
//!   of them are multiples of 4, since that decides vec4 loads), the transposes, the epilogue and
//!   whether it accumulates.
//! * File: `$WGTRAIN_AUTOTUNE_CACHE`, else `autotune.json` in the crate's cache root,
//!   [`crate::util::cache_dir`]`("")` (`$WGTRAIN_CACHE_DIR`, else `wgtrain/` in the platform's
//!   per-user cache folder, e.g. `$XDG_CACHE_HOME` or `$HOME/.cache` on Linux); written
//!   atomically. A missing or unreadable file just means tuning again.
//! * `WGTRAIN_AUTOTUNE=0` (or `off`/`false`/`no`) turns it off: every product then uses
//!   [`MatmulTile::default_for`] the device.
//!
//! Cost: each candidate compiles one pipeline (0.1–0.8 s on lavapipe with a cold Mesa shader
//! cache), runs one small check and a few timed launches. Candidates are tried best guess
//! first (the algorithm suited to the adapter, little work wasted past the edges of C, wins on
//! other shapes; see `ordered_candidates`). A candidate whose first sample is more than
//! [`SLOW_FACTOR`]× slower than the best so far is dropped; a key stops once [`MIN_TIMED`]
//! candidates were timed and [`KEY_BUDGET`] has passed, and after [`TOTAL_BUDGET`] of tuning in a
//! process each new key times only its first candidate. Products under [`MIN_TIMED_FLOPS`] are
//! checked but not timed.

use crate::gpu::kernels::{self, MatmulAlgo, MatmulSpec, MatmulTile};
use crate::gpu::GpuContext;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Environment variable: `0` turns autotuning off.
pub const ENV_AUTOTUNE: &str = "WGTRAIN_AUTOTUNE";
/// Environment variable: path of the cache file (overrides the per-user cache dir).
pub const ENV_CACHE: &str = "WGTRAIN_AUTOTUNE_CACHE";
/// Format version of the cache file.
pub const CACHE_VERSION: u32 = 1;
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

/// Whether autotuning is on (`WGTRAIN_AUTOTUNE` is not `0`/`off`/`false`/`no`).
pub fn enabled() -> bool {
    match std::env::var(ENV_AUTOTUNE) {
        Ok(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        ),
        Err(_) => true,
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

/// One cached decision.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The chosen variant.
    pub tile: MatmulTile,
    /// Its rate on `shape`, GFLOP/s (2·M·N·K / median time); 0 when it was not timed.
    pub gflops: f64,
    /// The shape it was timed on, [M, N, K].
    pub shape: [usize; 3],
    /// Every candidate tried: its name and GFLOP/s, or why it was dropped.
    pub tried: BTreeMap<String, String>,
    /// Seconds since the Unix epoch when it was tuned.
    pub tuned_at: u64,
}

/// The cache file: `{"version": 1, "entries": {key: Entry}}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CacheFile {
    pub version: u32,
    pub entries: BTreeMap<String, Entry>,
}

/// The outcome of timing one candidate.
#[derive(Clone, Debug)]
pub struct Timed {
    pub tile: MatmulTile,
    /// Median seconds per launch, when it ran to the end.
    pub median_s: Option<f64>,
    /// Why it has no time: unavailable, failed the CPU check, error, or dropped as too slow.
    pub note: String,
    /// Seconds spent on it (compiling, checking, timing).
    pub spent_s: f64,
}

/// The outcome of tuning one product.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub best: MatmulTile,
    pub gflops: f64,
    pub timed: Vec<Timed>,
}

/// Round up to a power of two.
fn bucket(d: usize) -> usize {
    d.max(1).next_power_of_two()
}

/// The shape class of a product: `m128.n512.k1024.a011` (powers of two, then whether M, N, K are
/// multiples of 4).
pub fn shape_class(spec: &MatmulSpec) -> String {
    let a = |d: usize| if d.is_multiple_of(4) { '1' } else { '0' };
    format!(
        "m{}.n{}.k{}.a{}{}{}",
        bucket(spec.m),
        bucket(spec.n),
        bucket(spec.k),
        a(spec.m),
        a(spec.n),
        a(spec.k)
    )
}

/// FNV-1a, stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Changes whenever the matmul shader or the candidate list does, so stale choices are retimed.
fn fingerprint() -> String {
    let mut s = String::new();
    for t in MatmulTile::CANDIDATES {
        s += &t.to_string();
        s.push(';');
    }
    s += &kernels::matmul_source(&MatmulSpec::new(1, 1, 1), &MatmulTile::DEFAULT);
    format!("{:016x}", fnv1a(s.as_bytes()))
}

/// The cache key of `spec` on `ctx` (see the module docs).
pub fn key(ctx: &GpuContext, spec: &MatmulSpec) -> String {
    let i = &ctx.info;
    format!(
        "{}|{:?}|{} {}|{}|{}|{}{}|{:?}{}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        fingerprint(),
        shape_class(spec),
        if spec.trans_a { 't' } else { 'n' },
        if spec.trans_b { 't' } else { 'n' },
        spec.epilogue,
        if spec.accumulate { "+=" } else { "" }
    )
}

/// Process-wide state: the decisions made or loaded so far.
struct State {
    loaded: bool,
    file: CacheFile,
    /// Keys that failed to tune in this process (not retried).
    failed: HashMap<String, MatmulTile>,
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        Mutex::new(State {
            loaded: false,
            file: CacheFile {
                version: CACHE_VERSION,
                entries: BTreeMap::new(),
            },
            failed: HashMap::new(),
        })
    })
}

fn load_file() -> CacheFile {
    let empty = CacheFile {
        version: CACHE_VERSION,
        entries: BTreeMap::new(),
    };
    let Some(path) = cache_path() else {
        return empty;
    };
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
            Ok(f) if f.version == CACHE_VERSION => f,
            Ok(_) => empty,
            Err(e) => {
                log::warn!(
                    "autotune cache {} unreadable ({e}); retuning",
                    path.display()
                );
                empty
            }
        },
        Err(_) => empty,
    }
}

/// Merge `key → entry` into the file on disk (re-reading it first, so concurrent processes lose
/// at most each other's latest entry, never the file).
fn save_entry(key: &str, entry: &Entry) {
    let Some(path) = cache_path() else {
        return;
    };
    let mut file = load_file();
    file.entries.insert(key.to_string(), entry.clone());
    let write = || -> std::result::Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        crate::util::atomic_write(&path, &json).map_err(|e| e.to_string())
    };
    if let Err(e) = write() {
        log::warn!("autotune: could not write {}: {e}", path.display());
    }
}

/// The tile to use for `spec` on `ctx`: the cached choice, else a fresh tuning (which is then
/// cached), else the adapter default. Never fails: problems fall back to the default.
pub fn tile_for(ctx: &GpuContext, spec: &MatmulSpec) -> MatmulTile {
    let default = MatmulTile::default_for(ctx);
    if !enabled() {
        return default;
    }
    let key = key(ctx, spec);
    let mut st = state().lock().unwrap_or_else(|e| e.into_inner());
    if !st.loaded {
        st.file = load_file();
        st.loaded = true;
    }
    if let Some(e) = st.file.entries.get(&key) {
        if e.tile.available(ctx) {
            return e.tile;
        }
    }
    if let Some(t) = st.failed.get(&key) {
        return *t;
    }
    // Winners of other keys on this adapter (same key prefix up to the shape class) are tried
    // earlier.
    let prefix = {
        let k = key.rsplitn(4, '|').last().unwrap_or("");
        format!("{k}|")
    };
    let mut wins: Vec<(MatmulTile, usize)> = Vec::new();
    for (k, e) in &st.file.entries {
        if k.starts_with(&prefix) {
            match wins.iter_mut().find(|(t, _)| *t == e.tile) {
                Some(w) => w.1 += 1,
                None => wins.push((e.tile, 1)),
            }
        }
    }
    // Tune while holding the lock: concurrent callers wait instead of timing the same key.
    match tune_with(ctx, spec, &wins) {
        Ok(t) => {
            let entry = Entry {
                tile: t.best,
                gflops: t.gflops,
                shape: [spec.m, spec.n, spec.k],
                tried: t
                    .timed
                    .iter()
                    .map(|x| {
                        let v = match x.median_s {
                            Some(s) => format!("{:.2} GFLOP/s", spec.flops() / s / 1e9),
                            None => x.note.clone(),
                        };
                        (x.tile.to_string(), v)
                    })
                    .collect(),
                tuned_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            };
            log::info!(
                "autotune {}: {} at {:.2} GFLOP/s",
                shape_class(spec),
                t.best,
                t.gflops
            );
            save_entry(&key, &entry);
            st.file.entries.insert(key, entry);
            t.best
        }
        Err(e) => {
            log::warn!("autotune {key}: {e}; using {default}");
            st.failed.insert(key, default);
            default
        }
    }
}

/// A small shape with the same residues mod 4 as `spec`'s (so the same pipeline and the same
/// vec4 paths run), crossing tile edges.
fn check_shape(spec: &MatmulSpec) -> MatmulSpec {
    let small = |d: usize| if d <= 23 { d } else { 20 + d % 4 };
    MatmulSpec {
        m: small(spec.m),
        n: small(spec.n),
        k: small(spec.k),
        ..*spec
    }
}

/// Fraction of the workgroups' outputs that fall inside C (tiles hanging over the edges of a
/// narrow product waste the rest).
fn coverage(spec: &MatmulSpec, tile: &MatmulTile) -> f64 {
    let (m, n) = if tile.swap {
        (spec.n, spec.m)
    } else {
        (spec.m, spec.n)
    };
    let (bm, bn) = (tile.bm() as usize, tile.bn() as usize);
    (m * n) as f64 / (m.div_ceil(bm) * bm * n.div_ceil(bn) * bn) as f64
}

/// Candidate order, best guess first: a rough relative speed of each algorithm on this kind
/// of adapter (CPU: subgroup 2, direct 1, tiled 0.1; GPU: tiled first), times the square root
/// of the register block's reuse (outputs per operand element loaded), times the tile's
/// [`coverage`] of this product, times a bonus for each key on this adapter the tile won
/// (`wins`). Ties keep [`MatmulTile::CANDIDATES`] order; the adapter default goes first among
/// equals.
fn ordered_candidates(
    ctx: &GpuContext,
    spec: &MatmulSpec,
    wins: &[(MatmulTile, usize)],
) -> Vec<MatmulTile> {
    let default = MatmulTile::default_for(ctx);
    let cpu = ctx.info.device_type == wgpu::DeviceType::Cpu;
    let score = |t: &MatmulTile| {
        let speed = match (t.algo, cpu) {
            (MatmulAlgo::Subgroup, true) => 2.0,
            (MatmulAlgo::Direct, true) => 1.0,
            (MatmulAlgo::Tiled, true) => 0.1,
            (MatmulAlgo::Tiled, false) => 1.0,
            (MatmulAlgo::Subgroup, false) => 0.6,
            (MatmulAlgo::Direct, false) => 0.3,
        };
        let (tm, tn) = (t.tm as f64, t.tn as f64);
        let reuse = match t.algo {
            // The right operand's loads are shared by the 8 lanes.
            MatmulAlgo::Subgroup => tm * tn / (tm + tn / 8.0),
            _ => tm * tn / (tm + tn),
        };
        let won = wins.iter().find(|w| w.0 == *t).map_or(0, |w| w.1);
        let bonus = 1.0 + 0.05 * won.min(4) as f64 + if *t == default { 0.01 } else { 0.0 };
        speed * reuse.sqrt() * coverage(spec, t) * bonus
    };
    let mut v: Vec<(f64, MatmulTile)> = MatmulTile::CANDIDATES
        .iter()
        .map(|t| (score(t), *t))
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    v.into_iter().map(|x| x.1).collect()
}

/// Seconds spent tuning in this process.
fn spent() -> &'static Mutex<Duration> {
    static S: OnceLock<Mutex<Duration>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(Duration::ZERO))
}

/// Median seconds of one launch of `spec` with `tile`, or `None` when
/// its first timed sample is more than [`SLOW_FACTOR`] × `best` (then it is not worth more time).
pub fn time_tile(
    ctx: &GpuContext,
    spec: &MatmulSpec,
    tile: &MatmulTile,
    best: Option<f64>,
) -> Result<Option<f64>> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    // Written data, not fresh zeroed buffers: on lavapipe, memory never written is backed by
    // the shared zero page 4 KiB at a time, and strided reads of it ran some tiles at half speed.
    let a = ctx.upload("tune a", &vec![0.5f32; m * k]);
    let b = ctx.upload("tune b", &vec![0.25f32; k * n]);
    let aux = ctx.upload("tune aux", &vec![1.0f32; m * n]);
    let c = ctx.upload("tune c", &vec![0f32; m * n]);
    let launch = kernels::matmul(ctx, spec, tile, &a, &b, Some(&aux), &c)?;
    let run = |reps: usize| -> Result<f64> {
        let t = Instant::now();
        ctx.submit(&[&launch], reps)?;
        ctx.wait()?;
        Ok(t.elapsed().as_secs_f64() / reps as f64)
    };
    // The first launch also pays for any lazy compilation; it only sizes the samples.
    let first = run(1)?;
    // Enough launches per submit that each sample lasts ~2 ms (submission overhead amortised).
    let reps = ((2e-3 / first).ceil() as usize).clamp(1, 64);
    let mut samples = vec![run(reps)?];
    if best.is_some_and(|b| samples[0] > SLOW_FACTOR * b) {
        return Ok(None);
    }
    samples.push(run(reps)?);
    samples.push(run(reps)?);
    samples.sort_by(|x, y| x.total_cmp(y));
    Ok(Some(samples[1]))
}

/// Time the available candidates for `spec` (each checked against the CPU twin first, within
/// the budgets in the module docs) and return the fastest. Ignores the cache.
pub fn tune(ctx: &GpuContext, spec: &MatmulSpec) -> Result<Tuning> {
    tune_with(ctx, spec, &[])
}

fn tune_with(ctx: &GpuContext, spec: &MatmulSpec, wins: &[(MatmulTile, usize)]) -> Result<Tuning> {
    let start = Instant::now();
    let before = *spent().lock().unwrap_or_else(|e| e.into_inner());
    let result = tune_inner(ctx, spec, wins, start, before);
    *spent().lock().unwrap_or_else(|e| e.into_inner()) += start.elapsed();
    result
}

fn tune_inner(
    ctx: &GpuContext,
    spec: &MatmulSpec,
    wins: &[(MatmulTile, usize)],
    start: Instant,
    before: Duration,
) -> Result<Tuning> {
    let check = check_shape(spec);
    let mut best: Option<(MatmulTile, f64)> = None;
    let mut timed = Vec::new();
    let mut n_timed = 0;
    for tile in ordered_candidates(ctx, spec, wins) {
        let t0 = Instant::now();
        let note = |s: String| Timed {
            tile,
            median_s: None,
            note: s,
            spent_s: t0.elapsed().as_secs_f64(),
        };
        if let Some(why) = tile.unavailable(ctx) {
            timed.push(note(format!("unavailable: {why}")));
            continue;
        }
        if best.is_some() && n_timed >= MIN_TIMED && start.elapsed() > KEY_BUDGET {
            timed.push(note("not tried: time budget for this shape spent".into()));
            continue;
        }
        if best.is_some() && before + start.elapsed() > TOTAL_BUDGET {
            timed.push(note(
                "not tried: tuning budget of this process spent".into(),
            ));
            continue;
        }
        if best.is_some() && spec.flops() < MIN_TIMED_FLOPS {
            timed.push(note("not tried: product too small to time".into()));
            continue;
        }
        let (vl, vr) = spec.vec4_loads(&tile);
        if tile.algo == MatmulAlgo::Direct && tile.tm * tile.tn > 64 && !(vl && vr) {
            // Without vec4 loads on both sides, the big direct tiles compile for ~1 s on
            // lavapipe and run slower than the 8×8 ones.
            timed.push(note("skipped: scalar loads".into()));
            continue;
        }
        let mut inp = crate::verify::Inputs::new(0x5eed);
        match crate::verify::check_matmul(ctx, &mut inp, &check, &tile) {
            Ok(c) if c.pass() => {}
            Ok(c) => {
                log::warn!(
                    "autotune: {tile} fails the CPU check on {} ({} of {} elements off)",
                    c.shape,
                    c.bad,
                    c.elements
                );
                timed.push(note(format!("wrong result on {}", c.shape)));
                continue;
            }
            Err(e) => {
                timed.push(note(format!("error: {e}")));
                continue;
            }
        }
        if spec.flops() < MIN_TIMED_FLOPS {
            // Checked but not timed.
            best = Some((tile, f64::NAN));
            timed.push(note("chosen untimed: product too small to time".into()));
            continue;
        }
        match time_tile(ctx, spec, &tile, best.map(|b| b.1)) {
            Ok(Some(s)) => {
                n_timed += 1;
                if best.is_none_or(|b| s < b.1) {
                    best = Some((tile, s));
                }
                timed.push(Timed {
                    tile,
                    median_s: Some(s),
                    note: String::new(),
                    spent_s: t0.elapsed().as_secs_f64(),
                });
            }
            Ok(None) => timed.push(note(format!(
                "dropped: over {SLOW_FACTOR}x slower than the best"
            ))),
            Err(e) => timed.push(note(format!("error: {e}"))),
        }
    }
    let (best, s) = best.ok_or_else(|| crate::Error::InvalidArg {
        name: "matmul autotune",
        reason: format!(
            "no matmul variant passed the CPU check on {}",
            ctx.describe()
        ),
    })?;
    Ok(Tuning {
        best,
        gflops: if s.is_finite() {
            spec.flops() / s / 1e9
        } else {
            0.0
        },
        timed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::Epilogue;

    #[test]
    fn shape_class_buckets_by_powers_of_two_and_alignment() {
        let s = MatmulSpec::new(100, 512, 784);
        assert_eq!(shape_class(&s), "m128.n512.k1024.a111");
        assert_eq!(
            shape_class(&MatmulSpec::new(100, 10, 10)),
            "m128.n16.k16.a100"
        );
        assert_eq!(shape_class(&MatmulSpec::new(1, 1, 1)), "m1.n1.k1.a000");
        // Same class, same choice: 120×500×1000 shares 100×512×784's entry.
        assert_eq!(
            shape_class(&MatmulSpec::new(120, 500, 1000)),
            shape_class(&s)
        );
    }

    #[test]
    fn check_shape_keeps_residues_mod_4_and_flavour() {
        let s = MatmulSpec {
            trans_a: true,
            epilogue: Epilogue::ReluMask,
            accumulate: true,
            ..MatmulSpec::new(100, 513, 786)
        };
        let c = check_shape(&s);
        assert_eq!((c.m, c.n, c.k), (20, 21, 22));
        assert!(c.trans_a && c.accumulate && c.epilogue == Epilogue::ReluMask);
        assert_eq!(
            check_shape(&MatmulSpec::new(7, 13, 23)),
            MatmulSpec::new(7, 13, 23)
        );
        // The small shape runs the same pipeline (same vec4 flags, hence the same key).
        for t in MatmulTile::CANDIDATES {
            assert_eq!(s.key(&t), c.key(&t), "{t}");
        }
    }

    #[test]
    fn coverage_counts_work_past_the_edges() {
        let t = MatmulTile::subgroup(8, 16); // 64 rows x 16 columns per workgroup
        assert_eq!(coverage(&MatmulSpec::new(64, 32, 1), &t), 1.0);
        let c = coverage(&MatmulSpec::new(100, 512, 1), &t);
        assert!((c - 100.0 / 128.0).abs() < 1e-12);
        // Swapped, the 64 rows run along N = 512.
        let c = coverage(&MatmulSpec::new(100, 512, 1), &t.swapped());
        assert!((c - 100.0 / 112.0).abs() < 1e-12);
    }

    #[test]
    fn cache_file_round_trips_through_json() {
        let mut f = CacheFile {
            version: CACHE_VERSION,
            entries: BTreeMap::new(),
        };
        f.entries.insert(
            "adapter|Vulkan|driver|0123|m128.n512.k1024.a111|nt|BiasRelu".into(),
            Entry {
                tile: MatmulTile::direct(2, 8, 16).swapped(),
                gflops: 31.5,
                shape: [100, 512, 784],
                tried: [(
                    "direct_wg8x2_r8x16_swap".to_string(),
                    "31.50 GFLOP/s".to_string(),
                )]
                .into_iter()
                .collect(),
                tuned_at: 1,
            },
        );
        let json = serde_json::to_string_pretty(&f).unwrap();
        let back: CacheFile = serde_json::from_str(&json).unwrap();
        assert_eq!(back.entries, f.entries);
        assert!(json.contains("\"algo\": \"Direct\""), "{json}");
    }

    #[test]
    fn fnv1a_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
