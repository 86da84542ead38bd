//! The CPU engine: buffers are host vectors of 32-bit words allocated once per run, and every
//! op runs its fast kernel from [`crate::fastcpu`] in place — matrix products through the
//! `gemm` crate and element-wise work, both on one rayon pool, the minibatch
//! gathered straight from the byte images. [`super::reference::ReferenceBackend`] runs the
//! same programs with the simple twins; tests compare the two.

use super::{Backend, EngineKind, ProgramId};
use crate::data::Dataset;
use crate::error::Setting;
use crate::ops::{BufId, Conv2dSpec, DataId, Epilogue, MatmulSpec, MetricsAcc, Op};
use crate::{cpu, fastcpu};
use crate::{Error, Result};
use std::collections::HashSet;
use std::sync::Arc;

/// What the engine runs for one op of a program, or for a convolution's ops fused (see
/// [`fuse`]).
#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    /// `Im2col` + the forward product on its cols: [`fastcpu::conv2d::forward`] (one
    /// channel) or [`fastcpu::conv2d_implicit::forward`] from x when `cols` is None, else
    /// [`fastcpu::conv2d::forward_tap_major`], which leaves cols in its own column order.
    ConvForward {
        spec: Conv2dSpec,
        x: BufId,
        w: BufId,
        bias: Option<BufId>,
        epilogue: Epilogue,
        cols: Option<BufId>,
        y: BufId,
    },
    /// The weight-gradient product: [`fastcpu::conv2d::weight_grad`] (one channel) or
    /// [`fastcpu::conv2d_implicit::weight_grad`] from x when `cols` is None, else
    /// [`fastcpu::conv2d::weight_grad_tap_major`] on the forward step's cols; with `db`, the
    /// layer's `BiasBackward` on the same dY as well.
    ConvWeightGrad {
        spec: Conv2dSpec,
        x: BufId,
        cols: Option<BufId>,
        dy: BufId,
        dw: BufId,
        db: Option<BufId>,
    },
    /// `MaxPoolBackward` masked by the input of the `MaxPoolForward` that wrote its idx (and
    /// `y`), both unchanged since: [`fastcpu::maxpool::Gate::Maxima`] reads y instead of the
    /// input-sized mask.
    PoolBackward {
        spec: crate::ops::Pool2dSpec,
        dy: BufId,
        idx: BufId,
        y: BufId,
        dx: BufId,
    },
    /// The product into dcols + `Col2im`: [`fastcpu::conv2d::input_grad`].
    ConvInputGrad {
        spec: Conv2dSpec,
        dy: BufId,
        w: BufId,
        mask: Option<BufId>,
        dx: BufId,
    },
}

/// The program's steps, with each convolution's im2col and col2im fused into the products
/// around them where that provably computes the same buffers, and the cols/dcols buffers the
/// fused steps no longer write (their contents are then left stale).
///
/// `Im2col{x, cols}` of a [`fastcpu::conv2d::direct`] convolution fuses when no other op writes cols, no earlier op reads it, and every
/// later reader is the convolution's forward product (cols·Wᵀ) or weight-gradient product
/// (dYᵀ·cols) with x unchanged since; those readers then take x instead. A product
/// dcols = dY·W fuses into the `Col2im` reading it when that is dcols' only reader and dY and
/// W are unchanged in between. A `BiasBackward` on the same dY right after a fused weight
/// gradient joins its step. A `MaxPoolBackward` masked by the input of the `MaxPoolForward`
/// that wrote its idx (input, y and idx unchanged since) gates by y instead
/// ([`fastcpu::maxpool::Gate::Maxima`]). Anything else runs op by op, exactly as written.
fn fuse(ops: &[Op]) -> (Vec<Step>, Vec<BufId>) {
    let writes = |op: &Op, b: BufId| op.buffers().1.contains(&b);
    let reads = |op: &Op, b: BufId| op.buffers().0.contains(&b);
    let mut steps: Vec<Option<Step>> = ops.iter().map(|op| Some(Step::Op(*op))).collect();
    let mut elided = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Im2col { spec, x, cols } => {
                let others_write = ops
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && writes(o, cols));
                if others_write || ops[..i].iter().any(|o| reads(o, cols)) {
                    continue;
                }
                let mut fused = Vec::new();
                let all = ops
                    .iter()
                    .enumerate()
                    .skip(i + 1)
                    .filter(|(_, o)| reads(o, cols));
                for (j, o) in all {
                    let x_intact = !ops[i + 1..j].iter().any(|o| writes(o, x));
                    let first = fused.is_empty();
                    match conv_product(o, &spec, x, cols) {
                        // Tap-major cols are written by the forward step: it must come first.
                        Some(Step::ConvWeightGrad { cols: Some(_), .. }) if first => {
                            break;
                        }
                        Some(step) if x_intact => fused.push((j, step)),
                        _ => {
                            fused.clear();
                            break;
                        }
                    }
                }
                if !fused.is_empty() {
                    steps[i] = None;
                    for (j, mut step) in fused {
                        // The layer's bias gradient right after its weight gradient, on the
                        // same dY: one step.
                        if let (
                            Step::ConvWeightGrad { dy, dw, db, .. },
                            Some(&Op::BiasBackward {
                                rows,
                                cols: o,
                                dy: bdy,
                                db: bdb,
                            }),
                        ) = (&mut step, ops.get(j + 1))
                        {
                            if bdy == *dy
                                && rows == spec.col_rows()
                                && o == spec.c_out
                                && bdb != *dw
                                && bdb != x
                                && bdb != cols
                            {
                                *db = Some(bdb);
                                steps[j + 1] = None;
                            }
                        }
                        steps[j] = Some(step);
                    }
                    elided.push(cols);
                }
            }
            Op::Col2im {
                spec,
                dcols,
                mask,
                dx,
            } => {
                let Some(p) = ops[..i].iter().rposition(|o| writes(o, dcols)) else {
                    continue;
                };
                let Some(Step::Op(Op::Matmul {
                    spec: mm,
                    a: dy,
                    b: w,
                    aux: None,
                    ..
                })) = steps[p]
                else {
                    continue;
                };
                let product = MatmulSpec::new(spec.col_rows(), spec.col_cols(), spec.c_out);
                let only_reader = ops
                    .iter()
                    .enumerate()
                    .all(|(j, o)| j == i || !reads(o, dcols));
                let single_writer = ops
                    .iter()
                    .enumerate()
                    .all(|(j, o)| j == p || !writes(o, dcols));
                let intact = !ops[p + 1..i].iter().any(|o| writes(o, dy) || writes(o, w));
                if mm == product && only_reader && single_writer && intact {
                    steps[p] = None;
                    steps[i] = Some(Step::ConvInputGrad {
                        spec,
                        dy,
                        w,
                        mask,
                        dx,
                    });
                    elided.push(dcols);
                }
            }
            Op::MaxPoolBackward {
                spec,
                dy,
                idx,
                mask: Some(mask),
                dx,
            } => {
                let Some(p) = ops[..i].iter().rposition(|o| writes(o, idx)) else {
                    continue;
                };
                let Op::MaxPoolForward {
                    spec: fspec,
                    x,
                    y,
                    idx: fidx,
                } = ops[p]
                else {
                    continue;
                };
                let intact = !ops[p + 1..i]
                    .iter()
                    .any(|o| writes(o, x) || writes(o, y) || writes(o, idx));
                if fspec == spec && fidx == idx && x == mask && intact && y != dx {
                    steps[i] = Some(Step::PoolBackward {
                        spec,
                        dy,
                        idx,
                        y,
                        dx,
                    });
                }
            }
            _ => {}
        }
    }
    (steps.into_iter().flatten().collect(), elided)
}

/// `op` as a fused step of the convolution `spec` whose im2col of `x` it reads as `cols`:
/// the forward product (cols·Wᵀ with a bias epilogue or none) or the weight gradient
/// (dYᵀ·cols); None for any other reader of cols.
fn conv_product(op: &Op, spec: &Conv2dSpec, x: BufId, cols: BufId) -> Option<Step> {
    let Op::Matmul {
        spec: mm,
        a,
        b,
        aux,
        c,
    } = *op
    else {
        return None;
    };
    let (rows, width, o) = (spec.col_rows(), spec.col_cols(), spec.c_out);
    if c == x {
        return None;
    }
    let forward = MatmulSpec {
        trans_b: true,
        epilogue: mm.epilogue,
        ..MatmulSpec::new(rows, o, width)
    };
    let weight_grad = MatmulSpec {
        trans_a: true,
        ..MatmulSpec::new(o, width, rows)
    };
    let kept = (!fastcpu::conv2d::direct(spec) && !fastcpu::conv2d_implicit::supports(spec))
        .then_some(cols);
    if a == cols && b != cols && mm == forward && mm.epilogue != Epilogue::ReluMask {
        Some(Step::ConvForward {
            spec: *spec,
            x,
            w: b,
            bias: aux,
            epilogue: mm.epilogue,
            cols: kept,
            y: c,
        })
    } else if b == cols && a != cols && mm == weight_grad && aux.is_none() {
        Some(Step::ConvWeightGrad {
            spec: *spec,
            x,
            cols: kept,
            dy: a,
            dw: c,
            db: None,
        })
    } else {
        None
    }
}

/// The buffers `steps` read before writing them: what the program needs from earlier ones.
fn needs(steps: &[Step]) -> HashSet<BufId> {
    let mut written = HashSet::new();
    let mut needed = HashSet::new();
    for step in steps {
        let (r, w) = step.buffers();
        needed.extend(r.into_iter().filter(|b| !written.contains(b)));
        written.extend(w);
    }
    needed
}

impl Step {
    /// (read, written) buffers, as [`Op::buffers`].
    fn buffers(&self) -> (Vec<BufId>, Vec<BufId>) {
        match *self {
            Step::Op(ref op) => op.buffers(),
            Step::ConvForward {
                x,
                w,
                bias,
                cols,
                y,
                ..
            } => (
                [x, w].into_iter().chain(bias).collect(),
                [y].into_iter().chain(cols).collect(),
            ),
            Step::ConvWeightGrad {
                x,
                cols,
                dy,
                dw,
                db,
                ..
            } => (
                [x, dy].into_iter().chain(cols).collect(),
                [dw].into_iter().chain(db).collect(),
            ),
            Step::ConvInputGrad {
                dy, w, mask, dx, ..
            } => ([dy, w].into_iter().chain(mask).collect(), vec![dx]),
            Step::PoolBackward { dy, idx, y, dx, .. } => (vec![dy, idx, y], vec![dx]),
        }
    }
}

/// Runs programs on the host with the fast CPU kernels.
pub struct CpuBackend {
    bufs: Vec<Vec<u32>>,
    data: Vec<Arc<Dataset>>,
    programs: Vec<Arc<[Step]>>,
    /// What each program reads before writing it (see [`needs`]).
    program_needs: Vec<HashSet<BufId>>,
    /// cols/dcols buffers that fused steps no longer write: no program may read them before
    /// writing them, and they cannot be read back.
    elided: HashSet<BufId>,
    pool: Arc<rayon::ThreadPool>,
    threads: usize,
    /// Space for a product that must be finished before it is added (an accumulating matmul
    /// with an epilogue); grown once.
    scratch: Vec<f32>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// The cores this process may use (1 if unknown).
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The error for reading a buffer the CPU engine never fills.
fn elided_read(buf: BufId) -> Error {
    Error::Unsupported {
        what: format!("reading buffer {}", buf.0),
        reason: "it is a convolution scratch buffer the CPU engine fuses away".into(),
    }
}

/// Refuse a thread count of 0 or above the cores available, in one line.
pub fn check_threads(threads: usize) -> Result<usize> {
    let cores = available_threads();
    if threads == 0 || threads > cores {
        return Err(Error::InvalidSetting {
            setting: Setting::Threads,
            reason: format!(
                "{threads} is not between 1 and {cores}, the cores available to this process"
            ),
        });
    }
    Ok(threads)
}

impl CpuBackend {
    /// A backend using every core available.
    pub fn new() -> Self {
        Self::with_threads(available_threads()).expect("the available cores are a valid count")
    }

    /// A backend whose products and element-wise work run on a pool of `threads` threads (see
    /// [`check_threads`]).
    pub fn with_threads(threads: usize) -> Result<Self> {
        let threads = check_threads(threads)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("wgtrain-cpu-{i}"))
            .build()
            .map_err(|e| Error::InvalidSetting {
                setting: Setting::Threads,
                reason: format!("cannot start {threads} threads: {e}"),
            })?;
        Ok(CpuBackend {
            bufs: Vec::new(),
            data: Vec::new(),
            programs: Vec::new(),
            program_needs: Vec::new(),
            elided: HashSet::new(),
            pool: Arc::new(pool),
            threads,
            scratch: Vec::new(),
        })
    }

    /// Threads of the element-wise pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn f(&self, b: BufId) -> &[f32] {
        bytemuck::cast_slice(&self.bufs[b.0])
    }

    fn u(&self, b: BufId) -> &[u32] {
        &self.bufs[b.0]
    }

    /// Run `f` with buffer `out` lent as f32 (taken out of the table, so `f` may read every
    /// other buffer; [`Op::is_alias_free`] guarantees it reads none it writes).
    fn with_out<R>(&mut self, out: BufId, f: impl FnOnce(&Self, &mut [f32]) -> R) -> R {
        let mut o = std::mem::take(&mut self.bufs[out.0]);
        let r = f(self, bytemuck::cast_slice_mut(&mut o));
        self.bufs[out.0] = o;
        r
    }

    /// [`Self::with_out`] for ops with several outputs, lent as words.
    fn with_outs<const N: usize, R>(
        &mut self,
        outs: [BufId; N],
        f: impl FnOnce(&Self, [&mut [u32]; N]) -> R,
    ) -> R {
        let mut taken = outs.map(|b| std::mem::take(&mut self.bufs[b.0]));
        let r = f(self, taken.each_mut().map(|v| v.as_mut_slice()));
        for (b, v) in outs.into_iter().zip(taken) {
            self.bufs[b.0] = v;
        }
        r
    }

    fn exec(&mut self, step: &Step) {
        let op = match *step {
            Step::Op(ref op) => op,
            Step::ConvForward {
                spec,
                x,
                w,
                bias,
                epilogue,
                cols,
                y,
            } => {
                let Some(cols) = cols else {
                    return self.with_out(y, |s, y| {
                        let (x, w, bias) = (s.f(x), s.f(w), bias.map(|b| s.f(b)));
                        if fastcpu::conv2d_implicit::forward_fits(&spec) {
                            fastcpu::conv2d_implicit::forward(x, &spec, w, bias, epilogue, y)
                        } else {
                            fastcpu::conv2d::forward(x, &spec, w, bias, epilogue, y)
                        }
                    });
                };
                let mut scratch = std::mem::take(&mut self.scratch);
                self.with_outs([y, cols], |s, [y, cols]| {
                    let (x, w, bias) = (s.f(x), s.f(w), bias.map(|b| s.f(b)));
                    let (y, cols) = (bytemuck::cast_slice_mut(y), bytemuck::cast_slice_mut(cols));
                    fastcpu::conv2d::forward_tap_major(
                        x,
                        &spec,
                        w,
                        bias,
                        epilogue,
                        cols,
                        y,
                        &mut scratch,
                    )
                });
                self.scratch = scratch;
                return;
            }
            Step::ConvWeightGrad {
                spec,
                x,
                cols,
                dy,
                dw,
                db,
            } => {
                let mut scratch = std::mem::take(&mut self.scratch);
                let implicit = cols.is_none() && fastcpu::conv2d_implicit::runs(&spec);
                let mut dbv = db.map(|b| std::mem::take(&mut self.bufs[b.0]));
                self.with_out(dw, |s, dw| {
                    let dbs = dbv
                        .as_mut()
                        .map(|v| bytemuck::cast_slice_mut(v.as_mut_slice()));
                    let (x, dy) = (s.f(x), s.f(dy));
                    match cols {
                        None if implicit => fastcpu::conv2d_implicit::weight_grad(
                            x,
                            &spec,
                            dy,
                            dw,
                            dbs,
                            &mut scratch,
                        ),
                        None => {
                            fastcpu::conv2d::weight_grad(x, &spec, dy, dw, &mut scratch);
                            if let Some(db) = dbs {
                                fastcpu::bias::bias_backward(dy, spec.col_rows(), spec.c_out, db);
                            }
                        }
                        Some(c) => {
                            fastcpu::conv2d::weight_grad_tap_major(
                                s.f(c),
                                &spec,
                                dy,
                                dw,
                                &mut scratch,
                            );
                            if let Some(db) = dbs {
                                fastcpu::bias::bias_backward(dy, spec.col_rows(), spec.c_out, db);
                            }
                        }
                    }
                });
                if let (Some(b), Some(v)) = (db, dbv) {
                    self.bufs[b.0] = v;
                }
                self.scratch = scratch;
                return;
            }
            Step::PoolBackward {
                spec,
                dy,
                idx,
                y,
                dx,
            } => {
                return self.with_out(dx, |s, dx| {
                    let gate = fastcpu::maxpool::Gate::Maxima(s.f(y));
                    fastcpu::maxpool::backward_gated(s.f(dy), s.u(idx), &spec, gate, dx)
                })
            }
            Step::ConvInputGrad {
                spec,
                dy,
                w,
                mask,
                dx,
            } => {
                return self.with_out(dx, |s, dx| {
                    let (dy, w, mask) = (s.f(dy), s.f(w), mask.map(|m| s.f(m)));
                    if fastcpu::conv2d_implicit::input_grad_fits(&spec) {
                        fastcpu::conv2d_implicit::input_grad(dy, &spec, w, mask, dx)
                    } else {
                        fastcpu::conv2d::input_grad(dy, &spec, w, mask, dx)
                    }
                })
            }
        };
        match *op {
            Op::Gather {
                data,
                rows,
                len,
                order,
                cursor,
                x,
                y,
                augment,
                normalize,
            } => {
                let d = Arc::clone(&self.data[data.0]);
                let start = self.u(cursor)[0] as usize;
                let augment = augment.map(|a| (a, self.u(a.step)[0]));
                let table = normalize.map(|n| self.f(n.table)[..2 * n.channels].to_vec());
                self.with_outs([x, y], |s, [xs, ys]| {
                    fastcpu::gather::gather(
                        &d.features,
                        d.kind,
                        &d.labels,
                        d.sample_len(),
                        &s.u(order)[..len],
                        start,
                        bytemuck::cast_slice_mut(xs),
                        &mut ys[..rows],
                        augment.as_ref().map(|(a, s)| (a, *s)),
                        table.as_deref(),
                    )
                });
            }
            Op::Advance { cursor, by } => self.bufs[cursor.0][0] += by as u32,
            Op::Matmul { spec, a, b, aux, c } => {
                let mut scratch = std::mem::take(&mut self.scratch);
                self.with_out(c, |s, c| {
                    fastcpu::matmul::matmul(
                        &spec,
                        s.f(a),
                        s.f(b),
                        aux.map(|x| s.f(x)),
                        c,
                        &mut scratch,
                    )
                });
                self.scratch = scratch;
            }
            Op::BiasBackward { rows, cols, dy, db } => self.with_out(db, |s, db| {
                fastcpu::bias::bias_backward(s.f(dy), rows, cols, db)
            }),
            Op::Im2col { spec, x, cols } => self.with_out(cols, |s, cols| {
                fastcpu::conv2d::im2col(&s.f(x)[..spec.input_len()], &spec, cols)
            }),
            Op::Col2im {
                spec,
                dcols,
                mask,
                dx,
            } => self.with_out(dx, |s, dx| {
                fastcpu::conv2d::col2im(s.f(dcols), &spec, mask.map(|m| s.f(m)), dx)
            }),
            Op::MaxPoolForward { spec, x, y, idx } => self.with_outs([y, idx], |s, [y, idx]| {
                fastcpu::maxpool::forward(s.f(x), &spec, bytemuck::cast_slice_mut(y), idx)
            }),
            Op::MaxPoolBackward {
                spec,
                dy,
                idx,
                mask,
                dx,
            } => self.with_out(dx, |s, dx| {
                fastcpu::maxpool::backward(s.f(dy), s.u(idx), &spec, mask.map(|m| s.f(m)), dx)
            }),
            Op::AvgPoolForward { spec, x, y } => {
                self.with_out(y, |s, y| fastcpu::avgpool::forward(s.f(x), &spec, y))
            }
            Op::AvgPoolBackward { spec, dy, mask, dx } => self.with_out(dx, |s, dx| {
                fastcpu::avgpool::backward(s.f(dy), &spec, mask.map(|m| s.f(m)), dx)
            }),
            Op::BatchNormStats {
                spec,
                x,
                labels,
                running,
                stats,
            } => self.with_outs([running, stats], |s, [r, st]| {
                fastcpu::batchnorm::stats(
                    s.f(x),
                    &s.u(labels)[..spec.batch],
                    &spec,
                    bytemuck::cast_slice_mut(r),
                    bytemuck::cast_slice_mut(st),
                )
            }),
            Op::BatchNormEvalStats {
                spec,
                running,
                stats,
            } => self.with_out(stats, |s, st| {
                fastcpu::batchnorm::eval_stats(s.f(running), &spec, st)
            }),
            Op::BatchNormApply {
                spec,
                x,
                stats,
                w,
                b,
                y,
            } => self.with_out(y, |s, y| {
                fastcpu::batchnorm::apply(s.f(x), s.f(stats), s.f(w), s.f(b), &spec, y)
            }),
            Op::BatchNormBackward {
                spec,
                x,
                labels,
                stats,
                w,
                dy,
                dw,
                db,
                coef,
            } => self.with_outs([dw, db, coef], |s, [dw, db, coef]| {
                fastcpu::batchnorm::backward(
                    s.f(x),
                    &s.u(labels)[..spec.batch],
                    s.f(stats),
                    s.f(w),
                    s.f(dy),
                    &spec,
                    bytemuck::cast_slice_mut(dw),
                    bytemuck::cast_slice_mut(db),
                    bytemuck::cast_slice_mut(coef),
                )
            }),
            Op::BatchNormInputGrad {
                spec,
                x,
                labels,
                stats,
                coef,
                dy,
                mask,
                dx,
            } => self.with_out(dx, |s, dx| {
                fastcpu::batchnorm::input_grad(
                    s.f(x),
                    &s.u(labels)[..spec.batch],
                    s.f(stats),
                    s.f(coef),
                    s.f(dy),
                    mask.map(|m| s.f(m)),
                    &spec,
                    dx,
                )
            }),
            Op::DropoutForward { spec, step, x, y } => {
                let t = self.u(step)[0];
                self.with_out(y, |s, y| fastcpu::dropout::forward(s.f(x), &spec, t, y))
            }
            Op::AddForward { len, relu, a, b, y } => self.with_out(y, |s, y| {
                fastcpu::add::forward(&s.f(a)[..len], &s.f(b)[..len], relu, &mut y[..len])
            }),
            Op::AddBackward {
                len,
                accumulate,
                dy,
                mask,
                dx,
            } => self.with_out(dx, |s, dx| {
                fastcpu::add::backward(
                    &s.f(dy)[..len],
                    mask.map(|m| &s.f(m)[..len]),
                    accumulate,
                    &mut dx[..len],
                )
            }),
            Op::DropoutBackward {
                spec,
                step,
                dy,
                mask,
                dx,
            } => {
                let t = self.u(step)[0];
                self.with_out(dx, |s, dx| {
                    fastcpu::dropout::backward(s.f(dy), &spec, t, mask.map(|m| s.f(m)), dx)
                })
            }
            Op::SoftmaxXentForward {
                rows,
                classes,
                logits,
                labels,
                probs,
                loss,
                smoothing,
            } => self.with_outs([probs, loss], |s, [p, l]| {
                fastcpu::softmax_xent::forward(
                    s.f(logits),
                    &s.u(labels)[..rows],
                    classes,
                    smoothing,
                    bytemuck::cast_slice_mut(p),
                    bytemuck::cast_slice_mut(l),
                )
            }),
            Op::SoftmaxXentBackward {
                rows,
                classes,
                scale,
                probs,
                labels,
                dlogits,
                smoothing,
            } => self.with_out(dlogits, |s, d| {
                fastcpu::softmax_xent::backward(
                    s.f(probs),
                    &s.u(labels)[..rows],
                    classes,
                    scale,
                    smoothing,
                    d,
                )
            }),
            Op::Metrics {
                rows,
                classes,
                probs,
                labels,
                loss,
                acc,
            } => {
                let mut a: MetricsAcc =
                    bytemuck::pod_read_unaligned(bytemuck::cast_slice(&self.u(acc)[..4]));
                fastcpu::metrics::accumulate(
                    &mut a,
                    self.f(probs),
                    &self.u(labels)[..rows],
                    self.f(loss),
                    classes,
                );
                self.bufs[acc.0][..4].copy_from_slice(bytemuck::cast_slice(&[a]));
            }
            Op::Sgd {
                n,
                hp,
                w,
                g,
                v,
                lr_table,
            } => {
                let hp = match lr_table {
                    Some(t) => crate::ops::SgdParams {
                        lr: cpu::decay::table_entry(self.f(t.table), self.u(t.step)[0]),
                        ..hp
                    },
                    None => hp,
                };
                self.with_outs([w, v], |s, [w, v]| {
                    fastcpu::sgd::sgd_update(
                        &mut bytemuck::cast_slice_mut(w)[..n],
                        s.f(g),
                        bytemuck::cast_slice_mut(v),
                        hp,
                    )
                })
            }
            Op::Adam {
                n,
                hp,
                w,
                g,
                m,
                v,
                sched,
                step,
            } => {
                let t = self.u(step)[0] as usize;
                let table = self.f(sched);
                let last = (table.len() / 2).saturating_sub(1);
                let s = [table[2 * t.min(last)], table[2 * t.min(last) + 1]];
                self.with_outs([w, m, v], |st, [w, m, v]| {
                    fastcpu::adam::adam_update(
                        &mut bytemuck::cast_slice_mut(w)[..n],
                        st.f(g),
                        bytemuck::cast_slice_mut(m),
                        bytemuck::cast_slice_mut(v),
                        hp,
                        s,
                    )
                })
            }
            Op::Decay { n, w, factors } => {
                let f = cpu::decay::table_entry(self.f(factors.table), self.u(factors.step)[0]);
                self.with_out(w, |_, w| cpu::decay::decay_update(&mut w[..n], f))
            }
        }
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        let s = if self.threads == 1 { "" } else { "s" };
        format!("cpu ({} thread{s})", self.threads)
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Cpu
    }

    fn adapter(&self) -> (String, String) {
        ("cpu".into(), self.describe())
    }

    fn alloc(&mut self, label: &str, words: usize) -> Result<BufId> {
        super::host_alloc(&mut self.bufs, label, words)
    }

    fn write(&mut self, buf: BufId, data: &[u32]) -> Result<()> {
        self.bufs[buf.0][..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, buf: BufId, words: usize) -> Result<Vec<u32>> {
        if self.elided.contains(&buf) {
            return Err(elided_read(buf));
        }
        Ok(self.bufs[buf.0][..words].to_vec())
    }

    fn read_into(&mut self, bufs: &[(BufId, usize)], out: &mut [u32]) -> Result<()> {
        let mut at = 0;
        for &(b, words) in bufs {
            if self.elided.contains(&b) {
                return Err(elided_read(b));
            }
            out[at..at + words].copy_from_slice(&self.bufs[b.0][..words]);
            at += words;
        }
        Ok(())
    }

    fn dataset(&mut self, d: &Dataset) -> Result<DataId> {
        self.data.push(Arc::new(d.clone()));
        Ok(DataId(self.data.len() - 1))
    }

    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId> {
        if let Some(op) = ops.iter().find(|op| !op.is_alias_free()) {
            return Err(Error::KernelShape {
                kernel: "program".into(),
                reason: format!("an op writes a buffer it also reads or writes twice: {op:?}"),
            });
        }
        for op in ops {
            if let Op::Gather {
                data,
                normalize: Some(norm),
                ..
            } = *op
            {
                let (pixels, words) = (
                    self.data[data.0].sample_len(),
                    self.bufs[norm.table.0].len(),
                );
                if norm.channels == 0
                    || !pixels.is_multiple_of(norm.channels)
                    || words < 2 * norm.channels
                {
                    return Err(Error::KernelShape {
                        kernel: "gather".into(),
                        reason: format!(
                            "normalising {} channels of samples of {pixels} values with a table                              of {words} entries",
                            norm.channels
                        ),
                    });
                }
            }
            if let Op::Gather {
                data, len, order, ..
            } = *op
            {
                let (n, words) = (self.data[data.0].n, self.bufs[order.0].len());
                if len > n || len > words {
                    return Err(Error::KernelShape {
                        kernel: "gather".into(),
                        reason: format!(
                            "{len} order entries in use, but the dataset has {n} samples and \
                             the order buffer {words} entries"
                        ),
                    });
                }
            }
        }
        let (steps, elided) = fuse(ops);
        let needed = needs(&steps);
        let elided: HashSet<BufId> = self.elided.iter().copied().chain(elided).collect();
        if self
            .program_needs
            .iter()
            .chain([&needed])
            .any(|n| !n.is_disjoint(&elided))
        {
            return Err(Error::Unsupported {
                what: "program".into(),
                reason: "it reads a convolution scratch buffer that the CPU engine fuses away \
                         before writing it"
                    .into(),
            });
        }
        self.elided = elided;
        self.program_needs.push(needed);
        self.programs.push(steps.into());
        Ok(ProgramId(self.programs.len() - 1))
    }

    fn run(&mut self, program: ProgramId, repeat: usize) -> Result<()> {
        let ops = Arc::clone(&self.programs[program.0]);
        let pool = Arc::clone(&self.pool);
        let profile = std::env::var_os("WGTRAIN_PROFILE").is_some();
        let mut per: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
        pool.install(|| {
            fastcpu::with_spinning_workers(|| {
                for _ in 0..repeat {
                    for op in ops.iter() {
                        if profile {
                            let t = std::time::Instant::now();
                            self.exec(op);
                            let e = per.entry(label(op)).or_default();
                            e.0 += 1;
                            e.1 += t.elapsed().as_secs_f64();
                        } else {
                            self.exec(op);
                        }
                    }
                }
            })
        });
        if profile {
            super::print_profile(per.into_iter().collect(), repeat);
        }
        Ok(())
    }
}

/// A short name for a step and its shape, for `WGTRAIN_PROFILE`.
fn label(step: &Step) -> String {
    let conv = |what: &str, s: &Conv2dSpec| {
        let (b, h, w, c, o, k) = (s.batch, s.h, s.w, s.c_in, s.c_out, s.k);
        format!("conv {what} {b}x{h}x{w}x{c} k{k} o{o}")
    };
    let op = match step {
        Step::Op(op) => op,
        Step::ConvForward { spec, .. } => return conv("forward", spec),
        Step::ConvWeightGrad { spec, .. } => return conv("weight grad", spec),
        Step::ConvInputGrad { spec, .. } => return conv("input grad", spec),
        Step::PoolBackward { .. } => return "MaxPoolBackward (gated by y)".into(),
    };
    match op {
        Op::Matmul { spec, .. } => format!(
            "matmul {}x{}x{} {}{} {:?}",
            spec.m,
            spec.n,
            spec.k,
            if spec.trans_a { "T" } else { "N" },
            if spec.trans_b { "T" } else { "N" },
            spec.epilogue
        ),
        Op::Im2col { spec, .. } | Op::Col2im { spec, .. } => format!(
            "{} {}x{}x{}x{} k{}",
            if matches!(op, Op::Im2col { .. }) {
                "im2col"
            } else {
                "col2im"
            },
            spec.batch,
            spec.h,
            spec.w,
            spec.c_in,
            spec.k
        ),
        Op::Sgd { n, .. } | Op::Adam { n, .. } => {
            format!(
                "{} n={n}",
                if matches!(op, Op::Sgd { .. }) {
                    "sgd"
                } else {
                    "adam"
                }
            )
        }
        other => format!("{other:?}")
            .split([' ', '{'])
            .next()
            .unwrap_or("op")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::MatmulSpec;

    /// A one-channel 5×5 convolution (8×8 input, padding 2, 4 output channels) and one with 3
    /// input channels, as `nn::conv2d` writes their forward and backward.
    fn conv(c_in: usize) -> Conv2dSpec {
        Conv2dSpec {
            batch: 2,
            c_in,
            h: 8,
            w: 8,
            c_out: 4,
            k: 5,
            stride: 1,
            pad: 2,
        }
    }

    /// Buffers: 0 x, 1 cols, 2 w, 3 b, 4 y, 5 dy, 6 dw, 7 dcols, 8 dx, 9 mask.
    fn layer(spec: Conv2dSpec) -> Vec<Op> {
        let (rows, width, o) = (spec.col_rows(), spec.col_cols(), spec.c_out);
        let b = BufId;
        vec![
            Op::Im2col {
                spec,
                x: b(0),
                cols: b(1),
            },
            Op::Matmul {
                spec: MatmulSpec {
                    trans_b: true,
                    epilogue: Epilogue::BiasRelu,
                    ..MatmulSpec::new(rows, o, width)
                },
                a: b(1),
                b: b(2),
                aux: Some(b(3)),
                c: b(4),
            },
            Op::Matmul {
                spec: MatmulSpec {
                    trans_a: true,
                    ..MatmulSpec::new(o, width, rows)
                },
                a: b(5),
                b: b(1),
                aux: None,
                c: b(6),
            },
            Op::Matmul {
                spec: MatmulSpec::new(rows, width, o),
                a: b(5),
                b: b(2),
                aux: None,
                c: b(7),
            },
            Op::Col2im {
                spec,
                dcols: b(7),
                mask: Some(b(9)),
                dx: b(8),
            },
        ]
    }

    fn kinds(steps: &[Step]) -> Vec<&'static str> {
        steps
            .iter()
            .map(|s| match s {
                Step::Op(Op::Im2col { .. }) => "im2col",
                Step::Op(Op::Matmul { .. }) => "matmul",
                Step::Op(Op::Col2im { .. }) => "col2im",
                Step::Op(_) => "op",
                Step::ConvForward { .. } => "conv forward",
                Step::ConvWeightGrad { .. } => "conv weight grad",
                Step::ConvInputGrad { .. } => "conv input grad",
                Step::PoolBackward { .. } => "pool backward",
            })
            .collect()
    }

    #[test]
    fn a_one_channel_stride_one_layer_fuses_into_direct_steps_and_drops_both_scratch_buffers() {
        let (steps, elided) = fuse(&layer(conv(1)));
        assert_eq!(
            kinds(&steps),
            ["conv forward", "conv weight grad", "conv input grad"]
        );
        assert_eq!(elided, [BufId(1), BufId(7)]);
    }

    #[test]
    fn a_strided_multi_channel_layer_fuses_through_a_tap_major_cols_buffer() {
        let (steps, elided) = fuse(&layer(strided(conv(3))));
        assert_eq!(
            kinds(&steps),
            ["conv forward", "conv weight grad", "conv input grad"]
        );
        assert!(matches!(
            steps[0],
            Step::ConvForward {
                cols: Some(BufId(1)),
                ..
            }
        ));
        assert_eq!(elided, [BufId(1), BufId(7)]);
    }

    #[test]
    fn a_stride_one_multi_channel_layer_runs_from_x_without_cols() {
        let spec = Conv2dSpec {
            c_out: 16,
            ..conv(3)
        };
        let (steps, elided) = fuse(&layer(spec));
        assert!(matches!(steps[0], Step::ConvForward { cols: None, .. }));
        assert!(matches!(steps[1], Step::ConvWeightGrad { cols: None, .. }));
        assert_eq!(elided, [BufId(1), BufId(7)]);
        // Without the forward product the weight gradient still reads x alone.
        let mut ops = layer(spec);
        ops.remove(1);
        let (steps, _) = fuse(&ops);
        assert_eq!(kinds(&steps)[..1], ["conv weight grad"]);
    }

    /// `spec` with stride 2.
    fn strided(spec: Conv2dSpec) -> Conv2dSpec {
        Conv2dSpec { stride: 2, ..spec }
    }

    #[test]
    fn a_bias_gradient_on_the_same_dy_right_after_the_weight_gradient_joins_its_step() {
        for c_in in [1, 3] {
            let mut ops = layer(conv(c_in));
            let spec = conv(c_in);
            let bias_grad = Op::BiasBackward {
                rows: spec.col_rows(),
                cols: spec.c_out,
                dy: BufId(5),
                db: BufId(10),
            };
            ops.insert(3, bias_grad);
            let (steps, _) = fuse(&ops);
            assert_eq!(
                kinds(&steps),
                ["conv forward", "conv weight grad", "conv input grad"]
            );
            assert!(matches!(
                steps[1],
                Step::ConvWeightGrad {
                    db: Some(BufId(10)),
                    ..
                }
            ));
            // On another dY it stays an op of its own.
            ops[3] = Op::BiasBackward {
                rows: spec.col_rows(),
                cols: spec.c_out,
                dy: BufId(11),
                db: BufId(10),
            };
            let (steps, _) = fuse(&ops);
            assert_eq!(kinds(&steps)[1..3], ["conv weight grad", "op"]);
        }
    }

    #[test]
    fn a_pool_backward_masked_by_its_forward_input_reads_the_maxima_unless_they_changed() {
        let spec = crate::ops::Pool2dSpec {
            batch: 2,
            c: 3,
            h: 4,
            w: 4,
            k: 2,
        };
        let b = BufId;
        let ops = [
            Op::MaxPoolForward {
                spec,
                x: b(0),
                y: b(1),
                idx: b(2),
            },
            Op::MaxPoolBackward {
                spec,
                dy: b(3),
                idx: b(2),
                mask: Some(b(0)),
                dx: b(4),
            },
        ];
        let (steps, _) = fuse(&ops);
        assert_eq!(kinds(&steps), ["op", "pool backward"]);
        // Another mask, or the maxima overwritten in between: the op as written.
        let mut other = ops;
        other[1] = Op::MaxPoolBackward {
            spec,
            dy: b(3),
            idx: b(2),
            mask: Some(b(5)),
            dx: b(4),
        };
        assert_eq!(kinds(&fuse(&other).0), ["op", "op"]);
        let changed = [
            ops[0],
            Op::Advance {
                cursor: b(1),
                by: 1,
            },
            ops[1],
        ];
        assert_eq!(kinds(&fuse(&changed).0), ["op", "op", "op"]);
    }

    #[test]
    fn a_tap_major_weight_gradient_without_the_forward_product_keeps_im2col() {
        let mut ops = layer(strided(conv(3)));
        ops.remove(1);
        let (steps, _) = fuse(&ops);
        assert_eq!(kinds(&steps)[..2], ["im2col", "matmul"]);
    }

    #[test]
    fn nothing_fuses_when_the_input_changes_between_im2col_and_the_weight_gradient() {
        let mut ops = layer(conv(1));
        // x overwritten (by a stand-in op) before the weight gradient reads the cols.
        ops.insert(
            2,
            Op::Advance {
                cursor: BufId(0),
                by: 1,
            },
        );
        let (steps, elided) = fuse(&ops);
        assert_eq!(
            &kinds(&steps)[..4],
            ["im2col", "matmul", "op", "matmul"],
            "im2col must stay"
        );
        assert_eq!(elided, [BufId(7)]);
    }

    #[test]
    fn nothing_fuses_when_the_dcols_product_reads_a_buffer_changed_before_col2im() {
        let mut ops = layer(conv(3));
        ops.insert(
            4,
            Op::Advance {
                cursor: BufId(5),
                by: 1,
            },
        );
        let (steps, elided) = fuse(&ops);
        assert!(
            kinds(&steps).ends_with(&["matmul", "op", "col2im"]),
            "{:?}",
            kinds(&steps)
        );
        assert!(!elided.contains(&BufId(7)));
    }

    #[test]
    fn a_fused_scratch_buffer_cannot_be_read_back_or_needed_by_a_later_program() {
        let mut be = CpuBackend::with_threads(1).unwrap();
        let spec = conv(1);
        let sizes = [
            spec.input_len(),
            spec.col_rows() * spec.col_cols(),
            spec.c_out * spec.col_cols(),
            spec.c_out,
            spec.col_rows() * spec.c_out,
            spec.col_rows() * spec.c_out,
            spec.c_out * spec.col_cols(),
            spec.col_rows() * spec.col_cols(),
            spec.input_len(),
            spec.input_len(),
        ];
        for (i, n) in sizes.into_iter().enumerate() {
            assert_eq!(be.alloc("buf", n).unwrap(), BufId(i));
        }
        be.prepare(&layer(spec)).unwrap();
        let err = be.read(BufId(1), 4).unwrap_err().to_string();
        assert!(err.contains("fuses away"), "{err}");
        // A program that reads the cols without writing them first is refused.
        let reader = layer(spec)[2];
        let err = be.prepare(&[reader]).unwrap_err().to_string();
        assert!(err.contains("fuses away"), "{err}");
        assert!(be.read(BufId(4), 4).is_ok());
    }
}
