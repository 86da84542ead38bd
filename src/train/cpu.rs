//! The training engine on the CPU: the same step as the GPU engine, built from the CPU twins.

use super::{Engine, TrainConfig, Which};
use crate::cpu::mlp::{self, Layers};
use crate::cpu::{gather, metrics, sgd};
use crate::data::Dataset;
use crate::gpu::kernels::MetricsAcc;
use crate::model::{Dense, Mlp};
use crate::Result;

/// Trains an MLP with ndarray on the host.
pub struct CpuEngine {
    cfg: TrainConfig,
    params: Layers<f32>,
    velocity: Layers<f32>,
    train: Dataset,
    test: Option<Dataset>,
    acc: MetricsAcc,
}

impl CpuEngine {
    /// Start from `model` (and optional momentum buffers).
    pub fn new(
        cfg: &TrainConfig,
        model: &Mlp,
        velocity: Option<&[Dense]>,
        train: &Dataset,
        test: Option<&Dataset>,
    ) -> Self {
        let params = Layers::from_mlp(model);
        let velocity = match velocity {
            Some(v) => Layers {
                w: v.iter().map(|d| d.weight.clone()).collect(),
                b: v.iter().map(|d| d.bias.clone()).collect(),
            },
            None => params.zeros_like(),
        };
        CpuEngine {
            cfg: cfg.clone(),
            params,
            velocity,
            train: train.clone(),
            test: test.cloned(),
            acc: MetricsAcc::default(),
        }
    }
}

impl Engine for CpuEngine {
    fn device(&self) -> String {
        "cpu (ndarray)".into()
    }

    fn train_steps(&mut self, order: &[u32], first: usize, steps: usize) -> Result<()> {
        let b = self.cfg.batch;
        let d = &self.train;
        for s in first..first + steps {
            let (x, y) = gather::gather(&d.images, &d.labels, d.pixels(), order, s * b, b);
            let (loss, probs, grads) =
                mlp::loss_and_grads(&self.params, x.view(), y.view(), 1.0 / b as f32);
            metrics::accumulate_metrics(&mut self.acc, probs.view(), y.view(), loss.view());
            for l in 0..self.params.w.len() {
                sgd::sgd_update(
                    self.params.w[l].view_mut().into_dyn(),
                    grads.w[l].view().into_dyn(),
                    self.velocity.w[l].view_mut().into_dyn(),
                    self.cfg.sgd(true),
                );
                sgd::sgd_update(
                    self.params.b[l].view_mut().into_dyn(),
                    grads.b[l].view().into_dyn(),
                    self.velocity.b[l].view_mut().into_dyn(),
                    self.cfg.sgd(false),
                );
            }
        }
        Ok(())
    }

    fn take_train_metrics(&mut self) -> Result<MetricsAcc> {
        Ok(std::mem::take(&mut self.acc))
    }

    fn evaluate(&mut self, which: Which) -> Result<MetricsAcc> {
        let d = match which {
            Which::Train => &self.train,
            Which::Test => self.test.as_ref().unwrap_or(&self.train),
        };
        let b = self.cfg.batch;
        let order: Vec<u32> = (0..d.n as u32).collect();
        let mut acc = MetricsAcc::default();
        for start in (0..d.n).step_by(b) {
            let (x, y) = gather::gather(&d.images, &d.labels, d.pixels(), &order, start, b);
            let acts = mlp::forward(&self.params, x.view());
            let (probs, loss) = crate::cpu::softmax_xent::softmax_xent_forward(
                acts[acts.len() - 1].view(),
                y.view(),
            );
            metrics::accumulate_metrics(&mut acc, probs.view(), y.view(), loss.view());
        }
        Ok(acc)
    }

    fn model(&self) -> Result<Mlp> {
        Ok(to_mlp(&self.cfg, &self.params))
    }

    fn velocity(&self) -> Result<Vec<Dense>> {
        Ok(to_mlp(&self.cfg, &self.velocity).layers)
    }
}

fn to_mlp(cfg: &TrainConfig, p: &Layers<f32>) -> Mlp {
    Mlp {
        arch: cfg.arch.clone(),
        layers: p
            .w
            .iter()
            .zip(&p.b)
            .map(|(w, b)| Dense {
                weight: w.clone(),
                bias: b.clone(),
            })
            .collect(),
    }
}
