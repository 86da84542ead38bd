//! The training engine on the GPU. The datasets are uploaded once as bytes; per epoch only the
//! shuffled order is written; each step is a fixed list of prepared launches (gather, forward,
//! loss, backward, update, advance) replayed from one command buffer per chunk of steps, with
//! no readback. Loss and accuracy accumulate in a GPU buffer read once per epoch.

use super::{Engine, TrainConfig, Which};
use crate::data::Dataset;
use crate::gpu::kernels::{self, Epilogue, GpuDataset, MatmulSpec, MatmulTile, MetricsAcc};
use crate::gpu::{GpuContext, Launch};
use crate::model::{Dense, Mlp};
use crate::{Error, Result};
use ndarray::{Array1, Array2};
use wgpu::Buffer;

struct LayerBufs {
    w: Buffer,
    b: Buffer,
    vw: Buffer,
    vb: Buffer,
    dw: Buffer,
    db: Buffer,
    /// Layer output [B,O]: ReLU(x·Wᵀ + b), or the logits for the last layer.
    act: Buffer,
    /// Gradient of the loss w.r.t. the layer's pre-activation [B,O].
    dact: Buffer,
}

/// One resident dataset with its own order and cursor, and the launches that walk it.
struct Resident {
    data: GpuDataset,
    order: Buffer,
    cursor: Buffer,
    /// One launch per shard of the images.
    gather: Vec<Launch>,
    advance: Launch,
}

/// Trains an MLP entirely in GPU buffers.
pub struct GpuEngine {
    ctx: GpuContext,
    cfg: TrainConfig,
    layers: Vec<LayerBufs>,
    train: Resident,
    test: Option<Resident>,
    /// Everything between gather and advance: forward, loss, metrics, backward, update.
    forward: Vec<Launch>,
    train_tail: Vec<Launch>,
    /// Forward + metrics into the eval accumulator.
    eval_tail: Vec<Launch>,
    acc_train: Buffer,
    acc_eval: Buffer,
    /// False when `train.order` no longer holds the epoch's order (evaluation overwrote it).
    order_valid: bool,
    x: Buffer,
    y: Buffer,
}

fn resident(
    ctx: &GpuContext,
    d: &Dataset,
    batch: usize,
    x: &Buffer,
    y: &Buffer,
) -> Result<Resident> {
    let data = GpuDataset::upload(ctx, &d.images, &d.labels, d.pixels(), None)?;
    let order = ctx.upload("order", &(0..d.n as u32).collect::<Vec<_>>());
    let cursor = ctx.upload("cursor", &[0u32]);
    let gather = kernels::gather(ctx, batch, &data, &order, &cursor, x, y)?;
    let advance = kernels::advance(ctx, batch, &cursor)?;
    Ok(Resident {
        data,
        order,
        cursor,
        gather,
        advance,
    })
}

impl GpuEngine {
    /// Upload `model` (and optional momentum buffers), the datasets, and prepare every launch.
    pub fn new(
        ctx: GpuContext,
        cfg: &TrainConfig,
        model: &Mlp,
        velocity: Option<&[Dense]>,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Result<Self> {
        let bsz = cfg.batch;
        let arch = &model.arch;
        let widest = arch.sizes.iter().copied().max().unwrap_or(1);
        let biggest_w = (0..arch.n_layers())
            .map(|l| arch.layer(l).0 * arch.layer(l).1)
            .max()
            .unwrap_or(1);
        let need = (bsz * widest).max(biggest_w) as u64 * 4;
        ctx.check(
            &crate::gpu::context::Needs {
                max_buffer: need,
                max_binding: need,
            },
            "use a smaller --batch-size or narrower layers",
        )?;
        let x = ctx.storage("x", (bsz * arch.input() * 4) as u64);
        let y = ctx.storage("y", (bsz * 4) as u64);
        let mut layers = Vec::new();
        for (l, d) in model.layers.iter().enumerate() {
            let (_, o) = arch.layer(l);
            let (vw, vb) = match velocity {
                Some(v) => (
                    ctx.upload("vw", v[l].weight.as_slice().unwrap()),
                    ctx.upload("vb", v[l].bias.as_slice().unwrap()),
                ),
                None => (
                    ctx.upload("vw", &vec![0f32; d.weight.len()]),
                    ctx.upload("vb", &vec![0f32; d.bias.len()]),
                ),
            };
            layers.push(LayerBufs {
                w: ctx.upload("w", d.weight.as_standard_layout().as_slice().unwrap()),
                b: ctx.upload("b", d.bias.as_slice().unwrap()),
                vw,
                vb,
                dw: ctx.storage("dw", (d.weight.len() * 4) as u64),
                db: ctx.storage("db", (d.bias.len() * 4) as u64),
                act: ctx.storage("act", (bsz * o * 4) as u64),
                dact: ctx.storage("dact", (bsz * o * 4) as u64),
            });
        }
        let classes = arch.classes();
        let probs = ctx.storage("probs", (bsz * classes * 4) as u64);
        let loss = ctx.storage("loss", (bsz * 4) as u64);
        let acc_train = ctx.upload("acc_train", &[MetricsAcc::default()]);
        let acc_eval = ctx.upload("acc_eval", &[MetricsAcc::default()]);
        // Each product runs the variant autotuned for its shape on this adapter.
        let tile = |spec: &MatmulSpec| -> MatmulTile { crate::gpu::autotune::tile_for(&ctx, spec) };
        let n = layers.len();

        let mut forward = Vec::new();
        for l in 0..n {
            let (i, o) = arch.layer(l);
            let input = if l == 0 { &x } else { &layers[l - 1].act };
            let spec = MatmulSpec {
                trans_b: true,
                epilogue: if l + 1 == n {
                    Epilogue::Bias
                } else {
                    Epilogue::BiasRelu
                },
                ..MatmulSpec::new(bsz, o, i)
            };
            let lb = &layers[l];
            forward.push(kernels::matmul(
                &ctx,
                &spec,
                &tile(&spec),
                input,
                &lb.w,
                Some(&lb.b),
                &lb.act,
            )?);
        }
        let logits = &layers[n - 1].act;
        let softmax =
            || kernels::softmax_xent_forward(&ctx, bsz, classes, logits, &y, &probs, &loss);
        let metrics =
            |acc: &Buffer| kernels::accumulate_metrics(&ctx, bsz, classes, &probs, &y, &loss, acc);

        let mut train_tail = vec![softmax()?, metrics(&acc_train)?];
        train_tail.push(kernels::softmax_xent_backward(
            &ctx,
            bsz,
            classes,
            1.0 / bsz as f32,
            &probs,
            &y,
            &layers[n - 1].dact,
        )?);
        for l in (0..n).rev() {
            let (i, o) = arch.layer(l);
            let input = if l == 0 { &x } else { &layers[l - 1].act };
            let lb = &layers[l];
            // dW[O,I] = dYᵀ·X
            let dw = MatmulSpec {
                trans_a: true,
                ..MatmulSpec::new(o, i, bsz)
            };
            train_tail.push(kernels::matmul(
                &ctx,
                &dw,
                &tile(&dw),
                &lb.dact,
                input,
                None,
                &lb.dw,
            )?);
            train_tail.push(kernels::bias_backward(&ctx, bsz, o, &lb.dact, &lb.db)?);
            if l > 0 {
                // dX[B,I] = dY·W, masked by the ReLU of the layer below
                let dx = MatmulSpec {
                    epilogue: Epilogue::ReluMask,
                    ..MatmulSpec::new(bsz, i, o)
                };
                let below = &layers[l - 1];
                train_tail.push(kernels::matmul(
                    &ctx,
                    &dx,
                    &tile(&dx),
                    &lb.dact,
                    &lb.w,
                    Some(&below.act),
                    &below.dact,
                )?);
            }
        }
        for (l, lb) in layers.iter().enumerate() {
            let (i, o) = arch.layer(l);
            train_tail.push(kernels::sgd_update(
                &ctx,
                i * o,
                cfg.sgd(true),
                &lb.w,
                &lb.dw,
                &lb.vw,
            )?);
            train_tail.push(kernels::sgd_update(
                &ctx,
                o,
                cfg.sgd(false),
                &lb.b,
                &lb.db,
                &lb.vb,
            )?);
        }
        let eval_tail = vec![softmax()?, metrics(&acc_eval)?];

        let train_res = resident(&ctx, train, bsz, &x, &y)?;
        let test_res = match test {
            Some(t) => Some(resident(&ctx, t, bsz, &x, &y)?),
            None => None,
        };
        Ok(GpuEngine {
            ctx,
            cfg: cfg.clone(),
            layers,
            train: train_res,
            test: test_res,
            forward,
            train_tail,
            eval_tail,
            acc_train,
            acc_eval,
            order_valid: false,
            x,
            y,
        })
    }

    /// The context (adapter, limits).
    pub fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    fn step_launches(&self) -> Vec<&Launch> {
        let mut v: Vec<&Launch> = self.train.gather.iter().collect();
        v.extend(self.forward.iter());
        v.extend(self.train_tail.iter());
        v.push(&self.train.advance);
        v
    }

    /// Gradients of the mean batch loss for given inputs, without updating (for tests):
    /// runs gather-free forward + backward on `x` [B,I] and `labels` [B].
    pub fn gradients(&mut self, x: &[f32], labels: &[u32]) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        self.ctx
            .queue
            .write_buffer(&self.x, 0, bytemuck::cast_slice(x));
        self.ctx
            .queue
            .write_buffer(&self.y, 0, bytemuck::cast_slice(labels));
        let n_update = 2 * self.layers.len();
        let tail = &self.train_tail[..self.train_tail.len() - n_update];
        let mut v: Vec<&Launch> = self.forward.iter().collect();
        v.extend(tail.iter());
        self.ctx.submit(&v, 1)?;
        let mut out = Vec::new();
        for (l, lb) in self.layers.iter().enumerate() {
            let (i, o) = self.cfg.arch.layer(l);
            out.push((
                self.ctx.read("dw", &lb.dw, i * o)?,
                self.ctx.read("db", &lb.db, o)?,
            ));
        }
        Ok(out)
    }

    /// Time `steps` training steps recorded `per_submit` to a command buffer (benchmarks).
    pub fn run_raw_steps(&mut self, steps: usize, per_submit: usize) -> Result<()> {
        let launches = self.step_launches();
        let mut left = steps;
        while left > 0 {
            let n = per_submit.min(left);
            // Keep the cursor in range: restart the epoch when it would run off the end.
            self.ctx
                .queue
                .write_buffer(&self.train.cursor, 0, bytemuck::cast_slice(&[0u32]));
            self.ctx.submit(&launches, n)?;
            left -= n;
        }
        self.ctx.wait()
    }

    fn read_acc(&self, buf: &Buffer) -> Result<MetricsAcc> {
        let v: Vec<MetricsAcc> = self.ctx.read("metrics", buf, 1)?;
        self.ctx
            .queue
            .write_buffer(buf, 0, bytemuck::bytes_of(&MetricsAcc::default()));
        Ok(v[0])
    }
}

impl Engine for GpuEngine {
    fn device(&self) -> String {
        self.ctx.describe()
    }

    fn train_steps(&mut self, order: &[u32], first: usize, steps: usize) -> Result<()> {
        if first == 0 || !self.order_valid {
            // The only per-epoch upload: this epoch's order.
            self.ctx
                .queue
                .write_buffer(&self.train.order, 0, bytemuck::cast_slice(order));
            self.order_valid = true;
        }
        let start = (first * self.cfg.batch) as u32;
        self.ctx
            .queue
            .write_buffer(&self.train.cursor, 0, bytemuck::cast_slice(&[start]));
        let launches = self.step_launches();
        self.ctx.submit(&launches, steps)?;
        // Wait so progress reflects finished work and the queue does not grow without bound.
        self.ctx.wait()
    }

    fn take_train_metrics(&mut self) -> Result<MetricsAcc> {
        self.read_acc(&self.acc_train)
    }

    fn evaluate(&mut self, which: Which) -> Result<MetricsAcc> {
        if which == Which::Train {
            self.order_valid = false;
        }
        let res = match which {
            Which::Train => &self.train,
            Which::Test => self.test.as_ref().ok_or_else(|| Error::InvalidArg {
                name: "evaluate",
                reason: "no test set was uploaded".into(),
            })?,
        };
        // Evaluation walks the data in file order.
        let identity: Vec<u32> = (0..res.data.samples as u32).collect();
        self.ctx
            .queue
            .write_buffer(&res.order, 0, bytemuck::cast_slice(&identity));
        self.ctx
            .queue
            .write_buffer(&res.cursor, 0, bytemuck::cast_slice(&[0u32]));
        let mut v: Vec<&Launch> = res.gather.iter().collect();
        v.extend(self.forward.iter());
        v.extend(self.eval_tail.iter());
        v.push(&res.advance);
        let batches = res.data.samples.div_ceil(self.cfg.batch);
        self.ctx.submit(&v, batches)?;
        self.read_acc(&self.acc_eval)
    }

    fn model(&self) -> Result<Mlp> {
        let arch = self.cfg.arch.clone();
        let mut layers = Vec::new();
        for (l, lb) in self.layers.iter().enumerate() {
            let (i, o) = arch.layer(l);
            layers.push(Dense {
                weight: Array2::from_shape_vec((o, i), self.ctx.read("w", &lb.w, i * o)?)
                    .expect("shape"),
                bias: Array1::from(self.ctx.read::<f32>("b", &lb.b, o)?),
            });
        }
        Ok(Mlp { arch, layers })
    }

    fn velocity(&self) -> Result<Vec<Dense>> {
        let mut out = Vec::new();
        for (l, lb) in self.layers.iter().enumerate() {
            let (i, o) = self.cfg.arch.layer(l);
            out.push(Dense {
                weight: Array2::from_shape_vec((o, i), self.ctx.read("vw", &lb.vw, i * o)?)
                    .expect("shape"),
                bias: Array1::from(self.ctx.read::<f32>("vb", &lb.vb, o)?),
            });
        }
        Ok(out)
    }
}
