//! wgtrain: a portable GPU training engine on WebGPU.
//!
//! WGSL compute kernels (`shaders/`) run through `wgpu` on Vulkan, Metal, DX12 or GL; each has a
//! CPU twin in [`cpu`] that it is checked against. Networks of dense, convolution and pooling
//! layers ([`model::Arch`], [`nn`]) train with SGD or Adam ([`train`]) entirely in GPU buffers,
//! or on the CPU engine (`backend::cpu`) that runs the same program.
//!
//! To embed it, start from [`Trainer`]: a network and settings ([`train::TrainConfig`], or a
//! [`model::Preset`]'s), a [`data::Dataset`] held in memory, then `fit`, `evaluate`, `predict`,
//! `save` and `load` (`examples/train_in_memory.rs`). Errors are typed ([`Error`]) and name no
//! command-line flag; [`error::Wording`] lets a front end name its own settings.
//!
//! The library also builds for `wasm32-unknown-unknown` (the browser): there the CPU engine
//! (`fastcpu`, threads and SIMD products), the benchmarks and the dataset download are left
//! out, and the CPU path is the plain twins ([`backend::reference`]).

#![warn(missing_docs)]

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
pub mod trainer;
pub use trainer::Trainer;
pub mod util;
pub mod verify;
