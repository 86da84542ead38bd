//! The CPU engine: buffers are host vectors of 32-bit words allocated once per run, and every
//! op runs its fast kernel from [`crate::fastcpu`] in place — matrix products through the
//! `gemm` crate and element-wise work, both on one rayon pool, the minibatch
//! gathered straight from the byte images. [`super::reference::ReferenceBackend`] runs the
//! same programs with the simple twins; tests compare the two.

use super::{Backend, EngineKind, ProgramId};
use crate::data::Dataset;
use crate::fastcpu;
use crate::ops::{BufId, DataId, MetricsAcc, Op};
use crate::{Error, Result};
use std::sync::Arc;

/// Runs programs on the host with the fast CPU kernels.
pub struct CpuBackend {
    bufs: Vec<Vec<u32>>,
    data: Vec<Arc<Dataset>>,
    programs: Vec<Arc<[Op]>>,
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

/// Refuse a thread count of 0 or above the cores available, in one line.
pub fn check_threads(threads: usize) -> Result<usize> {
    let cores = available_threads();
    if threads == 0 || threads > cores {
        return Err(Error::InvalidArg {
            name: "--threads",
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
            .map_err(|e| Error::InvalidArg {
                name: "--threads",
                reason: format!("cannot start {threads} threads: {e}"),
            })?;
        Ok(CpuBackend {
            bufs: Vec::new(),
            data: Vec::new(),
            programs: Vec::new(),
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

    fn exec(&mut self, op: &Op) {
        match *op {
            Op::Gather {
                data,
                rows,
                order,
                cursor,
                x,
                y,
            } => {
                let d = Arc::clone(&self.data[data.0]);
                let start = self.u(cursor)[0] as usize;
                self.with_outs([x, y], |s, [xs, ys]| {
                    fastcpu::gather::gather(
                        &d.images,
                        &d.labels,
                        d.pixels(),
                        s.u(order),
                        start,
                        bytemuck::cast_slice_mut(xs),
                        &mut ys[..rows],
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
            Op::SoftmaxXentForward {
                rows,
                classes,
                logits,
                labels,
                probs,
                loss,
            } => self.with_outs([probs, loss], |s, [p, l]| {
                fastcpu::softmax_xent::forward(
                    s.f(logits),
                    &s.u(labels)[..rows],
                    classes,
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
            } => self.with_out(dlogits, |s, d| {
                fastcpu::softmax_xent::backward(s.f(probs), &s.u(labels)[..rows], classes, scale, d)
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
            Op::Sgd { n, hp, w, g, v } => self.with_outs([w, v], |s, [w, v]| {
                fastcpu::sgd::sgd_update(
                    &mut bytemuck::cast_slice_mut(w)[..n],
                    s.f(g),
                    bytemuck::cast_slice_mut(v),
                    hp,
                )
            }),
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
        Ok(self.bufs[buf.0][..words].to_vec())
    }

    fn dataset(&mut self, d: &Dataset) -> Result<DataId> {
        self.data.push(Arc::new(d.clone()));
        Ok(DataId(self.data.len() - 1))
    }

    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId> {
        if let Some(op) = ops.iter().find(|op| !op.is_alias_free()) {
            return Err(Error::Shape(format!(
                "an op writes a buffer it also reads or writes twice: {op:?}"
            )));
        }
        self.programs.push(ops.into());
        Ok(ProgramId(self.programs.len() - 1))
    }

    fn run(&mut self, program: ProgramId, repeat: usize) -> Result<()> {
        let ops = Arc::clone(&self.programs[program.0]);
        let pool = Arc::clone(&self.pool);
        let profile = std::env::var_os("WGTRAIN_PROFILE").is_some();
        let mut per: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
        pool.install(|| {
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
        });
        if profile {
            super::print_profile(per.into_iter().collect(), repeat);
        }
        Ok(())
    }
}

/// A short name for an op and its shape, for `WGTRAIN_PROFILE`.
fn label(op: &Op) -> String {
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
