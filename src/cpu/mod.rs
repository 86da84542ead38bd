//! CPU twins of the WGSL kernels, one file per shader, deliberately simple and obviously
//! right (ndarray, no tricks). The GPU kernels are verified against these, and `--device cpu`
//! trains with them.

pub mod bias;
pub mod gather;
pub mod matmul;
pub mod metrics;
pub mod mlp;
pub mod relu;
pub mod sgd;
pub mod softmax_xent;
