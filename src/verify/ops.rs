//! Op-level checks of any [`Backend`]: each check writes seeded random inputs into backend
//! buffers, poisons the outputs, prepares and runs a program of one op (or the few a check
//! needs: forward then backward, an op then its counter's advance), reads the outputs back and
//! compares them with the f64 oracle at the tolerances of the kernel checks (the oracle and
//! tolerance code is shared with them: [`crate::oracle`]).
//!
//! Where a GPU bound assumes the kernel's summation order (bias_backward's and the metrics'
//! partial sums), the checks use that bound on the GPU backend and the bound for any order of
//! the same terms elsewhere: γ_n·Σ|terms| for n terms. Every buffer also carries [`GUARD`] words past its end that must
//! come back unchanged, and every input must come back bit-for-bit: one "… untouched" check
//! per program reports writes outside the outputs.

use crate::backend::{Backend, EngineKind};
use crate::data::Dataset;
use crate::gpu::kernels;
use crate::ops::{
    AdamParams, AvgPool2dSpec, BatchNormSpec, BufId, Conv2dSpec, DropoutSpec, Epilogue, MatmulSpec,
    MetricsAcc, Op, Pool2dSpec,
};
use crate::oracle::{
    adam_compare, adam_inputs, adam_schedule_table, adam_shape, add_compare, add_inputs, add_shape,
    avgpool_compare, avgpool_inputs, avgpool_shape, batchnorm_compare, batchnorm_inputs,
    batchnorm_shape, bias_backward_compare, compare_u32, conv2d_compare, conv2d_inputs,
    conv2d_shape, conv_layer_compare, decay_compare, dropout_compare, dropout_inputs,
    dropout_shape, maxpool_compare, maxpool_inputs, maxpool_shape, metrics_compare, metrics_inputs,
    sgd_compare, sgd_inputs, softmax_compare, AdamCase, AddOutputs, BatchNormOutputs, Check,
    Family, GatherData, Inputs, MatmulData, MatmulReference, PoolInput, GATHER_Y_POISON,
    METRICS_START,
};
use crate::Result;
use ndarray::Array2;

/// Words after each buffer's used part that no op may write.
pub const GUARD: usize = 3;

/// What the guard words hold.
const GUARD_WORD: u32 = 0xdead_beef;

/// The bits outputs are poisoned with: an unwritten f32 stays NaN.
const NAN: u32 = 0x7fc0_0000;

/// Buffers of one check on a backend, remembering what must come back unchanged.
struct Harness<'a> {
    be: &'a mut dyn Backend,
    /// The family of the op under test (of the "… untouched" check).
    family: Family,
    /// Inputs and their full contents (guard included).
    fixed: Vec<(BufId, Vec<u32>)>,
    /// Outputs and in-place buffers with their used length (the guard follows).
    guarded: Vec<(BufId, usize)>,
}

impl<'a> Harness<'a> {
    fn new(be: &'a mut dyn Backend, family: Family) -> Self {
        Harness {
            be,
            family,
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
        // One read-back (one wait for the device) for every buffer.
        let fixed = std::mem::take(&mut self.fixed);
        let guarded = std::mem::take(&mut self.guarded);
        let mut parts: Vec<(BufId, usize)> = fixed.iter().map(|(b, v)| (*b, v.len())).collect();
        parts.extend(guarded.iter().map(|&(b, n)| (b, n + GUARD)));
        let mut all = vec![0u32; parts.iter().map(|p| p.1).sum()];
        self.be.read_into_async(&parts, &mut all).await?;
        let (mut got, mut want) = (Vec::new(), Vec::new());
        let mut at = 0;
        for (_, v) in fixed {
            got.extend_from_slice(&all[at..at + v.len()]);
            at += v.len();
            want.extend(v);
        }
        for (_, n) in guarded {
            got.extend_from_slice(&all[at + n..at + n + GUARD]);
            at += n + GUARD;
            want.extend([GUARD_WORD; GUARD]);
        }
        Ok(compare_u32(
            self.family,
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
    let d = MatmulData::new(inp, spec);
    let reference = MatmulReference::new(spec, &d);
    run_matmul_op(be, spec, &d, &reference).await
}

/// One matmul launch of `spec` on the inputs `d`, compared with their `reference` (made once
/// for several launches of the same draw: [`MatmulReference`]), and the untouched check.
pub async fn run_matmul_op(
    be: &mut dyn Backend,
    spec: &MatmulSpec,
    d: &MatmulData,
    reference: &MatmulReference,
) -> Result<Vec<Check>> {
    let (m, n) = (spec.m, spec.n);
    let mut h = Harness::new(be, Family::Matmul);
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
    let check = reference.compare(&got);
    let untouched = h.untouched("matmul", &check.shape).await?;
    Ok(vec![check, untouched])
}

/// db = column sums of dy[rows, cols], within γ_rows·Σ|dy| (any order), on the GPU backend
/// within γ of the kernel's longest chain of additions
/// ([`kernels::bias_backward_depth`]).
pub async fn check_bias_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    rows: usize,
    cols: usize,
    label: &str,
) -> Result<Vec<Check>> {
    let depth = match be.kind() {
        EngineKind::Gpu => kernels::bias_backward_depth(rows),
        EngineKind::Cpu => rows,
    };
    let dy = inp.matrix(rows, cols);
    let mut h = Harness::new(be, Family::Bias);
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
    let check = bias_backward_compare(&dy, &got, depth, shape.clone());
    Ok(vec![check, h.untouched("bias_backward", &shape).await?])
}

/// softmax_xent forward then backward (on the backend's probs) on `logits`, about one label
/// in eight padding, with label smoothing `smoothing` (0: none).
pub async fn check_softmax_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    logits: &Array2<f32>,
    smoothing: f32,
    shape: String,
) -> Result<Vec<Check>> {
    let shape = if smoothing == 0.0 {
        shape
    } else {
        format!("{shape} ε={smoothing}")
    };
    let (rows, classes) = logits.dim();
    let labels = inp.labels(rows, classes, true);
    let scale = 1.0 / rows as f32;
    let mut h = Harness::new(be, Family::SoftmaxXent);
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
                smoothing,
            },
            Op::SoftmaxXentBackward {
                rows,
                classes,
                scale,
                probs: pb,
                labels: lb,
                dlogits: db,
                smoothing,
            },
        ],
        1,
    )?;
    let p = h.read_f32(pb, rows * classes).await?;
    let loss = h.read_f32(lossb, rows).await?;
    let d = h.read_f32(db, rows * classes).await?;
    let mut out = softmax_compare(
        logits,
        &labels,
        scale,
        smoothing,
        &p,
        &loss,
        &d,
        shape.clone(),
    );
    out.push(h.untouched("softmax_xent", &shape).await?);
    Ok(out)
}

/// Where a per-update table check reads its entry: the update counter's entry, or past the
/// table's end (its last entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableAt {
    /// The counter at 2 of a 3-entry table.
    Inside,
    /// The counter at 7 of a 3-entry table (the last entry serves).
    PastEnd,
}

/// A 3-entry per-update table whose used entry (at `at`) is `value` and every other NaN, and
/// the update counter: reading any other entry poisons the result.
fn step_table(h: &mut Harness<'_>, value: f32, at: TableAt) -> Result<crate::ops::StepTable> {
    let (table, step) = match at {
        TableAt::Inside => ([f32::NAN, f32::NAN, value], 2u32),
        TableAt::PastEnd => ([f32::NAN, f32::NAN, value], 7u32),
    };
    Ok(crate::ops::StepTable {
        // Exactly its entries: the kernels take the last entry from the buffer's length.
        table: h.input_exact("table", bytemuck::cast_slice(&table))?,
        step: h.input("step", &[step])?,
    })
}

/// One SGD update of `n` parameters; with `table` its learning rate read from a per-update
/// table at that position (the fixed rate then NaN, so the wrong source poisons w).
pub async fn check_sgd_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    n: usize,
    hp: crate::ops::SgdParams,
    table: Option<TableAt>,
) -> Result<Vec<Check>> {
    let [w, g, v] = sgd_inputs(inp, n);
    let mut h = Harness::new(be, Family::Sgd);
    let wb = h.inout_f32("w", &w)?;
    let gb = h.input_f32("g", &g)?;
    let vb = h.inout_f32("v", &v)?;
    let lr_table = match table {
        Some(at) => Some(step_table(&mut h, hp.lr, at)?),
        None => None,
    };
    let op_hp = crate::ops::SgdParams {
        lr: if table.is_some() { f32::NAN } else { hp.lr },
        ..hp
    };
    h.run(
        &[Op::Sgd {
            n,
            hp: op_hp,
            w: wb,
            g: gb,
            v: vb,
            lr_table,
        }],
        1,
    )?;
    let w_got = h.read_f32(wb, n).await?;
    let v_got = h.read_f32(vb, n).await?;
    let mut shape = format!("{n} lr={} μ={} λ={}", hp.lr, hp.momentum, hp.l2);
    if hp.nesterov {
        shape += " nesterov";
    }
    if let Some(at) = table {
        shape += &format!(" lr table {at:?}");
    }
    let mut out = sgd_compare(hp, [&w, &g, &v], &w_got, &v_got, shape.clone());
    out.push(h.untouched("sgd_update", &shape).await?);
    Ok(out)
}

/// Metrics accumulation over [rows, classes] into a non-zero accumulator, the loss sum within
/// γ of `rows` terms in any order (plus the accumulator's), on the GPU backend of the
/// kernel's 256 strided partial sums and 8-level tree where that is fewer.
pub async fn check_metrics_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    rows: usize,
    classes: usize,
) -> Result<Vec<Check>> {
    let depth = match be.kind() {
        EngineKind::Gpu => rows.min(rows.div_ceil(256) + 8),
        EngineKind::Cpu => rows,
    };
    let (scores, labels, loss) = metrics_inputs(inp, rows, classes);
    let start = METRICS_START;
    let mut h = Harness::new(be, Family::Metrics);
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
    let mut out = metrics_compare(&scores, &labels, &loss, start, acc, depth, shape.clone());
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
    /// rows/2 before the end of a part of the order (as a data-parallel rank uses): the
    /// minibatch runs into padding while samples past the part stay unread.
    NearEndOfPart,
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
    check_gather_kind(
        be,
        inp,
        samples,
        pixels,
        rows,
        cursor,
        crate::ops::FeatureType::U8,
    )
    .await
}

/// [`check_gather_op`] on values stored as `kind`.
pub async fn check_gather_kind(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    samples: usize,
    pixels: usize,
    rows: usize,
    cursor: Cursor,
    kind: crate::ops::FeatureType,
) -> Result<Vec<Check>> {
    let shape = crate::data::SampleShape::Flat(pixels);
    check_gather_with(be, inp, samples, shape, rows, cursor, kind, None, false).await
}

/// [`check_gather_kind`] on images of `shape` (C×H×W, held channels last) with the training
/// augmentation `augment` at a random step and seed.
#[allow(clippy::too_many_arguments)]
pub async fn check_gather_augment(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    samples: usize,
    shape: crate::data::SampleShape,
    rows: usize,
    cursor: Cursor,
    kind: crate::ops::FeatureType,
    augment: crate::ops::Augment,
) -> Result<Vec<Check>> {
    check_gather_with(
        be,
        inp,
        samples,
        shape,
        rows,
        cursor,
        kind,
        Some(augment),
        false,
    )
    .await
}

/// [`check_gather_augment`] (or, with `augment` None, [`check_gather_kind`] on `shape`) with a
/// per-channel normalisation of random means in \[−1, 1\) and standard deviations in
/// \[0.05, 2.05\) (one pair for flat samples).
#[allow(clippy::too_many_arguments)]
pub async fn check_gather_normalize(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    samples: usize,
    shape: crate::data::SampleShape,
    rows: usize,
    cursor: Cursor,
    kind: crate::ops::FeatureType,
    augment: Option<crate::ops::Augment>,
) -> Result<Vec<Check>> {
    check_gather_with(be, inp, samples, shape, rows, cursor, kind, augment, true).await
}

#[allow(clippy::too_many_arguments)]
async fn check_gather_with(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    samples: usize,
    sample_shape: crate::data::SampleShape,
    rows: usize,
    cursor: Cursor,
    kind: crate::ops::FeatureType,
    augment: Option<crate::ops::Augment>,
    normalize: bool,
) -> Result<Vec<Check>> {
    let pixels = sample_shape.len();
    // Starting twice from 0 also runs on a part of the order, as a data-parallel rank does.
    let len = match cursor {
        Cursor::StartTwice | Cursor::NearEndOfPart => samples - samples / 3,
        Cursor::NearEnd | Cursor::AtEnd => samples,
    };
    let mut d = GatherData::of_kind(inp, samples, pixels, rows, len, kind);
    let repeat = match cursor {
        Cursor::NearEnd | Cursor::NearEndOfPart => 1,
        Cursor::StartTwice => {
            d.start = 0;
            2
        }
        Cursor::AtEnd => {
            d.start = len;
            1
        }
    };
    let set = Dataset::with_kind(sample_shape, kind, d.images.clone(), d.labels.clone())?;
    let mut h = Harness::new(be, Family::Gather);
    let data = h.dataset(&set)?;
    let ob = h.input_exact("order", &d.order)?;
    let cb = h.inout("cursor", &[d.start as u32])?;
    let xb = h.output("x", rows * pixels, NAN)?;
    let yb = h.output("y", rows, GATHER_Y_POISON)?;
    let augment = match (augment, sample_shape) {
        (Some(a), crate::data::SampleShape::Image { c, h: ih, w }) => {
            let step = inp.next_u64() as u32;
            let ga = crate::ops::GatherAugment {
                augment: a,
                h: ih,
                w,
                c,
                seed: inp.next_u64() as u32,
                step: h.input_exact("step", &[step])?,
            };
            d.augment = Some((ga, step));
            Some(ga)
        }
        _ => None,
    };
    let normalize = if normalize {
        let channels = match sample_shape {
            crate::data::SampleShape::Image { c, .. } => c,
            crate::data::SampleShape::Flat(_) => 1,
        };
        let unit = |inp: &mut Inputs| (inp.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        let n = crate::ops::Normalize::Values {
            mean: (0..channels).map(|_| 2.0 * unit(inp) - 1.0).collect(),
            std: (0..channels).map(|_| 0.05 + 2.0 * unit(inp)).collect(),
        };
        let table = n.table(channels).expect("valid values").expect("on");
        d.normalize = Some(table.clone());
        Some(crate::ops::GatherNormalize {
            channels,
            table: h.input_f32("normalisation", &table)?,
        })
    } else {
        None
    };
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
                augment,
                normalize,
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
    let shape = match kind {
        crate::ops::FeatureType::U8 => shape,
        crate::ops::FeatureType::F32 => format!("{shape}, f32 values"),
    };
    let shape = match &d.augment {
        Some((a, step)) => format!(
            "{shape}, {} images augmented {} at step {step}",
            sample_shape, a.augment
        ),
        None => shape,
    };
    let shape = match &d.normalize {
        Some(t) => format!("{shape}, normalised by {t:?}"),
        None => shape,
    };
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
    let mut h = Harness::new(be, Family::Conv2d);
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
/// y = ReLU(cols·Wᵀ + b), dW = dYᵀ·cols, db = Σ rows of dY, dcols = dY·W, dx = col2im(dcols)
/// masked — the ops a backend may fuse
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
    let (rows, width, o) = (spec.col_rows(), spec.col_cols(), spec.c_out);
    let n_in = spec.input_len();
    let depth = match be.kind() {
        EngineKind::Gpu => kernels::bias_backward_depth(rows),
        EngineKind::Cpu => rows,
    };
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
    let mut h = Harness::new(be, Family::Conv2d);
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
    let dbb = h.output("db", o, NAN)?;
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
            Op::BiasBackward {
                rows,
                cols: o,
                dy: dyb,
                db: dbb,
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
    let got_db = h.read_f32(dbb, o).await?;
    let shape = format!("{} o{o}", conv2d_shape(spec, label));
    let dy2 = ndarray::Array2::from_shape_vec((rows, o), dy.clone()).expect("shape");
    let mut out = conv_layer_compare(
        spec,
        [&x, &w, &bias, &dy, &mask],
        [&got_y, &got_dw, &got_dx],
        inf,
        shape.clone(),
    );
    let mut db_check = bias_backward_compare(&dy2, &got_db, depth, shape.clone());
    db_check.family = Family::Conv2d;
    db_check.kernel = "conv layer db".into();
    out.push(db_check);
    out.push(h.untouched("conv layer", &shape).await?);
    Ok(out)
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
    let mut h = Harness::new(be, Family::Maxpool);
    let xb = h.input_f32("x", &x)?;
    let dyb = h.input_f32("dy", &dy)?;
    let mb = h.input_f32("mask", &mask)?;
    let yb = h.output("y", n_out, NAN)?;
    let ib = h.output("idx", n_out, u32::MAX)?;
    let dxb = h.output("dx", n_in, NAN)?;
    let dxmb = h.output("dx masked", n_in, NAN)?;
    let dxxb = h.output("dx masked by x", n_in, NAN)?;
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
            // Masked by its own input, as after a ReLU (the CPU engine then reads y instead).
            Op::MaxPoolBackward {
                spec: *spec,
                dy: dyb,
                idx: ib,
                mask: Some(xb),
                dx: dxxb,
            },
        ],
        1,
    )?;
    let y = h.read_f32(yb, n_out).await?;
    let idx = h.read(ib, n_out).await?;
    let dx = h.read_f32(dxb, n_in).await?;
    let dxm = h.read_f32(dxmb, n_in).await?;
    let dxx = h.read_f32(dxxb, n_in).await?;
    let shape = maxpool_shape(spec, input, label);
    let mut out = maxpool_compare(spec, [&x, &dy, &mask], &y, &idx, [&dx, &dxm], shape.clone());
    let f64s = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let (_, want_idx) = crate::cpu::maxpool::maxpool_forward(&f64s(&x), spec);
    let want = crate::cpu::maxpool::maxpool_backward(&f64s(&dy), &want_idx, spec, Some(&f64s(&x)));
    out.push(crate::oracle::compare_exact(
        Family::Maxpool,
        "maxpool_backward masked by x",
        shape.clone(),
        &dxx,
        &want,
    ));
    out.push(h.untouched("maxpool", &shape).await?);
    Ok(out)
}

/// Average-pooling forward, then backward without and with a mask.
pub async fn check_avgpool_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    spec: &AvgPool2dSpec,
    input: PoolInput,
    label: &str,
) -> Result<Vec<Check>> {
    let (n_in, n_out) = (spec.input_len(), spec.output_len());
    let [x, dy, mask] = avgpool_inputs(inp, spec, input);
    let mut h = Harness::new(be, Family::Avgpool);
    let xb = h.input_f32("x", &x)?;
    let dyb = h.input_f32("dy", &dy)?;
    let mb = h.input_f32("mask", &mask)?;
    let yb = h.output("y", n_out, NAN)?;
    let dxb = h.output("dx", n_in, NAN)?;
    let dxmb = h.output("dx masked", n_in, NAN)?;
    h.run(
        &[
            Op::AvgPoolForward {
                spec: *spec,
                x: xb,
                y: yb,
            },
            Op::AvgPoolBackward {
                spec: *spec,
                dy: dyb,
                mask: None,
                dx: dxb,
            },
            Op::AvgPoolBackward {
                spec: *spec,
                dy: dyb,
                mask: Some(mb),
                dx: dxmb,
            },
        ],
        1,
    )?;
    let y = h.read_f32(yb, n_out).await?;
    let dx = h.read_f32(dxb, n_in).await?;
    let dxm = h.read_f32(dxmb, n_in).await?;
    let shape = avgpool_shape(spec, input, label);
    let mut out = avgpool_compare(spec, [&x, &dy, &mask], &y, [&dx, &dxm], shape.clone());
    out.push(h.untouched("avgpool", &shape).await?);
    Ok(out)
}

/// Batch normalisation's five ops in one program, each on its own inputs: training stats
/// (updating running statistics in place), evaluation stats, apply, backward, input gradient
/// without and with a mask.
pub async fn check_batchnorm_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    spec: &BatchNormSpec,
) -> Result<Vec<Check>> {
    let (n, c, sl) = (spec.len(), spec.c, spec.stats_len());
    let d = batchnorm_inputs(inp, spec);
    let mut h = Harness::new(be, Family::Batchnorm);
    let xb = h.input_f32("x", &d.x)?;
    let lb = h.input("labels", &d.labels)?;
    let rb = h.inout_f32("running", &d.running)?;
    let rin = h.input_f32("running in", &d.running)?;
    let wb = h.input_f32("w", &d.w)?;
    let bb = h.input_f32("b", &d.b)?;
    let dyb = h.input_f32("dy", &d.dy)?;
    let mb = h.input_f32("mask", &d.mask)?;
    let sb = h.input_f32("stats", &d.stats)?;
    let cb = h.input_f32("coef", &d.coef)?;
    let stats_out = h.output("stats out", sl, NAN)?;
    let eval_out = h.output("eval stats", sl, NAN)?;
    let yb = h.output("y", n, NAN)?;
    let dwb = h.output("dw", c, NAN)?;
    let dbb = h.output("db", c, NAN)?;
    let coef_out = h.output("coef out", spec.coef_len(), NAN)?;
    let dxb = h.output("dx", n, NAN)?;
    let dxmb = h.output("dx masked", n, NAN)?;
    let spec = *spec;
    h.run(
        &[
            Op::BatchNormStats {
                spec,
                x: xb,
                labels: lb,
                running: rb,
                stats: stats_out,
            },
            Op::BatchNormEvalStats {
                spec,
                running: rin,
                stats: eval_out,
            },
            Op::BatchNormApply {
                spec,
                x: xb,
                stats: sb,
                w: wb,
                b: bb,
                y: yb,
            },
            Op::BatchNormBackward {
                spec,
                x: xb,
                labels: lb,
                stats: sb,
                w: wb,
                dy: dyb,
                dw: dwb,
                db: dbb,
                coef: coef_out,
            },
            Op::BatchNormInputGrad {
                spec,
                x: xb,
                labels: lb,
                stats: sb,
                coef: cb,
                dy: dyb,
                mask: None,
                dx: dxb,
            },
            Op::BatchNormInputGrad {
                spec,
                x: xb,
                labels: lb,
                stats: sb,
                coef: cb,
                dy: dyb,
                mask: Some(mb),
                dx: dxmb,
            },
        ],
        1,
    )?;
    let got = BatchNormOutputs {
        stats: h.read_f32(stats_out, sl).await?,
        running: h.read_f32(rb, sl).await?,
        eval_stats: h.read_f32(eval_out, sl).await?,
        y: h.read_f32(yb, n).await?,
        dw: h.read_f32(dwb, c).await?,
        db: h.read_f32(dbb, c).await?,
        coef: h.read_f32(coef_out, spec.coef_len()).await?,
        dx: h.read_f32(dxb, n).await?,
        dxm: h.read_f32(dxmb, n).await?,
    };
    let shape = batchnorm_shape(&spec, "");
    let mut out = batchnorm_compare(&spec, &d, &got, shape.clone());
    out.push(h.untouched("batchnorm", &shape).await?);
    Ok(out)
}

/// Dropout forward, then backward without and with a mask, at a random training step.
pub async fn check_dropout_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    spec: &DropoutSpec,
) -> Result<Vec<Check>> {
    let n = spec.len();
    let ([x, dy, mask], step) = dropout_inputs(inp, spec);
    let mut h = Harness::new(be, Family::Dropout);
    let sb = h.input("step", &[step])?;
    let xb = h.input_f32("x", &x)?;
    let dyb = h.input_f32("dy", &dy)?;
    let mb = h.input_f32("mask", &mask)?;
    let yb = h.output("y", n, NAN)?;
    let dxb = h.output("dx", n, NAN)?;
    let dxmb = h.output("dx masked", n, NAN)?;
    h.run(
        &[
            Op::DropoutForward {
                spec: *spec,
                step: sb,
                x: xb,
                y: yb,
            },
            Op::DropoutBackward {
                spec: *spec,
                step: sb,
                dy: dyb,
                mask: None,
                dx: dxb,
            },
            Op::DropoutBackward {
                spec: *spec,
                step: sb,
                dy: dyb,
                mask: Some(mb),
                dx: dxmb,
            },
        ],
        1,
    )?;
    let y = h.read_f32(yb, n).await?;
    let dx = h.read_f32(dxb, n).await?;
    let dxm = h.read_f32(dxmb, n).await?;
    let shape = dropout_shape(spec, step, "");
    let mut out = dropout_compare(spec, step, [&x, &dy, &mask], &y, [&dx, &dxm], shape.clone());
    out.push(h.untouched("dropout", &shape).await?);
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
    let mut h = Harness::new(be, Family::Adam);
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
        Family::Adam,
        "adam step after advance",
        shape.clone(),
        &step_after,
        &[case.t as u32],
    ));
    out.push(h.untouched("adam_update", &shape).await?);
    Ok(out)
}

/// The residual join: add forward without and with the ReLU, then its gradient passed down
/// without a mask, with one, and accumulated onto a gradient already in place.
pub async fn check_add_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    len: usize,
) -> Result<Vec<Check>> {
    let d = add_inputs(inp, len);
    let mut h = Harness::new(be, Family::Add);
    let ab = h.input_f32("a", &d.a)?;
    let bb = h.input_f32("b", &d.b)?;
    let dyb = h.input_f32("dy", &d.dy)?;
    let mb = h.input_f32("mask", &d.mask)?;
    let yb = h.output("y", len, NAN)?;
    let yrb = h.output("y relu", len, NAN)?;
    let dxb = h.output("dx", len, NAN)?;
    let dxmb = h.output("dx masked", len, NAN)?;
    let accb = h.inout_f32("dx accumulated", &d.acc)?;
    let back = |mask, dx, accumulate| Op::AddBackward {
        len,
        accumulate,
        dy: dyb,
        mask,
        dx,
    };
    h.run(
        &[
            Op::AddForward {
                len,
                relu: false,
                a: ab,
                b: bb,
                y: yb,
            },
            Op::AddForward {
                len,
                relu: true,
                a: ab,
                b: bb,
                y: yrb,
            },
            back(None, dxb, false),
            back(Some(mb), dxmb, false),
            back(Some(mb), accb, true),
        ],
        1,
    )?;
    let got = AddOutputs {
        y: h.read_f32(yb, len).await?,
        y_relu: h.read_f32(yrb, len).await?,
        dx: h.read_f32(dxb, len).await?,
        dx_masked: h.read_f32(dxmb, len).await?,
        dx_acc: h.read_f32(accb, len).await?,
    };
    let shape = add_shape(len, "");
    let mut out = add_compare(&d, &got, shape.clone());
    out.push(h.untouched("add", &shape).await?);
    Ok(out)
}

/// AdamW's decoupled decay of `n` weights by a factor read from a per-update table at `at`
/// (every other entry NaN): bit for bit the f32 product.
pub async fn check_decay_op(
    be: &mut dyn Backend,
    inp: &mut Inputs,
    n: usize,
    at: TableAt,
) -> Result<Vec<Check>> {
    let w = inp.uniform(n, -1.0, 1.0);
    // 1 − α·λ of a typical run (α 1e-3, λ 1e-2), and one far from 1 whose products round.
    let f = if n.is_multiple_of(2) { 1.0 - 1e-5 } else { 0.7 };
    let mut h = Harness::new(be, Family::Adam);
    let wb = h.inout_f32("w", &w)?;
    let factors = step_table(&mut h, f, at)?;
    h.run(&[Op::Decay { n, w: wb, factors }], 1)?;
    let got = h.read_f32(wb, n).await?;
    let shape = format!("{n} f={f} table {at:?}");
    Ok(vec![
        decay_compare(&w, f, &got, shape.clone()),
        h.untouched("decay_update", &shape).await?,
    ])
}
