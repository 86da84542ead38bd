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

pub mod cpu;
pub mod gpu;

/// A prepared program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramId(pub usize);

/// Which engine a backend is, for reports (`engine` in the JSON output).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Gpu,
    Cpu,
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
    /// Make `d` resident (pixels stay bytes).
    fn dataset(&mut self, d: &Dataset) -> Result<DataId>;
    /// Prepare `ops` to run as one program.
    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId>;
    /// Run a program `repeat` times in a row and wait for it to finish.
    fn run(&mut self, program: ProgramId, repeat: usize) -> Result<()>;
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
