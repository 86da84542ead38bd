//! Per-device choice of the matmul variant: checked against the CPU twin, timed on first use,
//! cached on disk, and checked again before a cached choice is trusted.
//!
//! The first time a product of a given *shape class* runs on an adapter, [`tile_for`] takes the
//! available [`MatmulTile::CANDIDATES`], checks each against the CPU twin on that class's
//! [`check_shapes`] for that variant, times the ones that pass on the real shape, and remembers
//! the fastest: in memory for the process and in a JSON file for later runs, so those start at
//! once.
//!
//! What is checked ([`check_tile`]). For a product and a variant, [`check_shapes`] gives one or
//! two shapes with the product's transposes, epilogue and accumulation and with M, N, K each a
//! multiple of 4 exactly when the product's are, so the very pipeline the product uses runs
//! (same vec4 loads, same [`MatmulSpec::key`]). Each dimension crosses the variant's tile edges:
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
//! in f64 on the same f32 inputs within the matmul tolerance of [`crate::verify`]
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
//!   [`MatmulTile::default_for`] the device, unchecked (the test suite and `verify` check it).
//!
//! Cost: each candidate compiles one pipeline (0.1–0.8 s on lavapipe with a cold Mesa shader
//! cache), runs its check shapes and a few timed launches. Candidates are tried best guess
//! first (the algorithm suited to the adapter, little work wasted past the edges of C, wins on
//! other shapes; see `ordered_candidates`). A candidate whose first sample is more than
//! [`SLOW_FACTOR`]× slower than the best so far is dropped; a key stops once [`MIN_TIMED`]
//! candidates were timed and [`KEY_BUDGET`] has passed, and after [`TOTAL_BUDGET`] of tuning in a
//! process each new key times only its first candidate. Products under [`MIN_TIMED_FLOPS`] are
//! checked but not timed.

use crate::gpu::kernels::{self, Epilogue, MatmulAlgo, MatmulSpec, MatmulTile};
use crate::gpu::GpuContext;
use crate::verify::{Check, Inputs, MatmulData};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use web_time::Instant;

/// Environment variable: `0` turns autotuning off.
pub const ENV_AUTOTUNE: &str = "WGTRAIN_AUTOTUNE";
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
const CHECK_SEED: u64 = 0x5eed;

/// Whether autotuning is on (`WGTRAIN_AUTOTUNE` is not `0`/`off`/`false`/`no`; in the browser,
/// always, through [`prepare_async`]).
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

/// Round up to a power of two.
fn bucket(d: usize) -> usize {
    d.max(1).next_power_of_two()
}

/// The shape class of a product: M, N, K rounded up to powers of two, and whether each is a
/// multiple of 4. Shown as `m128.n512.k1024.a011`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShapeClass {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// M is a multiple of 4.
    pub m4: bool,
    /// N is a multiple of 4.
    pub n4: bool,
    /// K is a multiple of 4.
    pub k4: bool,
}

impl ShapeClass {
    pub fn of(spec: &MatmulSpec) -> Self {
        ShapeClass {
            m: bucket(spec.m),
            n: bucket(spec.n),
            k: bucket(spec.k),
            m4: spec.m.is_multiple_of(4),
            n4: spec.n.is_multiple_of(4),
            k4: spec.k.is_multiple_of(4),
        }
    }
}

impl std::fmt::Display for ShapeClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = |b: bool| if b { '1' } else { '0' };
        write!(
            f,
            "m{}.n{}.k{}.a{}{}{}",
            self.m,
            self.n,
            self.k,
            a(self.m4),
            a(self.n4),
            a(self.k4)
        )
    }
}

/// The shape class of a product as text (see [`ShapeClass`]).
pub fn shape_class(spec: &MatmulSpec) -> String {
    ShapeClass::of(spec).to_string()
}

/// The epilogue by name (`"BiasRelu"`), as it appears in the cache file.
mod epilogue_name {
    use super::Epilogue;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(e: &Epilogue, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{e:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Epilogue, D::Error> {
        let name = String::deserialize(d)?;
        Epilogue::ALL
            .into_iter()
            .find(|e| format!("{e:?}") == name)
            .ok_or_else(|| D::Error::custom(format!("unknown epilogue {name:?}")))
    }
}

/// The cache key of one product on one adapter (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MatmulAutotuneKey {
    /// Adapter name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub adapter: String,
    /// wgpu backend, e.g. `Vulkan`.
    pub backend: String,
    /// Driver name, e.g. `llvmpipe`.
    pub driver: String,
    /// Driver version/info, e.g. `Mesa 23.2.1 (LLVM 15.0.6)`.
    pub driver_info: String,
    /// Changes with the matmul shader and the candidate list.
    pub fingerprint: String,
    pub class: ShapeClass,
    pub trans_a: bool,
    pub trans_b: bool,
    #[serde(with = "epilogue_name")]
    pub epilogue: Epilogue,
    pub accumulate: bool,
}

impl MatmulAutotuneKey {
    /// The key of `spec` on `ctx`.
    pub fn new(ctx: &GpuContext, spec: &MatmulSpec) -> Self {
        let i = &ctx.info;
        MatmulAutotuneKey {
            adapter: i.name.clone(),
            backend: format!("{:?}", i.backend),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            fingerprint: fingerprint().to_string(),
            class: ShapeClass::of(spec),
            trans_a: spec.trans_a,
            trans_b: spec.trans_b,
            epilogue: spec.epilogue,
            accumulate: spec.accumulate,
        }
    }

    /// Same adapter, driver and shader (the product may differ).
    fn same_device(&self, other: &Self) -> bool {
        self.adapter == other.adapter
            && self.backend == other.backend
            && self.driver == other.driver
            && self.driver_info == other.driver_info
            && self.fingerprint == other.fingerprint
    }
}

/// `adapter|backend|driver info|fingerprint|class|nt|Epilogue+=`, for messages.
impl std::fmt::Display for MatmulAutotuneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}|{}|{} {}|{}|{}|{}{}|{:?}{}",
            self.adapter,
            self.backend,
            self.driver,
            self.driver_info,
            self.fingerprint,
            self.class,
            if self.trans_a { 't' } else { 'n' },
            if self.trans_b { 't' } else { 'n' },
            self.epilogue,
            if self.accumulate { "+=" } else { "" }
        )
    }
}

/// The cache key of `spec` on `ctx` (see the module docs).
pub fn key(ctx: &GpuContext, spec: &MatmulSpec) -> MatmulAutotuneKey {
    MatmulAutotuneKey::new(ctx, spec)
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

/// One key and its decision in the cache file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CacheRecord {
    pub key: MatmulAutotuneKey,
    pub entry: Entry,
}

/// The cache file: `{"version": 2, "entries": [{"key": {..}, "entry": {..}}, ..]}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CacheFile {
    pub version: u32,
    pub entries: Vec<CacheRecord>,
}

type Entries = HashMap<MatmulAutotuneKey, Entry>;

impl CacheFile {
    /// The file for `entries`, in a stable order (by key as text).
    fn of(entries: &Entries) -> Self {
        let mut records: Vec<CacheRecord> = entries
            .iter()
            .map(|(k, e)| CacheRecord {
                key: k.clone(),
                entry: e.clone(),
            })
            .collect();
        records.sort_by_cached_key(|r| r.key.to_string());
        CacheFile {
            version: CACHE_VERSION,
            entries: records,
        }
    }
}

/// The entries of a cache file, or why it cannot be used (another format version, or not a
/// cache file at all). A key listed twice keeps its last entry.
fn parse_cache(bytes: &[u8]) -> std::result::Result<Entries, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match v.get("version").and_then(|x| x.as_u64()) {
        Some(n) if n == CACHE_VERSION as u64 => {}
        Some(n) => return Err(format!("format version {n}, not {CACHE_VERSION}")),
        None => return Err("no format version".into()),
    }
    let f: CacheFile = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Ok(f.entries.into_iter().map(|r| (r.key, r.entry)).collect())
}

/// The entries in the file at `path`; none when there is no file or it cannot be used (then
/// with a log line; never an error).
fn load_file(path: Option<&Path>) -> Entries {
    let Some(path) = path else {
        return Entries::new();
    };
    let Ok(bytes) = std::fs::read(path) else {
        return Entries::new();
    };
    parse_cache(&bytes).unwrap_or_else(|why| {
        log::warn!(
            "autotune cache {} ignored ({why}); retuning",
            path.display()
        );
        Entries::new()
    })
}

/// Apply `change` to the entries on disk (re-reading the file first, so concurrent processes
/// lose at most each other's latest entry, never the file).
fn update_file(path: Option<&Path>, change: impl FnOnce(&mut Entries)) {
    let Some(path) = path else {
        return;
    };
    let mut entries = load_file(Some(path));
    change(&mut entries);
    let write = || -> std::result::Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        let json =
            serde_json::to_vec_pretty(&CacheFile::of(&entries)).map_err(|e| e.to_string())?;
        crate::util::atomic_write(path, &json).map_err(|e| e.to_string())
    };
    if let Err(e) = write() {
        log::warn!("autotune: could not write {}: {e}", path.display());
    }
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
fn fingerprint() -> &'static str {
    static F: OnceLock<String> = OnceLock::new();
    F.get_or_init(|| {
        let mut s = String::new();
        for t in MatmulTile::CANDIDATES {
            s += &t.to_string();
            s.push(';');
        }
        s += &kernels::matmul_source(&MatmulSpec::new(1, 1, 1), &MatmulTile::DEFAULT);
        format!("{:016x}", fnv1a(s.as_bytes()))
    })
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

// ---------------------------------------------------------------------------------------------
// Checks

/// How far the variant's K loop steps: BK through workgroup memory, 4 in the direct kernel.
fn k_step(tile: &MatmulTile) -> usize {
    match tile.algo {
        MatmulAlgo::Tiled => tile.bk as usize,
        MatmulAlgo::Direct | MatmulAlgo::Subgroup => 4,
    }
}

/// The rows and columns of C (not C') one workgroup of `tile` covers.
fn tile_mn(tile: &MatmulTile) -> (usize, usize) {
    let (bm, bn) = (tile.bm() as usize, tile.bn() as usize);
    if tile.swap {
        (bn, bm)
    } else {
        (bm, bn)
    }
}

/// The two sizes one dimension of the check shapes takes, for a product dimension `d` and a
/// tile of `t` along it (see the module docs): [`CHECK_FULL_TILES`] full tiles (fewer where the
/// class of `d` ends sooner) and then 1, resp. t − 1 (4, resp. t − 4, when `d` is a multiple of
/// 4); the smallest, resp. largest, size of the class when it never passes one tile. Every size
/// is at most the class's largest and a multiple of 4 exactly when `d` is.
fn edge_sizes(d: usize, t: usize) -> [usize; 2] {
    let hi = bucket(d);
    let aligned = d.is_multiple_of(4);
    let same_flag = |s: usize| s.is_multiple_of(4) == aligned;
    let in_class = |s: usize| s >= 1 && bucket(s) == hi && same_flag(s);
    let (near, far) = if aligned {
        (4, t.saturating_sub(4).max(4))
    } else {
        (1, t.saturating_sub(1).max(1))
    };
    let fit = |r: usize| {
        (0..=CHECK_FULL_TILES)
            .rev()
            .map(|f| (f, f * t + r))
            .find(|&(f, s)| s <= hi && same_flag(s) && (in_class(s) || f == CHECK_FULL_TILES))
    };
    let lo = hi / 2 + 1;
    let smallest = (lo..=hi).find(|&s| in_class(s)).unwrap_or(d);
    let largest = (lo..=hi).rev().find(|&s| in_class(s)).unwrap_or(d);
    if hi <= t {
        return [smallest, largest];
    }
    [
        fit(near).map_or(smallest, |x| x.1),
        fit(far).map_or(largest, |x| x.1),
    ]
}

/// The shapes [`check_tile`] runs `tile` on for products of `spec`'s class (see the module
/// docs): `spec`'s transposes, epilogue and accumulation; one shape pairs M's partial tile of 1
/// (or 4) with N's and K's of tile − 1 (or tile − 4), the other the reverse (left out when it is
/// the same shape).
pub fn check_shapes(spec: &MatmulSpec, tile: &MatmulTile) -> Vec<MatmulSpec> {
    let (tm, tn) = tile_mn(tile);
    let [m0, m1] = edge_sizes(spec.m, tm);
    let [n0, n1] = edge_sizes(spec.n, tn);
    let [k0, k1] = edge_sizes(spec.k, k_step(tile));
    let mut v = vec![
        MatmulSpec {
            m: m0,
            n: n1,
            k: k1,
            ..*spec
        },
        MatmulSpec {
            m: m1,
            n: n0,
            k: k0,
            ..*spec
        },
    ];
    v.dedup();
    v
}

#[cfg(test)]
thread_local! {
    /// Tests only: variants whose results this thread corrupts at and past their first tile
    /// edge in M or N, i.e. variants that are wrong only there.
    static SABOTAGED: std::cell::RefCell<Vec<MatmulTile>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `tile` on one check shape and compare with the CPU twin (as
/// [`crate::verify::check_matmul`]).
async fn run_check(
    ctx: &GpuContext,
    inp: &mut Inputs,
    shape: &MatmulSpec,
    tile: &MatmulTile,
) -> Result<Check> {
    let (m, n) = (shape.m, shape.n);
    let d = MatmulData::new(inp, shape);
    let ab = ctx.upload("check a", d.a.as_slice().unwrap());
    let bb = ctx.upload("check b", d.b.as_slice().unwrap());
    let aux = d.aux(shape.epilogue).map(|v| ctx.upload("check aux", v));
    let cb = if shape.accumulate {
        ctx.upload("check c", d.start.as_slice().unwrap())
    } else {
        ctx.poisoned("check c", m * n)
    };
    let launch = kernels::matmul(ctx, shape, tile, &ab, &bb, aux.as_ref(), &cb)?;
    ctx.submit(&[&launch], 1)?;
    #[allow(unused_mut)]
    let mut got: Vec<f32> = ctx.read_async("check c", &cb, m * n).await?;
    #[cfg(test)]
    if SABOTAGED.with_borrow(|s| s.contains(tile)) {
        let (tm, tn) = tile_mn(tile);
        for (idx, v) in got.iter_mut().enumerate() {
            if idx / n >= tm || idx % n >= tn {
                *v += 1.0;
            }
        }
    }
    Ok(crate::verify::matmul_compare(shape, &d, &got))
}

/// Check `tile` against the CPU twin on [`check_shapes`]`(spec, tile)`: the first check that
/// fails, or `None` when all pass.
pub fn check_tile(ctx: &GpuContext, spec: &MatmulSpec, tile: &MatmulTile) -> Result<Option<Check>> {
    crate::util::wait_for("tile check", check_tile_async(ctx, spec, tile))
}

/// [`check_tile`] without blocking the browser.
pub async fn check_tile_async(
    ctx: &GpuContext,
    spec: &MatmulSpec,
    tile: &MatmulTile,
) -> Result<Option<Check>> {
    let mut inp = Inputs::new(CHECK_SEED);
    for shape in check_shapes(spec, tile) {
        let c = run_check(ctx, &mut inp, &shape, tile).await?;
        if !c.pass() {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// A failed check in a few words.
fn failure(c: &Check) -> String {
    format!(
        "{} of {} elements off on {} (worst {:.3e}x the tolerance)",
        c.bad, c.elements, c.shape, c.worst
    )
}

// ---------------------------------------------------------------------------------------------
// Choice

/// The decisions made or loaded so far in this process.
struct State {
    /// The cache file, if any.
    path: Option<PathBuf>,
    loaded: bool,
    entries: Entries,
    /// Keys whose entry passed its check in this process (tuned here, or re-checked).
    checked: HashSet<MatmulAutotuneKey>,
    /// Keys that failed to tune in this process (not retried).
    failed: HashMap<MatmulAutotuneKey, MatmulTile>,
}

impl State {
    fn new(path: Option<PathBuf>) -> Self {
        State {
            path,
            loaded: false,
            entries: Entries::new(),
            checked: HashSet::new(),
            failed: HashMap::new(),
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(State::new(cache_path())))
}

/// The tile to use for `spec` on `ctx`: the cached choice (re-checked on its first use in the
/// process), else a fresh tuning (which is then cached), else the adapter default. Never fails:
/// problems fall back to the default.
pub fn tile_for(ctx: &GpuContext, spec: &MatmulSpec) -> MatmulTile {
    if !enabled() {
        return MatmulTile::default_for(ctx);
    }
    tile_for_in(state(), ctx, spec)
}

/// Tune the products `specs` ahead of [`tile_for`], which in the browser cannot wait for the
/// GPU and otherwise returns the adapter default for a product not tuned yet: a web page
/// awaits this for the products its network will launch before preparing its programs.
/// Returns the tile chosen for each product.
pub async fn prepare_async(ctx: &GpuContext, specs: &[MatmulSpec]) -> Vec<MatmulTile> {
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        // One page thread: a second trainer created while the first tunes (the state is held
        // across its waits) takes the defaults rather than blocking the page.
        let busy = state().try_lock().is_err();
        // A product whose operands exceed the adapter's limits is not timed (the engine
        // refuses its buffers next, naming the limit).
        let cap = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        let fits = [spec.m * spec.k, spec.k * spec.n, spec.m * spec.n]
            .iter()
            .all(|&e| e as u64 * 4 <= cap);
        out.push(if enabled() && !busy && fits {
            tile_for_in_async(state(), ctx, spec).await
        } else {
            MatmulTile::default_for(ctx)
        });
    }
    out
}

fn tile_for_in(state: &Mutex<State>, ctx: &GpuContext, spec: &MatmulSpec) -> MatmulTile {
    if cfg!(target_arch = "wasm32") {
        // No waiting here: what `prepare_async` tuned, else the default.
        let key = MatmulAutotuneKey::new(ctx, spec);
        let Ok(st) = state.try_lock() else {
            // `prepare_async` of another trainer is under way (the page's one thread).
            return MatmulTile::default_for(ctx);
        };
        return match st.entries.get(&key) {
            Some(e) if st.checked.contains(&key) => e.tile,
            _ => MatmulTile::default_for(ctx),
        };
    }
    crate::util::wait_for("autotune", async {
        Ok(tile_for_in_async(state, ctx, spec).await)
    })
    .unwrap_or_else(|_| MatmulTile::default_for(ctx))
}

/// The choice for `spec`: checked cache entry, else a tuning. The state stays locked across
/// the tuning's waits on purpose: natively each caller blocks its own thread, and concurrent
/// callers (parallel tests) wait rather than time the same candidates against each other; in
/// the browser the callers above use `try_lock` so the page's one thread never waits on it.
#[allow(clippy::await_holding_lock)]
async fn tile_for_in_async(
    state: &Mutex<State>,
    ctx: &GpuContext,
    spec: &MatmulSpec,
) -> MatmulTile {
    let default = MatmulTile::default_for(ctx);
    let key = MatmulAutotuneKey::new(ctx, spec);
    // Check and tune while holding the lock: concurrent callers wait instead of doing the same.
    let mut guard = lock(state);
    let st = &mut *guard;
    if !st.loaded {
        st.entries = load_file(st.path.as_deref());
        st.loaded = true;
    }
    if let Some(tile) = st.entries.get(&key).map(|e| e.tile) {
        if st.checked.contains(&key) {
            return tile;
        }
        if tile.unsupported_for(ctx, spec).is_none() {
            let why = match check_tile_async(ctx, spec, &tile).await {
                Ok(None) => {
                    st.checked.insert(key);
                    return tile;
                }
                Ok(Some(c)) => failure(&c),
                Err(e) => e.to_string(),
            };
            log::warn!(
                "autotune: cached choice {tile} for {key} fails its check ({why}); \
                 dropping it and retuning"
            );
            st.entries.remove(&key);
            update_file(st.path.as_deref(), |f| {
                f.remove(&key);
            });
        }
    }
    if let Some(t) = st.failed.get(&key) {
        return *t;
    }
    // Winners of other keys on this adapter are tried earlier.
    let mut wins: Vec<(MatmulTile, usize)> = Vec::new();
    for (k, e) in &st.entries {
        if k.same_device(&key) {
            match wins.iter_mut().find(|(t, _)| *t == e.tile) {
                Some(w) => w.1 += 1,
                None => wins.push((e.tile, 1)),
            }
        }
    }
    match tune_with(ctx, spec, &wins).await {
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
                tuned_at: web_time::SystemTime::now()
                    .duration_since(web_time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            };
            log::info!(
                "autotune {}: {} at {:.2} GFLOP/s",
                key.class,
                t.best,
                t.gflops
            );
            update_file(st.path.as_deref(), |f| {
                f.insert(key.clone(), entry.clone());
            });
            st.checked.insert(key.clone());
            st.entries.insert(key, entry);
            t.best
        }
        Err(e) => {
            log::warn!("autotune {key}: {e}; using {default}");
            st.failed.insert(key, default);
            default
        }
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
    crate::util::wait_for("tile timing", time_tile_async(ctx, spec, tile, best))
}

/// [`time_tile`] without blocking the browser (its clock is the page's `performance.now()`).
pub async fn time_tile_async(
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
    let run = |reps: usize| {
        let launch = &launch;
        async move {
            let t = Instant::now();
            ctx.submit(&[launch], reps)?;
            ctx.wait_async().await?;
            Ok::<f64, crate::Error>(t.elapsed().as_secs_f64() / reps as f64)
        }
    };
    // The first launch also pays for any lazy compilation; it only sizes the samples.
    let first = run(1).await?;
    // Enough launches per submit that each sample lasts ~2 ms (submission overhead amortised).
    let reps = ((2e-3 / first).ceil() as usize).clamp(1, 64);
    let mut samples = vec![run(reps).await?];
    if best.is_some_and(|b| samples[0] > SLOW_FACTOR * b) {
        return Ok(None);
    }
    samples.push(run(reps).await?);
    samples.push(run(reps).await?);
    samples.sort_by(|x, y| x.total_cmp(y));
    Ok(Some(samples[1]))
}

/// Time the available candidates for `spec` (each checked against the CPU twin first, within
/// the budgets in the module docs) and return the fastest. Ignores the cache.
pub fn tune(ctx: &GpuContext, spec: &MatmulSpec) -> Result<Tuning> {
    crate::util::wait_for("autotune", tune_with(ctx, spec, &[]))
}

async fn tune_with(
    ctx: &GpuContext,
    spec: &MatmulSpec,
    wins: &[(MatmulTile, usize)],
) -> Result<Tuning> {
    let start = Instant::now();
    let before = *spent().lock().unwrap_or_else(|e| e.into_inner());
    let result = tune_inner(ctx, spec, wins, start, before).await;
    *spent().lock().unwrap_or_else(|e| e.into_inner()) += start.elapsed();
    result
}

async fn tune_inner(
    ctx: &GpuContext,
    spec: &MatmulSpec,
    wins: &[(MatmulTile, usize)],
    start: Instant,
    before: Duration,
) -> Result<Tuning> {
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
        if let Some(why) = tile.unsupported_for(ctx, spec) {
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
        match check_tile_async(ctx, spec, &tile).await {
            Ok(None) => {}
            Ok(Some(c)) => {
                log::warn!(
                    "autotune: {tile} fails the CPU check for {}: {}",
                    shape_class(spec),
                    failure(&c)
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
        match time_tile_async(ctx, spec, &tile, best.map(|b| b.1)).await {
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
    let (best, s) = best.ok_or_else(|| crate::Error::Unsupported {
        what: "matmul autotune".into(),
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
    use crate::gpu::context::AdapterChoice;

    fn test_key(driver_info: &str, class: ShapeClass) -> MatmulAutotuneKey {
        MatmulAutotuneKey {
            adapter: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            backend: "Vulkan".into(),
            driver: "llvmpipe".into(),
            driver_info: driver_info.into(),
            fingerprint: "0123456789abcdef".into(),
            class,
            trans_a: false,
            trans_b: true,
            epilogue: Epilogue::BiasRelu,
            accumulate: true,
        }
    }

    fn test_entry(tile: MatmulTile) -> Entry {
        Entry {
            tile,
            gflops: 31.5,
            shape: [100, 512, 784],
            tried: [(tile.to_string(), "31.50 GFLOP/s".to_string())]
                .into_iter()
                .collect(),
            tuned_at: 1,
        }
    }

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
            ShapeClass::of(&MatmulSpec::new(120, 500, 1000)),
            ShapeClass::of(&s)
        );
    }

    #[test]
    fn key_round_trips_through_the_cache_json() {
        let class = ShapeClass::of(&MatmulSpec::new(100, 512, 784));
        let mut entries = Entries::new();
        entries.insert(
            test_key("Mesa 23.2.1", class),
            test_entry(MatmulTile::direct(2, 8, 16).swapped()),
        );
        // The driver version is part of the key: another Mesa is another entry.
        entries.insert(
            test_key("Mesa 24.0.0", class),
            test_entry(MatmulTile::DEFAULT),
        );
        assert_eq!(entries.len(), 2);
        let json = serde_json::to_string_pretty(&CacheFile::of(&entries)).unwrap();
        for want in [
            "\"version\": 2",
            "\"driver_info\": \"Mesa 23.2.1\"",
            "\"epilogue\": \"BiasRelu\"",
            "\"algo\": \"Direct\"",
            "\"m4\": true",
        ] {
            assert!(json.contains(want), "{want} missing in {json}");
        }
        assert_eq!(parse_cache(json.as_bytes()).unwrap(), entries);
        // Written in a stable order.
        assert_eq!(
            serde_json::to_string_pretty(&CacheFile::of(&parse_cache(json.as_bytes()).unwrap()))
                .unwrap(),
            json
        );
        assert_eq!(
            test_key("Mesa 23.2.1", class).to_string(),
            "llvmpipe (LLVM 15.0.6, 256 bits)|Vulkan|llvmpipe Mesa 23.2.1|0123456789abcdef|\
             m128.n512.k1024.a111|nt|BiasRelu+="
        );
    }

    #[test]
    fn cache_file_of_an_old_or_foreign_version_is_ignored() {
        // Version 1 keyed entries by a string.
        let v1 = r#"{"version": 1, "entries": {"llvmpipe|Vulkan|llvmpipe Mesa|0123|m128.n512.k1024.a111|nt|Bias": {"tile": {"algo": "Direct", "wg_x": 8, "wg_y": 1, "tm": 8, "tn": 8, "bk": 4, "swap": false}, "gflops": 1.0, "shape": [100, 512, 784], "tried": {}, "tuned_at": 1}}}"#;
        let err = parse_cache(v1.as_bytes()).unwrap_err();
        assert!(err.contains("version 1"), "{err}");
        // A later version, even with today's layout.
        let mut entries = Entries::new();
        let key = test_key("Mesa 23.2.1", ShapeClass::of(&MatmulSpec::new(3, 5, 7)));
        entries.insert(key.clone(), test_entry(MatmulTile::DEFAULT));
        let mut later = CacheFile::of(&entries);
        later.version = CACHE_VERSION + 1;
        let err = parse_cache(&serde_json::to_vec(&later).unwrap()).unwrap_err();
        assert!(err.contains("format version 3"), "{err}");
        // Not a cache file at all.
        for junk in [
            "",
            "{}",
            "[1, 2]",
            "not json",
            r#"{"version": 2, "entries": 7}"#,
        ] {
            assert!(parse_cache(junk.as_bytes()).is_err(), "{junk:?}");
        }
        // On disk: ignored, never an error, and replaced by the next save.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autotune.json");
        std::fs::write(&path, v1).unwrap();
        assert!(load_file(Some(&path)).is_empty());
        update_file(Some(&path), |f| {
            f.insert(key.clone(), test_entry(MatmulTile::DEFAULT));
        });
        let back = load_file(Some(&path));
        assert_eq!(back.len(), 1);
        assert_eq!(back[&key].tile, MatmulTile::DEFAULT);
        // A missing file is empty too.
        assert!(load_file(Some(&dir.path().join("none.json"))).is_empty());
    }

    /// The remainders a dimension of a class with `aligned` sizes can leave past a tile edge of
    /// `t`: one and one short of full, or four and four short when sizes are multiples of 4.
    fn edge_remainders(aligned: bool, t: usize) -> Vec<usize> {
        let mut r = if aligned {
            vec![4 % t, (t - 4) % t]
        } else {
            vec![1, t - 1]
        };
        r.sort();
        r.dedup();
        r
    }

    #[test]
    fn check_shapes_cross_every_tile_edge_of_each_candidate() {
        let mut specs = Vec::new();
        for (m, n, k) in [
            (100, 512, 784),
            (1000, 1000, 1000),
            (513, 257, 1023),
            (4096, 130, 4097),
        ] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                specs.push(MatmulSpec {
                    trans_a: ta,
                    trans_b: tb,
                    ..MatmulSpec::new(m, n, k)
                });
            }
        }
        specs.push(MatmulSpec {
            epilogue: Epilogue::ReluMask,
            accumulate: true,
            ..MatmulSpec::new(255, 258, 63)
        });
        for tile in MatmulTile::CANDIDATES {
            let (tm, tn) = tile_mn(&tile);
            let tk = k_step(&tile);
            for spec in &specs {
                let shapes = check_shapes(spec, &tile);
                let class = ShapeClass::of(spec);
                let dims: [(&str, usize, usize, usize, Vec<usize>); 3] = [
                    (
                        "M",
                        spec.m,
                        tm,
                        class.m,
                        shapes.iter().map(|s| s.m).collect(),
                    ),
                    (
                        "N",
                        spec.n,
                        tn,
                        class.n,
                        shapes.iter().map(|s| s.n).collect(),
                    ),
                    (
                        "K",
                        spec.k,
                        tk,
                        class.k,
                        shapes.iter().map(|s| s.k).collect(),
                    ),
                ];
                for (dim, d, t, hi, sizes) in dims {
                    let ctx = format!("{tile} on {spec:?}: {dim} sizes {sizes:?}, tile {t}");
                    // Past the first tile edge, with the partial tiles the class can have.
                    assert!(hi >= 2 * t, "{ctx}: the class should reach past one tile");
                    assert!(sizes.iter().all(|&s| s > t && s <= hi), "{ctx}");
                    let mut rem: Vec<usize> = sizes.iter().map(|&s| s % t).collect();
                    rem.sort();
                    rem.dedup();
                    assert_eq!(rem, edge_remainders(d % 4 == 0, t), "{ctx}");
                    // Cheap: a few hundred per side at most.
                    assert!(sizes.iter().all(|&s| s <= 3 * t && s < 200), "{ctx}");
                }
                for s in &shapes {
                    // The same pipeline as the product, with the same flavour.
                    assert_eq!(s.key(&tile), spec.key(&tile), "{tile} {s:?}");
                    assert_eq!(
                        (s.trans_a, s.trans_b, s.epilogue, s.accumulate),
                        (spec.trans_a, spec.trans_b, spec.epilogue, spec.accumulate)
                    );
                }
            }
        }
    }

    #[test]
    fn check_shapes_by_hand() {
        let t = MatmulTile::DEFAULT; // 64×64 per workgroup, BK 16
                                     // M = 100 (a multiple of 4, class 65..128): 64 + 4 and 64 + 60. N = 30 (class 17..32)
                                     // never passes a tile: its smallest and largest. K = 50 (class 33..64): 2·16 + 1, + 15.
        let c = check_shapes(&MatmulSpec::new(100, 30, 50), &t);
        let mnk: Vec<_> = c.iter().map(|s| (s.m, s.n, s.k)).collect();
        assert_eq!(mnk, [(68, 31, 47), (124, 17, 33)]);
        // The subgroup tile covers 64×16 and steps K by 4; N = 512 (class 257..512) is checked
        // at 2·16 + 4 and 2·16 + 12 (below the class: two full tiles are enough); K = 784 a
        // multiple of 4 only fills whole steps.
        let c = check_shapes(
            &MatmulSpec::new(100, 512, 784),
            &MatmulTile::DEFAULT_CPU_SUBGROUP,
        );
        let mnk: Vec<_> = c.iter().map(|s| (s.m, s.n, s.k)).collect();
        assert_eq!(mnk, [(68, 44, 12), (124, 36, 12)]);
        // Swapped, the direct 8×8 tile covers 8 rows of C by 64 columns.
        let swapped = MatmulTile::direct(1, 8, 8).swapped();
        assert_eq!(tile_mn(&swapped), (8, 64));
        let c = check_shapes(&MatmulSpec::new(100, 10, 784), &swapped);
        let mnk: Vec<_> = c.iter().map(|s| (s.m, s.n, s.k)).collect();
        assert_eq!(mnk, [(20, 15, 12), (20, 9, 12)]);
        // Tiny classes stay tiny; one shape when both coincide.
        let c = check_shapes(&MatmulSpec::new(1, 3, 1), &t);
        assert_eq!(c, [MatmulSpec::new(1, 3, 1)]);
        // Every product of a class gets the same shapes.
        let spec = MatmulSpec {
            trans_a: true,
            ..MatmulSpec::new(100, 513, 786)
        };
        let same = MatmulSpec {
            trans_a: true,
            ..MatmulSpec::new(128, 1023, 514)
        };
        assert_eq!(ShapeClass::of(&spec), ShapeClass::of(&same));
        for t in MatmulTile::CANDIDATES {
            assert_eq!(check_shapes(&spec, &t), check_shapes(&same, &t), "{t}");
        }
    }

    #[test]
    fn edge_sizes_stay_in_small_classes() {
        for d in 1..=300 {
            for t in [4, 8, 16, 32, 64] {
                let s = edge_sizes(d, t);
                let hi = bucket(d);
                for x in s {
                    assert!(x >= 1 && x <= hi, "d {d} t {t}: {s:?}");
                    assert_eq!(x % 4 == 0, d % 4 == 0, "d {d} t {t}: {s:?}");
                    // Below the class only with two full tiles before the partial one.
                    assert!(bucket(x) == hi || x > 2 * t, "d {d} t {t}: {s:?}");
                }
                if hi <= t {
                    let class: Vec<usize> = (1..=hi)
                        .filter(|&x| bucket(x) == hi && (x % 4 == 0) == (d % 4 == 0))
                        .collect();
                    assert_eq!(s, [class[0], *class.last().unwrap()], "d {d} t {t}");
                }
            }
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
    fn fnv1a_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// The default adapter (lavapipe here), or `None` after a visible SKIPPED line.
    fn gpu(test: &str) -> Option<GpuContext> {
        match GpuContext::new(&AdapterChoice::default()) {
            Ok(ctx) => Some(ctx),
            Err(e) => {
                if std::env::var("WGTRAIN_REQUIRE_ADAPTER").is_ok_and(|v| v == "1") {
                    panic!("{test}: no GPU adapter ({e}) and WGTRAIN_REQUIRE_ADAPTER=1");
                }
                eprintln!("SKIPPED {test}: no GPU adapter ({e})");
                None
            }
        }
    }

    /// A small product (checked, not timed) whose class reaches past the tiles' first edges.
    fn small_spec() -> MatmulSpec {
        MatmulSpec {
            trans_a: true,
            epilogue: Epilogue::ReluMask,
            accumulate: true,
            ..MatmulSpec::new(100, 24, 20)
        }
    }

    /// A cache in a fresh temporary file holding `tile` for `spec`, as another process left it.
    fn planted(
        ctx: &GpuContext,
        spec: &MatmulSpec,
        tile: MatmulTile,
    ) -> (tempfile::TempDir, PathBuf, MatmulAutotuneKey, Entry) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autotune.json");
        let key = key(ctx, spec);
        let mut entry = test_entry(tile);
        entry.tried.insert("planted".into(), "by the test".into());
        update_file(Some(&path), |f| {
            f.insert(key.clone(), entry.clone());
        });
        (dir, path, key, entry)
    }

    /// The candidates `ctx` can run, in the order tuning tries them for `spec` on a fresh cache.
    fn tried_order(ctx: &GpuContext, spec: &MatmulSpec) -> Vec<MatmulTile> {
        ordered_candidates(ctx, spec, &[])
            .into_iter()
            .filter(|t| t.unsupported_for(ctx, spec).is_none())
            .collect()
    }

    #[test]
    fn cached_choice_is_rechecked_once_per_process_and_kept_when_right() {
        let Some(ctx) = gpu("cached_choice_is_rechecked_once_per_process_and_kept_when_right")
        else {
            return;
        };
        let spec = small_spec();
        // Not what tuning would pick, so a retune would show.
        let tile = tried_order(&ctx, &spec)[1];
        let (_dir, path, key, entry) = planted(&ctx, &spec, tile);
        let state = Mutex::new(State::new(Some(path.clone())));
        assert_eq!(tile_for_in(&state, &ctx, &spec), tile);
        assert!(lock(&state).checked.contains(&key));
        assert_eq!(lock(&state).entries[&key], entry);
        // Checked once: a fault appearing later in the same process goes unseen ...
        SABOTAGED.set(vec![tile]);
        assert_eq!(tile_for_in(&state, &ctx, &spec), tile);
        // ... while a new process checks again and drops it.
        let next = Mutex::new(State::new(Some(path.clone())));
        let retuned = tile_for_in(&next, &ctx, &spec);
        SABOTAGED.set(Vec::new());
        assert_ne!(retuned, tile);
        assert_eq!(load_file(Some(&path))[&key].tile, retuned);
    }

    #[test]
    fn cached_choice_wrong_past_a_tile_edge_is_dropped_and_retuned() {
        let Some(ctx) = gpu("cached_choice_wrong_past_a_tile_edge_is_dropped_and_retuned") else {
            return;
        };
        let spec = small_spec();
        // The candidate tuning tries first: the retune must see it fail and move on.
        let order = tried_order(&ctx, &spec);
        let wrong = order[0];
        let (tm, tn) = tile_mn(&wrong);
        assert!(
            check_shapes(&spec, &wrong)
                .iter()
                .any(|s| s.m > tm || s.n > tn),
            "the check must reach past {wrong}'s first tile edge"
        );
        // Wrong only past the tile edge: a shape within one tile (all the old check used for
        // this class's N and K, and a 20-row M) passes.
        SABOTAGED.set(vec![wrong]);
        let within = MatmulSpec {
            m: tm.min(spec.m),
            n: tn.min(spec.n),
            ..spec
        };
        let c = pollster::block_on(run_check(
            &ctx,
            &mut Inputs::new(CHECK_SEED),
            &within,
            &wrong,
        ))
        .unwrap();
        assert!(c.pass(), "{c:?}");
        assert!(check_tile(&ctx, &spec, &wrong).unwrap().is_some());

        let (_dir, path, key, _) = planted(&ctx, &spec, wrong);
        let state = Mutex::new(State::new(Some(path.clone())));
        let got = tile_for_in(&state, &ctx, &spec);
        SABOTAGED.set(Vec::new());
        assert_ne!(got, wrong);
        assert_eq!(got, order[1]);
        let st = lock(&state);
        let e = &st.entries[&key];
        assert_eq!(e.tile, got);
        assert!(
            e.tried[&wrong.to_string()].starts_with("wrong result on"),
            "{:?}",
            e.tried
        );
        assert!(st.checked.contains(&key));
        // The file holds the new choice, not the planted one.
        let on_disk = load_file(Some(&path));
        assert_eq!(on_disk.len(), 1);
        assert_eq!(on_disk[&key], *e);
    }

    #[test]
    fn cached_choice_is_dropped_even_when_no_variant_passes() {
        let Some(ctx) = gpu("cached_choice_is_dropped_even_when_no_variant_passes") else {
            return;
        };
        let spec = small_spec();
        let order = tried_order(&ctx, &spec);
        let (_dir, path, key, _) = planted(&ctx, &spec, order[0]);
        SABOTAGED.set(MatmulTile::CANDIDATES.to_vec());
        let state = Mutex::new(State::new(Some(path.clone())));
        let got = tile_for_in(&state, &ctx, &spec);
        SABOTAGED.set(Vec::new());
        // Nothing passed: the adapter default, and no entry left to trust in the next process.
        assert_eq!(got, MatmulTile::default_for(&ctx));
        let st = lock(&state);
        assert!(!st.entries.contains_key(&key));
        assert!(!st.checked.contains(&key));
        assert_eq!(st.failed.get(&key), Some(&got));
        assert!(load_file(Some(&path)).is_empty());
    }
}
