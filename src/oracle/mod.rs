//! The oracle: what a kernel or op must compute and how close it must come. Pure maths on
//! seeded inputs, with no device in sight: [`Inputs`] (a seeded ChaCha8 stream) and the
//! per-op input generators, the f64 references (the CPU twins of [`crate::cpu`] evaluated in
//! f64 on the same f32 inputs), the tolerances argued from float32 rounding ([`tolerance`]),
//! and the comparisons that turn an output into a [`Check`].
//!
//! It depends only on [`crate::ops`] (shapes and hyperparameters) and the twins; the
//! autotuner's correctness check ([`crate::gpu::autotune`]) and `verify` (ops on any backend)
//! both use it, and nothing here imports either.
//!
//! Each check fills fresh random inputs from a seeded ChaCha8 stream, poisons every output
//! buffer with NaN before the launch (so an element the kernel never writes fails), runs the
//! kernel, and compares against the CPU twin evaluated in f64 on the same f32 inputs.
//!
//! Tolerances come from float32 rounding (u = 2⁻²⁴, the unit roundoff), per element:
//! * matmul: a dot product of length K computed in any order in f32 (with or without fma) is
//!   within γ_K·Σ|a_k·b_k| of the exact value, γ_K = K·u/(1 − K·u) (Higham, Accuracy and
//!   Stability of Numerical Algorithms, §3.1). The epilogue's bias add adds one rounding,
//!   u·|c|. So atol_ij = γ_K·(|A|·|B|)_ij, rtol = 2u.
//! * bias_backward: a serial sum for B ≤ 4096 (atol = γ_B·Σ|dy|), else 256 strided partial
//!   sums of ⌈B/256⌉ terms and an 8-level tree (atol = γ_(⌈B/256⌉+8)·Σ|dy|).
//! * gather labels, correct counts: exact.
//! * gather pixels: WGSL division is accurate to 2.5 ULP, rtol = 2.5·2u.
//! * softmax: each term e = exp(z − max z) carries the subtraction's rounding and WGSL's exp
//!   error, (3 + 2|x|) ULP: (6 + 5|x|)·u relative, x = z − max z; the row sum s of C positive
//!   terms adds γ_C to the largest term error; p = e·(1/s) adds 6u (2.5 ULP division, one
//!   product). Every part is relative, so rtol = term + sum + 6u and atol is only the
//!   flush-to-zero allowance 2⁻¹²⁶: a kernel that zeroes or garbles small probabilities fails.
//!   loss = log s + (max z − z_y) (the kernel subtracts first, so no error grows with |max z|):
//!   the relative error of s, `log`'s 2⁻²¹ absolute in [0.5, 2] (3 ULP elsewhere) and two
//!   roundings, ≤ u·(2|loss| + |ln s|). dlogits: p's bound times scale, plus 2u relative.
//! * sgd: g' = g + λw, v' = μv + g', w' = w − α·v' against the exact (f64) evaluation on the
//!   same f32 inputs and constants: five roundings (products and sums, fused or not), so
//!   |Δv'| ≤ 3u·(μ|v| + |g| + λ|w|) and |Δw'| ≤ u·|w| + 5u·α·(μ|v| + |g| + λ|w|), to first order
//!   (a factor 1 + 64u covers the rest).
//! * im2col, maxpool (y, idx and backward): exact — they only copy values (maxpool compares
//!   them); NaN matches NaN in maxpool's output, and idx (poisoned with u32::MAX) proves every
//!   window was written.
//! * avgpool: a serial sum of KH·KW terms and a division (γ_n·Σ|x|/n + 5u·|y|), see
//!   [`avgpool`]; its backward one division (5u relative).
//! * col2im: each dx element is a serial f32 sum of at most n = ⌈K/s⌉² dcols entries (fewer at
//!   the borders), so atol = γ_n·Σ|terms| (Higham's bound for recursive summation), where Σ|terms|
//!   is col2im of |dcols| in f64; masked elements are exactly 0.
//! * batchnorm: each op on its own inputs, bounds from its roundings, see [`batchnorm`].
//! * add (residual blocks): exact against the f32 twin, one correctly rounded addition or a
//!   copy, see [`add`].
//! * dropout: the mask exactly (integer hash); a kept element one product, u relative, see
//!   [`dropout`].
//! * adam: bounds from the handful of roundings, propagated per element in f64 (see
//!   `adam_bounds`): +, −, × are correctly rounded (≤ u·|result|, fused or not); WGSL's
//!   division is accurate to 2.5 ULP (≤ 5u relative) and `sqrt` inherits from
//!   1/inverseSqrt(x), i.e. 2 ULP then 2.5 ULP (≤ 9u relative). g' = g + λw carries 2u·(|g| +
//!   λ|w|); m' adds a·e_g + 4u·(|m| + a·(|g'| + |m|)) (a = 1 − β1); v' adds 4u·v' + 2(1 −
//!   β2)|g'|·e_g; √v' adds min(e_v/√v', √e_v) + 9u·√v'; the division by √(1 − β2ᵗ) 5u, + ε one
//!   u; m'/denom (e_m + |r|·e_denom)/denom + 5u|r|; w − step·r two more u. The kernel is
//!   compared with the exact (f64) evaluation of the same formula on the same f32 inputs and
//!   constants, and with the f32 twin at the sum of both bounds (the twin's sqrt and division
//!   are correctly rounded: u each).

pub mod adam;
pub mod add;
pub mod avgpool;
pub mod batchnorm;
pub mod bias;
pub mod compare;
pub mod conv2d;
pub mod dropout;
pub mod family;
pub mod gather;
pub mod inputs;
pub mod matmul;
pub mod maxpool;
pub mod metrics;
pub mod sgd;
pub mod softmax;
pub mod tolerance;

pub use adam::{
    adam_bounds, adam_compare, adam_exact, adam_inputs, adam_schedule_table, adam_shape, AdamCase,
    ADAM_SCHEDULE_LEN,
};
pub use add::{add_compare, add_inputs, add_shape, AddData, AddOutputs};
pub use avgpool::{avgpool_compare, avgpool_inputs, avgpool_shape};
pub use batchnorm::{
    batchnorm_compare, batchnorm_inputs, batchnorm_shape, batchnorm_twin_outputs, BatchNormData,
    BatchNormOutputs,
};
pub use bias::bias_backward_compare;
pub use compare::{compare, compare_exact, compare_u32, fail_nonfinite, Check};
pub use conv2d::{conv2d_compare, conv2d_inputs, conv2d_shape, conv_layer_compare};
pub use dropout::{dropout_compare, dropout_inputs, dropout_shape};
pub use family::Family;
pub use gather::{GatherData, GATHER_Y_POISON};
pub use inputs::{run_seed, Inputs};
pub use matmul::{matmul_compare, matmul_name, MatmulData, MatmulReference};
pub use maxpool::{maxpool_compare, maxpool_inputs, maxpool_shape, PoolInput};
pub use metrics::{metrics_compare, metrics_inputs, METRICS_START};
pub use sgd::{decay_compare, sgd_compare, sgd_inputs, SGD_PARAMS};
pub use softmax::{softmax_compare, softmax_extreme_logits, softmax_logits};
pub use tolerance::{gamma, U};
