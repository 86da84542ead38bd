//! The GPU side: [`context`] owns all wgpu setup, [`kernels`] has one launcher per WGSL entry
//! point.

pub mod autotune;
pub mod context;
pub mod kernels;

pub use context::{AdapterChoice, GpuContext, Launch};
