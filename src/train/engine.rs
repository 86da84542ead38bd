//! The training engine: one step, written once against a [`Backend`].
//!
//! At construction the network's layers are built, every buffer is allocated, the datasets are
//! made resident (bytes), and three programs are prepared: the training step (gather, forward,
//! loss, metrics, backward, update, advance) and an evaluation pass per dataset (gather,
//! forward, loss, metrics, advance). Per epoch only the shuffled order is written; steps run in
//! chunks (one command buffer each on the GPU) with no readback; metrics are read once per
//! epoch.
//!
//! Data-parallel ([`Engine::with_group`]): each rank's engine holds a full replica and takes its
//! [`Shard`] of every global minibatch; the step is split into a gradient program (gather,
//! forward, loss, metrics, backward) and an update program, with the gradients summed over the
//! ranks in between. The loss is scaled by the global batch size, so the summed gradient is the
//! one a single process computes for the whole minibatch.

use super::{Optimizer, TrainConfig, Which};
use crate::backend::{gpu::GpuBackend, Backend, EngineKind, ProgramId};
use crate::data::Dataset;
use crate::dist::{Collective, Shard, Solo};
use crate::error::Setting;
use crate::gpu::GpuContext;
use crate::model::{Model, Param, Shape};
use crate::nn::{self, Io, Layer, ParamBufs};
use crate::ops::{BufId, DataId, MetricsAcc, Op};
use crate::{Error, Result};
use ndarray::{Array1, ArrayD, IxDyn};
use std::rc::Rc;

/// Optimiser state outside the weights: named slots shaped like the parameters (SGD:
/// `velocity`; Adam: `adam.m`, `adam.v`) and the number of updates done.
#[derive(Clone, Debug, PartialEq)]
pub struct OptState {
    /// (slot name, one [`Param`]-shaped tensor pair per parametrised layer), in the order of
    /// [`slot_names`].
    pub slots: Vec<(String, Vec<Param>)>,
    /// Optimiser updates done (Adam's t).
    pub step: u64,
}

/// The slot names of an optimiser, in order.
pub fn slot_names(opt: Optimizer) -> &'static [&'static str] {
    match opt {
        Optimizer::Sgd => &["velocity"],
        Optimizer::Adam => &["adam.m", "adam.v"],
    }
}

/// Buffers and their lengths in words, read and summed together.
type Bucket = Vec<(BufId, usize)>;

/// The pieces of a data-parallel step whose gradients are summed while the next piece runs,
/// and the thread that sums them (over a forked group of the same ranks).
struct Overlap {
    /// Gradient program pieces, top layer first, each with the gradient buffers it completes.
    pieces: Vec<(ProgramId, Bucket)>,
    update: ProgramId,
    /// Each piece's host buffer while it is not with the thread (kept: no allocation per step).
    bufs: Vec<Vec<f32>>,
    to: Option<std::sync::mpsc::Sender<(usize, Vec<f32>)>>,
    from: std::sync::mpsc::Receiver<Result<(usize, Vec<f32>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Overlap {
    fn drop(&mut self) {
        // Closing the channel ends the thread; its group is dropped before MPI is finalised.
        self.to = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Seconds spent moving gradients between ranks, summed over `steps` steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CommTime {
    /// Steps the times are summed over.
    pub steps: usize,

    /// Reading the gradients back from the device.
    pub read: f64,
    /// The all-reduce (waiting for the slowest rank included); with the sums overlapped, only
    /// the wait after the backward pass for the sums still under way.
    pub sum: f64,
    /// Writing the sums back to the device.
    pub write: f64,
    /// Epochs after which the replicas differed and rank 0's was copied to every rank.
    pub resyncs: usize,
}

/// One resident dataset with its own order and cursor.
struct Resident {
    data: DataId,
    /// Order entries a training epoch uses: the samples, or this rank's share of them.
    len: usize,
    /// The samples this rank evaluates, in file order (all of them in one process).
    eval: std::ops::Range<usize>,
    order: BufId,
    cursor: BufId,
}

struct ParamSlot {
    bufs: ParamBufs,
    /// One (weight, bias) buffer pair per optimiser slot.
    slots: Vec<(BufId, BufId)>,
    /// The layer it belongs to.
    layer: usize,
    shape: Vec<usize>,
}

/// Trains and evaluates a [`Model`] on one backend.
pub struct Engine {
    be: Box<dyn Backend>,
    cfg: TrainConfig,
    /// The ranks this engine trains with, and this rank's share of every minibatch.
    comm: Rc<dyn Collective>,
    shard: Shard,
    /// Rows of this rank's part of a minibatch (the whole batch in one process).
    rows: usize,
    /// Data-parallel: the step as gradient and update programs; the gradient buffers (with
    /// their lengths, (dw, db) per parameterised layer) summed between them.
    split: Option<(ProgramId, ProgramId)>,
    grads: Vec<(BufId, usize)>,
    /// The gradients on the host while they are summed (kept: no allocation per step).
    grad_host: Vec<u32>,
    comm_time: CommTime,
    /// Data-parallel with the sums overlapped with the backward pass.
    overlap: Option<Overlap>,
    model_shapes: Vec<Shape>,
    layers: Vec<Box<dyn Layer>>,
    params: Vec<ParamSlot>,
    x: BufId,
    y: BufId,
    acts: Vec<BufId>,
    dacts: Vec<BufId>,
    probs: BufId,
    loss: BufId,
    acc_train: BufId,
    acc_eval: BufId,
    train: Resident,
    test: Option<Resident>,
    step: ProgramId,
    eval_train: ProgramId,
    eval_test: Option<ProgramId>,
    /// Adam's update counter (u32), advanced once per step.
    opt_step: Option<BufId>,
    /// False when `train.order` no longer holds the epoch's order (evaluation overwrote it).
    order_valid: bool,
    /// Forward only, and forward + backward, on `x`/`y` as written (prepared on first use).
    forward_only: Option<ProgramId>,
    gradient: Option<ProgramId>,
}

impl Engine {
    /// On the GPU behind `ctx`.
    pub fn gpu(
        ctx: GpuContext,
        cfg: &TrainConfig,
        model: &Model,
        state: Option<&OptState>,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Result<Self> {
        Self::new(
            Box::new(GpuBackend::new(ctx)),
            cfg,
            model,
            state,
            train,
            test,
        )
    }

    /// On the CPU twins.
    pub fn cpu(
        cfg: &TrainConfig,
        model: &Model,
        state: Option<&OptState>,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Result<Self> {
        #[cfg(not(target_arch = "wasm32"))]
        let be = Box::new(crate::backend::cpu::CpuBackend::new());
        #[cfg(target_arch = "wasm32")]
        let be = Box::new(crate::backend::reference::ReferenceBackend::new());
        Self::new(be, cfg, model, state, train, test)
    }

    /// Build the network in `be`, upload `model` (and optimiser state) and the datasets, and
    /// prepare the programs.
    pub fn new(
        be: Box<dyn Backend>,
        cfg: &TrainConfig,
        model: &Model,
        state: Option<&OptState>,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Result<Self> {
        Self::with_group(be, cfg, model, state, train, test, Rc::new(Solo))
    }

    /// As [`Engine::new`], as one rank of data-parallel training over `comm`: this engine
    /// takes its [`Shard`] of every minibatch of `cfg.batch` rows and evaluates its part of
    /// each dataset; gradients and metrics are summed over the ranks. Every rank must be built
    /// from the same configuration, model and data (see [`crate::dist::check_agreement`]).
    pub fn with_group(
        mut be: Box<dyn Backend>,
        cfg: &TrainConfig,
        model: &Model,
        state: Option<&OptState>,
        train: &Dataset,
        test: Option<&Dataset>,
        comm: Rc<dyn Collective>,
    ) -> Result<Self> {
        let shard = Shard::of(comm.as_ref());
        if cfg.batch < shard.ranks {
            return Err(Error::InvalidSetting {
                setting: Setting::BatchSize,
                reason: format!(
                    "{} is smaller than the {} ranks: every rank needs at least one row of each minibatch",
                    cfg.batch, shard.ranks
                ),
            });
        }
        let bsz = shard.rows(cfg.batch).len();
        let arch = &model.arch;
        let shapes = arch.shapes()?;
        let n = arch.layers.len();
        let be_ref = be.as_mut();
        let x = be_ref.alloc("x", bsz * arch.input_len())?;
        let y = be_ref.alloc("y", bsz)?;
        let mut layers = Vec::with_capacity(n);
        let mut acts = Vec::with_capacity(n);
        let mut dacts = Vec::with_capacity(n);
        for (l, spec) in arch.layers.iter().enumerate() {
            let relu = l + 1 < n && spec.kind().relu_after();
            layers.push(nn::build(
                spec,
                shapes[l],
                shapes[l + 1],
                bsz,
                relu,
                be_ref,
            )?);
            acts.push(be_ref.alloc("activations", bsz * shapes[l + 1].len())?);
            dacts.push(be_ref.alloc("activation gradients", bsz * shapes[l + 1].len())?);
        }
        let slot_names = slot_names(cfg.optimizer);
        if let Some(st) = state {
            let names: Vec<&str> = st.slots.iter().map(|(s, _)| s.as_str()).collect();
            if names != slot_names {
                return Err(Error::InvalidSetting {
                    setting: Setting::Optimizer,
                    reason: format!(
                        "{} needs optimiser state {slot_names:?} but the checkpoint holds {names:?}",
                        cfg.optimizer
                    ),
                });
            }
        }
        let param_shapes = arch.param_shapes();
        let mut params = Vec::new();
        for (l, layer) in layers.iter().enumerate() {
            let Some((wn, bn)) = layer.param_lens() else {
                continue;
            };
            let i = params.len();
            let host = &model.params[i];
            let up = |be: &mut dyn Backend, what: &str, p: &Param| -> Result<(BufId, BufId)> {
                let w = layer.weight_to_engine(p.weight.iter().copied().collect());
                debug_assert_eq!(w.len(), wn);
                Ok((
                    be.upload_f32(what, &w)?,
                    be.upload_f32(what, p.bias.as_slice().expect("contiguous bias"))?,
                ))
            };
            let (w, b) = up(be_ref, "weight", host)?;
            let bufs = ParamBufs {
                w,
                b,
                dw: be_ref.alloc("weight gradient", wn)?,
                db: be_ref.alloc("bias gradient", bn)?,
            };
            let mut slots = Vec::new();
            for (s, name) in slot_names.iter().enumerate() {
                slots.push(match state {
                    Some(st) => up(be_ref, name, &st.slots[s].1[i])?,
                    None => (be_ref.alloc(name, wn)?, be_ref.alloc(name, bn)?),
                });
            }
            params.push(ParamSlot {
                bufs,
                slots,
                layer: l,
                shape: param_shapes[i].0.clone(),
            });
        }
        let classes = arch.classes();
        let probs = be_ref.alloc("probs", bsz * classes)?;
        let loss = be_ref.alloc("loss", bsz)?;
        let acc_train = be_ref.alloc("train metrics", 4)?;
        let acc_eval = be_ref.alloc("eval metrics", 4)?;
        let opt_step = match cfg.optimizer {
            Optimizer::Sgd => None,
            Optimizer::Adam => {
                let step = be_ref.alloc("adam step", 1)?;
                be_ref.write(step, &[state.map_or(0, |s| s.step as u32)])?;
                Some(step)
            }
        };
        let resident = |be: &mut dyn Backend, d: &Dataset| -> Result<Resident> {
            let data = be.dataset(d)?;
            let order = be.alloc("order", d.n)?;
            be.write(order, &(0..d.n as u32).collect::<Vec<_>>())?;
            Ok(Resident {
                data,
                len: shard.local_len(d.n, cfg.batch),
                eval: shard.eval_range(d.n, cfg.batch),
                order,
                cursor: be.alloc("cursor", 1)?,
            })
        };
        let train_res = resident(be_ref, train)?;
        let test_res = match test {
            Some(t) => Some(resident(be_ref, t)?),
            None => None,
        };
        let mut e = Engine {
            be,
            cfg: cfg.clone(),
            comm,
            shard,
            rows: bsz,
            split: None,
            grads: Vec::new(),
            grad_host: Vec::new(),
            comm_time: CommTime::default(),
            overlap: None,
            model_shapes: shapes,
            layers,
            params,
            x,
            y,
            acts,
            dacts,
            probs,
            loss,
            acc_train,
            acc_eval,
            train: train_res,
            test: test_res,
            step: ProgramId(0),
            eval_train: ProgramId(0),
            eval_test: None,
            opt_step,
            order_valid: false,
            forward_only: None,
            gradient: None,
        };
        let sched = match cfg.optimizer {
            Optimizer::Adam => {
                // Every update of the run, computed on the host once (see AdamParams::schedule).
                let steps = cfg.total_steps(train.n).max(1);
                // A schedule spans the configured epochs, whatever --max-steps stops at.
                let span = cfg.epochs * train.n.div_ceil(cfg.batch);
                let hp = cfg.adam(true);
                let table: Vec<f32> = (1..=steps)
                    .flat_map(|t| hp.schedule_at(t, cfg.lr_schedule.lr(cfg.lr, t, span)))
                    .collect();
                Some(e.be.upload_f32("adam schedule", &table)?)
            }
            Optimizer::Sgd => None,
        };
        for p in &e.params {
            let (wn, bn) = e.layers[p.layer].param_lens().expect("params");
            e.grads.extend([(p.bufs.dw, wn), (p.bufs.db, bn)]);
        }
        let grad: Vec<Op> = e.grad_pieces().into_iter().flat_map(|p| p.0).collect();
        let update = e.update_ops(sched);
        if e.shard.ranks > 1 {
            let g = e.be.prepare(&grad)?;
            let u = e.be.prepare(&update)?;
            e.split = Some((g, u));
        } else {
            e.step = e.be.prepare(&[grad, update].concat())?;
        }
        let ev = e.eval_ops(&e.train);
        e.eval_train = e.be.prepare(&ev)?;
        if let Some(t) = &e.test {
            let ev = e.eval_ops(t);
            e.eval_test = Some(e.be.prepare(&ev)?);
        }
        Ok(e)
    }

    fn io(&self, l: usize) -> Io {
        let below_relu = l > 0 && self.layers[l - 1].relu();
        Io {
            x: if l == 0 { self.x } else { self.acts[l - 1] },
            y: self.acts[l],
            dy: self.dacts[l],
            dx: (l > 0).then(|| self.dacts[l - 1]),
            mask: below_relu.then(|| self.acts[l - 1]),
            p: self.params.iter().find(|p| p.layer == l).map(|p| p.bufs),
        }
    }

    fn gather(&self, r: &Resident, len: usize) -> Op {
        Op::Gather {
            data: r.data,
            rows: self.rows,
            len,
            order: r.order,
            cursor: r.cursor,
            x: self.x,
            y: self.y,
        }
    }

    fn forward_ops(&self, ops: &mut Vec<Op>) {
        for l in 0..self.layers.len() {
            self.layers[l].forward(&self.io(l), ops);
        }
        ops.push(Op::SoftmaxXentForward {
            rows: self.rows,
            classes: self.classes(),
            logits: *self.acts.last().expect("a layer"),
            labels: self.y,
            probs: self.probs,
            loss: self.loss,
        });
    }

    fn metrics(&self, acc: BufId) -> Op {
        Op::Metrics {
            rows: self.rows,
            classes: self.classes(),
            probs: self.probs,
            labels: self.y,
            loss: self.loss,
            acc,
        }
    }

    /// Forward, loss and backward without gather or update.
    fn gradient_ops(&self, ops: &mut Vec<Op>) {
        self.loss_ops(ops);
        for l in (0..self.layers.len()).rev() {
            self.layers[l].backward(&self.io(l), ops);
        }
    }

    /// Forward, loss, metrics and the loss gradient.
    fn loss_ops(&self, ops: &mut Vec<Op>) {
        self.forward_ops(ops);
        ops.push(self.metrics(self.acc_train));
        ops.push(Op::SoftmaxXentBackward {
            rows: self.rows,
            classes: self.classes(),
            // The global batch: the ranks' gradients sum to the whole minibatch's mean.
            scale: 1.0 / self.cfg.batch as f32,
            probs: self.probs,
            labels: self.y,
            dlogits: *self.dacts.last().expect("a layer"),
        });
    }

    /// The gradient step (gather this rank's rows, forward, loss, metrics, backward, advance
    /// the cursor) cut after each parameterised layer's backward pass, top layer first: each
    /// piece with the gradient buffers it completes. One program of them all is the step's
    /// first half; [`Engine::overlap_communication`] prepares them one by one.
    fn grad_pieces(&self) -> Vec<(Vec<Op>, Bucket)> {
        let mut ops = vec![self.gather(&self.train, self.train.len)];
        self.loss_ops(&mut ops);
        let mut pieces = Vec::new();
        for l in (0..self.layers.len()).rev() {
            self.layers[l].backward(&self.io(l), &mut ops);
            if let Some(p) = self.params.iter().position(|p| p.layer == l) {
                pieces.push((
                    std::mem::take(&mut ops),
                    self.grads[2 * p..2 * p + 2].to_vec(),
                ));
            }
        }
        if !ops.is_empty() || pieces.is_empty() {
            pieces.push((ops, Vec::new()));
        }
        pieces.last_mut().expect("a piece").0.push(Op::Advance {
            cursor: self.train.cursor,
            by: self.rows,
        });
        pieces
    }

    /// Data-parallel: sum each layer's gradients on a communication thread while the backward
    /// pass of the layers below it runs (bucketed per layer, as PyTorch's DDP does), instead of
    /// summing all of them after the whole backward pass. A collective: every rank must call
    /// it. `Ok(false)` (and the step unchanged) where some rank cannot: its transport has no
    /// second thread (MPI without `MPI_THREAD_MULTIPLE`), or its engine cannot cut the step
    /// into pieces (the CPU engine fuses a convolution's forward and backward passes).
    pub fn overlap_communication(&mut self) -> Result<bool> {
        let Some((_, update)) = self.split else {
            return Ok(false);
        };
        let fork = self.comm.fork()?;
        let mut pieces = Vec::new();
        let mut ok = fork.is_some();
        for (ops, bucket) in self.grad_pieces() {
            match self.be.prepare(&ops) {
                Ok(p) => pieces.push((p, bucket)),
                Err(e) => {
                    log::info!("overlap: this rank's engine cannot cut the step: {e}");
                    ok = false;
                    break;
                }
            }
        }
        // Start the thread before the vote, so that a rank that cannot start one says so.
        let (to, inbox) = std::sync::mpsc::channel::<(usize, Vec<f32>)>();
        let (outbox, from) = std::sync::mpsc::channel();
        let thread = match fork.filter(|_| ok) {
            Some(comm) => std::thread::Builder::new()
                .name("gradient sums".into())
                .spawn(move || {
                    for (i, mut v) in inbox {
                        let r = comm.sum_f32(&mut v).map(|()| (i, v));
                        if outbox.send(r).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| log::info!("overlap: no communication thread: {e}"))
                .ok(),
            None => None,
        };
        if self.any_rank(thread.is_none())? {
            drop(to);
            if let Some(t) = thread {
                let _ = t.join();
            }
            return Ok(false);
        }
        let thread = thread.expect("voted");
        self.overlap = Some(Overlap {
            bufs: vec![Vec::new(); pieces.len()],
            pieces,
            update,
            to: Some(to),
            from,
            thread: Some(thread),
        });
        Ok(true)
    }

    /// One data-parallel step with [`Engine::overlap_communication`] on.
    fn overlapped_step(&mut self, ov: &mut Overlap) -> Result<()> {
        let mut read = 0.0;
        let mut sent = 0;
        for (i, (prog, bucket)) in ov.pieces.iter().enumerate() {
            self.be.run(*prog, 1)?;
            if bucket.is_empty() {
                continue;
            }
            let t = web_time::Instant::now();
            let mut host = std::mem::take(&mut ov.bufs[i]);
            host.resize(bucket.iter().map(|b| b.1).sum(), 0.0);
            self.be
                .read_into(bucket, bytemuck::cast_slice_mut(&mut host))?;
            read += t.elapsed().as_secs_f64();
            ov.to
                .as_ref()
                .expect("running")
                .send((i, host))
                .map_err(|_| Error::Collective("the communication thread stopped".into()))?;
            sent += 1;
        }
        let t1 = web_time::Instant::now();
        let mut write = 0.0;
        for _ in 0..sent {
            let (i, host) = ov
                .from
                .recv()
                .map_err(|_| Error::Collective("the communication thread stopped".into()))??;
            let t = web_time::Instant::now();
            let mut at = 0;
            for &(b, n) in &ov.pieces[i].1 {
                self.be.write_f32(b, &host[at..at + n])?;
                at += n;
            }
            write += t.elapsed().as_secs_f64();
            ov.bufs[i] = host;
        }
        let wait = t1.elapsed().as_secs_f64() - write;
        self.be.run(ov.update, 1)?;
        let c = &mut self.comm_time;
        c.steps += 1;
        c.read += read;
        c.sum += wait;
        c.write += write;
        Ok(())
    }

    /// The optimiser's update of every parameter from its gradient.
    fn update_ops(&self, sched: Option<BufId>) -> Vec<Op> {
        let mut ops = Vec::new();
        for p in &self.params {
            let lens = [
                self.layers[p.layer].param_lens().expect("params").0,
                self.layers[p.layer].param_lens().expect("params").1,
            ];
            let pairs = [
                (
                    p.bufs.w,
                    p.bufs.dw,
                    p.slots.iter().map(|s| s.0).collect::<Vec<_>>(),
                ),
                (p.bufs.b, p.bufs.db, p.slots.iter().map(|s| s.1).collect()),
            ];
            for (k, (w, g, slots)) in pairs.into_iter().enumerate() {
                let weight = k == 0;
                ops.push(match self.cfg.optimizer {
                    Optimizer::Sgd => Op::Sgd {
                        n: lens[k],
                        hp: self.cfg.sgd(weight),
                        w,
                        g,
                        v: slots[0],
                    },
                    Optimizer::Adam => Op::Adam {
                        n: lens[k],
                        hp: self.cfg.adam(weight),
                        w,
                        g,
                        m: slots[0],
                        v: slots[1],
                        sched: sched.expect("adam schedule"),
                        step: self.opt_step.expect("adam step"),
                    },
                });
            }
        }
        if let Some(step) = self.opt_step {
            ops.push(Op::Advance {
                cursor: step,
                by: 1,
            });
        }
        ops
    }

    fn eval_ops(&self, r: &Resident) -> Vec<Op> {
        let mut ops = vec![self.gather(r, r.eval.len())];
        self.forward_ops(&mut ops);
        ops.push(self.metrics(self.acc_eval));
        ops.push(Op::Advance {
            cursor: r.cursor,
            by: self.rows,
        });
        ops
    }

    fn classes(&self) -> usize {
        self.model_shapes.last().expect("output shape").len()
    }

    /// Human-readable device.
    pub fn device(&self) -> String {
        self.be.describe()
    }

    /// `gpu` or `cpu`.
    pub fn kind(&self) -> EngineKind {
        self.be.kind()
    }

    /// (adapter, graphics backend).
    pub fn adapter(&self) -> (String, String) {
        self.be.adapter()
    }

    /// Run `steps` steps over `order` starting at step `first` of the epoch. Metrics
    /// accumulate until [`Engine::take_train_metrics`].
    pub fn train_steps(&mut self, order: &[u32], first: usize, steps: usize) -> Result<()> {
        if first == 0 || !self.order_valid {
            // The only per-epoch upload: this epoch's order (this rank's share of it).
            if self.shard.ranks > 1 {
                let mine = self.shard.local_order(order, self.cfg.batch);
                self.be.write(self.train.order, &mine)?;
            } else {
                self.be.write(self.train.order, order)?;
            }
            self.order_valid = true;
        }
        self.be
            .write(self.train.cursor, &[(first * self.rows) as u32])?;
        self.run_steps(steps)
    }

    /// `steps` steps from the cursor as it stands: one program run in one process; gradient
    /// program, sum over the ranks and update program per step in data-parallel training.
    fn run_steps(&mut self, steps: usize) -> Result<()> {
        let Some((grad, update)) = self.split else {
            return self.be.run(self.step, steps);
        };
        if let Some(mut ov) = self.overlap.take() {
            let r = (0..steps).try_for_each(|_| self.overlapped_step(&mut ov));
            // After an error, sums may still be under way: the pieces are not reused.
            if r.is_ok() {
                self.overlap = Some(ov);
            }
            return r;
        }
        for _ in 0..steps {
            self.be.run(grad, 1)?;
            self.sum_gradients()?;
            self.be.run(update, 1)?;
        }
        Ok(())
    }

    /// Replace every gradient buffer by its sum over the ranks: one read of them all, one
    /// all-reduce, one write each.
    fn sum_gradients(&mut self) -> Result<()> {
        let t0 = web_time::Instant::now();
        let mut host = std::mem::take(&mut self.grad_host);
        host.resize(self.grads.iter().map(|g| g.1).sum(), 0);
        self.be.read_into(&self.grads, &mut host)?;
        let t1 = web_time::Instant::now();
        self.comm.sum_f32(bytemuck::cast_slice_mut(&mut host))?;
        let t2 = web_time::Instant::now();
        let mut at = 0;
        for &(b, n) in &self.grads {
            self.be.write(b, &host[at..at + n])?;
            at += n;
        }
        self.grad_host = host;
        let t = &mut self.comm_time;
        t.steps += 1;
        t.read += (t1 - t0).as_secs_f64();
        t.sum += (t2 - t1).as_secs_f64();
        t.write += t2.elapsed().as_secs_f64();
        Ok(())
    }

    /// Time spent moving gradients between the ranks so far (zero in one process).
    pub fn comm_time(&self) -> CommTime {
        self.comm_time
    }

    /// This rank (0 in one process).
    pub fn rank(&self) -> usize {
        self.shard.rank
    }

    /// Ranks training together (1 in one process).
    pub fn ranks(&self) -> usize {
        self.shard.ranks
    }

    /// Whether any rank says yes: a collective every rank must call at the same point.
    pub fn any_rank(&self, mine: bool) -> Result<bool> {
        crate::dist::any(self.comm.as_ref(), mine)
    }

    /// Data-parallel, once per epoch: compare every rank's replica (weights and optimiser
    /// state, by SHA-256) with rank 0's. Ranks of one kind of device stay bit-for-bit equal,
    /// as every rank applies the same update to the same sums; ranks on devices that round the
    /// update differently (one fusing `w − α·v` into an FMA, another not) drift apart by an
    /// ulp here and there. Then rank 0's replica is copied to every rank (a warning, once per
    /// run), so they never train different networks. A collective; nothing in one process.
    pub fn sync_replicas(&mut self, epoch: usize) -> Result<()> {
        if self.shard.ranks == 1 {
            return Ok(());
        }
        let mut bufs = Vec::new();
        for p in &self.params {
            let (wn, bn) = self.layers[p.layer].param_lens().expect("params");
            bufs.extend([(p.bufs.w, wn), (p.bufs.b, bn)]);
            for &(w, b) in &p.slots {
                bufs.extend([(w, wn), (b, bn)]);
            }
        }
        let mut words = vec![0; bufs.iter().map(|b| b.1).sum()];
        self.be.read_into(&bufs, &mut words)?;
        let digest = crate::dist::digest(bytemuck::cast_slice(&words));
        let differ = crate::dist::differing_ranks(self.comm.as_ref(), &digest)?;
        if differ.is_empty() {
            return Ok(());
        }
        if self.shard.rank == 0 && self.comm_time.resyncs == 0 {
            log::warn!(
                "after epoch {epoch} the replicas of rank(s) {differ:?} differ from rank 0's \
                 (their devices round the update differently); copying rank 0's weights and \
                 optimiser state to every rank after each epoch where they differ"
            );
        }
        self.comm
            .broadcast_f32(bytemuck::cast_slice_mut(&mut words))?;
        let mut at = 0;
        for &(b, n) in &bufs {
            self.be.write(b, &words[at..at + n])?;
            at += n;
        }
        self.comm_time.resyncs += 1;
        Ok(())
    }

    /// Metrics summed over the ranks.
    fn sum_metrics(&self, acc: MetricsAcc) -> Result<MetricsAcc> {
        if self.shard.ranks == 1 {
            return Ok(acc);
        }
        let mut v = [
            acc.loss_sum as f64,
            acc.correct as f64,
            acc.seen as f64,
            acc.nonfinite as f64,
        ];
        self.comm.sum_f64(&mut v)?;
        Ok(MetricsAcc {
            loss_sum: v[0] as f32,
            correct: v[1] as u32,
            seen: v[2] as u32,
            nonfinite: v[3] as u32,
        })
    }

    /// Run `steps` steps, `per_submit` per program run, restarting the data cursor at each
    /// (benchmarks).
    pub fn run_raw_steps(&mut self, steps: usize, per_submit: usize) -> Result<()> {
        let mut left = steps;
        while left > 0 {
            let n = per_submit.min(left);
            self.be.write(self.train.cursor, &[0])?;
            self.run_steps(n)?;
            left -= n;
        }
        Ok(())
    }

    /// The first `words` words of each buffer, concatenated; one wait, which in the browser
    /// yields to the page. Every read of the engine goes through here; the blocking methods
    /// ([`Engine::model`] beside [`Engine::model_async`], ...) wait for it natively.
    async fn read_async(&mut self, bufs: &[(BufId, usize)]) -> Result<Vec<u32>> {
        let mut out = vec![0; bufs.iter().map(|b| b.1).sum()];
        self.be.read_into_async(bufs, &mut out).await?;
        Ok(out)
    }

    async fn read_acc(&mut self, buf: BufId) -> Result<MetricsAcc> {
        let words = self.read_async(&[(buf, 4)]).await?;
        self.be.write(buf, &[0; 4])?;
        Ok(bytemuck::pod_read_unaligned(bytemuck::cast_slice(&words)))
    }

    /// Metrics accumulated since the last call (summed over the ranks), and reset them.
    pub fn take_train_metrics(&mut self) -> Result<MetricsAcc> {
        crate::util::wait_for("training metrics", self.take_train_metrics_async())
    }

    /// [`Engine::take_train_metrics`] without blocking the browser.
    pub async fn take_train_metrics_async(&mut self) -> Result<MetricsAcc> {
        let acc = self.read_acc(self.acc_train).await?;
        self.sum_metrics(acc)
    }

    /// Loss and accuracy over a whole dataset (forward only, in file order; each rank takes
    /// its part and the metrics are summed).
    pub fn evaluate(&mut self, which: Which) -> Result<MetricsAcc> {
        crate::util::wait_for("evaluation metrics", self.evaluate_async(which))
    }

    /// [`Engine::evaluate`] without blocking the browser.
    pub async fn evaluate_async(&mut self, which: Which) -> Result<MetricsAcc> {
        let (res, prog) = match which {
            Which::Train => {
                self.order_valid = false;
                (&self.train, self.eval_train)
            }
            Which::Test => match (&self.test, self.eval_test) {
                (Some(t), Some(p)) => (t, p),
                _ => {
                    return Err(Error::Unsupported {
                        what: "evaluating the test set".into(),
                        reason: "no test set was uploaded".into(),
                    })
                }
            },
        };
        let (order, cursor, part) = (res.order, res.cursor, res.eval.clone());
        if !part.is_empty() {
            let indices: Vec<u32> = (part.start as u32..part.end as u32).collect();
            self.be.write(order, &indices)?;
            self.be.write(cursor, &[0])?;
            self.be.run(prog, part.len().div_ceil(self.rows))?;
        }
        let acc = self.read_acc(self.acc_eval).await?;
        self.sum_metrics(acc)
    }

    /// The forward-only (`gradient` false) or forward + backward program on `x`/`y` as written,
    /// prepared on first use.
    fn on_demand(&mut self, gradient: bool) -> Result<ProgramId> {
        if let Some(p) = if gradient {
            self.gradient
        } else {
            self.forward_only
        } {
            return Ok(p);
        }
        let mut ops = Vec::new();
        if gradient {
            self.gradient_ops(&mut ops);
        } else {
            self.forward_ops(&mut ops);
        }
        let p = self.be.prepare(&ops)?;
        *(if gradient {
            &mut self.gradient
        } else {
            &mut self.forward_only
        }) = Some(p);
        Ok(p)
    }

    /// Rows of this rank's minibatch: the B of [`Engine::probabilities`]' input.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Class probabilities [B, classes] for `x` [B, input] (forward only; for `predict`).
    pub fn probabilities(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        crate::util::wait_for("probabilities", self.probabilities_async(x))
    }

    /// [`Engine::probabilities`] without blocking the browser.
    pub async fn probabilities_async(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        self.be.write_f32(self.x, x)?;
        let prog = self.on_demand(false)?;
        self.be.run(prog, 1)?;
        let words = self
            .read_async(&[(self.probs, self.rows * self.classes())])
            .await?;
        Ok(bytemuck::cast_slice(&words).to_vec())
    }

    /// Gradients of the mean batch loss at `x` [B, input] and `labels` \[B\], without updating
    /// (for tests), in file layout.
    pub fn gradients(&mut self, x: &[f32], labels: &[u32]) -> Result<Vec<Param>> {
        self.be.write_f32(self.x, x)?;
        self.be.write(self.y, labels)?;
        let prog = self.on_demand(true)?;
        self.be.run(prog, 1)?;
        self.take_train_metrics()?;
        let pairs: Vec<(BufId, BufId)> =
            self.params.iter().map(|p| (p.bufs.dw, p.bufs.db)).collect();
        self.read_params(&pairs)
    }

    fn read_params(&mut self, pairs: &[(BufId, BufId)]) -> Result<Vec<Param>> {
        crate::util::wait_for("parameters", self.read_params_async(pairs))
    }

    /// The (weight, bias) buffer pairs of every parameterised layer, in file layout: one read
    /// of them all.
    async fn read_params_async(&mut self, pairs: &[(BufId, BufId)]) -> Result<Vec<Param>> {
        let lens: Vec<(usize, usize)> = self
            .params
            .iter()
            .map(|p| self.layers[p.layer].param_lens().expect("params"))
            .collect();
        let bufs: Vec<(BufId, usize)> = pairs
            .iter()
            .zip(&lens)
            .flat_map(|(&(w, b), &(wn, bn))| [(w, wn), (b, bn)])
            .collect();
        let words = self.read_async(&bufs).await?;
        let all: &[f32] = bytemuck::cast_slice(&words);
        let mut out = Vec::with_capacity(pairs.len());
        let mut at = 0;
        for (p, &(wn, bn)) in self.params.iter().zip(&lens) {
            let wv = self.layers[p.layer].weight_from_engine(all[at..at + wn].to_vec());
            out.push(Param {
                weight: ArrayD::from_shape_vec(IxDyn(&p.shape), wv).expect("param shape"),
                bias: Array1::from(all[at + wn..at + wn + bn].to_vec()),
            });
            at += wn + bn;
        }
        Ok(out)
    }

    /// The current weights.
    pub fn model(&mut self) -> Result<Model> {
        crate::util::wait_for("weights", self.model_async())
    }

    /// [`Engine::model`] without blocking the browser.
    pub async fn model_async(&mut self) -> Result<Model> {
        let pairs: Vec<(BufId, BufId)> = self.params.iter().map(|p| (p.bufs.w, p.bufs.b)).collect();
        Ok(Model {
            arch: self.cfg.arch.clone(),
            params: self.read_params_async(&pairs).await?,
        })
    }

    /// The optimiser state (slots and update count).
    pub fn opt_state(&mut self) -> Result<OptState> {
        let names = slot_names(self.cfg.optimizer);
        let mut slots = Vec::new();
        for (s, name) in names.iter().enumerate() {
            let pairs: Vec<(BufId, BufId)> = self.params.iter().map(|p| p.slots[s]).collect();
            slots.push((name.to_string(), self.read_params(&pairs)?));
        }
        let step = match self.opt_step {
            Some(b) => self.be.read(b, 1)?[0] as u64,
            None => 0,
        };
        Ok(OptState { slots, step })
    }
}
