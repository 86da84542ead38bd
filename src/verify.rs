//! Kernel-versus-CPU verification, shared by the test suite and `wgtrain verify`.
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
//! * softmax: WGSL `exp` is accurate to (3 + 2|x|) ULP and division to 2.5 ULP; the row sum of
//!   C terms adds γ_C. p ≤ 1, so atol = (C + 8)·2u, rtol = (3 + 2|z − max z|)·2u.
//!   loss = log s + max − z_y: `log` is accurate to 2⁻²¹ absolute near 1 (3 ULP elsewhere),
//!   plus the relative error of s and two roundings of the additions.
//! * sgd: three multiply-adds; rtol = 4u on each term's magnitude.

use crate::cpu;
use crate::gpu::kernels::{self, Epilogue, MatmulSpec, MatmulTile, MetricsAcc, SgdParams};
use crate::gpu::GpuContext;
use crate::Result;
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    let mut c = Check {
        kernel: kernel.to_string(),
        shape,
        max_abs: 0.0,
        max_rel: 0.0,
        worst: 0.0,
        bad: 0,
        elements: cpu.len(),
    };
    if gpu.len() != cpu.len() {
        c.bad = cpu.len().max(1);
        c.worst = f64::INFINITY;
        return c;
    }
    for (i, (&g, &r)) in gpu.iter().zip(cpu).enumerate() {
        let err = (g as f64 - r).abs();
        let (atol, rtol) = tol(i);
        let t = atol + rtol * r.abs();
        if err.is_nan() || (g.is_nan() != r.is_nan()) {
            c.bad += 1;
            c.worst = f64::INFINITY;
            c.max_abs = f64::INFINITY;
            continue;
        }
        if g as f64 == r {
            continue; // covers equal infinities
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
    /// Labels in 0..classes, with about one in eight replaced by the padding label.
    pub fn labels(&mut self, n: usize, classes: usize, padding: bool) -> Array1<u32> {
        (0..n)
            .map(|_| {
                if padding && self.rng.random_range(0..8) == 0 {
                    kernels::PADDING_LABEL
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
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (std::process::id() as u64).rotate_left(32)
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

/// Check one matmul variant on one shape.
pub fn check_matmul(
    ctx: &GpuContext,
    inp: &mut Inputs,
    spec: &MatmulSpec,
    tile: &MatmulTile,
) -> Result<Check> {
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
    let mask = inp.matrix(m, n);
    let start = inp.matrix(m, n);
    let ab = ctx.upload("a", a.as_slice().unwrap());
    let bb = ctx.upload("b", b.as_slice().unwrap());
    let aux = match spec.epilogue {
        Epilogue::None => None,
        Epilogue::Bias | Epilogue::BiasRelu => Some(ctx.upload("bias", bias.as_slice().unwrap())),
        Epilogue::ReluMask => Some(ctx.upload("mask", mask.as_slice().unwrap())),
    };
    let cb = if spec.accumulate {
        ctx.upload("c", start.as_slice().unwrap())
    } else {
        ctx.poisoned("c", m * n)
    };
    let launch = kernels::matmul(ctx, spec, tile, &ab, &bb, aux.as_ref(), &cb)?;
    ctx.submit(&[&launch], 1)?;
    let got: Vec<f32> = ctx.read("c", &cb, m * n)?;

    let (a64, b64) = (to64(&a), to64(&b));
    let mut want = cpu::matmul::matmul(a64.view(), b64.view(), spec.trans_a, spec.trans_b);
    let bound = cpu::matmul::matmul(
        a64.mapv(f64::abs).view(),
        b64.mapv(f64::abs).view(),
        spec.trans_a,
        spec.trans_b,
    );
    let bias64 = bias.mapv(|v| v as f64);
    let mask64 = to64(&mask);
    cpu::matmul::epilogue(
        &mut want,
        spec.epilogue,
        Some(bias64.view()),
        Some(mask64.view()),
    );
    if spec.accumulate {
        want = want + to64(&start);
    }
    let g = gamma(k);
    let extra = if spec.accumulate { 1.0 } else { 0.0 };
    // `dot` of transposed views may come back column-major; iterate in logical order.
    let bound: Vec<f64> = bound.iter().copied().collect();
    let want: Vec<f64> = want.iter().copied().collect();
    let start64 = f64s(start.as_slice().unwrap());
    Ok(compare(
        &format!(
            "matmul {}{} {:?}{}",
            if spec.trans_a { "T" } else { "N" },
            if spec.trans_b { "T" } else { "N" },
            spec.epilogue,
            if spec.accumulate { " +=" } else { "" }
        ),
        format!("{m}x{n}x{k}"),
        &got,
        &want,
        |i| (g * bound[i] + extra * U * start64[i].abs(), 2.0 * U),
    ))
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
    let x64 = to64(&x);
    let want_y = cpu::bias::bias_add(x64.view(), b.mapv(|v| v as f64).view());
    let want_db = cpu::bias::bias_backward(x64.view());
    let abs_sum = cpu::bias::bias_backward(x64.mapv(f64::abs).view());
    let shape = format!("{rows}x{cols}");
    Ok(vec![
        compare(
            "bias_add",
            shape.clone(),
            &y,
            want_y.as_slice().unwrap(),
            |_| (0.0, U),
        ),
        compare(
            "bias_backward",
            shape,
            &db,
            want_db.as_slice().unwrap(),
            |i| (gamma(kernels::bias_backward_depth(rows)) * abs_sum[i], 0.0),
        ),
    ])
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
    let z64 = to64(logits);
    let (want_p, want_loss) = cpu::softmax_xent::softmax_xent_forward(z64.view(), labels.view());
    let want_d =
        cpu::softmax_xent::softmax_xent_backward(want_p.view(), labels.view(), scale as f64);
    let rowmax: Vec<f64> = z64
        .rows()
        .into_iter()
        .map(|r| r.fold(f64::NEG_INFINITY, |a, &b| a.max(b)))
        .collect();
    let c = classes as f64;
    let p_tol = |i: usize| {
        let x = (z64[[i / classes, i % classes]] - rowmax[i / classes]).abs();
        ((c + 8.0) * 2.0 * U, (3.0 + 2.0 * x.min(1e6)) * 2.0 * U)
    };
    let loss_tol = |r: usize| {
        let y = labels[r] as usize;
        let zy = if y < classes { z64[[r, y]].abs() } else { 0.0 };
        let s_rel = (c + 8.0 + 2.0 * 100.0f64.min(c)) * 2.0 * U;
        (
            2f64.powi(-21) + s_rel + 4.0 * U * (rowmax[r].abs() + zy + want_loss[r].abs()),
            0.0,
        )
    };
    Ok(vec![
        compare(
            "softmax_xent_forward probs",
            shape.clone(),
            &p,
            want_p.as_slice().unwrap(),
            p_tol,
        ),
        compare(
            "softmax_xent_forward loss",
            shape.clone(),
            &loss,
            want_loss.as_slice().unwrap(),
            loss_tol,
        ),
        compare(
            "softmax_xent_backward",
            shape,
            &d,
            want_d.as_slice().unwrap(),
            |i| {
                let (a, r) = p_tol(i);
                (a * scale as f64 + U * scale as f64, r + 2.0 * U)
            },
        ),
    ])
}

/// softmax + cross-entropy on random logits in [-8, 8].
pub fn check_softmax(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> Result<Vec<Check>> {
    let logits = Array2::from_shape_vec((rows, classes), inp.uniform(rows * classes, -8.0, 8.0))
        .expect("shape");
    check_softmax_on(ctx, inp, &logits, format!("{rows}x{classes}"))
}

/// Rows that overflow a naive softmax: [1000, 0], all −1000, [−1000, 0, 1000], huge spreads.
pub fn check_softmax_extremes(ctx: &GpuContext, inp: &mut Inputs) -> Result<Vec<Check>> {
    let rows: Vec<Vec<f32>> = vec![
        vec![1000.0, 0.0, 0.0],
        vec![-1000.0, -1000.0, -1000.0],
        vec![-1000.0, 0.0, 1000.0],
        vec![88.0, 89.0, 90.0],
        vec![-1e30, 1e30, 0.0],
        vec![0.0, 0.0, 0.0],
    ];
    let logits = Array2::from_shape_vec((rows.len(), 3), rows.concat()).expect("shape");
    let mut checks = check_softmax_on(ctx, inp, &logits, "extremes 6x3".into())?;
    for c in &mut checks {
        if !c.max_abs.is_finite() {
            c.bad = c.bad.max(1);
        }
    }
    Ok(checks)
}

/// One SGD step on `n` parameters.
pub fn check_sgd(ctx: &GpuContext, inp: &mut Inputs, n: usize) -> Result<Vec<Check>> {
    let hp = SgdParams {
        lr: 0.05,
        momentum: 0.9,
        l2: 1e-3,
    };
    let w = inp.uniform(n, -1.0, 1.0);
    let g = inp.uniform(n, -1.0, 1.0);
    let v = inp.uniform(n, -1.0, 1.0);
    let (wb, gb, vb) = (
        ctx.upload("w", &w),
        ctx.upload("g", &g),
        ctx.upload("v", &v),
    );
    let l = kernels::sgd_update(ctx, n, hp, &wb, &gb, &vb)?;
    ctx.submit(&[&l], 1)?;
    let w_gpu: Vec<f32> = ctx.read("w", &wb, n)?;
    let v_gpu: Vec<f32> = ctx.read("v", &vb, n)?;
    // Reference: the CPU twin in f32, then re-derive each term's magnitude for the bound.
    let mut w_cpu = ArrayD::from_shape_vec(IxDyn(&[n]), w.clone()).unwrap();
    let mut v_cpu = ArrayD::from_shape_vec(IxDyn(&[n]), v.clone()).unwrap();
    let g_cpu = ArrayD::from_shape_vec(IxDyn(&[n]), g.clone()).unwrap();
    cpu::sgd::sgd_update(w_cpu.view_mut(), g_cpu.view(), v_cpu.view_mut(), hp);
    let (lr, mu, l2) = (hp.lr as f64, hp.momentum as f64, hp.l2 as f64);
    let v_mag =
        |i: usize| mu * (v[i] as f64).abs() + (g[i] as f64).abs() + l2 * (w[i] as f64).abs();
    let shape = format!("{n}");
    Ok(vec![
        compare(
            "sgd_update v",
            shape.clone(),
            &v_gpu,
            &f64s(v_cpu.as_slice().unwrap()),
            |i| (8.0 * U * v_mag(i), 0.0),
        ),
        compare(
            "sgd_update w",
            shape,
            &w_gpu,
            &f64s(w_cpu.as_slice().unwrap()),
            |i| (8.0 * U * ((w[i] as f64).abs() + lr * v_mag(i)), 0.0),
        ),
    ])
}

/// argmax and metric accumulation on [rows, classes].
pub fn check_metrics(
    ctx: &GpuContext,
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> Result<Vec<Check>> {
    let scores = inp.matrix(rows, classes);
    let labels = inp.labels(rows, classes, true);
    let loss = Array1::from(inp.uniform(rows, 0.0, 5.0));
    let start = MetricsAcc {
        loss_sum: 1.5,
        correct: 3,
        seen: 7,
        nonfinite: 0,
    };
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
    let mut want = start;
    cpu::metrics::accumulate_metrics(&mut want, scores.view(), labels.view(), loss.view());
    let shape = format!("{rows}x{classes}");
    let as_f = |v: &[u32]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let abs_sum: f64 = loss.iter().map(|&l| l as f64).sum::<f64>() + 1.5;
    Ok(vec![
        compare(
            "argmax",
            shape.clone(),
            &as_f(&pred),
            &f64s(&as_f(want_pred.as_slice().unwrap())),
            |_| (0.0, 0.0),
        ),
        compare(
            "accumulate_metrics counts",
            shape.clone(),
            &[
                acc[0].correct as f32,
                acc[0].seen as f32,
                acc[0].nonfinite as f32,
            ],
            &[want.correct as f64, want.seen as f64, want.nonfinite as f64],
            |_| (0.0, 0.0),
        ),
        compare(
            "accumulate_metrics loss",
            shape,
            &[acc[0].loss_sum],
            // Exact reference: the f64 sum over the counted rows (the f32 twin sums serially).
            &[1.5
                + (0..rows)
                    .filter(|&r| labels[r] < classes as u32)
                    .map(|r| loss[r] as f64)
                    .sum::<f64>()],
            // 256 strided partial sums, an 8-level tree, and one add into the accumulator.
            |_| (gamma(rows.div_ceil(256) + 9) * abs_sum, 0.0),
        ),
    ])
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
    let images: Vec<u8> = (0..samples * pixels)
        .map(|_| inp.next_u64() as u8)
        .collect();
    let labels: Vec<u8> = (0..samples).map(|_| (inp.next_u64() % 10) as u8).collect();
    let mut order: Vec<u32> = (0..samples as u32).collect();
    for i in (1..samples).rev() {
        order.swap(i, (inp.next_u64() % (i as u64 + 1)) as usize);
    }
    let start = samples.saturating_sub(rows / 2);
    let data = kernels::GpuDataset::upload(ctx, &images, &labels, pixels, shard_bytes)?;
    let ob = ctx.upload("order", &order);
    let cb = ctx.upload("cursor", &[start as u32]);
    let xb = ctx.poisoned("x", rows * pixels);
    let yb = ctx.upload("y", &vec![12345u32; rows]);
    let mut launches = kernels::gather(ctx, rows, &data, &ob, &cb, &xb, &yb)?;
    launches.push(kernels::advance(ctx, rows, &cb)?);
    ctx.submit(&launches.iter().collect::<Vec<_>>(), 1)?;
    let x: Vec<f32> = ctx.read("x", &xb, rows * pixels)?;
    let y: Vec<u32> = ctx.read("y", &yb, rows)?;
    let cursor: Vec<u32> = ctx.read("cursor", &cb, 1)?;
    let (wx, wy) = cpu::gather::gather(&images, &labels, pixels, &order, start, rows);
    let shape = format!(
        "{rows}x{pixels} of {samples} in {} shard(s)",
        data.shards.len()
    );
    let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    let wyf: Vec<f64> = wy.iter().map(|&v| v as f32 as f64).collect();
    Ok(vec![
        compare(
            "gather x",
            shape.clone(),
            &x,
            &f64s(wx.as_slice().unwrap()),
            |_| (0.0, 5.0 * U),
        ),
        compare("gather y", shape.clone(), &yf, &wyf, |_| (0.0, 0.0)),
        compare(
            "advance",
            shape,
            &[cursor[0] as f32],
            &[(start + rows) as f64],
            |_| (0.0, 0.0),
        ),
    ])
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
            // Every variant the adapter can run (the autotuner may pick any of them): all
            // transposes, epilogues and accumulation on a few awkward shapes.
            for tile in MatmulTile::CANDIDATES.iter().filter(|t| t.available(ctx)) {
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
            for &(samples, pixels, rows) in &[
                (1, 1, 1),
                (3, 5, 4),
                (10, 784, 7),
                (257, 13, 100),
                (1000, 784, 100),
                (60_000, 784, 100),
                (5, 3, 20),
            ] {
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
        other => {
            return Err(crate::Error::InvalidArg {
                name: "--kernel",
                reason: format!("unknown kernel family {other:?}; expected one of {FAMILIES:?}"),
            })
        }
    }
    Ok(out)
}
