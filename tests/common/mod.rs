//! Shared test helpers: one context per adapter present (and the adapters CI requires), the
//! replayable seed, and a cache folder of this test process instead of the user's.
#![allow(dead_code)]

pub mod torch_steps;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use wgtrain::gpu::context::{self, AdapterChoice};
use wgtrain::gpu::GpuContext;

/// Set by CI so that a missing adapter fails instead of skipping the GPU tests: `1` asks for at
/// least one adapter, a comma list of backends (`vulkan,gl`) for an adapter on each of them.
/// Unset, empty or `0`: GPU tests without an adapter print `SKIPPED`.
pub const REQUIRE_ENV: &str = "WGTRAIN_REQUIRE_ADAPTER";

/// The crate's cache root (`wgtrain::util::ENV_CACHE_DIR`): the autotuner's `autotune.json`
/// and the MNIST download cache live under it.
pub const CACHE_ENV: &str = "WGTRAIN_CACHE_DIR";

/// Names the autotune cache file itself, overriding [`CACHE_ENV`]; a user's value would point
/// the tests at their own cache, so the tests drop it.
pub const AUTOTUNE_CACHE_ENV: &str = "WGTRAIN_AUTOTUNE_CACHE";

/// What [`REQUIRE_ENV`] asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Required {
    /// Skip GPU tests when there is no adapter.
    Nothing,
    /// At least one adapter, on any backend (`1`).
    Any,
    /// An adapter on each named backend (`vulkan,gl`), with the names as written.
    Backends(Vec<(String, wgpu::Backends)>),
}

/// Parse a [`REQUIRE_ENV`] value; an unknown backend name is an error (a typo must not
/// quietly require nothing).
pub fn parse_required(value: Option<&str>) -> Result<Required, String> {
    let v = value.map(str::trim).unwrap_or("");
    match v {
        "" | "0" => return Ok(Required::Nothing),
        "1" => return Ok(Required::Any),
        _ => {}
    }
    v.split(',')
        .map(|name| {
            let name = name.trim().to_ascii_lowercase();
            match context::parse_backends(&name) {
                Ok(b) if !name.is_empty() && name != "all" => Ok((name, b)),
                _ => Err(format!(
                    "{REQUIRE_ENV}={v}: {name:?} is not a backend; expected 1 or a comma list of vulkan, gl, metal, dx12"
                )),
            }
        })
        .collect::<Result<_, _>>()
        .map(Required::Backends)
}

/// Whether adapters on `found` satisfy `req`; else one line naming what is missing.
pub fn check_required(found: &[wgpu::Backend], req: &Required) -> Result<(), String> {
    let found_names = || {
        let v: Vec<&str> = found.iter().map(|b| b.to_str()).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    match req {
        Required::Nothing => Ok(()),
        Required::Any if found.is_empty() => Err(format!(
            "no GPU adapter found and {REQUIRE_ENV}=1 (install mesa-vulkan-drivers)"
        )),
        Required::Any => Ok(()),
        Required::Backends(want) => {
            let missing: Vec<&str> = want
                .iter()
                .filter(|(_, b)| !found.iter().any(|&f| b.contains(wgpu::Backends::from(f))))
                .map(|(name, _)| name.as_str())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            let all: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
            let hint = |name: &str| match name {
                "vulkan" | "vk" => " (lavapipe: install mesa-vulkan-drivers)",
                "gl" | "gles" | "opengl" => {
                    " (llvmpipe: install libegl1, libegl-mesa0 and libgl1-mesa-dri)"
                }
                _ => "",
            };
            let named: Vec<String> = missing.iter().map(|m| format!("{m}{}", hint(m))).collect();
            Err(format!(
                "no GPU adapter on {} but {REQUIRE_ENV}={} (adapters found on: {})",
                named.join(", "),
                all.join(","),
                found_names()
            ))
        }
    }
}

/// [`REQUIRE_ENV`] of this process, parsed; panics on a value that names no backend.
pub fn required() -> Required {
    let v = std::env::var(REQUIRE_ENV).ok();
    parse_required(v.as_deref()).unwrap_or_else(|e| panic!("{e}"))
}

static CACHE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Prepare this test process's environment, once: a writable `XDG_RUNTIME_DIR` for Mesa's
/// Vulkan loader, and [`CACHE_ENV`] pointing at a fresh folder of this process when it is not
/// set already (CI exports one for the whole run), so that tests neither read the user's
/// autotune cache (a stale choice there would change what the tests run) nor write into it.
/// Returns the cache folder. Every helper here calls it before anything touches a GPU.
pub fn setup() -> &'static Path {
    CACHE_DIR.get_or_init(|| {
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            // Mesa's Vulkan loader complains without it; any writable folder will do.
            let dir = std::env::temp_dir().join("wgtrain-xdg");
            let _ = std::fs::create_dir_all(&dir);
            std::env::set_var("XDG_RUNTIME_DIR", dir);
        }
        std::env::remove_var(AUTOTUNE_CACHE_ENV);
        match std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                // Not created here: only a process that tunes writes its autotune.json there
                // (the folder then stays behind in the temp folder, up to a few hundred KiB).
                // The pid and the clock make it this process's own.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let dir = std::env::temp_dir()
                    .join(format!("wgtrain-test-cache-{}-{nanos}", std::process::id()));
                std::env::set_var(CACHE_ENV, &dir);
                dir
            }
        }
    })
}

/// The `wgtrain` binary with this process's test environment: the cache folder of [`setup`]
/// (never the user's), the same `XDG_RUNTIME_DIR`, no autotune-cache override, no
/// `MNIST_DIR`.
pub fn wgtrain_command() -> Command {
    let cache = setup();
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgtrain"));
    c.env(CACHE_ENV, cache)
        .env_remove(AUTOTUNE_CACHE_ENV)
        .env_remove("MNIST_DIR");
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        c.env("XDG_RUNTIME_DIR", xdg);
    }
    c
}

/// A context for every adapter wgpu finds (on these machines: lavapipe on Vulkan and llvmpipe
/// on GL). With none, GPU tests say visibly that they were skipped; panics (in one line) when
/// an adapter [`REQUIRE_ENV`] asks for is missing.
pub fn contexts(test: &str) -> Vec<GpuContext> {
    setup();
    let adapters = context::list_adapters(&AdapterChoice::default()).unwrap_or_default();
    let found: Vec<wgpu::Backend> = adapters.iter().map(|a| a.get_info().backend).collect();
    if let Err(msg) = check_required(&found, &required()) {
        panic!("{test}: {msg}");
    }
    if adapters.is_empty() {
        eprintln!(
            "SKIPPED {test}: no GPU adapter found (set {REQUIRE_ENV}=1, or =vulkan,gl, to make this a failure)"
        );
        return Vec::new();
    }
    adapters
        .into_iter()
        .map(|a| GpuContext::from_adapter(a).expect("open adapter"))
        .collect()
}

/// The seed for this run, printed so a failure can be replayed with WGTRAIN_SEED.
pub fn seed(test: &str) -> u64 {
    setup();
    let s = wgtrain::verify::run_seed();
    eprintln!("{test}: seed {s} (replay with WGTRAIN_SEED={s})");
    s
}

/// Largest |a − b| over every weight and bias of two models of one architecture.
pub fn max_diff(a: &wgtrain::model::Model, b: &wgtrain::model::Model) -> f32 {
    a.params
        .iter()
        .zip(&b.params)
        .flat_map(|(x, y)| {
            x.weight
                .iter()
                .zip(y.weight.iter())
                .chain(x.bias.iter().zip(y.bias.iter()))
                .map(|(p, q)| (p - q).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max)
}
