//! Cross-check of residual blocks against PyTorch: `tests/fixtures/torch_residual_steps
//! .safetensors` (made by `scripts/make_residual_fixture.py`) holds a small residual net with
//! BatchNorm — an identity block and a block projected by a stride-2 1×1 convolution and
//! BatchNorm, written in PyTorch as torchvision's BasicBlock — its initial state, 20 samples,
//! and the state after 3 SGD-momentum steps in training mode (weights, running means and
//! variances, `num_batches_tracked`; the last minibatch partial), plus the evaluation-mode
//! loss afterwards. The fixture's state dict loads by wgtrain's `layers.{i}` names, so the
//! parameter order is PyTorch's. wgtrain must reproduce it on the CPU engine and every
//! adapter.

mod common;

const FIXTURE: &str = "tests/fixtures/torch_residual_steps.safetensors";

/// Tolerance on weights and running statistics, argued as for the BatchNorm fixture
/// (`tests/torch_batchnorm.rs`, 2e-6): PyTorch's own f32 run is within 1.0e-7 of its f64 run
/// (the fixture's `f32_vs_f64_max_abs`); wgtrain sums in other orders (statistics over up to
/// 8·36 rows, products through im2col), errors of the γ_n kind on O(1) normalised values,
/// times lr 0.1 and the momentum over 3 steps. The adds of the blocks are single correctly
/// rounded additions and add nothing of that order. Measured: 1.2e-7 on the CPU engine,
/// 6.0e-8 on lavapipe and on llvmpipe (GL).
const TOL: f32 = 2e-6;

#[test]
fn three_sgd_steps_through_residual_blocks_match_pytorch_weights_and_running_statistics() {
    common::torch_steps::three_sgd_steps_match(FIXTURE, "torch_residual", TOL);
}
