//! The GPU backend: buffers are wgpu storage buffers, each op becomes a prepared launch, and a
//! program is replayed `repeat` times from one command buffer.

use super::{Backend, EngineKind, ProgramId};
use crate::data::Dataset;
use crate::gpu::kernels::{self, GpuDataset};
use crate::gpu::{autotune, GpuContext, Launch};
use crate::ops::{BufId, DataId, Op};
use crate::Result;
use wgpu::Buffer;

/// Runs programs on one wgpu device.
pub struct GpuBackend {
    ctx: GpuContext,
    bufs: Vec<Buffer>,
    data: Vec<GpuDataset>,
    programs: Vec<Vec<Launch>>,
}

impl GpuBackend {
    /// A backend on the open device `ctx`, holding no buffers, datasets or programs yet.
    pub fn new(ctx: GpuContext) -> Self {
        GpuBackend {
            ctx,
            bufs: Vec::new(),
            data: Vec::new(),
            programs: Vec::new(),
        }
    }

    /// The context (adapter, limits).
    pub fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    fn buf(&self, b: BufId) -> &Buffer {
        &self.bufs[b.0]
    }

    fn opt(&self, b: Option<BufId>) -> Option<&Buffer> {
        b.map(|b| self.buf(b))
    }

    /// The launches of one op.
    fn launches(&self, op: &Op) -> Result<Vec<Launch>> {
        let ctx = &self.ctx;
        let b = |id: BufId| self.buf(id);
        let one = |l: Result<Launch>| l.map(|l| vec![l]);
        match *op {
            Op::Gather {
                data,
                rows,
                len,
                order,
                cursor,
                x,
                y,
            } => kernels::gather(
                ctx,
                rows,
                len,
                &self.data[data.0],
                b(order),
                b(cursor),
                b(x),
                b(y),
            ),
            Op::Advance { cursor, by } => one(kernels::advance(ctx, by, b(cursor))),
            Op::Matmul {
                spec,
                a,
                b: bb,
                aux,
                c,
            } => {
                // Each product runs the variant autotuned for its shape on this adapter.
                let tile = autotune::tile_for(ctx, &spec);
                one(kernels::matmul(
                    ctx,
                    &spec,
                    &tile,
                    b(a),
                    b(bb),
                    self.opt(aux),
                    b(c),
                ))
            }
            Op::BiasBackward { rows, cols, dy, db } => {
                one(kernels::bias_backward(ctx, rows, cols, b(dy), b(db)))
            }
            Op::Im2col { spec, x, cols } => one(kernels::im2col(ctx, &spec, b(x), b(cols))),
            Op::Col2im {
                spec,
                dcols,
                mask,
                dx,
            } => one(kernels::col2im(ctx, &spec, b(dcols), self.opt(mask), b(dx))),
            Op::MaxPoolForward { spec, x, y, idx } => {
                one(kernels::maxpool_forward(ctx, &spec, b(x), b(y), b(idx)))
            }
            Op::MaxPoolBackward {
                spec,
                dy,
                idx,
                mask,
                dx,
            } => one(kernels::maxpool_backward(
                ctx,
                &spec,
                b(dy),
                b(idx),
                self.opt(mask),
                b(dx),
            )),
            Op::AvgPoolForward { spec, x, y } => {
                one(kernels::avgpool_forward(ctx, &spec, b(x), b(y)))
            }
            Op::AvgPoolBackward { spec, dy, mask, dx } => one(kernels::avgpool_backward(
                ctx,
                &spec,
                b(dy),
                self.opt(mask),
                b(dx),
            )),
            Op::SoftmaxXentForward {
                rows,
                classes,
                logits,
                labels,
                probs,
                loss,
            } => one(kernels::softmax_xent_forward(
                ctx,
                rows,
                classes,
                b(logits),
                b(labels),
                b(probs),
                b(loss),
            )),
            Op::SoftmaxXentBackward {
                rows,
                classes,
                scale,
                probs,
                labels,
                dlogits,
            } => one(kernels::softmax_xent_backward(
                ctx,
                rows,
                classes,
                scale,
                b(probs),
                b(labels),
                b(dlogits),
            )),
            Op::Metrics {
                rows,
                classes,
                probs,
                labels,
                loss,
                acc,
            } => one(kernels::accumulate_metrics(
                ctx,
                rows,
                classes,
                b(probs),
                b(labels),
                b(loss),
                b(acc),
            )),
            Op::Sgd { n, hp, w, g, v } => one(kernels::sgd_update(ctx, n, hp, b(w), b(g), b(v))),
            Op::Adam {
                n,
                hp,
                w,
                g,
                m,
                v,
                sched,
                step,
            } => one(kernels::adam_update(
                ctx,
                n,
                hp,
                b(w),
                b(g),
                b(m),
                b(v),
                b(sched),
                b(step),
            )),
        }
    }
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        self.ctx.describe()
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Gpu
    }

    fn adapter(&self) -> (String, String) {
        (
            self.ctx.info.name.clone(),
            format!("{:?}", self.ctx.info.backend),
        )
    }

    fn alloc(&mut self, label: &str, words: usize) -> Result<BufId> {
        // Saturating: a size past u64 is refused by the limits below, never wrapped to a small one.
        let bytes = (words as u64).saturating_mul(4);
        let used_by = crate::error::LimitUse::Buffer(label.to_string());
        self.ctx.check_limit(
            "max_buffer_size",
            self.ctx.limits.max_buffer_size,
            bytes,
            &used_by,
        )?;
        self.ctx.check_limit(
            "max_storage_buffer_binding_size",
            self.ctx.limits.max_storage_buffer_binding_size,
            bytes,
            &used_by,
        )?;
        self.bufs.push(self.ctx.storage(label, bytes));
        Ok(BufId(self.bufs.len() - 1))
    }

    fn write(&mut self, buf: BufId, data: &[u32]) -> Result<()> {
        self.ctx
            .queue
            .write_buffer(self.buf(buf), 0, bytemuck::cast_slice(data));
        Ok(())
    }

    fn read(&mut self, buf: BufId, words: usize) -> Result<Vec<u32>> {
        let mut out = vec![0; words];
        self.read_into(&[(buf, words)], &mut out)?;
        Ok(out)
    }

    fn read_into(&mut self, bufs: &[(BufId, usize)], out: &mut [u32]) -> Result<()> {
        crate::util::wait_for("buffers", self.read_into_async(bufs, out))
    }

    fn read_into_async<'a>(
        &'a mut self,
        bufs: &'a [(BufId, usize)],
        out: &'a mut [u32],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>> {
        Box::pin(async move {
            let parts: Vec<(&wgpu::Buffer, usize)> =
                bufs.iter().map(|&(b, w)| (self.buf(b), 4 * w)).collect();
            self.ctx
                .read_bytes_into_async("buffers", &parts, bytemuck::cast_slice_mut(out))
                .await
        })
    }

    fn dataset(&mut self, d: &Dataset) -> Result<DataId> {
        self.data.push(GpuDataset::upload(
            &self.ctx,
            &d.images,
            &d.labels,
            d.pixels(),
            None,
        )?);
        Ok(DataId(self.data.len() - 1))
    }

    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId> {
        let mut launches = Vec::new();
        for op in ops {
            launches.extend(self.launches(op)?);
        }
        self.programs.push(launches);
        Ok(ProgramId(self.programs.len() - 1))
    }

    fn run(&mut self, program: ProgramId, repeat: usize) -> Result<()> {
        let launches: Vec<&Launch> = self.programs[program.0].iter().collect();
        if std::env::var_os("WGTRAIN_PROFILE").is_some() {
            return profile(&self.ctx, &launches, repeat);
        }
        self.ctx.submit(&launches, repeat)?;
        // Wait so progress reflects finished work and the queue does not grow without bound.
        self.ctx.wait()
    }
}

/// `WGTRAIN_PROFILE=1`: run each launch on its own and wait for it, and print the wall time
/// per kernel (summed over the program's repeats) to stderr, slowest first. Much slower than a
/// normal run; for finding the kernel that dominates a step.
fn profile(ctx: &GpuContext, launches: &[&Launch], repeat: usize) -> Result<()> {
    let mut per: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
    for _ in 0..repeat {
        for l in launches {
            let t = web_time::Instant::now();
            ctx.submit(&[l], 1)?;
            ctx.wait()?;
            let e = per.entry(l.name.as_str()).or_default();
            e.0 += 1;
            e.1 += t.elapsed().as_secs_f64();
        }
    }
    super::print_profile(
        per.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        repeat,
    );
    Ok(())
}
