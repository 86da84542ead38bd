//! Shared test helpers: one context per adapter present, and the replayable seed.
#![allow(dead_code)]

use wgtrain::gpu::context::{self, AdapterChoice};
use wgtrain::gpu::GpuContext;

/// Set by CI: a machine without any adapter fails instead of skipping GPU tests.
pub const REQUIRE_ENV: &str = "WGTRAIN_REQUIRE_ADAPTER";

/// A context for every adapter wgpu finds (on these machines: lavapipe on Vulkan and llvmpipe
/// on GL). With none, GPU tests say visibly that they were skipped, unless CI requires one.
pub fn contexts(test: &str) -> Vec<GpuContext> {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // Mesa's Vulkan loader complains without it; any writable folder will do.
        let dir = std::env::temp_dir().join("wgtrain-xdg");
        let _ = std::fs::create_dir_all(&dir);
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
    let adapters = context::list_adapters(&AdapterChoice::default()).unwrap_or_default();
    if adapters.is_empty() {
        if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!(
                "{test}: no GPU adapter found and {REQUIRE_ENV}=1 (install mesa-vulkan-drivers)"
            );
        }
        eprintln!(
            "SKIPPED {test}: no GPU adapter found (set {REQUIRE_ENV}=1 to make this a failure)"
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
    let s = wgtrain::verify::run_seed();
    eprintln!("{test}: seed {s} (replay with WGTRAIN_SEED={s})");
    s
}
