//! Where programs run. A [`Backend`] owns buffers of 32-bit words and resident datasets, and
//! runs programs: lists of backend-neutral [`Op`]s that the training step writes once.
//!
//! * [`gpu::GpuBackend`] prepares every op of a program as a launch (pipeline, bind group,
//!   workgroup counts) when the program is prepared, and replays the launches from one command
//!   buffer per [`Backend::run`]; nothing is read back unless asked.
//! * [`cpu::CpuBackend`] executes each op with its CPU twin from [`crate::cpu`] when the program
//!   runs.

use crate::data::Dataset;
use crate::ops::{BufId, DataId, Op};
use crate::Result;

#[cfg(not(target_arch = "wasm32"))]
pub mod cpu;
pub mod gpu;
pub mod reference;

/// A prepared program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramId(pub usize);

/// Which engine a backend is, for reports (`engine` in the JSON output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// WGSL kernels through wgpu ([`gpu::GpuBackend`]).
    Gpu,
    /// The CPU twins, plain or fast ([`cpu::CpuBackend`], [`reference::ReferenceBackend`]).
    Cpu,
}

/// How [`Backend::run_timed`] took a run's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// The device's timestamp queries written just before and just after the run's work: the
    /// time the device spent, without the host's submission and wait.
    Timestamp,
    /// The host's clock around [`Backend::run`]: submission (if any), execution and the wait.
    Wall,
}

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Clock::Timestamp => "timestamp",
            Clock::Wall => "wall",
        })
    }
}

/// Seconds a run took ([`Backend::run_timed`]) and how they were taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timed {
    /// Seconds for the whole run (every repeat).
    pub secs: f64,
    /// Which clock measured them.
    pub clock: Clock,
}

/// Buffers, datasets and programs on one device.
pub trait Backend {
    /// Human-readable device ("cpu (ndarray)" or the adapter and backend).
    fn describe(&self) -> String;
    /// GPU or CPU.
    fn kind(&self) -> EngineKind;
    /// (adapter name, graphics backend) for reports; ("cpu", "ndarray") on the CPU.
    fn adapter(&self) -> (String, String);
    /// A zero-filled buffer of `words` 32-bit words; refused in one line when the device
    /// cannot hold it (naming `label` and the limit).
    fn alloc(&mut self, label: &str, words: usize) -> Result<BufId>;
    /// Overwrite the first `data.len()` words of `buf`.
    fn write(&mut self, buf: BufId, data: &[u32]) -> Result<()>;
    /// The first `words` words of `buf` (waits for queued work).
    fn read(&mut self, buf: BufId, words: usize) -> Result<Vec<u32>>;
    /// [`Backend::read_into`] without blocking the browser's thread: the GPU backend's waits
    /// for the device; the CPU backends' is ready at once.
    fn read_into_async<'a>(
        &'a mut self,
        bufs: &'a [(BufId, usize)],
        out: &'a mut [u32],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
        Box::pin(std::future::ready(self.read_into(bufs, out)))
    }
    /// The first `words` words of each buffer, one after another, into `out` (which holds
    /// their sum): one wait for them all where the device allows, no allocation.
    fn read_into(&mut self, bufs: &[(BufId, usize)], out: &mut [u32]) -> Result<()> {
        let mut at = 0;
        for &(b, words) in bufs {
            out[at..at + words].copy_from_slice(&self.read(b, words)?);
            at += words;
        }
        Ok(())
    }
    /// Make `d` resident (pixels stay bytes).
    fn dataset(&mut self, d: &Dataset) -> Result<DataId>;
    /// Prepare `ops` to run as one program.
    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId>;
    /// Run a program `repeat` times in a row and wait for it to finish.
    fn run(&mut self, program: ProgramId, repeat: usize) -> Result<()>;
    /// [`Backend::run`], timed (for benchmarks): by the device's own timestamps where the
    /// backend can take them, else (the default) by the host's clock around `run`.
    fn run_timed(&mut self, program: ProgramId, repeat: usize) -> Result<Timed> {
        let t = web_time::Instant::now();
        self.run(program, repeat)?;
        Ok(Timed {
            secs: t.elapsed().as_secs_f64(),
            clock: Clock::Wall,
        })
    }
    /// The GPU backend, when this is one: `verify` pins its matmul variant
    /// ([`gpu::GpuBackend::pin_matmul_tile`]); `None` for every other backend.
    fn as_gpu(&mut self) -> Option<&mut gpu::GpuBackend> {
        None
    }
}

impl dyn Backend + '_ {
    /// A buffer holding `data`.
    pub fn upload_f32(&mut self, label: &str, data: &[f32]) -> Result<BufId> {
        let b = self.alloc(label, data.len())?;
        self.write(b, bytemuck::cast_slice(data))?;
        Ok(b)
    }
    /// Overwrite the start of `buf` with f32 values.
    pub fn write_f32(&mut self, buf: BufId, data: &[f32]) -> Result<()> {
        self.write(buf, bytemuck::cast_slice(data))
    }
    /// The first `n` f32 values of `buf`.
    pub fn read_f32(&mut self, buf: BufId, n: usize) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_slice(&self.read(buf, n)?).to_vec())
    }
}

/// A zero-filled host buffer of `words` 32-bit words appended to `bufs` (the CPU backends'
/// memory); refused in one line when the allocation fails.
pub(crate) fn host_alloc(bufs: &mut Vec<Vec<u32>>, label: &str, words: usize) -> Result<BufId> {
    let mut v = Vec::new();
    v.try_reserve_exact(words.max(1))
        .map_err(|_| crate::Error::OutOfMemory {
            label: label.to_string(),
            words,
        })?;
    v.resize(words.max(1), 0);
    bufs.push(v);
    Ok(BufId(bufs.len() - 1))
}

/// `WGTRAIN_PROFILE=1`: the wall time per op or kernel (summed over a program's `repeat`
/// runs), slowest first, to stderr. Each op runs alone and is waited for, so a profiled run is
/// slower than a normal one; it is for finding what dominates a step.
pub(crate) fn print_profile(mut rows: Vec<(String, (usize, f64))>, repeat: usize) {
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let total: f64 = rows.iter().map(|r| r.1 .1).sum();
    eprintln!(
        "profile: {repeat} run(s), {:.2} ms per run",
        1e3 * total / repeat as f64
    );
    for (name, (n, secs)) in rows {
        eprintln!(
            "  {:>8.3} ms/run {:>5.1}%  {n:>6} ops  {name}",
            1e3 * secs / repeat as f64,
            100.0 * secs / total
        );
    }
}

/// Where to train or evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg(not(target_arch = "wasm32"))]
pub enum DeviceChoice {
    /// The best GPU adapter when it is a hardware one; the CPU engine when the best is a
    /// software rasteriser (lavapipe, llvmpipe, SwiftShader, WARP) or there is none.
    Auto,
    /// A GPU adapter (software ones included); fail if there is none.
    Gpu,
    /// The CPU engine.
    Cpu,
}

/// Why [`DeviceChoice::Auto`] chose the CPU engine; `Display` is a one-line note for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuFallback {
    /// The best adapter is a software rasteriser, which the CPU engine outruns.
    SoftwareAdapter {
        /// The adapter's name.
        adapter: String,
        /// The CPU engine, described.
        engine: String,
    },
    /// There is no adapter.
    NoAdapter {
        /// The CPU engine, described.
        engine: String,
    },
}

impl std::fmt::Display for CpuFallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CpuFallback::SoftwareAdapter { adapter, engine } => write!(
                f,
                "note: the best GPU adapter is a software one ({adapter}); using the CPU engine, \
                 {engine}"
            ),
            CpuFallback::NoAdapter { engine } => {
                write!(
                    f,
                    "note: no GPU adapter found; using the CPU engine, {engine}"
                )
            }
        }
    }
}

/// The backend for `device`, and why `Auto` chose the CPU engine when it did. `threads` sizes
/// the CPU engine's pool (default: every core available).
#[cfg(not(target_arch = "wasm32"))]
pub fn open(
    device: DeviceChoice,
    adapter: &crate::gpu::AdapterChoice,
    threads: Option<usize>,
) -> Result<(Box<dyn Backend>, Option<CpuFallback>)> {
    let cpu = || -> Result<Box<dyn Backend>> {
        Ok(Box::new(match threads {
            Some(t) => cpu::CpuBackend::with_threads(t)?,
            None => cpu::CpuBackend::new(),
        }))
    };
    if let Some(t) = threads {
        cpu::check_threads(t)?;
    }
    match device {
        DeviceChoice::Cpu => Ok((cpu()?, None)),
        DeviceChoice::Gpu => Ok((
            Box::new(gpu::GpuBackend::new(crate::gpu::GpuContext::new(adapter)?)),
            None,
        )),
        DeviceChoice::Auto => match crate::gpu::GpuContext::new(adapter) {
            Ok(ctx) if ctx.info.device_type == wgpu::DeviceType::Cpu => {
                let be = cpu()?;
                let note = CpuFallback::SoftwareAdapter {
                    adapter: ctx.info.name.clone(),
                    engine: be.describe(),
                };
                Ok((be, Some(note)))
            }
            Ok(ctx) => Ok((Box::new(gpu::GpuBackend::new(ctx)), None)),
            Err(crate::Error::NoAdapter { .. }) => {
                let be = cpu()?;
                let note = CpuFallback::NoAdapter {
                    engine: be.describe(),
                };
                Ok((be, Some(note)))
            }
            Err(e) => Err(e),
        },
    }
}
