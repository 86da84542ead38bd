//! The reference CPU backend: buffers are host vectors of 32-bit words and every op runs its
//! simple CPU twin from [`crate::cpu`] (ndarray, f32, one allocation per op). It is the oracle
//! the fast [`super::cpu::CpuBackend`] is compared with step by step in the tests.

use super::{Backend, EngineKind, ProgramId};
use crate::cpu;
use crate::data::Dataset;
use crate::ops::{BufId, DataId, MetricsAcc, Op, SgdParams};
use crate::Result;
use ndarray::{ArrayView1, ArrayView2, ArrayViewD, ArrayViewMutD, IxDyn};

/// Runs programs on the host with the CPU twins.
#[derive(Default)]
pub struct ReferenceBackend {
    bufs: Vec<Vec<u32>>,
    data: Vec<Dataset>,
    programs: Vec<Vec<Op>>,
}

impl ReferenceBackend {
    /// An empty backend: no buffers, datasets or programs yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn f(&self, b: BufId) -> &[f32] {
        bytemuck::cast_slice(&self.bufs[b.0])
    }

    fn u(&self, b: BufId) -> &[u32] {
        &self.bufs[b.0]
    }

    fn mat(&self, b: BufId, rows: usize, cols: usize) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((rows, cols), &self.f(b)[..rows * cols]).expect("buffer shape")
    }

    fn vec(&self, b: BufId, n: usize) -> ArrayView1<'_, f32> {
        ArrayView1::from(&self.f(b)[..n])
    }

    fn labels(&self, b: BufId, n: usize) -> ArrayView1<'_, u32> {
        ArrayView1::from(&self.u(b)[..n])
    }

    /// Store f32 results at the start of `b`.
    fn put(&mut self, b: BufId, data: &[f32]) {
        self.bufs[b.0][..data.len()].copy_from_slice(bytemuck::cast_slice(data));
    }

    fn exec(&mut self, op: &Op) {
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
                let d = &self.data[data.0];
                let start = self.u(cursor)[0] as usize;
                let augment = augment.map(|a| (a, self.u(a.step)[0]));
                let table = normalize.map(|n| self.f(n.table)[..2 * n.channels].to_vec());
                let (xs, ys) = cpu::gather::gather(
                    &d.features,
                    d.kind,
                    &d.labels,
                    d.sample_len(),
                    &self.u(order)[..len],
                    start,
                    rows,
                    augment.as_ref().map(|(a, s)| (a, *s)),
                    table.as_deref(),
                );
                self.put(x, xs.as_slice().expect("standard layout"));
                self.bufs[y.0][..rows].copy_from_slice(ys.as_slice().expect("contiguous"));
            }
            Op::Advance { cursor, by } => self.bufs[cursor.0][0] += by as u32,
            Op::Matmul { spec, a, b, aux, c } => {
                let (am, ak) = if spec.trans_a {
                    (spec.k, spec.m)
                } else {
                    (spec.m, spec.k)
                };
                let (bk, bn) = if spec.trans_b {
                    (spec.n, spec.k)
                } else {
                    (spec.k, spec.n)
                };
                let mut out = cpu::matmul::matmul(
                    self.mat(a, am, ak),
                    self.mat(b, bk, bn),
                    spec.trans_a,
                    spec.trans_b,
                );
                use crate::ops::Epilogue::*;
                match spec.epilogue {
                    None => {}
                    Bias | BiasRelu => {
                        let bias = aux.map(|x| self.vec(x, spec.n));
                        cpu::matmul::epilogue(&mut out, spec.epilogue, bias, Option::None)
                    }
                    ReluMask => {
                        let mask = aux.map(|x| self.mat(x, spec.m, spec.n));
                        cpu::matmul::epilogue(&mut out, spec.epilogue, Option::None, mask)
                    }
                }
                if spec.accumulate {
                    out += &self.mat(c, spec.m, spec.n);
                }
                let out = out.as_standard_layout().into_owned();
                self.put(c, out.as_slice().expect("standard layout"));
            }
            Op::BiasBackward { rows, cols, dy, db } => {
                let s = cpu::bias::bias_backward(self.mat(dy, rows, cols));
                self.put(db, s.as_slice().expect("contiguous"));
            }
            Op::Im2col { spec, x, cols } => {
                let out = cpu::conv2d::im2col(&self.f(x)[..spec.input_len()], &spec);
                self.put(cols, out.as_slice().expect("standard layout"));
            }
            Op::Col2im {
                spec,
                dcols,
                mask,
                dx,
            } => {
                let d = self.mat(dcols, spec.col_rows(), spec.col_cols());
                let m = mask.map(|m| &self.f(m)[..spec.input_len()]);
                let out = cpu::conv2d::col2im(d, &spec, m);
                self.put(dx, &out);
            }
            Op::MaxPoolForward { spec, x, y, idx } => {
                let (out, arg) =
                    cpu::maxpool::maxpool_forward(&self.f(x)[..spec.input_len()], &spec);
                self.put(y, &out);
                self.bufs[idx.0][..arg.len()].copy_from_slice(&arg);
            }
            Op::MaxPoolBackward {
                spec,
                dy,
                idx,
                mask,
                dx,
            } => {
                let n = spec.output_len();
                let m = mask.map(|m| &self.f(m)[..spec.input_len()]);
                let out =
                    cpu::maxpool::maxpool_backward(&self.f(dy)[..n], &self.u(idx)[..n], &spec, m);
                self.put(dx, &out);
            }
            Op::AvgPoolForward { spec, x, y } => {
                let out = cpu::avgpool::avgpool_forward(&self.f(x)[..spec.input_len()], &spec);
                self.put(y, &out);
            }
            Op::AvgPoolBackward { spec, dy, mask, dx } => {
                let m = mask.map(|m| &self.f(m)[..spec.input_len()]);
                let out =
                    cpu::avgpool::avgpool_backward(&self.f(dy)[..spec.output_len()], &spec, m);
                self.put(dx, &out);
            }
            Op::BatchNormStats {
                spec,
                x,
                labels,
                running,
                stats,
            } => {
                let mut r = self.f(running)[..spec.stats_len()].to_vec();
                let out = cpu::batchnorm::batchnorm_stats(
                    &self.f(x)[..spec.len()],
                    &self.u(labels)[..spec.batch],
                    &spec,
                    &mut r,
                );
                self.put(running, &r);
                self.put(stats, &out);
            }
            Op::BatchNormEvalStats {
                spec,
                running,
                stats,
            } => {
                let out = cpu::batchnorm::batchnorm_eval_stats(self.f(running), &spec);
                self.put(stats, &out);
            }
            Op::BatchNormApply {
                spec,
                x,
                stats,
                w,
                b,
                y,
            } => {
                let out = cpu::batchnorm::batchnorm_apply(
                    &self.f(x)[..spec.len()],
                    self.f(stats),
                    self.f(w),
                    self.f(b),
                    &spec,
                );
                self.put(y, &out);
            }
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
            } => {
                let (gw, gb, co) = cpu::batchnorm::batchnorm_backward(
                    self.f(x),
                    &self.u(labels)[..spec.batch],
                    self.f(stats),
                    self.f(w),
                    self.f(dy),
                    &spec,
                );
                self.put(dw, &gw);
                self.put(db, &gb);
                self.put(coef, &co);
            }
            Op::BatchNormInputGrad {
                spec,
                x,
                labels,
                stats,
                coef,
                dy,
                mask,
                dx,
            } => {
                let out = cpu::batchnorm::batchnorm_input_grad(
                    self.f(x),
                    &self.u(labels)[..spec.batch],
                    self.f(stats),
                    self.f(coef),
                    self.f(dy),
                    mask.map(|m| self.f(m)),
                    &spec,
                );
                self.put(dx, &out);
            }
            Op::AddForward { len, relu, a, b, y } => {
                let out = cpu::add::add_forward(&self.f(a)[..len], &self.f(b)[..len], relu);
                self.put(y, &out);
            }
            Op::AddBackward {
                len,
                accumulate,
                dy,
                mask,
                dx,
            } => {
                let m = mask.map(|m| &self.f(m)[..len]);
                let acc = accumulate.then(|| &self.f(dx)[..len]);
                let out = cpu::add::add_backward(&self.f(dy)[..len], m, acc);
                self.put(dx, &out);
            }
            Op::DropoutForward { spec, step, x, y } => {
                let t = self.u(step)[0];
                let out = cpu::dropout::dropout_forward(&self.f(x)[..spec.len()], &spec, t);
                self.put(y, &out);
            }
            Op::DropoutBackward {
                spec,
                step,
                dy,
                mask,
                dx,
            } => {
                let t = self.u(step)[0];
                let m = mask.map(|m| &self.f(m)[..spec.len()]);
                let out = cpu::dropout::dropout_backward(&self.f(dy)[..spec.len()], &spec, t, m);
                self.put(dx, &out);
            }
            Op::SoftmaxXentForward {
                rows,
                classes,
                logits,
                labels,
                probs,
                loss,
                smoothing,
            } => {
                let (p, l) = cpu::softmax_xent::softmax_xent_forward(
                    self.mat(logits, rows, classes),
                    self.labels(labels, rows),
                    smoothing,
                );
                self.put(probs, p.as_slice().expect("standard layout"));
                self.put(loss, l.as_slice().expect("contiguous"));
            }
            Op::SoftmaxXentBackward {
                rows,
                classes,
                scale,
                probs,
                labels,
                dlogits,
                smoothing,
            } => {
                let d = cpu::softmax_xent::softmax_xent_backward(
                    self.mat(probs, rows, classes),
                    self.labels(labels, rows),
                    scale,
                    smoothing,
                );
                self.put(dlogits, d.as_slice().expect("standard layout"));
            }
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
                cpu::metrics::accumulate_metrics(
                    &mut a,
                    self.mat(probs, rows, classes),
                    self.labels(labels, rows),
                    self.vec(loss, rows),
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
                    Some(t) => SgdParams {
                        lr: cpu::decay::table_entry(self.f(t.table), self.u(t.step)[0]),
                        ..hp
                    },
                    None => hp,
                };
                let mut wv = std::mem::take(&mut self.bufs[w.0]);
                let mut vv = std::mem::take(&mut self.bufs[v.0]);
                {
                    let wf: &mut [f32] = bytemuck::cast_slice_mut(&mut wv[..n]);
                    let vf: &mut [f32] = bytemuck::cast_slice_mut(&mut vv[..n]);
                    cpu::sgd::sgd_update(
                        ArrayViewMutD::from_shape(IxDyn(&[n]), wf).expect("shape"),
                        ArrayViewD::from_shape(IxDyn(&[n]), &self.f(g)[..n]).expect("shape"),
                        ArrayViewMutD::from_shape(IxDyn(&[n]), vf).expect("shape"),
                        hp,
                    );
                }
                self.bufs[w.0] = wv;
                self.bufs[v.0] = vv;
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
                let last = table.len() / 2 - 1;
                let s = [table[2 * t.min(last)], table[2 * t.min(last) + 1]];
                let mut wv = std::mem::take(&mut self.bufs[w.0]);
                let mut mv = std::mem::take(&mut self.bufs[m.0]);
                let mut vv = std::mem::take(&mut self.bufs[v.0]);
                cpu::adam::adam_update(
                    &mut bytemuck::cast_slice_mut(&mut wv)[..n],
                    &self.f(g)[..n],
                    &mut bytemuck::cast_slice_mut(&mut mv)[..n],
                    &mut bytemuck::cast_slice_mut(&mut vv)[..n],
                    hp,
                    s,
                );
                self.bufs[w.0] = wv;
                self.bufs[m.0] = mv;
                self.bufs[v.0] = vv;
            }
            Op::Decay { n, w, factors } => {
                let f = cpu::decay::table_entry(self.f(factors.table), self.u(factors.step)[0]);
                let mut wv = std::mem::take(&mut self.bufs[w.0]);
                cpu::decay::decay_update(&mut bytemuck::cast_slice_mut(&mut wv)[..n], f);
                self.bufs[w.0] = wv;
            }
        }
    }
}

impl Backend for ReferenceBackend {
    fn describe(&self) -> String {
        "cpu reference (ndarray twins)".into()
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Cpu
    }

    fn adapter(&self) -> (String, String) {
        ("cpu".into(), "ndarray".into())
    }

    fn alloc(&mut self, label: &str, words: usize) -> Result<BufId> {
        super::host_alloc(&mut self.bufs, label, words)
    }

    fn write(&mut self, buf: BufId, data: &[u32]) -> Result<()> {
        self.bufs[buf.0][..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&mut self, buf: BufId, words: usize) -> Result<Vec<u32>> {
        Ok(self.bufs[buf.0][..words].to_vec())
    }

    fn dataset(&mut self, d: &Dataset) -> Result<DataId> {
        self.data.push(d.clone());
        Ok(DataId(self.data.len() - 1))
    }

    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId> {
        self.programs.push(ops.to_vec());
        Ok(ProgramId(self.programs.len() - 1))
    }

    fn run(&mut self, program: ProgramId, repeat: usize) -> Result<()> {
        let ops = std::mem::take(&mut self.programs[program.0]);
        for _ in 0..repeat {
            for op in &ops {
                self.exec(op);
            }
        }
        self.programs[program.0] = ops;
        Ok(())
    }
}
