//! Time to the first step of a training process, cold and warm (issue 23): `wgtrain train`
//! started as a child process on the bench's adapter, with a fresh cache folder (no autotune
//! choices, no pipeline cache) and then again with the folder the cold run left.
//!
//! A child process, not an engine built in this one, because a process is what a user
//! starts: the figure includes opening the device, reading the data and compiling the
//! pipelines, and nothing this process already did (a device, Mesa's in-memory caches, the
//! autotune choices it remembers) can leak into a cold start. Each child reports
//! `startup_seconds` (process start to the first step) and `tuning.seconds` (tuning done
//! between its steps) in its `--json` summary.

use super::{median, BenchOpts, Record};
use crate::gpu::GpuContext;
use crate::model::Preset;
use crate::Result;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The presets whose first step is timed: the two.
const PRESETS: [Preset; 2] = [Preset::SeedLarge, Preset::Lenet5];

/// Steps each child trains: enough chunks for the background tuning to run between them.
const STEPS: usize = 60;

/// Synthetic MNIST-shaped training images in the IDX format.
const SAMPLES: usize = 1000;

/// A folder under the system's temporary folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("wgtrain-first-step-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io(&dir, e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Seeded random 28×28 images and labels as the two IDX files `idx:` reads.
fn write_data(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let mut inp = crate::verify::Inputs::new(17);
    let mut x = vec![0, 0, 8, 3];
    for d in [SAMPLES, 28, 28] {
        x.extend((d as u32).to_be_bytes());
    }
    x.extend((0..SAMPLES * 784).map(|_| inp.next_u64() as u8));
    let mut y = vec![0, 0, 8, 1];
    y.extend((SAMPLES as u32).to_be_bytes());
    y.extend((0..SAMPLES).map(|_| (inp.next_u64() % 10) as u8));
    let (xp, yp) = (dir.join("x.idx"), dir.join("y.idx"));
    std::fs::write(&xp, x).map_err(|e| crate::Error::io(&xp, e))?;
    std::fs::write(&yp, y).map_err(|e| crate::Error::io(&yp, e))?;
    Ok((xp, yp))
}

/// One child: (seconds to the first step, seconds tuned), or why it failed.
fn child(
    exe: &Path,
    ctx: &GpuContext,
    preset: Preset,
    data: &(PathBuf, PathBuf),
    cache: &Path,
) -> std::result::Result<(f64, f64), String> {
    let out = cache.join("model.safetensors");
    let result = Command::new(exe)
        .args(["train", "--preset", preset.name(), "--device", "gpu"])
        .args([
            "--backend",
            &format!("{:?}", ctx.info.backend).to_lowercase(),
        ])
        .args(["--adapter", &ctx.info.name])
        .args(["--max-steps", &STEPS.to_string(), "--json"])
        .arg("--data")
        .arg(format!("idx:{},{}", data.0.display(), data.1.display()))
        .arg("--out")
        .arg(&out)
        .env(crate::util::ENV_CACHE_DIR, cache)
        .output()
        .map_err(|e| format!("could not start {}: {e}", exe.display()))?;
    if !result.status.success() {
        let err = String::from_utf8_lossy(&result.stderr);
        return Err(err.lines().last().unwrap_or("no message").to_string());
    }
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout)
        .map_err(|e| format!("its --json summary did not parse: {e}"))?;
    let startup = summary["startup_seconds"]
        .as_f64()
        .ok_or("its summary has no startup_seconds")?;
    let tuned = summary["tuning"]["seconds"].as_f64().unwrap_or(0.0);
    Ok((startup, tuned))
}

/// Rows `first step PRESET` × {cold, warm}: the median over a few child processes of the
/// seconds from process start to the first step (as milliseconds in `median_ms`), each cold
/// child with a cache folder of its own, each warm one with the folder its cold run left.
/// `exe` is the `wgtrain` binary (the front end passes its own path).
pub fn first_step_records(ctx: &GpuContext, opts: &BenchOpts, exe: &Path) -> Result<Vec<Record>> {
    let runs = if opts.quick { 1 } else { 3 };
    let scratch = Scratch::new()?;
    let data = write_data(&scratch.0)?;
    let mut out = Vec::new();
    for preset in PRESETS {
        let mut times = [Vec::new(), Vec::new()];
        let mut tuned = [Vec::new(), Vec::new()];
        let mut failure = None;
        for run in 0..runs {
            let cache = scratch.0.join(format!("{}-{run}", preset.name()));
            std::fs::create_dir_all(&cache).map_err(|e| crate::Error::io(&cache, e))?;
            for mode in 0..2 {
                match child(exe, ctx, preset, &data, &cache) {
                    Ok((s, t)) => {
                        times[mode].push(s);
                        tuned[mode].push(t);
                    }
                    Err(e) => failure = Some(e),
                }
            }
        }
        for (mode, name) in ["cold", "warm"].into_iter().enumerate() {
            let mut r = Record::new(ctx, &format!("first step {}", preset.name()), name.into());
            r.median_ms = median(times[mode].clone()) * 1e3;
            r.timing = format!(
                "wall: process start to the first step, median of {} processes",
                times[mode].len()
            );
            r.note = match (&failure, mode) {
                (Some(e), _) if times[mode].is_empty() => format!("failed: {e}"),
                (_, 0) => format!(
                    "an empty cache folder; then {:.2} s of tuning between its {STEPS} steps \
                     (median)",
                    median(tuned[0].clone())
                ),
                _ => format!(
                    "the cache folder its cold run left; {:.2} s of tuning (median)",
                    median(tuned[1].clone())
                ),
            };
            out.push(r);
        }
    }
    Ok(out)
}
