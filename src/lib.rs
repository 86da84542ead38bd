//! wgtrain: a portable GPU training engine on WebGPU.
//!
//! WGSL compute kernels (`shaders/`) run through `wgpu` on Vulkan, Metal, DX12 or GL; each has a
//! CPU twin in [`cpu`] that it is checked against. [`train`] runs SGD for multilayer perceptrons
//! entirely in GPU buffers.

pub mod backend;
pub mod bench;
pub mod cpu;
pub mod data;
pub mod dist;
pub mod error;
pub mod fastcpu;
pub mod gpu;
pub mod model;
pub mod nn;
pub mod ops;
pub mod peak;
pub mod report;

pub use error::{Error, Result};
pub mod train;
pub mod util;
pub mod verify;
