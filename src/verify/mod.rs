//! Kernel-versus-CPU verification, shared by the test suite and `wgtrain verify`.
//!
//! Two paths share the inputs, oracles and tolerances below: [`run_family`] launches the WGSL
//! kernels on a [`GpuContext`]; [`run_backend_family`] ([`ops`], `wgtrain verify --device cpu`)
//! runs programs of [`crate::ops::Op`]s on any [`crate::backend::Backend`], poisoning outputs,
//! guarding the words past every buffer and checking inputs come back unchanged. Where a bound
//! below assumes the GPU's summation order, the backend path uses the any-order bound γ_n·Σ|terms|.
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
//! * bias_add: one correctly rounded addition, rtol = u.
//! * bias_backward: a serial sum for B ≤ 4096 (atol = γ_B·Σ|dy|), else 256 strided partial
//!   sums of ⌈B/256⌉ terms and an 8-level tree (atol = γ_(⌈B/256⌉+8)·Σ|dy|).
//! * relu, argmax, gather labels, correct counts: exact.
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
//! * col2im: each dx element is a serial f32 sum of at most n = ⌈K/s⌉² dcols entries (fewer at
//!   the borders), so atol = γ_n·Σ|terms| (Higham's bound for recursive summation), where Σ|terms|
//!   is col2im of |dcols| in f64; masked elements are exactly 0.
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

use crate::cpu;
use crate::gpu::kernels::{self, Epilogue, MatmulSpec, MatmulTile, MetricsAcc, SgdParams};
use crate::gpu::GpuContext;
use crate::ops::{AdamParams, Conv2dSpec, Pool2dSpec};
use crate::Result;
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub mod coverage;
pub mod ops;
pub use ops::{run_backend_family, run_backend_family_async, OP_FAMILIES};

/// Unit roundoff of f32.
pub const U: f64 = 1.0 / (1u64 << 24) as f64;

fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

/// Outcome of one kernel on one shape.
#[derive(Clone, Debug)]
pub struct Check {
    pub kernel: String,
    pub shape: String,
    /// Largest |gpu − cpu|.
    pub max_abs: f64,
    /// Largest |gpu − cpu| / |cpu| over elements with cpu ≠ 0.
    pub max_rel: f64,
    /// Largest error / tolerance (≤ 1 passes).
    pub worst: f64,
    /// Elements out of tolerance (NaN counts: an unwritten element stays NaN).
    pub bad: usize,
    pub elements: usize,
}

impl Check {
    /// A check of `cpu_len` reference elements with nothing wrong yet, or wholly failed when
    /// the kernel produced a different number of elements.
    fn start(kernel: &str, shape: String, gpu_len: usize, cpu_len: usize) -> Check {
        let mut c = Check {
            kernel: kernel.to_string(),
            shape,
            max_abs: 0.0,
            max_rel: 0.0,
            worst: 0.0,
            bad: 0,
            elements: cpu_len,
        };
        if gpu_len != cpu_len {
            c.bad = cpu_len.max(1);
            c.worst = f64::INFINITY;
        }
        c
    }

    /// Within tolerance everywhere.
    pub fn pass(&self) -> bool {
        self.bad == 0
    }
}

/// Compare `gpu` against `cpu` with per-element tolerance `atol[i] + rtol[i]·|cpu[i]|`.
pub fn compare(
    kernel: &str,
    shape: String,
    gpu: &[f32],
    cpu: &[f64],
    tol: impl Fn(usize) -> (f64, f64),
) -> Check {
    let mut c = Check::start(kernel, shape, gpu.len(), cpu.len());
    if c.bad > 0 {
        return c;
    }
    for (i, (&g, &r)) in gpu.iter().zip(cpu).enumerate() {
        if g as f64 == r {
            continue; // covers equal infinities (whose difference is NaN)
        }
        let err = (g as f64 - r).abs();
        let (atol, rtol) = tol(i);
        let t = atol + rtol * r.abs();
        // Unequal and either side NaN or infinite: a failure (an infinite reference would
        // also make the relative tolerance infinite and pass anything).
        if !err.is_finite() {
            c.bad += 1;
            c.worst = f64::INFINITY;
            c.max_abs = f64::INFINITY;
            continue;
        }
        c.max_abs = c.max_abs.max(err);
        if r != 0.0 {
            c.max_rel = c.max_rel.max(err / r.abs());
        }
        let ratio = if t > 0.0 { err / t } else { f64::INFINITY };
        c.worst = c.worst.max(ratio);
        if err > t {
            c.bad += 1;
        }
    }
    c
}

/// The random source for one verification run.
pub struct Inputs {
    rng: ChaCha8Rng,
}

impl Inputs {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Inputs {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
    /// Uniform in [-1, 1].
    pub fn matrix(&mut self, rows: usize, cols: usize) -> Array2<f32> {
        Array2::from_shape_simple_fn((rows, cols), || self.rng.random_range(-1.0f32..=1.0))
    }
    /// Uniform in [lo, hi].
    pub fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.rng.random_range(lo..=hi)).collect()
    }
    /// Labels in 0..classes, with about one in eight replaced by a padding label (the
    /// gather's marker or C).
    pub fn labels(&mut self, n: usize, classes: usize, padding: bool) -> Array1<u32> {
        (0..n)
            .map(|_| {
                if padding && self.rng.random_range(0..8) == 0 {
                    // Any label ≥ C is padding: the gather's own marker, or C itself, where
                    // a `< C` test and a `≤ C` test differ (found by cargo-mutants).
                    if self.rng.random() {
                        kernels::PADDING_LABEL
                    } else {
                        classes as u32
                    }
                } else {
                    self.rng.random_range(0..classes as u32)
                }
            })
            .collect()
    }
    /// Raw random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.random()
    }
}

/// A seed for this run: `WGTRAIN_SEED` if set (to replay a failure), else fresh from the clock.
pub fn run_seed() -> u64 {
    if let Some(s) = std::env::var("WGTRAIN_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return s;
    }
    let t = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    #[cfg(not(target_arch = "wasm32"))]
    let t = t ^ (std::process::id() as u64).rotate_left(32);
    t
}

fn f64s(a: &[f32]) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

fn to64(a: &Array2<f32>) -> Array2<f64> {
    a.mapv(|v| v as f64)
}

/// The matmul shapes (M, N, K) every variant is checked on: 1, smaller than a tile, exact tile
/// multiples, primes, K ≫ M·N, the MNIST MLP's products, and one ≥ 1000³.
pub const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 1, 7),
    (3, 5, 2),
    (15, 17, 9),
    (16, 16, 16),
    (64, 64, 64),
    (128, 64, 32),
    (65, 63, 17),
    (7, 13, 257),
    (13, 7, 1),
    (31, 1000, 1),
    (2, 3, 4099),
    (5, 3, 10007),
    (1, 512, 784),
    (257, 1, 3),
    (100, 512, 784),
    (100, 10, 512),
    (100, 512, 512),
    (512, 784, 100),
    (100, 784, 512),
    (10, 512, 100),
    (1000, 1000, 1000),
];

/// Random inputs of one matmul check: A and B stored as the spec's transposes say, a bias, a
/// ReLU mask and the C an accumulating product adds to.
pub(crate) struct MatmulData {
    pub a: Array2<f32>,
    pub b: Array2<f32>,
    pub bias: Array1<f32>,
    pub mask: Array2<f32>,
    pub start: Array2<f32>,
}

impl MatmulData {
    pub fn new(inp: &mut Inputs, spec: &MatmulSpec) -> Self {
        let (m, n, k) = (spec.m, spec.n, spec.k);
        let a = if spec.trans_a {
            inp.matrix(k, m)
        } else {
            inp.matrix(m, k)
        };
        let b = if spec.trans_b {
            inp.matrix(n, k)
        } else {
            inp.matrix(k, n)
        };
        let bias = inp.matrix(1, n).into_shape_with_order(n).unwrap();
        // Like a ReLU output: about half exact zeros, where a mask test `> 0` and `≥ 0`
        // differ (with a uniform mask they never would; found by cargo-mutants).
        let mask = inp.matrix(m, n).mapv(|v| v.max(0.0));
        let start = inp.matrix(m, n);
        MatmulData {
            a,
            b,
            bias,
            mask,
            start,
        }
    }

    /// The epilogue's operand: the bias, the mask, or none.
    pub fn aux(&self, epilogue: Epilogue) -> Option<&[f32]> {
        match epilogue {
            Epilogue::None => None,
            Epilogue::Bias | Epilogue::BiasRelu => Some(self.bias.as_slice().unwrap()),
            Epilogue::ReluMask => Some(self.mask.as_slice().unwrap()),
        }
    }
}

/// "matmul NT Bias +=": transposes, epilogue, accumulation.
pub(crate) fn matmul_name(spec: &MatmulSpec) -> String {
    format!(
        "matmul {}{} {:?}{}",
        if spec.trans_a { "T" } else { "N" },
        if spec.trans_b { "T" } else { "N" },
        spec.epilogue,
        if spec.accumulate { " +=" } else { "" }
    )
}

/// A computed product `got` against the f64 product of the same inputs, within γ_K·(|A|·|B|)
/// (+ u·|C₀| when accumulating) and 2u relative.
pub(crate) fn matmul_compare(spec: &MatmulSpec, d: &MatmulData, got: &[f32]) -> Check {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (a64, b64) = (to64(&d.a), to64(&d.b));
    let mut want = cpu::matmul::matmul(a64.view(), b64.view(), spec.trans_a, spec.trans_b);
    let bound = cpu::matmul::matmul(
        a64.mapv(f64::abs).view(),
        b64.mapv(f64::abs).view(),
        spec.trans_a,
        spec.trans_b,
    );
    let bias64 = d.bias.mapv(|v| v as f64);
    let mask64 = to64(&d.mask);
    cpu::matmul::epilogue(
        &mut want,
        spec.epilogue,
        Some(bias64.view()),
        Some(mask64.view()),
    );
    if spec.accumulate {
        want = want + to64(&d.start);
    }
    let g = gamma(k);
    let extra = if spec.accumulate { 1.0 } else { 0.0 };
    // `dot` of transposed views may come back column-major; iterate in logical order.
    let bound: Vec<f64> = bound.iter().copied().collect();
    let want: Vec<f64> = want.iter().copied().collect();
    let start64 = f64s(d.start.as_slice().unwrap());
    compare(
        &matmul_name(spec),
        format!("{m}x{n}x{k}"),
        got,
        &want,
        |i| (g * bound[i] + extra * U * start64[i].abs(), 2.0 * U),
    )
}

/// Check one matmul variant on one shape.
pub fn check_matmul(
    ctx: &GpuContext,
    inp: &mut Inputs,
    spec: &MatmulSpec,
    tile: &MatmulTile,
) -> Result<Check> {
    let (m, n) = (spec.m, spec.n);
    let d = MatmulData::new(inp, spec);
    let ab = ctx.upload("a", d.a.as_slice().unwrap());
    let bb = ctx.upload("b", d.b.as_slice().unwrap());
    let aux = d.aux(spec.epilogue).map(|v| ctx.upload("aux", v));
    let cb = if spec.accumulate {
        ctx.upload("c", d.start.as_slice().unwrap())
    } else {
        ctx.poisoned("c", m * n)
    };
    let launch = kernels::matmul(ctx, spec, tile, &ab, &bb, aux.as_ref(), &cb)?;
    ctx.submit(&[&launch], 1)?;
    let got: Vec<f32> = ctx.read("c", &cb, m * n)?;
    Ok(matmul_compare(spec, &d, &got))
}

/// bias_add and bias_backward on [rows, cols].
pub fn check_bias(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    cols: usize,
) -> Result<Vec<Check>> {
    let x = inp.matrix(rows, cols);
    let b = inp.matrix(1, cols).into_shape_with_order(cols).unwrap();
    let xb = ctx.upload("x", x.as_slice().unwrap());
    let bb = ctx.upload("b", b.as_slice().unwrap());
    let yb = ctx.poisoned("y", rows * cols);
    let dbb = ctx.poisoned("db", cols);
    let l1 = kernels::bias_add(ctx, rows, cols, &xb, &bb, &yb)?;
    let l2 = kernels::bias_backward(ctx, rows, cols, &xb, &dbb)?;
    ctx.submit(&[&l1, &l2], 1)?;
    let y: Vec<f32> = ctx.read("y", &yb, rows * cols)?;
    let db: Vec<f32> = ctx.read("db", &dbb, cols)?;
    let want_y = cpu::bias::bias_add(to64(&x).view(), b.mapv(|v| v as f64).view());
    let shape = format!("{rows}x{cols}");
    Ok(vec![
        compare(
            "bias_add",
            shape.clone(),
            &y,
            want_y.as_slice().unwrap(),
            |_| (0.0, U),
        ),
        bias_backward_compare(&x, &db, kernels::bias_backward_depth(rows), shape),
    ])
}

/// Column sums `got` of dy[B, O] against the f64 sums, within γ_depth·Σ|dy| where `depth` is
/// the longest chain of additions behind one sum (B for any order).
pub(crate) fn bias_backward_compare(
    dy: &Array2<f32>,
    got: &[f32],
    depth: usize,
    shape: String,
) -> Check {
    let dy = to64(dy);
    let want = cpu::bias::bias_backward(dy.view());
    let abs_sum = cpu::bias::bias_backward(dy.mapv(f64::abs).view());
    compare("bias_backward", shape, got, want.as_slice().unwrap(), |i| {
        (gamma(depth) * abs_sum[i], 0.0)
    })
}

/// relu_forward and relu_backward on [rows, cols].
pub fn check_relu(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    cols: usize,
) -> Result<Vec<Check>> {
    let n = rows * cols;
    let x = inp.matrix(rows, cols);
    let dy = inp.matrix(rows, cols);
    let xb = ctx.upload("x", x.as_slice().unwrap());
    let dyb = ctx.upload("dy", dy.as_slice().unwrap());
    let yb = ctx.poisoned("y", n);
    let dxb = ctx.poisoned("dx", n);
    let l1 = kernels::relu_forward(ctx, n, &xb, &yb)?;
    let l2 = kernels::relu_backward(ctx, n, &yb, &dyb, &dxb)?;
    ctx.submit(&[&l1, &l2], 1)?;
    let y: Vec<f32> = ctx.read("y", &yb, n)?;
    let dx: Vec<f32> = ctx.read("dx", &dxb, n)?;
    let want_y = cpu::relu::relu_forward(to64(&x).view());
    let want_dx = cpu::relu::relu_backward(want_y.view(), to64(&dy).view());
    let shape = format!("{rows}x{cols}");
    Ok(vec![
        compare(
            "relu_forward",
            shape.clone(),
            &y,
            want_y.as_slice().unwrap(),
            |_| (0.0, 0.0),
        ),
        compare(
            "relu_backward",
            shape,
            &dx,
            want_dx.as_slice().unwrap(),
            |_| (0.0, 0.0),
        ),
    ])
}

/// softmax_xent_forward and _backward on given logits (some labels are padding).
pub fn check_softmax_on(
    ctx: &GpuContext,
    inp: &mut Inputs,
    logits: &Array2<f32>,
    shape: String,
) -> Result<Vec<Check>> {
    let (rows, classes) = logits.dim();
    let labels = inp.labels(rows, classes, true);
    let scale = 1.0 / rows as f32;
    let zb = ctx.upload("logits", logits.as_slice().unwrap());
    let lb = ctx.upload("labels", labels.as_slice().unwrap());
    let pb = ctx.poisoned("probs", rows * classes);
    let lossb = ctx.poisoned("loss", rows);
    let db = ctx.poisoned("dlogits", rows * classes);
    let l1 = kernels::softmax_xent_forward(ctx, rows, classes, &zb, &lb, &pb, &lossb)?;
    let l2 = kernels::softmax_xent_backward(ctx, rows, classes, scale, &pb, &lb, &db)?;
    ctx.submit(&[&l1, &l2], 1)?;
    let p: Vec<f32> = ctx.read("probs", &pb, rows * classes)?;
    let loss: Vec<f32> = ctx.read("loss", &lossb, rows)?;
    let d: Vec<f32> = ctx.read("dlogits", &db, rows * classes)?;
    Ok(softmax_compare(
        logits, &labels, scale, &p, &loss, &d, shape,
    ))
}

/// Results below the smallest normal f32 may be flushed to zero (WGSL allows it).
const SOFTMAX_ATOL: f64 = 1.1754943508222875e-38;

/// Relative error of one term e = exp(z − max z) of a row: the subtraction's rounding
/// (u·|x|, x = z − max z, carried through exp) plus WGSL's exp, (3 + 2|x|) ULP = (6 + 4|x|)·u.
fn exp_term_rel(x: f64) -> f64 {
    (6.0 + 5.0 * x.abs()) * U
}

/// Arguments below which exp underflows to 0 in f32 (in the kernel and the f64 oracle alike
/// the term is then 0 or subnormal and adds nothing to the sum's relative error).
const EXP_UNDERFLOW: f64 = 104.0;

/// The softmax and loss bounds of each row (the module documentation has the argument).
struct SoftmaxBounds {
    /// Relative error of each row's sum s: γ_C (C positive terms, summed in any order) plus
    /// the largest relative error of a term that does not underflow.
    sum_rel: Vec<f64>,
    /// ln s of each row (f64).
    ln_s: Vec<f64>,
    rowmax: Vec<f64>,
}

impl SoftmaxBounds {
    fn new(z: &Array2<f64>, rowmax: &[f64]) -> Self {
        let classes = z.ncols();
        let (mut sum_rel, mut ln_s) = (Vec::new(), Vec::new());
        for (row, &m) in z.rows().into_iter().zip(rowmax) {
            let worst = row
                .iter()
                .map(|&v| (v - m).abs())
                .filter(|x| *x < EXP_UNDERFLOW)
                .fold(0.0, |a: f64, x| a.max(exp_term_rel(x)));
            sum_rel.push(gamma(classes) + worst);
            ln_s.push(row.iter().map(|&v| (v - m).exp()).sum::<f64>().ln());
        }
        SoftmaxBounds {
            sum_rel,
            ln_s,
            rowmax: rowmax.to_vec(),
        }
    }

    /// p = e·(1/s): the term's error, the sum's, and 1/s (2.5 ULP) times e (one rounding):
    /// 6u — all relative, so a probability far below the row's largest keeps its digits.
    fn p_rel(&self, row: usize, z: f64) -> f64 {
        let x = (z - self.rowmax[row]).abs();
        let term = if x < EXP_UNDERFLOW {
            exp_term_rel(x)
        } else {
            0.0
        };
        (term + self.sum_rel[row] + 6.0 * U) * (1.0 + 64.0 * U)
    }

    /// loss = log s + (max z − z_y): ln of the computed s is off by its relative error, WGSL's
    /// log adds 2⁻²¹ absolute for s in [0.5, 2] and 3 ULP (6u relative) elsewhere, then the
    /// subtraction and the addition round once each (≤ u·(|loss| + |ln s|) and u·|loss|, as
    /// 0 ≤ max z − z_y ≤ loss + |ln s|). No term grows with |max z|.
    fn loss_abs(&self, row: usize, loss: f64) -> f64 {
        let ln_s = self.ln_s[row];
        let log_err = if ln_s.abs() <= std::f64::consts::LN_2 {
            2f64.powi(-21)
        } else {
            6.0 * U * ln_s.abs()
        };
        (self.sum_rel[row] + log_err + U * (2.0 * loss.abs() + ln_s.abs())) * (1.0 + 64.0 * U)
    }
}

/// probs, loss and dlogits (computed from the tested probs) against the f64 softmax and
/// cross-entropy of the same logits (tolerances in the module documentation).
pub(crate) fn softmax_compare(
    logits: &Array2<f32>,
    labels: &Array1<u32>,
    scale: f32,
    p: &[f32],
    loss: &[f32],
    d: &[f32],
    shape: String,
) -> Vec<Check> {
    let classes = logits.ncols();
    let z64 = to64(logits);
    let (want_p, want_loss) = cpu::softmax_xent::softmax_xent_forward(z64.view(), labels.view());
    let want_d =
        cpu::softmax_xent::softmax_xent_backward(want_p.view(), labels.view(), scale as f64);
    let rowmax: Vec<f64> = z64
        .rows()
        .into_iter()
        .map(|r| r.fold(f64::NEG_INFINITY, |a, &b| a.max(b)))
        .collect();
    let bounds = SoftmaxBounds::new(&z64, &rowmax);
    let p_tol = |i: usize| {
        let (r, c) = (i / classes, i % classes);
        (SOFTMAX_ATOL, bounds.p_rel(r, z64[[r, c]]))
    };
    let loss_tol = |r: usize| (bounds.loss_abs(r, want_loss[r]), 0.0);
    vec![
        compare(
            "softmax_xent_forward probs",
            shape.clone(),
            p,
            want_p.as_slice().unwrap(),
            p_tol,
        ),
        compare(
            "softmax_xent_forward loss",
            shape.clone(),
            loss,
            want_loss.as_slice().unwrap(),
            loss_tol,
        ),
        compare(
            "softmax_xent_backward",
            shape,
            d,
            want_d.as_slice().unwrap(),
            // d = (p − [i = y])·scale: p's error times scale, one rounding of the
            // subtraction (≤ u·|d|/scale) and one of the product (≤ u·|d|).
            |i| {
                let (a, r) = p_tol(i);
                let pi = want_p.as_slice().unwrap()[i];
                ((a + r * pi) * scale as f64, 2.0 * U)
            },
        ),
    ]
}

/// softmax + cross-entropy on random logits in [-8, 8].
pub fn check_softmax(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> Result<Vec<Check>> {
    let logits = softmax_logits(inp, rows, classes);
    check_softmax_on(ctx, inp, &logits, format!("{rows}x{classes}"))
}

/// Random logits in [-8, 8].
pub fn softmax_logits(inp: &mut Inputs, rows: usize, classes: usize) -> Array2<f32> {
    Array2::from_shape_vec((rows, classes), inp.uniform(rows * classes, -8.0, 8.0)).expect("shape")
}

/// Rows that overflow a naive softmax: [1000, 0], all −1000, [−1000, 0, 1000], huge spreads.
pub fn check_softmax_extremes(ctx: &GpuContext, inp: &mut Inputs) -> Result<Vec<Check>> {
    let mut checks = check_softmax_on(ctx, inp, &softmax_extreme_logits(), "extremes 6x3".into())?;
    fail_nonfinite(&mut checks);
    Ok(checks)
}

/// Logit rows that overflow a naive softmax (see [`check_softmax_extremes`]).
pub(crate) fn softmax_extreme_logits() -> Array2<f32> {
    let rows: Vec<Vec<f32>> = vec![
        vec![1000.0, 0.0, 0.0],
        vec![-1000.0, -1000.0, -1000.0],
        vec![-1000.0, 0.0, 1000.0],
        vec![88.0, 89.0, 90.0],
        vec![-1e30, 1e30, 0.0],
        vec![0.0, 0.0, 0.0],
    ];
    Array2::from_shape_vec((rows.len(), 3), rows.concat()).expect("shape")
}

/// On extreme inputs an infinite or NaN error is a failure even where the reference is too.
pub(crate) fn fail_nonfinite(checks: &mut [Check]) {
    for c in checks {
        if !c.max_abs.is_finite() {
            c.bad = c.bad.max(1);
        }
    }
}

/// One SGD step on `n` parameters.
pub fn check_sgd(ctx: &GpuContext, inp: &mut Inputs, n: usize) -> Result<Vec<Check>> {
    let hp = SGD_PARAMS[0];
    let [w, g, v] = sgd_inputs(inp, n);
    let (wb, gb, vb) = (
        ctx.upload("w", &w),
        ctx.upload("g", &g),
        ctx.upload("v", &v),
    );
    let l = kernels::sgd_update(ctx, n, hp, &wb, &gb, &vb)?;
    ctx.submit(&[&l], 1)?;
    let w_gpu: Vec<f32> = ctx.read("w", &wb, n)?;
    let v_gpu: Vec<f32> = ctx.read("v", &vb, n)?;
    Ok(sgd_compare(
        hp,
        [&w, &g, &v],
        &w_gpu,
        &v_gpu,
        format!("{n}"),
    ))
}

/// SGD hyperparameters: a weight's (the kernel checks use this one), a bias's without L2, and
/// plain SGD without momentum.
pub(crate) const SGD_PARAMS: [SgdParams; 3] = [
    SgdParams {
        lr: 0.05,
        momentum: 0.9,
        l2: 1e-3,
    },
    SgdParams {
        lr: 0.01,
        momentum: 0.9,
        l2: 0.0,
    },
    SgdParams {
        lr: 0.1,
        momentum: 0.0,
        l2: 0.0,
    },
];

/// w, g, v uniform in [-1, 1].
pub(crate) fn sgd_inputs(inp: &mut Inputs, n: usize) -> [Vec<f32>; 3] {
    let w = inp.uniform(n, -1.0, 1.0);
    let g = inp.uniform(n, -1.0, 1.0);
    let v = inp.uniform(n, -1.0, 1.0);
    [w, g, v]
}

/// Updated w and v against the exact (f64) update of the same f32 inputs and constants,
/// within the first-order bounds of the module documentation: 3u·(μ|v| + |g| + λ|w|) for v,
/// u·|w| + 5u·α·(μ|v| + |g| + λ|w|) for w, times 1 + 64u for the higher-order terms.
pub(crate) fn sgd_compare(
    hp: SgdParams,
    [w, g, v]: [&[f32]; 3],
    w_got: &[f32],
    v_got: &[f32],
    shape: String,
) -> Vec<Check> {
    let (lr, mu, l2) = (hp.lr as f64, hp.momentum as f64, hp.l2 as f64);
    let (w, g, v) = (f64s(w), f64s(g), f64s(v));
    let v_want: Vec<f64> = (0..w.len())
        .map(|i| mu * v[i] + (g[i] + l2 * w[i]))
        .collect();
    let w_want: Vec<f64> = (0..w.len()).map(|i| w[i] - lr * v_want[i]).collect();
    let v_mag = |i: usize| mu * v[i].abs() + g[i].abs() + l2 * w[i].abs();
    let slack = 1.0 + 64.0 * U;
    vec![
        compare("sgd_update v", shape.clone(), v_got, &v_want, |i| {
            (3.0 * U * v_mag(i) * slack, 0.0)
        }),
        compare("sgd_update w", shape, w_got, &w_want, |i| {
            ((U * w[i].abs() + 5.0 * U * lr * v_mag(i)) * slack, 0.0)
        }),
    ]
}

/// argmax and metric accumulation on [rows, classes].
pub fn check_metrics(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> Result<Vec<Check>> {
    let (scores, labels, loss) = metrics_inputs(inp, rows, classes);
    let start = METRICS_START;
    let sb = ctx.upload("scores", scores.as_slice().unwrap());
    let lb = ctx.upload("labels", labels.as_slice().unwrap());
    let lossb = ctx.upload("loss", loss.as_slice().unwrap());
    let pb = ctx.upload("pred", &vec![u32::MAX; rows]);
    let accb = ctx.upload("acc", &[start]);
    let l1 = kernels::argmax(ctx, rows, classes, &sb, &pb)?;
    let l2 = kernels::accumulate_metrics(ctx, rows, classes, &sb, &lb, &lossb, &accb)?;
    ctx.submit(&[&l1, &l2], 1)?;
    let pred: Vec<u32> = ctx.read("pred", &pb, rows)?;
    let acc: Vec<MetricsAcc> = ctx.read("acc", &accb, 1)?;
    let want_pred = cpu::metrics::argmax(scores.view());
    let shape = format!("{rows}x{classes}");
    let mut out = vec![compare_u32(
        "argmax",
        shape.clone(),
        &pred,
        want_pred.as_slice().unwrap(),
    )];
    // 256 strided partial sums and an 8-level tree.
    let depth = rows.div_ceil(256) + 8;
    out.extend(metrics_compare(
        &scores, &labels, &loss, start, acc[0], depth, shape,
    ));
    Ok(out)
}

/// The accumulator the metrics checks start from.
pub(crate) const METRICS_START: MetricsAcc = MetricsAcc {
    loss_sum: 1.5,
    correct: 3,
    seen: 7,
    nonfinite: 0,
};

/// Scores uniform in [-1, 1], labels with about one in eight padding, losses in [0, 5].
pub(crate) fn metrics_inputs(
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> (Array2<f32>, Array1<u32>, Array1<f32>) {
    let mut scores = inp.matrix(rows, classes);
    let mut labels = inp.labels(rows, classes, true);
    let loss = Array1::from(inp.uniform(rows, 0.0, 5.0));
    // Every fifth row ties its maximum with another class and is labelled with the first of
    // the two: an argmax that let the last maximum win would count these rows wrong.
    if classes > 1 {
        for r in (0..rows).step_by(5) {
            let row = scores.row(r);
            let m = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            let j = (m + 1 + r % (classes - 1)) % classes;
            scores[[r, j]] = scores[[r, m]];
            if labels[r] < classes as u32 {
                labels[r] = m.min(j) as u32;
            }
        }
    }
    (scores, labels, loss)
}

/// The accumulator after one accumulation from `start`: counts exact, the loss sum within
/// γ_(depth+1)·Σ|terms| of the f64 sum, `depth` being the longest chain of additions over the
/// rows (one more adds into the accumulator).
pub(crate) fn metrics_compare(
    scores: &Array2<f32>,
    labels: &Array1<u32>,
    loss: &Array1<f32>,
    start: MetricsAcc,
    got: MetricsAcc,
    depth: usize,
    shape: String,
) -> Vec<Check> {
    let (rows, classes) = scores.dim();
    let mut want = start;
    cpu::metrics::accumulate_metrics(&mut want, scores.view(), labels.view(), loss.view());
    let abs_sum: f64 = loss.iter().map(|&l| l as f64).sum::<f64>() + start.loss_sum.abs() as f64;
    let exact = start.loss_sum as f64
        + (0..rows)
            .filter(|&r| labels[r] < classes as u32)
            .map(|r| loss[r] as f64)
            .sum::<f64>();
    vec![
        compare_u32(
            "accumulate_metrics counts",
            shape.clone(),
            &[got.correct, got.seen, got.nonfinite],
            &[want.correct, want.seen, want.nonfinite],
        ),
        compare(
            "accumulate_metrics loss",
            shape.clone(),
            &[got.loss_sum],
            // Exact reference: the f64 sum over the counted rows (the f32 twin sums serially).
            &[exact],
            |_| (gamma(depth + 1) * abs_sum, 0.0),
        ),
        // The twin, whose counts are the reference above, holds its own loss to the same sum
        // (a serial chain of `rows` additions, then one into the accumulator).
        compare(
            "accumulate_metrics twin loss",
            shape,
            &[want.loss_sum],
            &[exact],
            |_| (gamma(rows + 1) * abs_sum, 0.0),
        ),
    ]
}

/// Minibatch gather of `rows` samples of `pixels` bytes from a random dataset, running past
/// its end so padding rows are exercised too, then `advance`. `shard_bytes` splits the images
/// into several buffers, as for a dataset larger than one binding.
pub fn check_gather(
    ctx: &GpuContext,
    inp: &mut Inputs,
    samples: usize,
    pixels: usize,
    rows: usize,
    shard_bytes: Option<u64>,
) -> Result<Vec<Check>> {
    // The sharded dataset also uses only part of its order, as a data-parallel rank does.
    let len = match shard_bytes {
        Some(_) => samples - samples / 3,
        None => samples,
    };
    let d = GatherData::new(inp, samples, pixels, rows, len);
    let data = kernels::GpuDataset::upload(ctx, &d.images, &d.labels, pixels, shard_bytes)?;
    let ob = ctx.upload("order", &d.order);
    let cb = ctx.upload("cursor", &[d.start as u32]);
    let xb = ctx.poisoned("x", rows * pixels);
    let yb = ctx.upload("y", &vec![GATHER_Y_POISON; rows]);
    let mut launches = kernels::gather(ctx, rows, d.len, &data, &ob, &cb, &xb, &yb)?;
    launches.push(kernels::advance(ctx, rows, &cb)?);
    ctx.submit(&launches.iter().collect::<Vec<_>>(), 1)?;
    let x: Vec<f32> = ctx.read("x", &xb, rows * pixels)?;
    let y: Vec<u32> = ctx.read("y", &yb, rows)?;
    let cursor: Vec<u32> = ctx.read("cursor", &cb, 1)?;
    let shape = format!(
        "{rows}x{pixels} of {samples} ({len} in use) in {} shard(s)",
        data.shards.len()
    );
    Ok(d.compare(pixels, rows, &x, &y, cursor[0], shape))
}

/// What the gather checks poison y with (u32::MAX is the padding label itself).
pub(crate) const GATHER_Y_POISON: u32 = 12345;

/// A random dataset of `samples` images of `pixels` bytes with labels 0–9, a shuffled order
/// of which the first `len` entries are in use (the rest are valid indices a kernel must not
/// read), and a cursor `rows / 2` before `len` so the minibatch runs into padding rows.
pub(crate) struct GatherData {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub order: Vec<u32>,
    pub len: usize,
    pub start: usize,
}

impl GatherData {
    pub fn new(inp: &mut Inputs, samples: usize, pixels: usize, rows: usize, len: usize) -> Self {
        let images: Vec<u8> = (0..samples * pixels)
            .map(|_| inp.next_u64() as u8)
            .collect();
        let labels: Vec<u8> = (0..samples).map(|_| (inp.next_u64() % 10) as u8).collect();
        let mut order: Vec<u32> = (0..samples as u32).collect();
        for i in (1..samples).rev() {
            order.swap(i, (inp.next_u64() % (i as u64 + 1)) as usize);
        }
        let start = len.saturating_sub(rows / 2);
        GatherData {
            images,
            labels,
            order,
            len,
            start,
        }
    }

    /// x (within WGSL's 2.5-ULP division), y exactly, and the cursor advanced by `rows`.
    pub fn compare(
        &self,
        pixels: usize,
        rows: usize,
        x: &[f32],
        y: &[u32],
        cursor: u32,
        shape: String,
    ) -> Vec<Check> {
        let (wx, wy) = cpu::gather::gather(
            &self.images,
            &self.labels,
            pixels,
            &self.order[..self.len],
            self.start,
            rows,
        );
        vec![
            compare(
                "gather x",
                shape.clone(),
                x,
                &f64s(wx.as_slice().unwrap()),
                |_| (0.0, 5.0 * U),
            ),
            compare_u32("gather y", shape.clone(), y, wy.as_slice().unwrap()),
            compare_u32("advance", shape, &[cursor], &[(self.start + rows) as u32]),
        ]
    }
}

/// Exact comparison of u32 outputs (e.g. maxpool's idx); every mismatch is bad.
pub fn compare_u32(kernel: &str, shape: String, gpu: &[u32], cpu: &[u32]) -> Check {
    let mut c = Check::start(kernel, shape, gpu.len(), cpu.len());
    if c.bad > 0 {
        return c;
    }
    for (&g, &r) in gpu.iter().zip(cpu) {
        if g != r {
            c.bad += 1;
            c.worst = f64::INFINITY;
            c.max_abs = c.max_abs.max((g as f64 - r as f64).abs());
        }
    }
    c
}

/// Exact comparison where NaN in the reference must be NaN in the output (and nowhere else),
/// and infinities must match.
fn compare_exact(kernel: &str, shape: String, gpu: &[f32], cpu: &[f64]) -> Check {
    let same: Vec<usize> = (0..cpu.len().min(gpu.len()))
        .filter(|&i| (cpu[i].is_nan() && gpu[i].is_nan()) || gpu[i] as f64 == cpu[i])
        .collect();
    let (mut g, mut r) = (gpu.to_vec(), cpu.to_vec());
    for i in same {
        g[i] = 0.0;
        r[i] = 0.0;
    }
    compare(kernel, shape, &g, &r, |_| (0.0, 0.0))
}

// ---------------------------------------------------------------------------------------------
// conv2d

/// A convolution's input geometry (what im2col/col2im depend on): B, C, H, W, K, stride, pad.
fn conv(
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Conv2dSpec {
    Conv2dSpec {
        batch,
        c_in,
        h,
        w,
        c_out: 1,
        k,
        stride,
        pad,
    }
}

/// im2col/col2im shapes: batch 1, 1 and 3 channels, 1×1, 3×3 and 5×5 kernels, even kernels,
/// stride 2 and 3, stride > K (inputs no window reads), padding 1–3, odd sizes, kernels as
/// large as the padded input.
pub fn conv2d_shapes() -> Vec<Conv2dSpec> {
    vec![
        conv(1, 1, 1, 1, 1, 1, 0),
        conv(1, 1, 5, 5, 3, 1, 0),
        conv(2, 3, 7, 7, 3, 1, 1),
        conv(1, 3, 8, 8, 3, 2, 1),
        conv(2, 1, 9, 7, 5, 2, 2),
        conv(3, 3, 6, 5, 1, 1, 0),
        conv(2, 3, 5, 5, 1, 2, 0),
        conv(1, 1, 3, 3, 5, 1, 1),
        conv(2, 3, 4, 6, 8, 1, 2),
        conv(1, 3, 11, 13, 5, 3, 2),
        conv(2, 2, 7, 7, 3, 3, 0),
        conv(1, 1, 6, 6, 2, 4, 0),
        conv(2, 4, 7, 9, 4, 2, 3),
        conv(1, 2, 5, 5, 3, 1, 2),
        conv(3, 1, 10, 10, 7, 2, 3),
        conv(1, 5, 5, 5, 5, 1, 0),
        conv(2, 3, 28, 28, 5, 1, 2),
        conv(1, 3, 1, 9, 1, 1, 0),
        conv(4, 2, 13, 3, 3, 2, 1),
        conv(1, 1, 2, 2, 4, 1, 1),
    ]
}

/// The convolutions of the presets at batch 100: `lenet5` = 1x28x28-c6k5p2-m2-c16k5-m2-120-84-10
/// and `cnn` = 1x28x28-c32k5p2-m2-c64k5p2-m2-1024-10 (both first layers share one im2col).
pub fn conv2d_preset_shapes() -> Vec<(&'static str, Conv2dSpec)> {
    vec![
        ("lenet5/cnn conv1", conv(100, 1, 28, 28, 5, 1, 2)),
        ("lenet5 conv2", conv(100, 6, 14, 14, 5, 1, 0)),
        ("cnn conv2", conv(100, 32, 14, 14, 5, 1, 2)),
    ]
}

/// im2col, col2im and col2im with a ReLU mask on one geometry.
pub fn check_conv2d(
    ctx: &GpuContext,
    inp: &mut Inputs,
    spec: &Conv2dSpec,
    label: &str,
) -> Result<Vec<Check>> {
    let (rows, ncols) = (spec.col_rows(), spec.col_cols());
    let n_in = spec.input_len();
    let [x, dcols, mask] = conv2d_inputs(inp, spec);
    let xb = ctx.upload("x", &x);
    let db = ctx.upload("dcols", &dcols);
    let mb = ctx.upload("mask", &mask);
    let cb = ctx.poisoned("cols", rows * ncols);
    let dxb = ctx.poisoned("dx", n_in);
    let dxmb = ctx.poisoned("dx masked", n_in);
    let l1 = kernels::im2col(ctx, spec, &xb, &cb)?;
    let l2 = kernels::col2im(ctx, spec, &db, None, &dxb)?;
    let l3 = kernels::col2im(ctx, spec, &db, Some(&mb), &dxmb)?;
    ctx.submit(&[&l1, &l2, &l3], 1)?;
    let cols: Vec<f32> = ctx.read("cols", &cb, rows * ncols)?;
    let dx: Vec<f32> = ctx.read("dx", &dxb, n_in)?;
    let dxm: Vec<f32> = ctx.read("dx masked", &dxmb, n_in)?;
    Ok(conv2d_compare(
        spec,
        [&x, &dcols, &mask],
        [&cols, &dx, &dxm],
        conv2d_shape(spec, label),
    ))
}

/// x and dcols uniform in [-1, 1], and a mask like a ReLU output (about half exact zeros).
pub(crate) fn conv2d_inputs(inp: &mut Inputs, spec: &Conv2dSpec) -> [Vec<f32>; 3] {
    let n_in = spec.input_len();
    let x = inp.uniform(n_in, -1.0, 1.0);
    let dcols = inp.uniform(spec.col_rows() * spec.col_cols(), -1.0, 1.0);
    let mask: Vec<f32> = inp
        .uniform(n_in, -1.0, 1.0)
        .iter()
        .map(|v| v.max(0.0))
        .collect();
    [x, dcols, mask]
}

/// "label BxHxWxC kK sS pP".
pub(crate) fn conv2d_shape(spec: &Conv2dSpec, label: &str) -> String {
    format!(
        "{label}{}x{}x{}x{} k{} s{} p{}",
        spec.batch, spec.h, spec.w, spec.c_in, spec.k, spec.stride, spec.pad
    )
}

/// im2col exactly; col2im and masked col2im within γ_n·Σ|terms|, n = ⌈K/s⌉² terms at most per
/// element (any order of summation).
pub(crate) fn conv2d_compare(
    spec: &Conv2dSpec,
    [x, dcols, mask]: [&[f32]; 3],
    [cols, dx, dxm]: [&[f32]; 3],
    shape: String,
) -> Vec<Check> {
    let want_cols = cpu::conv2d::im2col(&f64s(x), spec);
    let d64 =
        Array2::from_shape_vec((spec.col_rows(), spec.col_cols()), f64s(dcols)).expect("shape");
    let m64 = f64s(mask);
    let want_dx = cpu::conv2d::col2im(d64.view(), spec, None);
    let want_dxm = cpu::conv2d::col2im(d64.view(), spec, Some(&m64));
    let abs_sum = cpu::conv2d::col2im(d64.mapv(f64::abs).view(), spec, None);
    let g = gamma(kernels::col2im_terms(spec));
    vec![
        compare(
            "im2col",
            shape.clone(),
            cols,
            want_cols.as_slice().expect("standard layout"),
            |_| (0.0, 0.0),
        ),
        compare("col2im", shape.clone(), dx, &want_dx, |i| {
            (g * abs_sum[i], 0.0)
        }),
        compare("col2im masked", shape, dxm, &want_dxm, |i| {
            (g * abs_sum[i], 0.0)
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// maxpool

/// What a maxpool check feeds in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolInput {
    /// Uniform in [-1, 1]: ties are rare.
    Uniform,
    /// Five levels {-1, -0.5, 0, 0.5, 1}: ties in most windows (the first maximum must win).
    Quantised,
    /// max(u, 0) as after a ReLU: windows of zeros.
    Relu,
    /// Uniform with about one in six elements NaN, some ±∞ (NaN must propagate).
    Nan,
}

fn pool(batch: usize, c: usize, h: usize, w: usize, k: usize) -> Pool2dSpec {
    Pool2dSpec { batch, c, h, w, k }
}

/// Max-pooling shapes: K = 1 (identity), 2, 3, 4 and 5, floors (H or W not a multiple of K),
/// one window, batch 1, odd sizes.
pub fn maxpool_shapes() -> Vec<Pool2dSpec> {
    vec![
        pool(1, 1, 1, 1, 1),
        pool(1, 1, 2, 2, 2),
        pool(1, 1, 5, 5, 2),
        pool(2, 3, 7, 9, 3),
        pool(3, 2, 6, 6, 1),
        pool(2, 4, 8, 8, 4),
        pool(1, 3, 5, 7, 5),
        pool(2, 5, 13, 11, 2),
        pool(1, 1, 4, 4, 4),
        pool(3, 3, 9, 9, 3),
        pool(2, 2, 10, 3, 3),
        pool(1, 7, 6, 6, 2),
        pool(4, 1, 3, 3, 2),
        pool(1, 16, 15, 15, 4),
        pool(2, 1, 31, 17, 2),
        pool(1, 2, 2, 8, 2),
        pool(2, 6, 28, 28, 2),
        pool(1, 3, 11, 4, 2),
        pool(5, 2, 7, 7, 7),
        pool(1, 64, 14, 14, 2),
    ]
}

/// The presets' pooling layers at batch 100 (see [`conv2d_preset_shapes`]).
pub fn maxpool_preset_shapes() -> Vec<(&'static str, Pool2dSpec)> {
    vec![
        ("lenet5 pool1", pool(100, 6, 28, 28, 2)),
        ("lenet5 pool2", pool(100, 16, 10, 10, 2)),
        ("cnn pool1", pool(100, 32, 28, 28, 2)),
        ("cnn pool2", pool(100, 64, 14, 14, 2)),
    ]
}

/// maxpool_forward (y and idx) then maxpool_backward on its idx, with and without a mask.
pub fn check_maxpool(
    ctx: &GpuContext,
    inp: &mut Inputs,
    spec: &Pool2dSpec,
    input: PoolInput,
    label: &str,
) -> Result<Vec<Check>> {
    let (n_in, n_out) = (spec.input_len(), spec.output_len());
    let [x, dy, mask] = maxpool_inputs(inp, spec, input);
    let xb = ctx.upload("x", &x);
    let dyb = ctx.upload("dy", &dy);
    let mb = ctx.upload("mask", &mask);
    let yb = ctx.poisoned("y", n_out);
    let ib = ctx.upload("idx", &vec![u32::MAX; n_out]);
    let dxb = ctx.poisoned("dx", n_in);
    let dxmb = ctx.poisoned("dx masked", n_in);
    let l1 = kernels::maxpool_forward(ctx, spec, &xb, &yb, &ib)?;
    let l2 = kernels::maxpool_backward(ctx, spec, &dyb, &ib, None, &dxb)?;
    let l3 = kernels::maxpool_backward(ctx, spec, &dyb, &ib, Some(&mb), &dxmb)?;
    ctx.submit(&[&l1, &l2, &l3], 1)?;
    let y: Vec<f32> = ctx.read("y", &yb, n_out)?;
    let idx: Vec<u32> = ctx.read("idx", &ib, n_out)?;
    let dx: Vec<f32> = ctx.read("dx", &dxb, n_in)?;
    let dxm: Vec<f32> = ctx.read("dx masked", &dxmb, n_in)?;
    Ok(maxpool_compare(
        spec,
        [&x, &dy, &mask],
        &y,
        &idx,
        [&dx, &dxm],
        maxpool_shape(spec, input, label),
    ))
}

/// x as `input` says, dy uniform in [-1, 1], a ReLU-like mask.
pub(crate) fn maxpool_inputs(
    inp: &mut Inputs,
    spec: &Pool2dSpec,
    input: PoolInput,
) -> [Vec<f32>; 3] {
    let (n_in, n_out) = (spec.input_len(), spec.output_len());
    let mut x = inp.uniform(n_in, -1.0, 1.0);
    match input {
        PoolInput::Uniform => {}
        PoolInput::Quantised => x.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0),
        PoolInput::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        PoolInput::Nan => {
            for v in x.iter_mut() {
                match inp.next_u64() % 12 {
                    0 | 1 => *v = f32::NAN,
                    2 => *v = f32::INFINITY,
                    3 => *v = f32::NEG_INFINITY,
                    _ => {}
                }
            }
        }
    }
    let dy = inp.uniform(n_out, -1.0, 1.0);
    let mask: Vec<f32> = inp
        .uniform(n_in, -1.0, 1.0)
        .iter()
        .map(|v| v.max(0.0))
        .collect();
    [x, dy, mask]
}

/// "label BxHxWxC kK Input".
pub(crate) fn maxpool_shape(spec: &Pool2dSpec, input: PoolInput, label: &str) -> String {
    format!(
        "{label}{}x{}x{}x{} k{} {input:?}",
        spec.batch, spec.h, spec.w, spec.c, spec.k
    )
}

/// Forward y and idx, and backward without and with the mask, all exact (NaN matches NaN).
pub(crate) fn maxpool_compare(
    spec: &Pool2dSpec,
    [x, dy, mask]: [&[f32]; 3],
    y: &[f32],
    idx: &[u32],
    [dx, dxm]: [&[f32]; 2],
    shape: String,
) -> Vec<Check> {
    let (want_y, want_idx) = cpu::maxpool::maxpool_forward(&f64s(x), spec);
    let dy64 = f64s(dy);
    let want_dx = cpu::maxpool::maxpool_backward(&dy64, &want_idx, spec, None);
    let want_dxm = cpu::maxpool::maxpool_backward(&dy64, &want_idx, spec, Some(&f64s(mask)));
    vec![
        compare_exact("maxpool_forward y", shape.clone(), y, &want_y),
        compare_u32("maxpool_forward idx", shape.clone(), idx, &want_idx),
        compare_exact("maxpool_backward", shape.clone(), dx, &want_dx),
        compare_exact("maxpool_backward masked", shape, dxm, &want_dxm),
    ]
}

// ---------------------------------------------------------------------------------------------
// adam

/// One Adam configuration: parameter count, update number t (1-based; beyond the schedule's
/// length the kernel must use its last entry), L2, and hyperparameters.
#[derive(Clone, Copy, Debug)]
pub struct AdamCase {
    pub n: usize,
    pub t: usize,
    pub hp: AdamParams,
}

/// Adam cases larger than this run only with the presets (see [`run_family_with`]).
pub const ADAM_TEST_MAX: usize = 200_000;

/// Entries in the schedule the adam checks upload.
pub const ADAM_SCHEDULE_LEN: usize = 20;

/// Adam cases: 1 element, around one workgroup (255–257), odd sizes and primes, the lenet5 and
/// cnn presets' parameter tensors (cnn's 3136×1024 layer, 3.2M weights, only with the presets),
/// L2 on weights and 0 on biases, t = 1, 2, 10, the schedule's last entry and beyond it
/// (clamped to it), and β1 < 0.5 (PyTorch's other lerp form) with a larger ε and learning rate.
pub fn adam_cases() -> Vec<AdamCase> {
    let torch = AdamParams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        l2: 0.0,
    };
    let wd = AdamParams { l2: 1e-2, ..torch };
    let odd = AdamParams {
        lr: 0.05,
        beta1: 0.3,
        beta2: 0.9,
        eps: 1e-4,
        l2: 5e-4,
    };
    let sizes = [
        1, 2, 7, 255, 256, 257, 1000, 4099, 65_537, 100_003, 150, 6, 2400, 48_000, 10_080, 800,
        51_200, 3_211_264, 10_240, 1024, 33,
    ];
    let ts = [1, 2, 10, ADAM_SCHEDULE_LEN, 1000];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| AdamCase {
            n,
            t: ts[i % ts.len()],
            hp: match i % 4 {
                0 | 2 => wd,
                1 => torch,
                _ => odd,
            },
        })
        .collect()
}

/// Error bounds (m, v, w) of one element of an Adam update computed in f32 with the given
/// relative accuracies of sqrt and division, from the exact intermediate values (see the
/// module documentation for the derivation).
#[allow(clippy::too_many_arguments)]
fn adam_bounds(
    w: f64,
    g: f64,
    m: f64,
    v: f64,
    hp: AdamParams,
    sched: [f32; 2],
    sqrt_rel: f64,
    div_rel: f64,
) -> (f64, f64, f64) {
    let (l2, eps) = (hp.l2 as f64, hp.eps as f64);
    let a = (1.0f32 - hp.beta1) as f64;
    let (b2, c2) = (hp.beta2 as f64, (1.0f32 - hp.beta2) as f64);
    let (step, bc) = (sched[0] as f64, sched[1] as f64);
    let gp = g + l2 * w;
    let e_g = 2.0 * U * (g.abs() + l2 * w.abs());
    let d = gp.abs() + m.abs() + e_g;
    let e_m = if a.abs() < 0.5 {
        a * e_g + 4.0 * U * (m.abs() + a * d)
    } else {
        (2.0 - a) * e_g + 4.0 * U * (gp.abs() + e_g + (1.0 - a) * d)
    };
    let mp = if a.abs() < 0.5 {
        m + a * (gp - m)
    } else {
        gp - (gp - m) * (1.0 - a)
    };
    let vp = b2 * v + c2 * gp * gp;
    let e_v = 4.0 * U * (b2 * v.abs() + c2 * gp * gp) + c2 * (2.0 * gp.abs() * e_g + e_g * e_g);
    let s = vp.max(0.0).sqrt();
    let e_s = if vp > 0.0 {
        (e_v / s).min(e_v.sqrt())
    } else {
        e_v.sqrt()
    } + sqrt_rel * (vp.abs() + e_v).sqrt();
    let q = s / bc;
    let e_q = e_s / bc + div_rel * (s + e_s) / bc;
    let den = q + eps;
    let e_den = e_q + U * (q + e_q + eps);
    let r = mp / den;
    let e_r0 = (e_m + r.abs() * e_den) / (den - e_den).max(den * 0.5);
    let e_r = e_r0 + div_rel * (r.abs() + e_r0);
    let upd = step * (r.abs() + e_r);
    let e_w = step * e_r + U * upd + U * (w.abs() + upd);
    (e_m, e_v, e_w)
}

/// The exact (f64) Adam update of one element on f32 inputs and f32 constants, in the
/// kernel's formula.
fn adam_exact(w: f64, g: f64, m: f64, v: f64, hp: AdamParams, sched: [f32; 2]) -> [f64; 3] {
    let a = (1.0f32 - hp.beta1) as f64;
    let c2 = (1.0f32 - hp.beta2) as f64;
    let gp = g + hp.l2 as f64 * w;
    let mp = if a.abs() < 0.5 {
        m + a * (gp - m)
    } else {
        gp - (gp - m) * (1.0 - a)
    };
    let vp = hp.beta2 as f64 * v + c2 * gp * gp;
    let den = vp.sqrt() / sched[1] as f64 + hp.eps as f64;
    [mp, vp, w - sched[0] as f64 * (mp / den)]
}

/// Adam inputs (w, g, m, v) for `n` parameters: w uniform in [-1, 1], gradients over seven
/// decades with one in sixteen exactly zero, m in [-0.1, 0.1], v ≥ 0 over eight decades with
/// one in sixteen zero (so some denominators are ε alone).
/// `n` values uniform in [lo, hi], each then zeroed (one in 16) or scaled by 10⁻ᵈ with d
/// uniform in 0..decades, so magnitudes span several decades.
fn spread(inp: &mut Inputs, n: usize, lo: f32, hi: f32, decades: u64) -> Vec<f32> {
    inp.uniform(n, lo, hi)
        .into_iter()
        .map(|u| {
            let r = inp.next_u64();
            if r.is_multiple_of(16) {
                0.0
            } else {
                u * 10f32.powi(-(((r >> 8) % decades) as i32))
            }
        })
        .collect()
}

fn adam_inputs(inp: &mut Inputs, n: usize) -> [Vec<f32>; 4] {
    let w = inp.uniform(n, -1.0, 1.0);
    let g = spread(inp, n, -1.0, 1.0, 7);
    let m = inp.uniform(n, -0.1, 0.1);
    let v = spread(inp, n, 0.0, 1e-2, 8);
    [w, g, m, v]
}

/// One Adam update against the exact f64 evaluation and the f32 twin.
pub fn check_adam(ctx: &GpuContext, inp: &mut Inputs, case: &AdamCase) -> Result<Vec<Check>> {
    let (n, hp) = (case.n, case.hp);
    let [w, g, m, v] = adam_inputs(inp, n);
    let (wb, gb, mb, vb) = (
        ctx.upload("w", &w),
        ctx.upload("g", &g),
        ctx.upload("m", &m),
        ctx.upload("v", &v),
    );
    let sb = ctx.upload("sched", &adam_schedule_table(hp));
    let stb = ctx.upload("step", &[(case.t - 1) as u32]);
    let l = kernels::adam_update(ctx, n, hp, &wb, &gb, &mb, &vb, &sb, &stb)?;
    ctx.submit(&[&l], 1)?;
    let w_gpu: Vec<f32> = ctx.read("w", &wb, n)?;
    let m_gpu: Vec<f32> = ctx.read("m", &mb, n)?;
    let v_gpu: Vec<f32> = ctx.read("v", &vb, n)?;
    let step_after: Vec<u32> = ctx.read("step", &stb, 1)?;
    let shape = adam_shape(case);
    let mut out = adam_compare(case, [&w, &g, &m, &v], [&w_gpu, &m_gpu, &v_gpu], &shape);
    out.push(compare_u32(
        "adam_update step (read only)",
        shape,
        &step_after,
        &[(case.t - 1) as u32],
    ));
    Ok(out)
}

/// The schedule the adam checks upload: [`AdamParams::schedule`] of updates
/// 1..=[`ADAM_SCHEDULE_LEN`], flattened.
pub(crate) fn adam_schedule_table(hp: AdamParams) -> Vec<f32> {
    (1..=ADAM_SCHEDULE_LEN)
        .flat_map(|t| hp.schedule(t))
        .collect()
}

/// "n t=… λ=… β1=…".
pub(crate) fn adam_shape(case: &AdamCase) -> String {
    format!(
        "{} t={} λ={} β1={}",
        case.n, case.t, case.hp.l2, case.hp.beta1
    )
}

/// Updated m, v and w against the exact (f64) update at the bounds of [`adam_bounds`] with
/// WGSL's sqrt and division accuracy (conservative for correctly rounded ones), and against
/// the f32 twin at that plus the twin's own bound.
pub(crate) fn adam_compare(
    case: &AdamCase,
    [w, g, m, v]: [&[f32]; 4],
    [w_got, m_got, v_got]: [&[f32]; 3],
    shape: &str,
) -> Vec<Check> {
    let (n, hp) = (case.n, case.hp);
    let pair = hp.schedule(case.t.min(ADAM_SCHEDULE_LEN));
    let (mut w32, mut m32, mut v32) = (w.to_vec(), m.to_vec(), v.to_vec());
    cpu::adam::adam_update(&mut w32, g, &mut m32, &mut v32, hp, pair);
    let mut exact = [Vec::new(), Vec::new(), Vec::new()];
    let mut gpu_tol = [Vec::new(), Vec::new(), Vec::new()];
    let mut twin_tol = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..n {
        let (wi, gi, mi, vi) = (w[i] as f64, g[i] as f64, m[i] as f64, v[i] as f64);
        let e = adam_exact(wi, gi, mi, vi, hp, pair);
        let b_gpu = adam_bounds(wi, gi, mi, vi, hp, pair, 9.0 * U, 5.0 * U);
        let b_twin = adam_bounds(wi, gi, mi, vi, hp, pair, U, U);
        let bg = [b_gpu.0, b_gpu.1, b_gpu.2];
        let bt = [b_twin.0, b_twin.1, b_twin.2];
        for k in 0..3 {
            exact[k].push(e[k]);
            gpu_tol[k].push(bg[k]);
            twin_tol[k].push(bg[k] + bt[k]);
        }
    }
    let mut out = Vec::new();
    for (k, (name, got, twin)) in [("m", m_got, &m32), ("v", v_got, &v32), ("w", w_got, &w32)]
        .into_iter()
        .enumerate()
    {
        out.push(compare(
            &format!("adam_update {name}"),
            shape.to_string(),
            got,
            &exact[k],
            |i| (gpu_tol[k][i], 0.0),
        ));
        out.push(compare(
            &format!("adam_update {name} vs f32 twin"),
            shape.to_string(),
            got,
            &f64s(twin),
            |i| (twin_tol[k][i], 0.0),
        ));
    }
    out
}

/// The kernel families `verify` knows.
pub const FAMILIES: &[&str] = &[
    "matmul",
    "bias",
    "relu",
    "softmax_xent",
    "sgd",
    "metrics",
    "gather",
    "conv2d",
    "maxpool",
    "adam",
];

/// Gather checks as (samples in the dataset, pixels per sample, rows per minibatch): one of
/// everything, odd sizes, MNIST's shapes (the whole training set at batch 1 and 100), minibatches
/// of one more, one less and as many rows as samples, and minibatches running past the end.
pub const GATHER_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (3, 5, 4),
    (10, 784, 7),
    (257, 13, 100),
    (1000, 784, 100),
    (60_000, 784, 100),
    (5, 3, 20),
    (2, 1, 1),
    (1, 784, 100),
    (99, 784, 100),
    (100, 784, 100),
    (101, 784, 100),
    (7, 1, 13),
    (60_000, 784, 1),
    (33, 17, 32),
    (64, 64, 64),
    (3, 1000, 2),
    (500, 3, 499),
    (12, 28, 5),
    (31, 784, 31),
    (10_000, 784, 250),
    (4, 4, 3),
];

/// Shapes for the element-wise families: 1, primes, tile non-multiples, MLP shapes, large.
pub const ROW_SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (1, 10),
    (2, 3),
    (7, 13),
    (13, 7),
    (31, 1),
    (64, 64),
    (65, 17),
    (100, 10),
    (100, 512),
    (100, 784),
    (255, 257),
    (1000, 10),
    (1, 100_003),
    (1000, 1000),
    (3, 70_001),
    (70_001, 3),
    (10_000, 10),
    (256, 256),
    (97, 101),
];

/// Run every check of `family` (see [`FAMILIES`]) with inputs from `seed`.
pub fn run_family(ctx: &GpuContext, family: &str, seed: u64) -> Result<Vec<Check>> {
    run_family_with(ctx, family, seed, true)
}

/// [`run_family`], with or without the presets' full-size layers (conv2d and maxpool at batch
/// 100; the test suite leaves them to `wgtrain verify` where they are slow).
pub fn run_family_with(
    ctx: &GpuContext,
    family: &str,
    seed: u64,
    presets: bool,
) -> Result<Vec<Check>> {
    let mut inp = Inputs::new(seed);
    let mut out = Vec::new();
    match family {
        "matmul" => {
            // Checks name the tile in the kernel column.
            let tile_check = |ctx, inp: &mut Inputs, spec: &MatmulSpec, tile: &MatmulTile| {
                check_matmul(ctx, inp, spec, tile).map(|mut c| {
                    c.kernel = format!("{} {tile}", c.kernel);
                    c
                })
            };
            // The portable default and this adapter's default on every shape and transpose.
            let mut main = vec![MatmulTile::DEFAULT];
            let own = MatmulTile::default_for(ctx);
            if own != MatmulTile::DEFAULT && own.available(ctx) {
                main.push(own);
            }
            for tile in &main {
                for &(m, n, k) in MATMUL_SHAPES {
                    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                        let spec = MatmulSpec {
                            trans_a: ta,
                            trans_b: tb,
                            ..MatmulSpec::new(m, n, k)
                        };
                        out.push(tile_check(ctx, &mut inp, &spec, tile)?);
                    }
                }
            }
            // Every variant the adapter can run (the autotuner may pick any of them), in
            // every combination training, evaluation or bench launches (read from the
            // programs: coverage::launched_combos), on shapes crossing every edge of its tile.
            let combos = coverage::launched_combos()?;
            for tile in MatmulTile::CANDIDATES.iter().filter(|t| t.available(ctx)) {
                for &shape in &coverage::tile_edge_shapes(tile) {
                    for &c in &combos {
                        let spec = coverage::spec_of(c, shape);
                        out.push(tile_check(ctx, &mut inp, &spec, tile)?);
                    }
                }
                // All transposes, epilogues and accumulation on a few awkward shapes.
                for &(m, n, k) in &[(1, 1, 1), (7, 13, 257), (65, 63, 17), (100, 512, 784)] {
                    if !main.contains(tile) {
                        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)]
                        {
                            let spec = MatmulSpec {
                                trans_a: ta,
                                trans_b: tb,
                                ..MatmulSpec::new(m, n, k)
                            };
                            out.push(tile_check(ctx, &mut inp, &spec, tile)?);
                        }
                    }
                    for epi in Epilogue::ALL {
                        let spec = MatmulSpec {
                            epilogue: epi,
                            trans_b: true,
                            ..MatmulSpec::new(m, n, k)
                        };
                        out.push(tile_check(ctx, &mut inp, &spec, tile)?);
                    }
                    let acc = MatmulSpec {
                        accumulate: true,
                        epilogue: Epilogue::ReluMask,
                        trans_a: true,
                        ..MatmulSpec::new(m, n, k)
                    };
                    out.push(tile_check(ctx, &mut inp, &acc, tile)?);
                }
            }
            // The real products of every preset's training step and evaluation, on the
            // portable default and this adapter's default.
            if presets {
                for (label, spec) in coverage::all_preset_products()? {
                    for tile in &main {
                        if let Some(why) = tile.unsupported_for(ctx, &spec) {
                            log::warn!("verify: {label} not checked on {tile}: {why}");
                            continue;
                        }
                        let mut c = tile_check(ctx, &mut inp, &spec, tile)?;
                        c.shape = label.clone();
                        out.push(c);
                    }
                }
            }
        }
        "bias" => {
            for &(r, c) in ROW_SHAPES {
                out.extend(check_bias(ctx, &mut inp, r, c)?);
            }
        }
        "relu" => {
            for &(r, c) in ROW_SHAPES {
                out.extend(check_relu(ctx, &mut inp, r, c)?);
            }
        }
        "softmax_xent" => {
            for &(r, c) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000) {
                out.extend(check_softmax(ctx, &mut inp, r, c)?);
            }
            out.extend(check_softmax_extremes(ctx, &mut inp)?);
        }
        "sgd" => {
            for &(r, c) in ROW_SHAPES {
                out.extend(check_sgd(ctx, &mut inp, r * c)?);
            }
        }
        "metrics" => {
            for &(r, c) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000) {
                out.extend(check_metrics(ctx, &mut inp, r, c)?);
            }
        }
        "gather" => {
            for &(samples, pixels, rows) in GATHER_SHAPES {
                out.extend(check_gather(ctx, &mut inp, samples, pixels, rows, None)?);
                // The same split into about three shards, as a dataset beyond one binding is.
                let shard = ((samples / 3).max(4) * pixels) as u64;
                out.extend(check_gather(
                    ctx,
                    &mut inp,
                    samples,
                    pixels,
                    rows,
                    Some(shard),
                )?);
            }
        }
        "conv2d" => {
            for spec in conv2d_shapes() {
                out.extend(check_conv2d(ctx, &mut inp, &spec, "")?);
            }
            if presets {
                for (label, spec) in conv2d_preset_shapes() {
                    out.extend(check_conv2d(ctx, &mut inp, &spec, &format!("{label} "))?);
                }
            }
        }
        "maxpool" => {
            let inputs = [PoolInput::Uniform, PoolInput::Quantised, PoolInput::Relu];
            for (i, spec) in maxpool_shapes().iter().enumerate() {
                out.extend(check_maxpool(ctx, &mut inp, spec, inputs[i % 3], "")?);
                if i % 4 == 1 {
                    out.extend(check_maxpool(ctx, &mut inp, spec, PoolInput::Nan, "")?);
                }
            }
            if presets {
                for (label, spec) in maxpool_preset_shapes() {
                    for input in [PoolInput::Quantised, PoolInput::Relu] {
                        let label = format!("{label} ");
                        out.extend(check_maxpool(ctx, &mut inp, &spec, input, &label)?);
                    }
                }
            }
        }
        "adam" => {
            // The cnn preset's 3.2M-weight layer only with the presets (slow in debug builds).
            for case in adam_cases()
                .iter()
                .filter(|c| presets || c.n <= ADAM_TEST_MAX)
            {
                out.extend(check_adam(ctx, &mut inp, case)?);
            }
        }
        other => {
            return Err(crate::Error::InvalidSetting {
                setting: crate::error::Setting::Kernel,
                reason: format!("unknown kernel family {other:?}; expected one of {FAMILIES:?}"),
            })
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_out_of_tolerance_and_nan_and_reports_exact_statistics() {
        // Tolerance 0.5 + 0.25·|cpu|. Element 0: error 0.5 of tolerance 1.0 (cpu 2);
        // element 1: error exactly at its tolerance 0.5 (cpu 0) passes; element 2: error 3 of
        // tolerance 1.5 (cpu 4) fails; element 3: equal infinities pass.
        let c = compare(
            "k",
            "s".into(),
            &[2.5, 0.5, 1.0, f32::INFINITY],
            &[2.0, 0.0, 4.0, f64::INFINITY],
            |_| (0.5, 0.25),
        );
        assert_eq!((c.bad, c.elements), (1, 4));
        assert_eq!(c.max_abs, 3.0);
        assert_eq!(c.max_rel, 0.75, "3/4; the zero reference is left out");
        assert_eq!(c.worst, 2.0, "3 / 1.5");
        // NaN anywhere fails, NaN against NaN included; opposite infinities fail.
        for (g, r) in [
            (f32::NAN, 1.0),
            (1.0, f64::NAN),
            (f32::NAN, f64::NAN),
            (f32::INFINITY, f64::NEG_INFINITY),
        ] {
            let c = compare("k", "s".into(), &[g], &[r], |_| (1.0, 1.0));
            assert_eq!(c.bad, 1, "{g} vs {r}");
            assert_eq!(c.worst, f64::INFINITY, "{g} vs {r}");
        }
    }

    #[test]
    fn sgd_compare_holds_each_element_to_the_documented_first_order_bound() {
        // Every term of the bound matters here (λ|w| and μ|v| as large as |g|), so a bound
        // with a term dropped, flipped or loosened reports another error/tolerance ratio.
        let hp = crate::ops::SgdParams {
            lr: 0.5,
            momentum: 0.9,
            l2: 0.25,
        };
        let (w, g, v) = ([0.75f32, -0.5], [-0.5f32, 0.125], [0.25f32, -1.0]);
        let (lr, mu, l2) = (0.5f64, 0.9f32 as f64, 0.25f64);
        let f = |x: &[f32]| x.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let (wd, gd, vd) = (f(&w), f(&g), f(&v));
        let v_want: Vec<f64> = (0..2).map(|i| mu * vd[i] + gd[i] + l2 * wd[i]).collect();
        let w_want: Vec<f64> = (0..2).map(|i| wd[i] - lr * v_want[i]).collect();
        // The exact updates rounded to f32 and moved 2 ulps: a non-zero error near the bound.
        let nudge = |x: f64| f32::from_bits((x as f32).to_bits() + 2);
        let v_got: Vec<f32> = v_want.iter().map(|&x| nudge(x)).collect();
        let w_got: Vec<f32> = w_want.iter().map(|&x| nudge(x)).collect();
        let slack = 1.0 + 64.0 * U;
        let mag = |i: usize| mu * vd[i].abs() + gd[i].abs() + l2 * wd[i].abs();
        let ratio = |got: &[f32], want: &[f64], tol: &dyn Fn(usize) -> f64| {
            (0..2)
                .map(|i| (got[i] as f64 - want[i]).abs() / tol(i))
                .fold(0.0, f64::max)
        };
        let want_v = ratio(&v_got, &v_want, &|i| 3.0 * U * mag(i) * slack);
        let want_w = ratio(&w_got, &w_want, &|i| {
            (U * wd[i].abs() + 5.0 * U * lr * mag(i)) * slack
        });
        let c = sgd_compare(hp, [&w, &g, &v], &w_got, &v_got, "2".into());
        for (c, want) in c.iter().zip([want_v, want_w]) {
            assert!(want > 0.05, "{}: a ratio to compare ({want})", c.kernel);
            assert!(
                (c.worst - want).abs() <= 1e-12 * want,
                "{}: error/tolerance {} where the documented bound gives {want}",
                c.kernel,
                c.worst
            );
        }
    }

    #[test]
    fn compare_exact_passes_equal_values_and_matching_nans_and_fails_a_nan_for_a_number() {
        let ok = compare_exact(
            "k",
            "s".into(),
            &[1.0, f32::NAN, f32::INFINITY],
            &[1.0, f64::NAN, f64::INFINITY],
        );
        assert_eq!(ok.bad, 0, "equal values, NaN for NaN, equal infinities");
        // An unwritten (NaN-poisoned) output where the reference is a number, a number where
        // the reference is NaN, and a plain wrong value each fail.
        for (g, r) in [(f32::NAN, 1.0), (1.0, f64::NAN), (2.0, 1.0)] {
            let c = compare_exact("k", "s".into(), &[g], &[r]);
            assert_eq!(c.bad, 1, "{g} vs {r}");
        }
    }

    #[test]
    fn gamma_is_highams_n_u_over_one_minus_n_u() {
        // γ_n = n·u / (1 − n·u), u = 2⁻²⁴ (Higham, Accuracy and Stability, §3.1). At
        // n = 2²⁰, n·u = 1/16 and γ_n = 1/15, well apart from n·u and from 1/17.
        assert_eq!(gamma(1 << 20), (1.0 / 16.0) / (15.0 / 16.0));
        assert!((gamma(1 << 20) - 1.0 / 15.0).abs() < 1e-15);
        assert_eq!(gamma(1), U / (1.0 - U));
        assert!(gamma(1000) > 1000.0 * U);
    }

    /// The adam bound, evaluated with correctly rounded sqrt and division, must hold for the
    /// f32 twin (whose sqrt and division are correctly rounded): a check of the derivation that
    /// needs no GPU.
    #[test]
    fn adam_bounds_hold_for_the_correctly_rounded_twin() {
        let mut inp = Inputs::new(7);
        for case in adam_cases().iter().filter(|c| c.n <= 100_003) {
            let (n, hp) = (case.n, case.hp);
            let [w, g, m, v] = adam_inputs(&mut inp, n);
            let pair = hp.schedule(case.t.min(ADAM_SCHEDULE_LEN));
            let (mut w32, mut m32, mut v32) = (w.clone(), m.clone(), v.clone());
            cpu::adam::adam_update(&mut w32, &g, &mut m32, &mut v32, hp, pair);
            let mut worst = [0.0f64; 3];
            for i in 0..n {
                let (wi, gi, mi, vi) = (w[i] as f64, g[i] as f64, m[i] as f64, v[i] as f64);
                let e = adam_exact(wi, gi, mi, vi, hp, pair);
                let b = adam_bounds(wi, gi, mi, vi, hp, pair, U, U);
                let got = [m32[i] as f64, v32[i] as f64, w32[i] as f64];
                for (k, bk) in [b.0, b.1, b.2].into_iter().enumerate() {
                    let err = (got[k] - e[k]).abs();
                    let ratio = if err == 0.0 { 0.0 } else { err / bk };
                    assert!(
                        ratio <= 1.0,
                        "{case:?} element {i} ({wi}, {gi}, {mi}, {vi}), output {k}: error {err:e} > bound {bk:e}"
                    );
                    worst[k] = worst[k].max(ratio);
                }
            }
            eprintln!(
                "{case:?}: worst error/bound m {:.3} v {:.3} w {:.3}",
                worst[0], worst[1], worst[2]
            );
        }
    }
}
