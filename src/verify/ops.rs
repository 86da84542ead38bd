//! Op-level checks of any [`Backend`]: each check writes seeded random inputs into backend
//! buffers, poisons the outputs, prepares and runs a program of one op (or the few a check
//! needs: forward then backward, an op then its counter's advance), reads the outputs back and
//! compares them with the f64 oracle at the tolerances of the kernel checks (the oracle and
//! tolerance code is shared with them, see the parent module).
//!
//! Where a GPU bound assumes the kernel's summation order (bias_backward's and the metrics'
//! partial sums), the backend checks use the bound for any order of the same terms instead:
//! γ_n·Σ|terms| for n terms. Every buffer also carries [`GUARD`] words past its end that must
//! come back unchanged, and every input must come back bit-for-bit: one "… untouched" check
//! per program reports writes outside the outputs.

use super::{
    adam_cases, adam_compare, adam_inputs, adam_schedule_table, adam_shape, compare_u32,
    conv2d_compare, conv2d_inputs, conv2d_preset_shapes, conv2d_shape, conv2d_shapes,
    fail_nonfinite, maxpool_compare, maxpool_inputs, maxpool_preset_shapes, maxpool_shape,
    maxpool_shapes, metrics_compare, metrics_inputs, sgd_compare, sgd_inputs, softmax_compare,
    softmax_extreme_logits, softmax_logits, AdamCase, Check, GatherData, Inputs, MatmulData,
    PoolInput, ADAM_TEST_MAX, GATHER_Y_POISON, MATMUL_SHAPES, METRICS_START, ROW_SHAPES,
    SGD_PARAMS,
};
use crate::backend::Backend;
use crate::data::Dataset;
use crate::ops::{AdamParams, BufId, Conv2dSpec, Epilogue, MatmulSpec, MetricsAcc, Op, Pool2dSpec};
use crate::Result;
use ndarray::Array2;

/// The op families [`run_backend_family`] knows (the kernel families less relu, which no op
/// runs alone: ReLU is a matmul epilogue).
pub const OP_FAMILIES: &[&str] = &[
    "matmul",
    "bias",
    "softmax_xent",
    "sgd",
    "metrics",
    "gather",
    "conv2d",
    "maxpool",
    "adam",
];

/// Words after each buffer's used part that no op may write.
pub const GUARD: usize = 3;

/// What the guard words hold.
const GUARD_WORD: u32 = 0xdead_beef;

/// The bits outputs are poisoned with: an unwritten f32 stays NaN.
const NAN: u32 = 0x7fc0_0000;

/// Buffers of one check on a backend, remembering what must come back unchanged.
struct Harness<'a> {
    be: &'a mut dyn Backend,
    /// Inputs and their full contents (guard included).
    fixed: Vec<(BufId, Vec<u32>)>,
    /// Outputs and in-place buffers with their used length (the guard follows).
    guarded: Vec<(BufId, usize)>,
}

impl<'a> Harness<'a> {
    fn new(be: &'a mut dyn Backend) -> Self {
        Harness {
            be,
            fixed: Vec::new(),
            guarded: Vec::new(),
        }
    }

    fn alloc(&mut self, label: &str, data: &[u32]) -> Result<BufId> {
        let b = self.be.alloc(label, data.len())?;
        self.be.write(b, data)?;
        Ok(b)
    }

    fn with_guard(data: &[u32]) -> Vec<u32> {
        let mut v = data.to_vec();
        v.extend([GUARD_WORD; GUARD]);
        v
    }

    /// An input holding `data`, then the guard.
    fn input(&mut self, label: &str, data: &[u32]) -> Result<BufId> {
        let v = Self::with_guard(data);
        let b = self.alloc(label, &v)?;
        self.fixed.push((b, v));
        Ok(b)
    }

    fn input_f32(&mut self, label: &str, data: &[f32]) -> Result<BufId> {
        self.input(label, bytemuck::cast_slice(data))
    }

    /// An input of exactly `data.len()` words, for the ops that read a buffer's length (the
    /// gather's order, the Adam schedule).
    fn input_exact(&mut self, label: &str, data: &[u32]) -> Result<BufId> {
        let b = self.alloc(label, data)?;
        self.fixed.push((b, data.to_vec()));
        Ok(b)
    }

    /// An output of `n` words of `poison`, then the guard.
    fn output(&mut self, label: &str, n: usize, poison: u32) -> Result<BufId> {
        self.inout(label, &vec![poison; n])
    }

    /// A buffer the program updates in place, starting as `data`, then the guard.
    fn inout(&mut self, label: &str, data: &[u32]) -> Result<BufId> {
        let b = self.alloc(label, &Self::with_guard(data))?;
        self.guarded.push((b, data.len()));
        Ok(b)
    }

    /// A buffer between two ops of the program, poisoned, never read back (a backend may fuse
    /// the ops around it away).
    fn scratch(&mut self, label: &str, n: usize) -> Result<BufId> {
        self.alloc(label, &vec![NAN; n])
    }

    fn inout_f32(&mut self, label: &str, data: &[f32]) -> Result<BufId> {
        self.inout(label, bytemuck::cast_slice(data))
    }

    fn dataset(&mut self, d: &Dataset) -> Result<crate::ops::DataId> {
        self.be.dataset(d)
    }

    /// Prepare `ops` and run them `repeat` times.
    fn run(&mut self, ops: &[Op], repeat: usize) -> Result<()> {
        let p = self.be.prepare(ops)?;
        self.be.run(p, repeat)
    }

    /// The first `n` words of `b` (async: in the browser a read waits for the GPU).
    async fn read(&mut self, b: BufId, n: usize) -> Result<Vec<u32>> {
        let mut out = vec![0u32; n];
        self.be.read_into_async(&[(b, n)], &mut out).await?;
        Ok(out)
    }

    async fn read_f32(&mut self, b: BufId, n: usize) -> Result<Vec<f32>> {
        Ok(bytemuck::cast_slice(&self.read(b, n).await?).to_vec())
    }

    /// "`name` untouched": every input bit-for-bit as written, every guard intact.
    async fn untouched(&mut self, name: &str, shape: &str) -> Result<Check> {
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for (b, v) in std::mem::take(&mut self.fixed) {
            got.extend(self.read(b, v.len()).await?);
            want.extend(v);
        }
        for (b, n) in std::mem::take(&mut self.guarded) {
            got.extend_from_slice(&self.read(b, n + GUARD).await?[n..]);
            want.extend([GUARD_WORD; GUARD]);
        }
        Ok(compare_u32(
            &format!("{name} untouched"),
            shape.to_string(),
            &got,
            &want,
        ))
    }
}

fn bits(v: &[f32]) -> &[u32] {
    bytemuck::cast_slice(v)
}

/// One product on `spec` (accumulating into random C when `spec.accumulate`).
pub async fn check_matmul_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    spec: &MatmulSpec,
) -> Result<Vec<Check>> {
    let (m, n) = (spec.m, spec.n);
    let d = MatmulData::new(inp, spec);
    let mut h = Harness::new(be);
    let a = h.input_f32("a", d.a.as_slice().unwrap())?;
    let b = h.input_f32("b", d.b.as_slice().unwrap())?;
    let aux = match d.aux(spec.epilogue) {
        Some(v) => Some(h.input_f32("aux", v)?),
        None => None,
    };
    let c = if spec.accumulate {
        h.inout_f32("c", d.start.as_slice().unwrap())?
    } else {
        h.output("c", m * n, NAN)?
    };
    h.run(
        &[Op::Matmul {
            spec: *spec,
            a,
            b,
            aux,
            c,
        }],
        1,
    )?;
    let got = h.read_f32(c, m * n).await?;
    let check = super::matmul_compare(spec, &d, &got);
    let untouched = h.untouched("matmul", &check.shape).await?;
    Ok(vec![check, untouched])
}

/// db = column sums of dy[rows, cols], within γ_rows·Σ|dy| (any order).
pub async fn check_bias_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    rows: usize,
    cols: usize,
    label: &str,
) -> Result<Vec<Check>> {
    let dy = inp.matrix(rows, cols);
    let mut h = Harness::new(be);
    let dyb = h.input_f32("dy", dy.as_slice().unwrap())?;
    let db = h.output("db", cols, NAN)?;
    h.run(
        &[Op::BiasBackward {
            rows,
            cols,
            dy: dyb,
            db,
        }],
        1,
    )?;
    let got = h.read_f32(db, cols).await?;
    let shape = format!("{label}{rows}x{cols}");
    let check = super::bias_backward_compare(&dy, &got, rows, shape.clone());
    Ok(vec![check, h.untouched("bias_backward", &shape).await?])
}

/// softmax_xent forward then backward (on the backend's probs) on `logits`, about one label
/// in eight padding.
pub async fn check_softmax_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    logits: &Array2<f32>,
    shape: String,
) -> Result<Vec<Check>> {
    let (rows, classes) = logits.dim();
    let labels = inp.labels(rows, classes, true);
    let scale = 1.0 / rows as f32;
    let mut h = Harness::new(be);
    let zb = h.input_f32("logits", logits.as_slice().unwrap())?;
    let lb = h.input("labels", labels.as_slice().unwrap())?;
    let pb = h.output("probs", rows * classes, NAN)?;
    let lossb = h.output("loss", rows, NAN)?;
    let db = h.output("dlogits", rows * classes, NAN)?;
    h.run(
        &[
            Op::SoftmaxXentForward {
                rows,
                classes,
                logits: zb,
                labels: lb,
                probs: pb,
                loss: lossb,
            },
            Op::SoftmaxXentBackward {
                rows,
                classes,
                scale,
                probs: pb,
                labels: lb,
                dlogits: db,
            },
        ],
        1,
    )?;
    let p = h.read_f32(pb, rows * classes).await?;
    let loss = h.read_f32(lossb, rows).await?;
    let d = h.read_f32(db, rows * classes).await?;
    let mut out = softmax_compare(logits, &labels, scale, &p, &loss, &d, shape.clone());
    out.push(h.untouched("softmax_xent", &shape).await?);
    Ok(out)
}

/// One SGD update of `n` parameters.
pub async fn check_sgd_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    n: usize,
    hp: crate::ops::SgdParams,
) -> Result<Vec<Check>> {
    let [w, g, v] = sgd_inputs(inp, n);
    let mut h = Harness::new(be);
    let wb = h.inout_f32("w", &w)?;
    let gb = h.input_f32("g", &g)?;
    let vb = h.inout_f32("v", &v)?;
    h.run(
        &[Op::Sgd {
            n,
            hp,
            w: wb,
            g: gb,
            v: vb,
        }],
        1,
    )?;
    let w_got = h.read_f32(wb, n).await?;
    let v_got = h.read_f32(vb, n).await?;
    let shape = format!("{n} lr={} μ={} λ={}", hp.lr, hp.momentum, hp.l2);
    let mut out = sgd_compare(hp, [&w, &g, &v], &w_got, &v_got, shape.clone());
    out.push(h.untouched("sgd_update", &shape).await?);
    Ok(out)
}

/// Metrics accumulation over [rows, classes] into a non-zero accumulator.
pub async fn check_metrics_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> Result<Vec<Check>> {
    let (scores, labels, loss) = metrics_inputs(inp, rows, classes);
    let start = METRICS_START;
    let mut h = Harness::new(be);
    let sb = h.input_f32("probs", scores.as_slice().unwrap())?;
    let lb = h.input("labels", labels.as_slice().unwrap())?;
    let lossb = h.input_f32("loss", loss.as_slice().unwrap())?;
    let accb = h.inout("acc", bytemuck::cast_slice(&[start]))?;
    h.run(
        &[Op::Metrics {
            rows,
            classes,
            probs: sb,
            labels: lb,
            loss: lossb,
            acc: accb,
        }],
        1,
    )?;
    let acc: MetricsAcc =
        bytemuck::pod_read_unaligned(bytemuck::cast_slice(&h.read(accb, 4).await?));
    let shape = format!("{rows}x{classes}");
    // Any order: rows terms plus the accumulator's.
    let mut out = metrics_compare(&scores, &labels, &loss, start, acc, rows, shape.clone());
    out.push(h.untouched("accumulate_metrics", &shape).await?);
    Ok(out)
}

/// Where a gather check's cursor starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// rows/2 before the end: the minibatch runs into padding.
    NearEnd,
    /// At 0, and the program runs twice: the second minibatch starts where the first ended
    /// (the cursor is read when the program runs, not when it is prepared).
    StartTwice,
    /// At the end: all padding.
    AtEnd,
}

/// Gather of `rows` samples of `pixels` bytes from a random dataset of `samples`, then
/// Advance of the cursor.
pub async fn check_gather_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    samples: usize,
    pixels: usize,
    rows: usize,
    cursor: Cursor,
) -> Result<Vec<Check>> {
    // Starting twice from 0 also runs on a part of the order, as a data-parallel rank does.
    let len = match cursor {
        Cursor::StartTwice => samples - samples / 3,
        _ => samples,
    };
    let mut d = GatherData::new(inp, samples, pixels, rows, len);
    let repeat = match cursor {
        Cursor::NearEnd => 1,
        Cursor::StartTwice => {
            d.start = 0;
            2
        }
        Cursor::AtEnd => {
            d.start = len;
            1
        }
    };
    let set = Dataset {
        images: d.images.clone(),
        labels: d.labels.clone(),
        n: samples,
        rows: 1,
        cols: pixels,
    };
    let mut h = Harness::new(be);
    let data = h.dataset(&set)?;
    let ob = h.input_exact("order", &d.order)?;
    let cb = h.inout("cursor", &[d.start as u32])?;
    let xb = h.output("x", rows * pixels, NAN)?;
    let yb = h.output("y", rows, GATHER_Y_POISON)?;
    h.run(
        &[
            Op::Gather {
                data,
                rows,
                len,
                order: ob,
                cursor: cb,
                x: xb,
                y: yb,
            },
            Op::Advance {
                cursor: cb,
                by: rows,
            },
        ],
        repeat,
    )?;
    let x = h.read_f32(xb, rows * pixels).await?;
    let y = h.read(yb, rows).await?;
    let c = h.read(cb, 1).await?;
    // The last run gathered from start + (repeat − 1)·rows.
    d.start += (repeat - 1) * rows;
    let shape = format!("{rows}x{pixels} of {samples} ({len} in use) from {cursor:?}");
    let mut out = d.compare(pixels, rows, &x, &y, c[0], shape.clone());
    out.push(h.untouched("gather", &shape).await?);
    Ok(out)
}

/// Im2col, col2im and col2im with a mask on one geometry, in one program.
pub async fn check_conv2d_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    spec: &Conv2dSpec,
    label: &str,
) -> Result<Vec<Check>> {
    let (ncols, n_in) = (spec.col_rows() * spec.col_cols(), spec.input_len());
    let [x, dcols, mask] = conv2d_inputs(inp, spec);
    let mut h = Harness::new(be);
    let xb = h.input_f32("x", &x)?;
    let db = h.input_f32("dcols", &dcols)?;
    let mb = h.input_f32("mask", &mask)?;
    let cb = h.output("cols", ncols, NAN)?;
    let dxb = h.output("dx", n_in, NAN)?;
    let dxmb = h.output("dx masked", n_in, NAN)?;
    h.run(
        &[
            Op::Im2col {
                spec: *spec,
                x: xb,
                cols: cb,
            },
            Op::Col2im {
                spec: *spec,
                dcols: db,
                mask: None,
                dx: dxb,
            },
            Op::Col2im {
                spec: *spec,
                dcols: db,
                mask: Some(mb),
                dx: dxmb,
            },
        ],
        1,
    )?;
    let cols = h.read_f32(cb, ncols).await?;
    let dx = h.read_f32(dxb, n_in).await?;
    let dxm = h.read_f32(dxmb, n_in).await?;
    let shape = conv2d_shape(spec, label);
    let mut out = conv2d_compare(spec, [&x, &dcols, &mask], [&cols, &dx, &dxm], shape.clone());
    out.push(h.untouched("im2col/col2im", &shape).await?);
    Ok(out)
}

/// A whole convolution layer as training runs it, in one program: im2col,
/// y = ReLU(cols·Wᵀ + b), dW = dYᵀ·cols, dcols = dY·W, dx = col2im(dcols) masked — the ops a backend may fuse
/// (the CPU engine's direct and per-image kernels, `backend/cpu.rs`), so the cols buffers are
/// never read back. Each output within γ_n·(the same computation on absolute values), n its
/// terms in any order: C·K² + 1 for y (the bias), B·OH·OW for dW, O plus col2im's terms for
/// dx. With `inf`, one input element of each image (row 0, last column: a column the direct
/// kernels' vector lanes past OW read) is +∞ and dY is non-negative, so the oracle holds
/// infinities but no NaN: a kernel multiplying a zero by that element where the product has
/// no term shows a NaN.
pub async fn check_conv2d_layer_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    spec: &Conv2dSpec,
    inf: bool,
    label: &str,
) -> Result<Vec<Check>> {
    use super::{f64s, gamma};
    let (rows, width, o) = (spec.col_rows(), spec.col_cols(), spec.c_out);
    let n_in = spec.input_len();
    let [mut x, _, mask] = conv2d_inputs(inp, spec);
    if inf {
        let image = spec.h * spec.w * spec.c_in;
        for b in 0..spec.batch {
            x[b * image + (spec.w - 1) * spec.c_in] = f32::INFINITY;
        }
    }
    let w = inp.uniform(o * width, -1.0, 1.0);
    let bias = inp.uniform(o, -1.0, 1.0);
    let dy = inp.uniform(rows * o, if inf { 1e-3 } else { -1.0 }, 1.0);
    let mut h = Harness::new(be);
    let [xb, wb, bb, dyb, mb] = [
        ("x", &x),
        ("w", &w),
        ("bias", &bias),
        ("dy", &dy),
        ("mask", &mask),
    ]
    .map(|(l, v)| h.input_f32(l, v));
    let (xb, wb, bb, dyb, mb) = (xb?, wb?, bb?, dyb?, mb?);
    let cols = h.scratch("cols", rows * width)?;
    let dcols = h.scratch("dcols", rows * width)?;
    let yb = h.output("y", rows * o, NAN)?;
    let dwb = h.output("dw", o * width, NAN)?;
    let dxb = h.output("dx", n_in, NAN)?;
    let forward = MatmulSpec {
        trans_b: true,
        epilogue: Epilogue::BiasRelu,
        ..MatmulSpec::new(rows, o, width)
    };
    let weight_grad = MatmulSpec {
        trans_a: true,
        ..MatmulSpec::new(o, width, rows)
    };
    h.run(
        &[
            Op::Im2col {
                spec: *spec,
                x: xb,
                cols,
            },
            Op::Matmul {
                spec: forward,
                a: cols,
                b: wb,
                aux: Some(bb),
                c: yb,
            },
            Op::Matmul {
                spec: weight_grad,
                a: dyb,
                b: cols,
                aux: None,
                c: dwb,
            },
            Op::Matmul {
                spec: MatmulSpec::new(rows, width, o),
                a: dyb,
                b: wb,
                aux: None,
                c: dcols,
            },
            Op::Col2im {
                spec: *spec,
                dcols,
                mask: Some(mb),
                dx: dxb,
            },
        ],
        1,
    )?;
    let got_y = h.read_f32(yb, rows * o).await?;
    let got_dw = h.read_f32(dwb, o * width).await?;
    let got_dx = h.read_f32(dxb, n_in).await?;
    // The oracle in f64, and the same computation on absolute values for the bounds (0·∞
    // taken as 0 there: the padding's zeros are exact).
    let c64 = crate::cpu::conv2d::im2col(&f64s(&x), spec);
    let w64 = Array2::from_shape_vec((o, width), f64s(&w)).expect("shape");
    let dy64 = Array2::from_shape_vec((rows, o), f64s(&dy)).expect("shape");
    let b64 = ndarray::Array1::from(f64s(&bias));
    let y_pre = c64.dot(&w64.t()) + &b64;
    let y = y_pre.mapv(|v| if v > 0.0 { v } else { 0.0 });
    let abs = |a: &Array2<f64>| a.mapv(|v| if v.is_finite() { v.abs() } else { 0.0 });
    let y_abs = abs(&c64).dot(&abs(&w64).t()) + &b64.mapv(f64::abs);
    let dw = dy64.t().dot(&c64);
    let dw_abs = abs(&dy64).t().dot(&abs(&c64));
    let dcols64 = dy64.dot(&w64);
    let m64 = f64s(&mask);
    let dx = crate::cpu::conv2d::col2im(dcols64.view(), spec, Some(&m64));
    let dx_abs = crate::cpu::conv2d::col2im(abs(&dy64).dot(&abs(&w64)).view(), spec, None);
    let shape = format!("{} o{o}", conv2d_shape(spec, label));
    let (gy, gw) = (gamma(width + 1), gamma(rows));
    let gx = gamma(o + crate::gpu::kernels::col2im_terms(spec));
    let std = |a: &Array2<f64>| a.iter().copied().collect::<Vec<f64>>();
    let (y, y_abs, dw, dw_abs) = (std(&y), std(&y_abs), std(&dw), std(&dw_abs));
    let mut out = vec![
        super::compare("conv layer y", shape.clone(), &got_y, &y, |i| {
            (gy * y_abs[i], 0.0)
        }),
        super::compare("conv layer dW", shape.clone(), &got_dw, &dw, |i| {
            (gw * dw_abs[i], 0.0)
        }),
        super::compare("conv layer dx", shape.clone(), &got_dx, &dx, |i| {
            (gx * dx_abs[i], 0.0)
        }),
    ];
    if inf {
        for c in &mut out {
            c.kernel.push_str(" (∞ input)");
        }
    }
    out.push(h.untouched("conv layer", &shape).await?);
    Ok(out)
}

/// Layer geometries for [`check_conv2d_layer_op`]: every im2col shape with 1–17 output
/// channels (one, several and a partial group of the CPU engine's 8), and one-channel stride-1
/// layers (its direct kernels) whose OW is 1, 15, 16, 17, 31 and 33 (vector edges of 8 and 16
/// lanes) with kernels 1–7 and padding 0–3.
pub fn conv2d_layer_shapes() -> Vec<Conv2dSpec> {
    let outs = [1, 6, 8, 9, 17];
    let mut v: Vec<Conv2dSpec> = conv2d_shapes()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Conv2dSpec {
            c_out: outs[i % outs.len()],
            ..s
        })
        .collect();
    // (batch, H, W, K, pad, O): OW = W + 2·pad − K + 1.
    for (batch, h, w, k, pad, c_out) in [
        (2, 5, 5, 5, 0, 3),
        (1, 7, 15, 1, 0, 9),
        (2, 6, 20, 5, 0, 6),
        (1, 9, 13, 3, 2, 16),
        (3, 4, 27, 7, 3, 1),
        (2, 11, 31, 3, 1, 17),
        (1, 3, 33, 3, 1, 8),
        (2, 28, 28, 5, 2, 6),
    ] {
        v.push(Conv2dSpec {
            batch,
            c_in: 1,
            h,
            w,
            c_out,
            k,
            stride: 1,
            pad,
        });
    }
    v
}

/// Max-pooling forward, then backward on the backend's idx without and with a mask.
pub async fn check_maxpool_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    spec: &Pool2dSpec,
    input: PoolInput,
    label: &str,
) -> Result<Vec<Check>> {
    let (n_in, n_out) = (spec.input_len(), spec.output_len());
    let [x, dy, mask] = maxpool_inputs(inp, spec, input);
    let mut h = Harness::new(be);
    let xb = h.input_f32("x", &x)?;
    let dyb = h.input_f32("dy", &dy)?;
    let mb = h.input_f32("mask", &mask)?;
    let yb = h.output("y", n_out, NAN)?;
    let ib = h.output("idx", n_out, u32::MAX)?;
    let dxb = h.output("dx", n_in, NAN)?;
    let dxmb = h.output("dx masked", n_in, NAN)?;
    h.run(
        &[
            Op::MaxPoolForward {
                spec: *spec,
                x: xb,
                y: yb,
                idx: ib,
            },
            Op::MaxPoolBackward {
                spec: *spec,
                dy: dyb,
                idx: ib,
                mask: None,
                dx: dxb,
            },
            Op::MaxPoolBackward {
                spec: *spec,
                dy: dyb,
                idx: ib,
                mask: Some(mb),
                dx: dxmb,
            },
        ],
        1,
    )?;
    let y = h.read_f32(yb, n_out).await?;
    let idx = h.read(ib, n_out).await?;
    let dx = h.read_f32(dxb, n_in).await?;
    let dxm = h.read_f32(dxmb, n_in).await?;
    let shape = maxpool_shape(spec, input, label);
    let mut out = maxpool_compare(spec, [&x, &dy, &mask], &y, &idx, [&dx, &dxm], shape.clone());
    out.push(h.untouched("maxpool", &shape).await?);
    Ok(out)
}

/// As the training step runs Adam: a weight tensor of `case.n` and a bias tensor (λ = 0) of a
/// few elements share the schedule and the step counter, which an Advance then moves from
/// t − 1 to t.
pub async fn check_adam_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    case: &AdamCase,
) -> Result<Vec<Check>> {
    let bias_case = AdamCase {
        n: case.n % 97 + 1,
        hp: AdamParams { l2: 0.0, ..case.hp },
        ..*case
    };
    let [w, g, m, v] = adam_inputs(inp, case.n);
    let [bw, bg, bm, bv] = adam_inputs(inp, bias_case.n);
    let mut h = Harness::new(be);
    let sched = h.input_exact("sched", bits(&adam_schedule_table(case.hp)))?;
    let step = h.inout("step", &[(case.t - 1) as u32])?;
    let tensor = |h: &mut Harness<'_>, c: &AdamCase, [w, g, m, v]: [&[f32]; 4]| -> Result<_> {
        let bufs = [
            h.inout_f32("w", w)?,
            h.input_f32("g", g)?,
            h.inout_f32("m", m)?,
            h.inout_f32("v", v)?,
        ];
        let op = Op::Adam {
            n: c.n,
            hp: c.hp,
            w: bufs[0],
            g: bufs[1],
            m: bufs[2],
            v: bufs[3],
            sched,
            step,
        };
        Ok((bufs, op))
    };
    let (wb, wop) = tensor(&mut h, case, [&w, &g, &m, &v])?;
    let (bb, bop) = tensor(&mut h, &bias_case, [&bw, &bg, &bm, &bv])?;
    h.run(
        &[
            wop,
            bop,
            Op::Advance {
                cursor: step,
                by: 1,
            },
        ],
        1,
    )?;
    let mut out = Vec::new();
    for (c, bufs, [w, g, m, v]) in [
        (case, wb, [&w, &g, &m, &v]),
        (&bias_case, bb, [&bw, &bg, &bm, &bv]),
    ] {
        let got = [
            h.read_f32(bufs[0], c.n).await?,
            h.read_f32(bufs[2], c.n).await?,
            h.read_f32(bufs[3], c.n).await?,
        ];
        out.extend(adam_compare(
            c,
            [w, g, m, v],
            [&got[0], &got[1], &got[2]],
            &adam_shape(c),
        ));
    }
    let shape = adam_shape(case);
    let step_after = h.read(step, 1).await?;
    out.push(compare_u32(
        "adam step after advance",
        shape.clone(),
        &step_after,
        &[case.t as u32],
    ));
    out.push(h.untouched("adam_update", &shape).await?);
    Ok(out)
}

/// The presets' weighted layers at batch 100 as products: (label, rows, outputs O, inputs I
/// per row), rows = B·OH·OW for a convolution (its im2col rows) and B for a dense layer.
pub const PRESET_LAYERS: [(&str, usize, usize, usize); 9] = [
    ("lenet5 conv1", 78_400, 6, 25),
    ("lenet5 conv2", 10_000, 16, 150),
    ("lenet5 fc1", 100, 120, 400),
    ("lenet5 fc2", 100, 84, 120),
    ("lenet5 fc3", 100, 10, 84),
    ("cnn conv1", 78_400, 32, 25),
    ("cnn conv2", 19_600, 64, 800),
    ("cnn fc1", 100, 1024, 3136),
    ("cnn fc2", 100, 10, 1024),
];

/// Run every check of op family `family` (see [`OP_FAMILIES`]) on `backend` with inputs from
/// `seed`; `presets` adds the presets' full-size layers (slow on a debug build). Blocks for
/// the device; a web page uses [`run_backend_family_async`].
pub fn run_backend_family(
    backend: &mut dyn Backend,
    family: &str,
    seed: u64,
    presets: bool,
) -> Result<Vec<Check>> {
    crate::util::wait_for(
        "kernel checks",
        run_backend_family_async(backend, family, seed, presets),
    )
}

/// [`run_backend_family`] without blocking: every read-back waits for the device
/// asynchronously (the checks on the browser's thread).
pub async fn run_backend_family_async(
    backend: &mut dyn Backend,
    family: &str,
    seed: u64,
    presets: bool,
) -> Result<Vec<Check>> {
    let mut inp = Inputs::new(seed);
    let inp = &mut inp;
    let be = backend;
    let mut out = Vec::new();
    match family {
        "matmul" => {
            // Every shape in every transpose combination, the epilogue turning with both so
            // that each (transposes, epilogue) pair meets several shapes.
            let trans = [(false, false), (false, true), (true, false), (true, true)];
            for (i, &(m, n, k)) in MATMUL_SHAPES.iter().enumerate() {
                for (j, &(ta, tb)) in trans.iter().enumerate() {
                    let spec = MatmulSpec {
                        trans_a: ta,
                        trans_b: tb,
                        epilogue: Epilogue::ALL[(i + j) % 4],
                        ..MatmulSpec::new(m, n, k)
                    };
                    out.extend(check_matmul_op(be, inp, &spec).await?);
                }
            }
            // Accumulation, with every epilogue and transpose, on a few awkward shapes.
            for (i, &(m, n, k)) in [(1, 1, 1), (7, 13, 257), (65, 63, 17), (100, 512, 784)]
                .iter()
                .enumerate()
            {
                for (j, epi) in Epilogue::ALL.into_iter().enumerate() {
                    let (ta, tb) = trans[(i + j) % 4];
                    let spec = MatmulSpec {
                        trans_a: ta,
                        trans_b: tb,
                        epilogue: epi,
                        accumulate: true,
                        ..MatmulSpec::new(m, n, k)
                    };
                    out.extend(check_matmul_op(be, inp, &spec).await?);
                }
            }
            // Every combination training, evaluation or bench launches on every shape but
            // the 1000³ one (coverage::launched_combos, read from the programs).
            for c in super::coverage::launched_combos()? {
                for &shape in MATMUL_SHAPES.iter().filter(|s| s.0 * s.1 * s.2 < 1 << 28) {
                    let spec = super::coverage::spec_of(c, shape);
                    out.extend(check_matmul_op(be, inp, &spec).await?);
                }
            }
            if presets {
                for (label, spec) in super::coverage::all_preset_products()? {
                    for mut c in check_matmul_op(be, inp, &spec).await? {
                        c.shape = label.clone();
                        out.push(c);
                    }
                }
            }
        }
        "bias" => {
            for &(r, c) in ROW_SHAPES {
                out.extend(check_bias_op(be, inp, r, c, "").await?);
            }
            if presets {
                for (label, rows, o, _) in PRESET_LAYERS {
                    out.extend(check_bias_op(be, inp, rows, o, &format!("{label} ")).await?);
                }
            }
        }
        "softmax_xent" => {
            for &(r, c) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000) {
                let logits = softmax_logits(inp, r, c);
                out.extend(check_softmax_op(be, inp, &logits, format!("{r}x{c}")).await?);
            }
            let extreme = softmax_extreme_logits();
            let mut checks = check_softmax_op(be, inp, &extreme, "extremes 6x3".into()).await?;
            fail_nonfinite(&mut checks);
            out.extend(checks);
        }
        "sgd" => {
            for (i, &(r, c)) in ROW_SHAPES.iter().enumerate() {
                out.extend(check_sgd_op(be, inp, r * c, SGD_PARAMS[i % SGD_PARAMS.len()]).await?);
            }
        }
        "metrics" => {
            for &(r, c) in ROW_SHAPES.iter().filter(|s| s.1 <= 1000) {
                out.extend(check_metrics_op(be, inp, r, c).await?);
            }
        }
        "gather" => {
            for &(samples, pixels, rows) in super::GATHER_SHAPES {
                for cursor in [Cursor::NearEnd, Cursor::StartTwice, Cursor::AtEnd] {
                    out.extend(check_gather_op(be, inp, samples, pixels, rows, cursor).await?);
                }
            }
        }
        "conv2d" => {
            for spec in conv2d_shapes() {
                out.extend(check_conv2d_op(be, inp, &spec, "").await?);
            }
            for (i, spec) in conv2d_layer_shapes().iter().enumerate() {
                out.extend(check_conv2d_layer_op(be, inp, spec, false, "").await?);
                if spec.w >= spec.k.max(2) && i % 2 == 0 {
                    out.extend(check_conv2d_layer_op(be, inp, spec, true, "").await?);
                }
            }
            if presets {
                for (label, spec) in conv2d_preset_shapes() {
                    out.extend(check_conv2d_op(be, inp, &spec, &format!("{label} ")).await?);
                }
                for (label, c_out) in [("lenet5 conv1", 6), ("cnn conv1", 32)] {
                    let spec = Conv2dSpec {
                        c_out,
                        ..conv2d_preset_shapes()[0].1
                    };
                    let label = format!("{label} ");
                    out.extend(check_conv2d_layer_op(be, inp, &spec, false, &label).await?);
                }
            }
        }
        "maxpool" => {
            let inputs = [PoolInput::Uniform, PoolInput::Quantised, PoolInput::Relu];
            for (i, spec) in maxpool_shapes().iter().enumerate() {
                out.extend(check_maxpool_op(be, inp, spec, inputs[i % 3], "").await?);
                if i % 4 == 1 {
                    out.extend(check_maxpool_op(be, inp, spec, PoolInput::Nan, "").await?);
                }
            }
            if presets {
                for (label, spec) in maxpool_preset_shapes() {
                    for input in [PoolInput::Quantised, PoolInput::Relu] {
                        let label = format!("{label} ");
                        out.extend(check_maxpool_op(be, inp, &spec, input, &label).await?);
                    }
                }
            }
        }
        "adam" => {
            for case in adam_cases()
                .iter()
                .filter(|c| presets || c.n <= ADAM_TEST_MAX)
            {
                out.extend(check_adam_op(be, inp, case).await?);
            }
        }
        other => {
            return Err(crate::Error::InvalidSetting {
                setting: crate::error::Setting::Kernel,
                reason: format!("unknown op family {other:?}; expected one of {OP_FAMILIES:?}"),
            })
        }
    }
    Ok(out)
}
