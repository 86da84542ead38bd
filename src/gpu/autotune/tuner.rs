//! The choice of a variant: [`tile_for`] (the cached choice, re-checked once per process, else
//! a tuning), the candidates' order, timing and budgets, and the process-wide state.

use super::cache::{load_file, update_file, Entries, Entry};
use super::check::{check_tile_async, failure};
use super::key::{shape_class, MatmulAutotuneKey};
use super::{
    cache_path, enabled, KEY_BUDGET, MIN_TIMED, MIN_TIMED_FLOPS, SLOW_FACTOR, TOTAL_BUDGET,
};
use crate::gpu::kernels::{self, MatmulAlgo, MatmulSpec, MatmulTile};
use crate::gpu::GpuContext;
use crate::Result;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use web_time::Instant;

/// The outcome of timing one candidate.
#[derive(Clone, Debug)]
pub struct Timed {
    /// The variant timed.
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
    /// The fastest variant that passed the CPU check.
    pub best: MatmulTile,
    /// Its rate on the product, in GFLOP/s (2·M·N·K per launch).
    pub gflops: f64,
    /// Every candidate, in the order tried, with its time or why it has none.
    pub timed: Vec<Timed>,
}

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
    /// Keys started on the adapter default (checked) while their search runs in the
    /// background ([`start_tile`]); a second product of the same key takes the same tile.
    started: HashMap<MatmulAutotuneKey, MatmulTile>,
}

impl State {
    fn new(path: Option<PathBuf>) -> Self {
        State {
            path,
            loaded: false,
            entries: Entries::new(),
            checked: HashSet::new(),
            failed: HashMap::new(),
            started: HashMap::new(),
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

fn tile_for_in(state: &Mutex<State>, ctx: &GpuContext, spec: &MatmulSpec) -> MatmulTile {
    if cfg!(target_arch = "wasm32") {
        // No waiting here: what was tuned and checked, else the default.
        let key = MatmulAutotuneKey::new(ctx, spec);
        let Ok(st) = state.try_lock() else {
            // Another trainer of the page is starting or tuning (the page's one thread).
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
async fn tile_for_in_async(
    state: &Mutex<State>,
    ctx: &GpuContext,
    spec: &MatmulSpec,
) -> MatmulTile {
    choose(state, ctx, spec, false).await.0
}

/// The tile for `spec`: a checked cache entry; else, with `defer`, the adapter default once it
/// passes its check, with the [`Search`] still to run; else a tuning, done now.
#[allow(clippy::await_holding_lock)]
async fn choose(
    state: &Mutex<State>,
    ctx: &GpuContext,
    spec: &MatmulSpec,
    defer: bool,
) -> (MatmulTile, Option<Search>) {
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
            return (tile, None);
        }
        if tile.unsupported_for(ctx, spec).is_none() {
            let why = match check_tile_async(ctx, spec, &tile).await {
                Ok(None) => {
                    st.checked.insert(key);
                    return (tile, None);
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
    if let Some(t) = st.failed.get(&key).or(st.started.get(&key)) {
        return (*t, None);
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
    if defer && default.unsupported_for(ctx, spec).is_none() {
        // Start on the default once it is right here; the search runs between steps.
        if let Ok(None) = check_tile_async(ctx, spec, &default).await {
            st.started.insert(key.clone(), default);
            return (default, Some(Search::new(ctx, spec, &wins)));
        }
    }
    let tile = match tune_with(ctx, spec, &wins).await {
        Ok(t) => record(st, key, spec, &t),
        Err(e) => {
            log::warn!("autotune {key}: {e}; using {default}");
            st.failed.insert(key, default);
            default
        }
    };
    (tile, None)
}

/// Remember `t`, the tuning of `spec` under `key`, in memory (checked) and in the cache file;
/// returns its choice.
fn record(st: &mut State, key: MatmulAutotuneKey, spec: &MatmulSpec, t: &Tuning) -> MatmulTile {
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
    st.started.remove(&key);
    st.checked.insert(key.clone());
    st.entries.insert(key, entry);
    t.best
}

/// Where a product starts when its tuning may run in the background: the tile to launch now
/// and, when that is the adapter default standing in for a product not tuned yet, the search
/// still to run ([`step`] it between training steps, then [`finish`] it).
///
/// The default is checked against the CPU twin on this product's edge shapes before it is
/// used (one or two small launches of the pipeline the product needs anyway), so a cold
/// process starts training at once instead of first timing every candidate of every product.
/// A default that fails its check is never used: the product is tuned at once, as
/// [`tile_for`] does.
pub fn start_tile(ctx: &GpuContext, spec: &MatmulSpec) -> (MatmulTile, Option<Search>) {
    if !enabled() {
        return (MatmulTile::default_for(ctx), None);
    }
    if cfg!(target_arch = "wasm32") {
        return (tile_for_in(state(), ctx, spec), None);
    }
    crate::util::wait_for("autotune", async {
        Ok(choose(state(), ctx, spec, true).await)
    })
    .unwrap_or_else(|_| (MatmulTile::default_for(ctx), None))
}

/// [`start_tile`] without blocking the browser: the page awaits it for each product before
/// preparing its programs. While another trainer of the page holds the tuner (the page's one
/// thread), the adapter default unchecked rather than blocking the page; likewise for a
/// product whose operands exceed the adapter's limits (the engine refuses its buffers next,
/// naming the limit).
pub async fn start_tile_async(ctx: &GpuContext, spec: &MatmulSpec) -> (MatmulTile, Option<Search>) {
    let cap = ctx
        .limits
        .max_storage_buffer_binding_size
        .min(ctx.limits.max_buffer_size);
    let fits = [spec.m * spec.k, spec.k * spec.n, spec.m * spec.n]
        .iter()
        .all(|&e| e as u64 * 4 <= cap);
    if !enabled() || !fits || state().try_lock().is_err() {
        return (MatmulTile::default_for(ctx), None);
    }
    choose(state(), ctx, spec, true).await
}

/// The choice of a finished (or abandoned) `search`: recorded in this process and the cache
/// file like a tuning done at once; the adapter default when no candidate passed. In the
/// browser, while another trainer holds the tuner, the search comes back to be finished later.
pub fn finish(ctx: &GpuContext, search: Search) -> std::result::Result<MatmulTile, Box<Search>> {
    let mut guard = if cfg!(target_arch = "wasm32") {
        match state().try_lock() {
            Ok(g) => g,
            Err(_) => return Err(Box::new(search)),
        }
    } else {
        lock(state())
    };
    let st = &mut *guard;
    let key = search.key.clone();
    let spec = search.spec;
    Ok(match search.finish(ctx) {
        Ok(t) => record(st, key, &spec, &t),
        Err(e) => {
            let default = MatmulTile::default_for(ctx);
            log::warn!("autotune {key}: {e}; using {default}");
            st.started.remove(&key);
            st.failed.insert(key, default);
            default
        }
    })
}

/// What background tuning did in one backend ([`crate::backend::gpu::GpuBackend::tune_pending`]):
/// every product that started on the adapter default, and what its search chose.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TuneReport {
    /// The products, in the order they were first prepared.
    pub products: Vec<TileChoice>,
    /// Seconds spent tuning between training steps.
    pub seconds: f64,
}

/// One product tuned in the background.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TileChoice {
    /// What its choice is cached under.
    #[serde(skip)]
    pub key: MatmulAutotuneKey,
    /// Its shape class.
    pub class: String,
    /// M, N, K of the first product of the class.
    pub shape: [usize; 3],
    /// The variant it started on (the adapter default, checked).
    pub started: String,
    /// The variant its search chose, once finished (`None`: still running when the run
    /// ended, or the background budget was spent).
    pub chosen: Option<String>,
}

/// One product's search over the candidates, a candidate at a time, so that it can run all at
/// once ([`tune`]) or between training steps ([`start_tile`]). Budgets count the time spent
/// on this product's candidates ([`KEY_BUDGET`]) and on tuning in the whole process
/// ([`TOTAL_BUDGET`]).
pub struct Search {
    /// What the choice is cached under.
    pub key: MatmulAutotuneKey,
    /// The product timed.
    pub spec: MatmulSpec,
    order: Vec<MatmulTile>,
    next: usize,
    best: Option<(MatmulTile, f64)>,
    timed: Vec<Timed>,
    n_timed: usize,
    /// Time spent on this product's candidates.
    spent: Duration,
}

impl Search {
    /// A search over `ctx`'s candidates for `spec`, best guess first (`wins`: the winners of
    /// other keys on this adapter, tried earlier).
    pub fn new(ctx: &GpuContext, spec: &MatmulSpec, wins: &[(MatmulTile, usize)]) -> Self {
        Search {
            key: MatmulAutotuneKey::new(ctx, spec),
            spec: *spec,
            order: ordered_candidates(ctx, spec, wins),
            next: 0,
            best: None,
            timed: Vec::new(),
            n_timed: 0,
            spent: Duration::ZERO,
        }
    }

    /// Whether every candidate was tried (or passed over).
    pub fn done(&self) -> bool {
        self.next >= self.order.len()
    }

    /// The fastest candidate so far that passed the CPU check.
    pub fn best(&self) -> Option<MatmulTile> {
        self.best.map(|b| b.0)
    }

    /// Time spent on this product's candidates so far.
    pub fn spent(&self) -> Duration {
        self.spent
    }

    /// Try the next candidate: passed over (unavailable, past a budget, too small to time),
    /// or checked against the CPU twin and timed.
    pub async fn step(&mut self, ctx: &GpuContext) {
        let Some(&tile) = self.order.get(self.next) else {
            return;
        };
        self.next += 1;
        let t0 = Instant::now();
        let outcome = self.try_tile(ctx, tile).await;
        let took = t0.elapsed();
        self.spent += took;
        *spent().lock().unwrap_or_else(|e| e.into_inner()) += took;
        self.timed.push(match outcome {
            Ok(s) => Timed {
                tile,
                median_s: Some(s),
                note: String::new(),
                spent_s: took.as_secs_f64(),
            },
            Err(note) => Timed {
                tile,
                median_s: None,
                note,
                spent_s: took.as_secs_f64(),
            },
        });
    }

    /// The candidate's median seconds, or why it has none.
    async fn try_tile(&mut self, ctx: &GpuContext, tile: MatmulTile) -> Result<f64, String> {
        let spec = &self.spec;
        if let Some(why) = tile.unsupported_for(ctx, spec) {
            return Err(format!("unavailable: {why}"));
        }
        let total = *spent().lock().unwrap_or_else(|e| e.into_inner());
        if self.best.is_some() && self.n_timed >= MIN_TIMED && self.spent > KEY_BUDGET {
            return Err("not tried: time budget for this shape spent".into());
        }
        if self.best.is_some() && total > TOTAL_BUDGET {
            return Err("not tried: tuning budget of this process spent".into());
        }
        if self.best.is_some() && spec.flops() < MIN_TIMED_FLOPS {
            return Err("not tried: product too small to time".into());
        }
        let (vl, vr) = spec.vec4_loads(&tile);
        if tile.algo == MatmulAlgo::Direct && tile.tm * tile.tn > 64 && !(vl && vr) {
            // Without vec4 loads on both sides, the big direct tiles compile for ~1 s on
            // lavapipe and run slower than the 8×8 ones.
            return Err("skipped: scalar loads".into());
        }
        match check_tile_async(ctx, spec, &tile).await {
            Ok(None) => {}
            Ok(Some(c)) => {
                log::warn!(
                    "autotune: {tile} fails the CPU check for {}: {}",
                    shape_class(spec),
                    failure(&c)
                );
                return Err(format!("wrong result on {}", c.shape));
            }
            Err(e) => return Err(format!("error: {e}")),
        }
        if spec.flops() < MIN_TIMED_FLOPS {
            // Checked but not timed.
            self.best = Some((tile, f64::NAN));
            return Err("chosen untimed: product too small to time".into());
        }
        match time_tile_async(ctx, spec, &tile, self.best.map(|b| b.1)).await {
            Ok(Some(s)) => {
                self.n_timed += 1;
                if self.best.is_none_or(|b| s < b.1) {
                    self.best = Some((tile, s));
                }
                Ok(s)
            }
            Ok(None) => Err(format!("dropped: over {SLOW_FACTOR}x slower than the best")),
            Err(e) => Err(format!("error: {e}")),
        }
    }

    /// The outcome: the fastest candidate that passed, with every candidate's time or note
    /// (those not reached yet marked so); an error when none passed.
    pub fn finish(mut self, ctx: &GpuContext) -> Result<Tuning> {
        for &tile in &self.order[self.next.min(self.order.len())..] {
            self.timed.push(Timed {
                tile,
                median_s: None,
                note: "not tried: the run ended first".into(),
                spent_s: 0.0,
            });
        }
        let (best, s) = self.best.ok_or_else(|| crate::Error::Unsupported {
            what: "matmul autotune".into(),
            reason: format!(
                "no matmul variant passed the CPU check on {}",
                ctx.describe()
            ),
        })?;
        Ok(Tuning {
            best,
            gflops: if s.is_finite() {
                self.spec.flops() / s / 1e9
            } else {
                0.0
            },
            timed: self.timed,
        })
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
    let mut search = Search::new(ctx, spec, wins);
    while !search.done() {
        search.step(ctx).await;
    }
    search.finish(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::autotune::cache::tests::test_entry;
    use crate::gpu::autotune::check::{
        check_matmul_async, check_shapes, check_tile, tile_mn, SABOTAGED,
    };
    use crate::gpu::autotune::{key, CHECK_SEED};
    use crate::gpu::context::AdapterChoice;
    use crate::gpu::kernels::Epilogue;
    use crate::oracle::Inputs;

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
        let c = pollster::block_on(check_matmul_async(
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
