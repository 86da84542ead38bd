//! CPU twins of the WGSL kernels, one file per shader, deliberately simple and obviously
//! right (ndarray, no tricks). The GPU kernels are verified against these, and `--device cpu`
//! trains with them.

pub mod adam;
pub mod add;
pub mod avgpool;
pub mod batchnorm;
pub mod bias;
pub mod conv2d;
pub mod decay;
pub mod dropout;
pub mod gather;
pub mod matmul;
pub mod maxpool;
pub mod metrics;
pub mod sgd;
pub mod softmax_xent;
