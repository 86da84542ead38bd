//! The training engine: one step, written once against a [`Backend`].
//!
//! At construction the network's layers are built, every buffer is allocated, the datasets are
//! made resident (bytes), and three programs are prepared: the training step (gather, forward,
//! loss, metrics, backward, update, advance) and an evaluation pass per dataset (gather,
//! forward, loss, metrics, advance). Per epoch only the shuffled order is written; steps run in
//! chunks (one command buffer each on the GPU) with no readback; metrics are read once per
//! epoch.
//!
//! The optimiser's state and update program are [`optim`]'s; the data-parallel step (gradients
//! summed over the ranks between a gradient and an update program) is [`dist`]'s.

use super::{Optimizer, TrainConfig, Which};
use crate::backend::{gpu::GpuBackend, Backend, EngineKind, ProgramId};
use crate::data::Dataset;
use crate::dist::{Collective, Shard, Solo};
use crate::error::Setting;
use crate::gpu::GpuContext;
use crate::model::{Model, Param, Shape};
use crate::nn::{self, Io, Layer, Mode, ParamBufs};
use crate::ops::{BufId, DataId, GatherAugment, GatherNormalize, MetricsAcc, Op};
use crate::{Error, Result};
use ndarray::{Array1, ArrayD, IxDyn};
use std::rc::Rc;

pub mod dist;
pub mod optim;

pub use dist::CommTime;
use dist::{Bucket, Overlap};
pub use optim::{OptState, Slot};

/// One resident dataset with its own order and cursor.
struct Resident {
    data: DataId,
    /// Samples in the dataset.
    n: usize,
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
    /// What each layer reads (a chain, except around residual blocks).
    wires: Vec<nn::residual::Wire>,
    /// Per activation (numbered as the shapes: 0 the input, l + 1 layer l's output) read by
    /// two layers: the buffer the reader whose backward pass runs second writes its gradient
    /// into before it is added to the activation's gradient.
    grad_scratch: Vec<Option<BufId>>,
    probs: BufId,
    loss: BufId,
    acc_train: BufId,
    acc_eval: BufId,
    train: Resident,
    test: Option<Resident>,
    step: ProgramId,
    eval_train: ProgramId,
    eval_test: Option<ProgramId>,
    /// The optimiser's update counter (u32; Adam, AdamW, SGD with a schedule), advanced once
    /// per step.
    opt_step: Option<BufId>,
    /// The training-step counter (u32) of layers that read it (dropout), advanced once per
    /// step when one does; [`Engine::set_step`] sets it.
    step_counter: BufId,
    /// The training gather's augmentation (None: off).
    augment: Option<GatherAugment>,
    /// False when `train.order` no longer holds the epoch's order (evaluation overwrote it).
    order_valid: bool,
    /// Forward only, and forward + backward, on `x`/`y` as written (prepared on first use).
    forward_only: Option<ProgramId>,
    gradient: Option<ProgramId>,
    /// Every gather's normalisation and its table on the host (None: off).
    normalize: Option<(GatherNormalize, Vec<f32>)>,
    /// Time spent in training steps so far (background tuning may take as much).
    trained: std::time::Duration,
    /// When the engine was ready to take its first step, since the process's clock started
    /// ([`crate::util::since_start`]).
    ready: std::time::Duration,
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
        // The data must fit the network before anything is allocated for either.
        super::check_data(&model.arch, train, "training")?;
        if let Some(t) = test {
            super::check_data(&model.arch, t, "test")?;
        }
        let augment = augment_geometry(cfg, train)?;
        // `auto` becomes the training set's values here, so checkpoints and model files hold
        // the numbers every later evaluation applies.
        let (resolved, norm_table) = resolve_normalize(cfg, train)?;
        let cfg = &resolved;
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
        let step_counter = be_ref.alloc("training step", 1)?;
        let mut layers = Vec::with_capacity(n);
        let mut acts = Vec::with_capacity(n);
        let mut dacts = Vec::with_capacity(n);
        let relus = nn::relu_flags(&arch.layers);
        let wires = nn::residual::wiring(&arch.layers).map_err(|(l, reason)| Error::Network {
            arch: arch.to_string(),
            reason: format!("layer {} `{}`: {reason}", l + 1, arch.layers[l]),
        })?;
        let mut param_index = 0;
        for (l, spec) in arch.layers.iter().enumerate() {
            let running = if spec.has_params() {
                param_index += 1;
                model.running.get(param_index - 1).and_then(Option::as_ref)
            } else {
                None
            };
            if running.is_some() && shard.ranks > 1 {
                return Err(Error::Unsupported {
                    what: format!("data-parallel training of {arch}"),
                    reason: format!(
                        "layer {} `{spec}` is a batch normalisation, whose statistics are not yet kept per rank; train it in one process",
                        l + 1
                    ),
                });
            }
            let build = nn::Build {
                input: shapes[wires[l].input],
                output: shapes[l + 1],
                batch: bsz,
                relu: relus[l],
                be: &mut *be_ref,
                index: l,
                seed: cfg.seed,
                row0: shard.rows(cfg.batch).start,
                step: step_counter,
                labels: y,
                classes: arch.classes(),
                running,
            };
            layers.push(nn::build(spec, build)?);
            acts.push(be_ref.alloc("activations", bsz * shapes[l + 1].len())?);
            dacts.push(be_ref.alloc("activation gradients", bsz * shapes[l + 1].len())?);
        }
        let mut grad_scratch = vec![None; n + 1];
        for (act, slot) in grad_scratch.iter_mut().enumerate().skip(1) {
            if readers(&wires, act).len() > 1 {
                *slot = Some(be_ref.alloc("activation gradient part", bsz * shapes[act].len())?);
            }
        }
        if let Some(st) = state {
            st.check(cfg.optimizer)?;
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
            for (s, slot) in cfg.optimizer.slots().iter().enumerate() {
                let name = slot.name();
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
        let opt_step = optim::step_counter(be_ref, cfg, state)?;
        let resident = |be: &mut dyn Backend, d: &Dataset| -> Result<Resident> {
            let data = be.dataset(d)?;
            let order = be.alloc("order", d.n)?;
            be.write(order, &(0..d.n as u32).collect::<Vec<_>>())?;
            Ok(Resident {
                data,
                n: d.n,
                len: shard.local_len(d.n, cfg.batch),
                eval: shard.eval_range(d.n, cfg.batch),
                order,
                cursor: be.alloc("cursor", 1)?,
            })
        };
        let normalize = match norm_table {
            Some((channels, t)) => Some((
                GatherNormalize {
                    channels,
                    table: be_ref.upload_f32("normalisation", &t)?,
                },
                t,
            )),
            None => None,
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
            wires,
            grad_scratch,
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
            step_counter,
            augment: augment.map(|(h, w, c)| GatherAugment {
                augment: cfg.augment,
                h,
                w,
                c,
                seed: crate::ops::fold_seed(cfg.seed),
                step: step_counter,
            }),
            order_valid: false,
            forward_only: None,
            gradient: None,
            normalize,
            trained: std::time::Duration::ZERO,
            ready: std::time::Duration::ZERO,
        };
        let tables = optim::tables(cfg, train.n).upload(&mut *e.be)?;
        for p in &e.params {
            let (wn, bn) = e.layers[p.layer].param_lens().expect("params");
            e.grads.extend([(p.bufs.dw, wn), (p.bufs.db, bn)]);
        }
        let grad: Vec<Op> = e.grad_pieces().into_iter().flat_map(|p| p.0).collect();
        let update = e.update_ops(tables);
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
        e.ready = crate::util::since_start();
        Ok(e)
    }

    /// Activation `act` (0: the input x; `j + 1`: layer `j`'s output).
    fn act(&self, act: usize) -> BufId {
        if act == 0 {
            self.x
        } else {
            self.acts[act - 1]
        }
    }

    /// Where layer `l` writes the gradient of activation `act` it reads (None for the input):
    /// the activation's gradient when `l` is its last reader (whose backward pass runs first),
    /// else the scratch buffer [`Engine::backward_ops`] then adds to it.
    fn grad_target(&self, l: usize, act: usize) -> Option<BufId> {
        if act == 0 {
            return None;
        }
        let last = readers(&self.wires, act).into_iter().max() == Some(l);
        Some(match self.grad_scratch[act] {
            Some(scratch) if !last => scratch,
            _ => self.dacts[act - 1],
        })
    }

    /// The ReLU mask of activation `act`: the activation itself when it ends in a ReLU.
    fn mask_of(&self, act: usize) -> Option<BufId> {
        (act > 0 && self.layers[act - 1].relu()).then(|| self.acts[act - 1])
    }

    /// Between chunks of training steps, `chunk` the time the last one took: background
    /// tuning on the GPU ([`GpuBackend::tune_pending`], when the backend was told to tune in
    /// the background) may run until it has taken as long as training has so far, so a cold
    /// run trains at least half the time while its products are tuned.
    pub fn tune_between_chunks(&mut self, chunk: std::time::Duration) -> Result<()> {
        if cfg!(target_arch = "wasm32") {
            // The page awaits `tune_between_chunks_async` with the device's time instead.
            return Ok(());
        }
        crate::util::wait_for("autotune", self.tune_between_chunks_async(chunk))
    }

    /// [`Engine::tune_between_chunks`] without blocking the browser.
    pub async fn tune_between_chunks_async(&mut self, chunk: std::time::Duration) -> Result<()> {
        self.trained += chunk;
        if let Some(g) = self.be.as_gpu() {
            if g.tuning_pending() {
                g.tune_pending_async(self.trained).await?;
            }
        }
        Ok(())
    }

    /// What background tuning did, on a GPU backend that tunes in the background and started
    /// a product on its default.
    pub fn tuning_report(&mut self) -> Option<crate::gpu::autotune::TuneReport> {
        let g = self.be.as_gpu()?;
        let r = g.tuning_report();
        (!r.products.is_empty()).then_some(r)
    }

    /// When the engine was ready for its first step: seconds since the process's clock started
    /// ([`crate::util::since_start`]; the CLI starts it first thing).
    pub fn ready_seconds(&self) -> f64 {
        self.ready.as_secs_f64()
    }

    fn io(&self, l: usize) -> Io {
        let w = self.wires[l];
        Io {
            x: self.act(w.input),
            y: self.acts[l],
            dy: self.dacts[l],
            dx: self.grad_target(l, w.input),
            mask: self.mask_of(w.input),
            p: self.params.iter().find(|p| p.layer == l).map(|p| p.bufs),
            skip: w.skip.map(|s| nn::Skip {
                x: self.act(s),
                dx: self.grad_target(l, s),
                mask: self.mask_of(s),
            }),
        }
    }

    /// Layer `l`'s backward pass, then for each activation it read into a scratch buffer
    /// (not its last reader) that part added to the activation's gradient.
    fn backward_ops(&self, l: usize, ops: &mut Vec<Op>) {
        self.layers[l].backward(&self.io(l), ops);
        let w = self.wires[l];
        for act in [Some(w.input), w.skip].into_iter().flatten() {
            let Some(part) = self.grad_scratch.get(act).copied().flatten() else {
                continue;
            };
            if self.grad_target(l, act) == Some(part) {
                ops.push(Op::AddBackward {
                    len: self.rows * self.model_shapes[act].len(),
                    accumulate: true,
                    dy: part,
                    mask: None,
                    dx: self.dacts[act - 1],
                });
            }
        }
    }

    /// The gather of `r`'s minibatch; `augment` only in training.
    fn gather(&self, r: &Resident, len: usize, augment: bool) -> Op {
        Op::Gather {
            data: r.data,
            rows: self.rows,
            len,
            order: r.order,
            cursor: r.cursor,
            x: self.x,
            y: self.y,
            augment: if augment { self.augment } else { None },
            normalize: self.normalize.as_ref().map(|n| n.0),
        }
    }

    /// Whether something reads the training-step counter (dropout, augmentation).
    fn uses_step(&self) -> bool {
        self.augment.is_some() || self.layers.iter().any(|l| l.uses_step())
    }

    fn forward_ops(&self, mode: Mode, ops: &mut Vec<Op>) {
        for l in 0..self.layers.len() {
            self.layers[l].forward(&self.io(l), mode, ops);
        }
        ops.push(Op::SoftmaxXentForward {
            rows: self.rows,
            classes: self.classes(),
            logits: *self.acts.last().expect("a layer"),
            labels: self.y,
            probs: self.probs,
            loss: self.loss,
            // Training reports the smoothed loss (PyTorch's, as the criterion it minimises);
            // evaluation plain cross-entropy.
            smoothing: if mode == Mode::Train {
                self.cfg.label_smoothing
            } else {
                0.0
            },
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
            self.backward_ops(l, ops);
        }
    }

    /// Forward, loss, metrics and the loss gradient.
    fn loss_ops(&self, ops: &mut Vec<Op>) {
        self.forward_ops(Mode::Train, ops);
        ops.push(self.metrics(self.acc_train));
        ops.push(Op::SoftmaxXentBackward {
            rows: self.rows,
            classes: self.classes(),
            // The global batch: the ranks' gradients sum to the whole minibatch's mean.
            scale: 1.0 / self.cfg.batch as f32,
            probs: self.probs,
            labels: self.y,
            dlogits: *self.dacts.last().expect("a layer"),
            smoothing: self.cfg.label_smoothing,
        });
    }

    /// The gradient step (gather this rank's rows, forward, loss, metrics, backward, advance
    /// the cursor) cut after each parameterised layer's backward pass, top layer first: each
    /// piece with the gradient buffers it completes. One program of them all is the step's
    /// first half; [`Engine::overlap_communication`] prepares them one by one.
    fn grad_pieces(&self) -> Vec<(Vec<Op>, Bucket)> {
        let mut ops = vec![self.gather(&self.train, self.train.len, true)];
        self.loss_ops(&mut ops);
        let mut pieces = Vec::new();
        for l in (0..self.layers.len()).rev() {
            self.backward_ops(l, &mut ops);
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
        let last = &mut pieces.last_mut().expect("a piece").0;
        last.push(Op::Advance {
            cursor: self.train.cursor,
            by: self.rows,
        });
        if self.uses_step() {
            last.push(Op::Advance {
                cursor: self.step_counter,
                by: 1,
            });
        }
        pieces
    }

    fn eval_ops(&self, r: &Resident) -> Vec<Op> {
        let mut ops = vec![self.gather(r, r.eval.len(), false)];
        self.forward_ops(Mode::Eval, &mut ops);
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

    /// Set the training-step counter (steps done in the whole run) that seeds per-step
    /// randomness (dropout masks, augmentation): the run's driver sets it before each chunk of steps, so a
    /// resumed run draws the masks an unbroken one would. A no-op for a network without such
    /// a layer.
    pub fn set_step(&mut self, step: usize) -> Result<()> {
        if self.uses_step() {
            self.be.write(self.step_counter, &[step as u32])?;
        }
        // SGD's update counter (present with a schedule or warm-up) is the run's step count
        // too; a checkpoint of a constant-rate SGD run holds none (0), so a schedule added when
        // resuming it would otherwise restart at its first update.
        if let (Some(counter), Optimizer::Sgd) = (self.opt_step, self.cfg.optimizer) {
            self.be.write(counter, &[step as u32])?;
        }
        Ok(())
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
        match self.split {
            Some(programs) => self.run_split_steps(programs, steps),
            None => self.be.run(self.step, steps),
        }
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
            self.forward_ops(Mode::Eval, &mut ops);
        }
        let p = self.be.prepare(&ops)?;
        *(if gradient {
            &mut self.gradient
        } else {
            &mut self.forward_only
        }) = Some(p);
        Ok(p)
    }

    /// The run's settings, as the engine was built with them.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Samples in the training set (all of them, on every rank).
    pub fn train_len(&self) -> usize {
        self.train.n
    }

    /// Samples in the test set (all of them, on every rank); 0 without one.
    pub fn test_len(&self) -> usize {
        self.test.as_ref().map_or(0, |t| t.n)
    }

    /// Rows of this rank's minibatch: the B of [`Engine::probabilities`]' input.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The minibatch the last gather wrote: x \[B, input\] (channels last, augmented in
    /// training) and the labels \[B\] (for tests: what a step or an evaluation saw).
    pub fn last_batch(&mut self) -> Result<(Vec<f32>, Vec<u32>)> {
        let xn = self.rows * self.model_shapes[0].len();
        let words = crate::util::wait_for(
            "the last minibatch",
            self.read_async(&[(self.x, xn), (self.y, self.rows)]),
        )?;
        let (x, y) = words.split_at(xn);
        Ok((bytemuck::cast_slice(x).to_vec(), y.to_vec()))
    }

    /// Class probabilities [B, classes] for `x` [B, input] (forward only; for `predict`).
    pub fn probabilities(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        crate::util::wait_for("probabilities", self.probabilities_async(x))
    }

    /// [`Engine::probabilities`] without blocking the browser.
    pub async fn probabilities_async(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        match &self.normalize {
            Some((_, t)) => {
                let c = t.len() / 2;
                let xn: Vec<f32> = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| crate::ops::normalized(v, t[i % c], t[c + i % c]))
                    .collect();
                self.be.write_f32(self.x, &xn)?;
            }
            None => self.be.write_f32(self.x, x)?,
        }
        let prog = self.on_demand(false)?;
        self.be.run(prog, 1)?;
        let words = self
            .read_async(&[(self.probs, self.rows * self.classes())])
            .await?;
        Ok(bytemuck::cast_slice(&words).to_vec())
    }

    /// Gradients of the mean batch loss at `x` [B, input] and `labels` \[B\], without updating
    /// (for tests), in file layout. The layers run in training mode at the step counter as it
    /// stands (dropout's mask of that step; batch statistics, and a BatchNorm's running
    /// statistics move as in a step).
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
        let params = self.read_params_async(&pairs).await?;
        let states: Vec<(BufId, usize)> = self
            .params
            .iter()
            .filter_map(|p| self.layers[p.layer].state())
            .collect();
        let words = self.read_async(&states).await?;
        let words: &[f32] = bytemuck::cast_slice(&words);
        let mut at = 0;
        let running = self
            .params
            .iter()
            .map(|p| {
                self.layers[p.layer].state().map(|(_, n)| {
                    at += n;
                    crate::model::Running::from_words(&words[at - n..at])
                })
            })
            .collect();
        Ok(Model::with_running(self.cfg.arch.clone(), params, running))
    }
}

/// The layers that read activation `act` (numbered as the shapes), in order.
fn readers(wires: &[nn::residual::Wire], act: usize) -> Vec<usize> {
    wires
        .iter()
        .enumerate()
        .filter(|(_, w)| w.input == act || w.skip == Some(act))
        .map(|(l, _)| l)
        .collect()
}

/// The gather's normalisation: (channels, its table), None when off.
type NormTable = Option<(usize, Vec<f32>)>;

/// `cfg` with its normalisation resolved (`auto`: the values of `train`), and the gather's
/// (channels, table) when it normalises; [`Error::InvalidSetting`] ([`Setting::Normalize`])
/// for values that do not fit the input's channels or a constant channel under `auto`.
fn resolve_normalize(cfg: &TrainConfig, train: &Dataset) -> Result<(TrainConfig, NormTable)> {
    let mut cfg = cfg.clone();
    let channels = match crate::data::SampleShape::from(cfg.arch.input) {
        crate::data::SampleShape::Image { c, .. } => c,
        crate::data::SampleShape::Flat(_) => 1,
    };
    let bad = |r: String| Error::setting(Setting::Normalize, r);
    if cfg.normalize == crate::ops::Normalize::Auto {
        cfg.normalize =
            crate::ops::Normalize::auto(&train.features, train.kind, channels).map_err(bad)?;
    }
    let table = cfg.normalize.table(channels).map_err(bad)?;
    Ok((cfg, table.map(|t| (channels, t))))
}

/// The training images' (H, W, C) when `cfg` augments them (None when it does not);
/// [`Error::InvalidSetting`] ([`Setting::Augment`]) when the samples are flat features.
fn augment_geometry(cfg: &TrainConfig, train: &Dataset) -> Result<Option<(usize, usize, usize)>> {
    if cfg.augment.is_off() {
        return Ok(None);
    }
    let image = match (train.shape, crate::data::SampleShape::from(cfg.arch.input)) {
        (crate::data::SampleShape::Image { c, h, w }, _)
        | (_, crate::data::SampleShape::Image { c, h, w }) => Some((h, w, c)),
        _ => None,
    };
    image.map(Some).ok_or_else(|| {
        Error::setting(
            Setting::Augment,
            format!(
                "{} crops and flips images, but the samples are {} flat features with no rows or columns",
                cfg.augment, train.shape
            ),
        )
    })
}
