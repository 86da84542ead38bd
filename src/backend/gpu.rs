//! The GPU backend: buffers are wgpu storage buffers, each op becomes a prepared launch, and a
//! program is replayed `repeat` times from one command buffer.

use super::{Backend, Clock, EngineKind, ProgramId, Timed};
use crate::data::Dataset;
use crate::gpu::kernels::{self, GpuDataset, MatmulTile};
use crate::gpu::{autotune, GpuContext, Launch};
use crate::ops::{BufId, DataId, Op};
use crate::Result;
use std::cell::RefCell;
use std::time::Duration;
use wgpu::Buffer;

/// Runs programs on one wgpu device.
pub struct GpuBackend {
    ctx: GpuContext,
    bufs: Vec<Buffer>,
    data: Vec<GpuDataset>,
    programs: Vec<Vec<Launch>>,
    /// Each program's ops, to prepare it again when a product's tile changes.
    program_ops: Vec<Vec<Op>>,
    /// Whether products not tuned yet start on the checked adapter default, their tuning left
    /// to [`GpuBackend::tune_pending`] ([`GpuBackend::tune_in_background`]).
    background: bool,
    /// Products started on the default whose search is still to run, in the order met.
    pending: RefCell<Vec<autotune::Search>>,
    /// What background tuning did: each product started on the default, and its choice.
    tuning: RefCell<autotune::TuneReport>,
    /// Made on the first [`Backend::run_timed`].
    stopwatch: Option<Stopwatch>,
    /// The matmul variant of every product prepared while set, instead of the autotuner's
    /// choice ([`GpuBackend::pin_matmul_tile`]).
    pinned: Option<MatmulTile>,
    /// The largest shard of every dataset made resident while set
    /// ([`GpuBackend::pin_dataset_shards`]).
    shard_bytes: Option<u64>,
}

impl GpuBackend {
    /// A backend on the open device `ctx`, holding no buffers, datasets or programs yet.
    pub fn new(ctx: GpuContext) -> Self {
        GpuBackend {
            ctx,
            bufs: Vec::new(),
            data: Vec::new(),
            programs: Vec::new(),
            program_ops: Vec::new(),
            background: false,
            pending: RefCell::new(Vec::new()),
            tuning: RefCell::new(autotune::TuneReport::default()),
            stopwatch: None,
            pinned: None,
            shard_bytes: None,
        }
    }

    /// Run every product of the programs prepared from now on with `tile` instead of the
    /// variant autotuned for its shape (`None`: back to the autotuner). For `verify`, which
    /// sweeps every variant over the edges of its tile; training never pins. Programs already
    /// prepared keep their variants; a product `tile` cannot run is refused when prepared.
    pub fn pin_matmul_tile(&mut self, tile: Option<MatmulTile>) {
        self.pinned = tile;
    }

    /// Split every dataset made resident from now on into shards of at most `bytes` (`None`:
    /// as few as the device's binding limits allow). For `verify`, which checks the gather
    /// across shards without a dataset larger than a binding.
    pub fn pin_dataset_shards(&mut self, bytes: Option<u64>) {
        self.shard_bytes = bytes;
    }

    /// Tune in the background (`true`): a product met while preparing a program that has no
    /// checked choice on this adapter yet starts on the adapter default, itself checked
    /// against the CPU twin first ([`autotune::start_tile`]), and its candidates are tried
    /// by [`GpuBackend::tune_pending`] between training steps; when a faster variant is found
    /// every program is prepared again with it. Off (`false`, the default): products are
    /// tuned when first prepared, as [`autotune::tile_for`] does. Training turns it on so a
    /// cold process starts at once; `verify` and `bench` keep it off.
    ///
    /// A switch changes the order of a product's sums, so the weights of a run that switched
    /// differ in rounding from those of a run that started on the tuned variants.
    pub fn tune_in_background(&mut self, on: bool) {
        self.background = on;
    }

    /// Try candidates of the pending products while the time spent tuning in the background
    /// stays within `allowed` (at least one candidate when nothing was tuned yet and `allowed`
    /// is positive) and within the process's budget ([`autotune::background_budget`]);
    /// finished searches are recorded (and cached), and when one chose another variant than
    /// the default it started on, every program is prepared again. Returns whether any
    /// product switched.
    pub fn tune_pending(&mut self, allowed: Duration) -> Result<bool> {
        crate::util::wait_for("autotune", self.tune_pending_async(allowed))
    }

    /// [`GpuBackend::tune_pending`] without blocking the browser: the page awaits it between
    /// chunks of steps.
    pub async fn tune_pending_async(&mut self, allowed: Duration) -> Result<bool> {
        let budget = autotune::background_budget();
        let mut switched = false;
        loop {
            let spent = Duration::from_secs_f64(self.tuning.borrow().seconds);
            if spent >= budget || spent >= allowed || allowed.is_zero() {
                break;
            }
            // Out of the list while it runs: no borrow is held across the wait.
            if self.pending.borrow().is_empty() {
                break;
            }
            let mut search = self.pending.borrow_mut().remove(0);
            let before = search.spent();
            search.step(&self.ctx).await;
            let took = search.spent().saturating_sub(before);
            self.tuning.borrow_mut().seconds += took.as_secs_f64();
            if !search.done() {
                self.pending.borrow_mut().insert(0, search);
                continue;
            }
            let key = search.key.clone();
            match autotune::finish(&self.ctx, search) {
                Ok(chosen) => {
                    let mut log = self.tuning.borrow_mut();
                    if let Some(p) = log.products.iter_mut().find(|p| p.key == key) {
                        p.chosen = Some(chosen.to_string());
                        switched |= p.started != chosen.to_string();
                    }
                }
                Err(search) => {
                    // Another trainer of the page holds the tuner: finish it next time.
                    self.pending.borrow_mut().insert(0, *search);
                    break;
                }
            }
        }
        if switched {
            for i in 0..self.programs.len() {
                let ops = std::mem::take(&mut self.program_ops[i]);
                let launches = self.launches_of(&ops);
                self.program_ops[i] = ops;
                self.programs[i] = launches?;
            }
        }
        Ok(switched)
    }

    /// Tune in the background ([`GpuBackend::tune_in_background`]) with `specs`, the products
    /// the programs will launch, started first: each on its checked default (see
    /// [`autotune::start_tile_async`]). For the browser, which cannot wait inside `prepare`.
    pub async fn start_in_background_async(&mut self, specs: &[crate::gpu::kernels::MatmulSpec]) {
        self.background = true;
        for spec in specs {
            let (tile, search) = autotune::start_tile_async(&self.ctx, spec).await;
            if let Some(search) = search {
                self.note_started(spec, tile, search);
            }
        }
    }

    fn note_started(
        &self,
        spec: &crate::gpu::kernels::MatmulSpec,
        tile: MatmulTile,
        search: autotune::Search,
    ) {
        self.tuning
            .borrow_mut()
            .products
            .push(autotune::TileChoice {
                key: search.key.clone(),
                class: search.key.class.to_string(),
                shape: [spec.m, spec.n, spec.k],
                started: tile.to_string(),
                chosen: None,
            });
        self.pending.borrow_mut().push(search);
    }

    /// Whether products still wait for their background tuning.
    pub fn tuning_pending(&self) -> bool {
        !self.pending.borrow().is_empty()
    }

    /// What background tuning did so far.
    pub fn tuning_report(&self) -> autotune::TuneReport {
        self.tuning.borrow().clone()
    }

    fn launches_of(&self, ops: &[Op]) -> Result<Vec<Launch>> {
        let mut launches = Vec::new();
        for op in ops {
            launches.extend(self.launches(op)?);
        }
        Ok(launches)
    }

    /// The context back, with every buffer, dataset and program of this backend freed.
    pub fn into_ctx(self) -> GpuContext {
        self.ctx
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
                ref augment,
                normalize,
            } => kernels::gather(
                ctx,
                rows,
                len,
                &self.data[data.0],
                b(order),
                b(cursor),
                b(x),
                b(y),
                augment.as_ref().map(|a| (a, b(a.step))),
                normalize.map(|n| (n.channels, b(n.table))),
            ),
            Op::Advance { cursor, by } => one(kernels::advance(ctx, by, b(cursor))),
            Op::Matmul {
                spec,
                a,
                b: bb,
                aux,
                c,
            } => {
                // Each product runs the variant autotuned for its shape on this adapter, or the
                // pinned one.
                let tile = match self.pinned {
                    Some(tile) => tile,
                    None if self.background => {
                        let (tile, search) = autotune::start_tile(ctx, &spec);
                        if let Some(search) = search {
                            self.note_started(&spec, tile, search);
                        }
                        tile
                    }
                    None => autotune::tile_for(ctx, &spec),
                };
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
            Op::BatchNormStats {
                spec,
                x,
                labels,
                running,
                stats,
            } => one(kernels::batchnorm_stats(
                ctx,
                &spec,
                b(x),
                b(labels),
                b(running),
                b(stats),
            )),
            Op::BatchNormEvalStats {
                spec,
                running,
                stats,
            } => one(kernels::batchnorm_eval_stats(
                ctx,
                &spec,
                b(running),
                b(stats),
            )),
            Op::BatchNormApply {
                spec,
                x,
                stats,
                w,
                b: beta,
                y,
            } => one(kernels::batchnorm_apply(
                ctx,
                &spec,
                b(x),
                b(stats),
                b(w),
                b(beta),
                b(y),
            )),
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
            } => one(kernels::batchnorm_backward(
                ctx,
                &spec,
                b(x),
                b(labels),
                b(stats),
                b(w),
                b(dy),
                b(dw),
                b(db),
                b(coef),
            )),
            Op::BatchNormInputGrad {
                spec,
                x,
                labels,
                stats,
                coef,
                dy,
                mask,
                dx,
            } => one(kernels::batchnorm_input_grad(
                ctx,
                &spec,
                b(x),
                b(labels),
                b(stats),
                b(coef),
                b(dy),
                self.opt(mask),
                b(dx),
            )),
            Op::DropoutForward { spec, step, x, y } => {
                one(kernels::dropout_forward(ctx, &spec, b(step), b(x), b(y)))
            }
            Op::AddForward {
                len,
                relu,
                a,
                b: bb,
                y,
            } => one(kernels::add_forward(ctx, len, relu, b(a), b(bb), b(y))),
            Op::AddBackward {
                len,
                accumulate,
                dy,
                mask,
                dx,
            } => one(kernels::add_backward(
                ctx,
                len,
                accumulate,
                b(dy),
                self.opt(mask),
                b(dx),
            )),
            Op::DropoutBackward {
                spec,
                step,
                dy,
                mask,
                dx,
            } => one(kernels::dropout_backward(
                ctx,
                &spec,
                b(step),
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
                smoothing,
            } => one(kernels::softmax_xent_forward(
                ctx,
                rows,
                classes,
                b(logits),
                b(labels),
                b(probs),
                b(loss),
                smoothing,
            )),
            Op::SoftmaxXentBackward {
                rows,
                classes,
                scale,
                probs,
                labels,
                dlogits,
                smoothing,
            } => one(kernels::softmax_xent_backward(
                ctx,
                rows,
                classes,
                scale,
                b(probs),
                b(labels),
                b(dlogits),
                smoothing,
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
            Op::Sgd {
                n,
                hp,
                w,
                g,
                v,
                lr_table,
            } => one(kernels::sgd_update(
                ctx,
                n,
                hp,
                b(w),
                b(g),
                b(v),
                lr_table.map(|t| (b(t.table), b(t.step))),
            )),
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
            Op::Decay { n, w, factors } => one(kernels::decay_update(
                ctx,
                n,
                b(w),
                b(factors.table),
                b(factors.step),
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

    fn as_gpu(&mut self) -> Option<&mut GpuBackend> {
        Some(self)
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
            &d.features,
            d.kind,
            &d.labels,
            d.sample_len(),
            self.shard_bytes,
        )?);
        Ok(DataId(self.data.len() - 1))
    }

    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId> {
        let launches = self.launches_of(ops)?;
        self.programs.push(launches);
        self.program_ops.push(ops.to_vec());
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

    /// Timestamps around the program's one submission where the device has TIMESTAMP_QUERY
    /// (see `Stopwatch`), else the wall clock around submit + wait.
    fn run_timed(&mut self, program: ProgramId, repeat: usize) -> Result<Timed> {
        let ctx = &self.ctx;
        let watch = self.stopwatch.get_or_insert_with(|| Stopwatch::new(ctx));
        let launches: Vec<&Launch> = self.programs[program.0].iter().collect();
        watch.time(ctx, || ctx.submit(&launches, repeat).map(|_| ()))
    }
}

/// Times GPU work: with timestamp queries written by empty compute passes submitted just
/// before and just after it, where the device has TIMESTAMP_QUERY, else with the wall clock
/// around submit + wait. A timestamp span that is not positive or exceeds 1.5× the wall time
/// (a driver returning zeros or garbage) falls back to the wall time.
pub(crate) struct Stopwatch {
    queries: Option<(wgpu::QuerySet, Buffer)>,
}

impl Stopwatch {
    pub(crate) fn new(ctx: &GpuContext) -> Self {
        let queries = ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("stopwatch"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("stopwatch"),
                    size: 16,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                (set, buf)
            });
        Stopwatch { queries }
    }

    /// One empty compute pass writing timestamp `index`; the end pass also resolves both.
    fn mark(&self, ctx: &GpuContext, index: u32) {
        let Some((set, buf)) = &self.queries else {
            return;
        };
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: (index == 0).then_some(0),
                end_of_pass_write_index: (index == 1).then_some(1),
            };
            let _pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("stopwatch"),
                timestamp_writes: Some(writes),
            });
        }
        if index == 1 {
            enc.resolve_query_set(set, 0..2, buf, 0);
        }
        ctx.queue.submit([enc.finish()]);
    }

    /// The time of `submit` (which submits GPU work) and of the work, waited for.
    pub(crate) fn time(
        &self,
        ctx: &GpuContext,
        submit: impl FnOnce() -> Result<()>,
    ) -> Result<Timed> {
        let t = web_time::Instant::now();
        self.mark(ctx, 0);
        submit()?;
        self.mark(ctx, 1);
        ctx.wait()?;
        let wall = Timed {
            secs: t.elapsed().as_secs_f64(),
            clock: Clock::Wall,
        };
        let Some((_, buf)) = &self.queries else {
            return Ok(wall);
        };
        let ticks: Vec<u64> = ctx.read("timestamps", buf, 2)?;
        let period_ns = ctx.queue.get_timestamp_period() as f64;
        let secs = ticks[1].wrapping_sub(ticks[0]) as f64 * period_ns * 1e-9;
        Ok(if secs > 0.0 && secs <= wall.secs * 1.5 {
            Timed {
                secs,
                clock: Clock::Timestamp,
            }
        } else {
            wall
        })
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
