//! wgtrain: a portable GPU training engine on WebGPU.
//!
//! WGSL compute kernels (`shaders/`) run through `wgpu` on Vulkan, Metal, DX12 or GL; each has a
//! CPU twin in [`cpu`] that it is checked against. [`train`] runs SGD for multilayer perceptrons
//! entirely in GPU buffers.
//!
//! The library also builds for `wasm32-unknown-unknown` (the browser): there the CPU engine
//! (`fastcpu`, threads and SIMD products), the benchmarks and the dataset download are left
//! out, and the CPU path is the plain twins ([`backend::reference`]).

pub mod backend;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod cpu;
pub mod data;
pub mod dist;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod fastcpu;
pub mod gpu;
pub mod model;
pub mod nn;
pub mod ops;
pub mod oracle;
#[cfg(not(target_arch = "wasm32"))]
pub mod peak;
pub mod report;

pub use error::{Error, Result};
pub mod train;
pub mod util;
pub mod verify;
