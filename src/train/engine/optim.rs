//! The optimiser's part of the engine: the state it keeps beside the weights ([`Slot`]s
//! shaped like the parameters, and Adam's update count), the check that resumed state is the
//! optimiser's, the per-update tables of a run (Adam's bias corrections, SGD's scheduled
//! learning rates, AdamW's decay factors), and the update program (SGD with momentum, Adam,
//! AdamW) of every parameter from its gradient.

use super::Engine;
use crate::backend::Backend;
use crate::error::Setting;
use crate::model::Param;
use crate::ops::{BufId, Op, StepTable};
use crate::train::{Optimizer, TrainConfig};
use crate::{Error, Result};

/// One optimiser state buffer, shaped like the parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// SGD's momentum buffer.
    Velocity,
    /// Adam's first moment (m).
    AdamM,
    /// Adam's second moment (v).
    AdamV,
}

impl Slot {
    /// Every slot.
    pub const ALL: [Slot; 3] = [Slot::Velocity, Slot::AdamM, Slot::AdamV];

    /// Its name in checkpoint files (`optimizer.{name}.{i}.weight|bias`) and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Velocity => "velocity",
            Slot::AdamM => "adam.m",
            Slot::AdamV => "adam.v",
        }
    }

    /// The slot a file names `name`, if any.
    pub fn from_name(name: &str) -> Option<Slot> {
        Slot::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Optimizer {
    /// The state slots it keeps, in order.
    pub fn slots(self) -> &'static [Slot] {
        match self {
            Optimizer::Sgd => &[Slot::Velocity],
            Optimizer::Adam | Optimizer::AdamW => &[Slot::AdamM, Slot::AdamV],
        }
    }
}

/// Optimiser state outside the weights: the optimiser's [`Slot`]s (SGD: velocity; Adam: m and
/// v), each shaped like the parameters, and the number of updates done.
#[derive(Clone, Debug, PartialEq)]
pub struct OptState {
    /// One [`Param`]-shaped tensor pair per parametrised layer for each slot, in the order of
    /// [`Optimizer::slots`].
    pub slots: Vec<(Slot, Vec<Param>)>,
    /// Optimiser updates done (Adam's t).
    pub step: u64,
}

impl OptState {
    /// Refuse state that is not `opt`'s slots in its order.
    pub(super) fn check(&self, opt: Optimizer) -> Result<()> {
        let slots: Vec<Slot> = self.slots.iter().map(|s| s.0).collect();
        if slots == opt.slots() {
            return Ok(());
        }
        Err(Error::InvalidSetting {
            setting: Setting::Optimizer,
            reason: format!(
                "{opt} needs optimiser state {:?} but the checkpoint holds {:?}",
                names(opt.slots()),
                names(&slots)
            ),
        })
    }
}

/// The file names of `slots`, for messages.
pub(crate) fn names(slots: &[Slot]) -> Vec<&'static str> {
    slots.iter().map(|s| s.name()).collect()
}

/// The update counter (u32, advanced once per step) of an optimiser that reads per-update
/// tables (Adam, AdamW, SGD with a schedule or warm-up), from the resumed `state`'s; none for
/// SGD at a fixed learning rate.
pub(super) fn step_counter(
    be: &mut dyn Backend,
    cfg: &TrainConfig,
    state: Option<&OptState>,
) -> Result<Option<BufId>> {
    if cfg.optimizer == Optimizer::Sgd && !cfg.scheduled() {
        return Ok(None);
    }
    let step = be.alloc("optimizer step", 1)?;
    be.write(step, &[state.map_or(0, |s| s.step as u32)])?;
    Ok(Some(step))
}

/// The per-update tables of a run, computed on the host once, entry t − 1 for update t.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Tables {
    /// Adam, AdamW: `AdamParams::schedule_at` pairs (the learning rate folded in).
    pub adam: Option<Vec<f32>>,
    /// SGD with a schedule or warm-up: the learning rate of each update.
    pub lr: Option<Vec<f32>>,
    /// AdamW with λ > 0: the decay factors 1 − α_t·λ (PyTorch's `1 - lr * weight_decay`).
    pub decay: Option<Vec<f32>>,
}

/// The tables of every update of the run over `train_len` samples.
pub(super) fn tables(cfg: &TrainConfig, train_len: usize) -> Tables {
    let steps = cfg.total_steps(train_len).max(1);
    // A schedule spans the configured epochs, whatever --max-steps stops at.
    let span = cfg.epochs * train_len.div_ceil(cfg.batch);
    let lr = |t| cfg.lr_at(t, span);
    let mut out = Tables::default();
    match cfg.optimizer {
        Optimizer::Adam | Optimizer::AdamW => {
            let hp = cfg.adam(true);
            out.adam = Some((1..=steps).flat_map(|t| hp.schedule_at(t, lr(t))).collect());
        }
        Optimizer::Sgd if cfg.scheduled() => {
            out.lr = Some((1..=steps).map(|t| lr(t) as f32).collect());
        }
        Optimizer::Sgd => {}
    }
    if cfg.optimizer == Optimizer::AdamW && cfg.weight_decay > 0.0 {
        let wd = cfg.weight_decay as f64;
        out.decay = Some((1..=steps).map(|t| (1.0 - lr(t) * wd) as f32).collect());
    }
    out
}

/// The uploaded [`Tables`].
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TableBufs {
    pub adam: Option<BufId>,
    pub lr: Option<BufId>,
    pub decay: Option<BufId>,
}

impl Tables {
    /// Upload the tables there are.
    pub(super) fn upload(&self, be: &mut dyn Backend) -> Result<TableBufs> {
        let mut up = |name, t: &Option<Vec<f32>>| -> Result<Option<BufId>> {
            t.as_ref().map(|t| be.upload_f32(name, t)).transpose()
        };
        Ok(TableBufs {
            adam: up("adam schedule", &self.adam)?,
            lr: up("lr schedule", &self.lr)?,
            decay: up("decay factors", &self.decay)?,
        })
    }
}

impl Engine {
    /// The optimiser's update of every parameter from its gradient.
    pub(super) fn update_ops(&self, tables: TableBufs) -> Vec<Op> {
        let table = |t: Option<BufId>| {
            t.map(|table| StepTable {
                table,
                step: self.opt_step.expect("a table has a step counter"),
            })
        };
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
                if self.cfg.decays(weight) {
                    if let Some(factors) = table(tables.decay) {
                        ops.push(Op::Decay {
                            n: lens[k],
                            w,
                            factors,
                        });
                    }
                }
                ops.push(match self.cfg.optimizer {
                    Optimizer::Sgd => Op::Sgd {
                        n: lens[k],
                        hp: self.cfg.sgd(weight),
                        w,
                        g,
                        v: slots[0],
                        lr_table: table(tables.lr),
                    },
                    Optimizer::Adam | Optimizer::AdamW => Op::Adam {
                        n: lens[k],
                        hp: self.cfg.adam(weight),
                        w,
                        g,
                        m: slots[0],
                        v: slots[1],
                        sched: tables.adam.expect("adam schedule"),
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

    /// The optimiser state (slots and update count).
    pub fn opt_state(&mut self) -> Result<OptState> {
        let mut slots = Vec::new();
        for (s, &slot) in self.cfg.optimizer.slots().iter().enumerate() {
            let pairs: Vec<(BufId, BufId)> = self.params.iter().map(|p| p.slots[s]).collect();
            slots.push((slot, self.read_params(&pairs)?));
        }
        let step = match self.opt_step {
            Some(b) => self.be.read(b, 1)?[0] as u64,
            None => 0,
        };
        Ok(OptState { slots, step })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_the_names_files_were_written_with() {
        // Checkpoints store `optimizer.{name}.{i}.weight|bias`: renaming a slot would orphan
        // every file written before.
        assert_eq!(names(&Slot::ALL), ["velocity", "adam.m", "adam.v"]);
        for s in Slot::ALL {
            assert_eq!(Slot::from_name(s.name()), Some(s));
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!(Slot::from_name("adam"), None);
        assert_eq!(names(Optimizer::Sgd.slots()), ["velocity"]);
        assert_eq!(names(Optimizer::Adam.slots()), ["adam.m", "adam.v"]);
        assert_eq!(names(Optimizer::AdamW.slots()), ["adam.m", "adam.v"]);
    }

    #[test]
    fn tables_hold_each_updates_rate_and_constant_sgd_has_none() {
        let mut cfg = TrainConfig::lecture(crate::model::Arch::parse("784-10").unwrap());
        cfg.epochs = 2;
        cfg.batch = 10;
        // SGD at a fixed rate: no table and no counter, the program of old.
        assert_eq!(tables(&cfg, 100), Tables::default());
        cfg.lr_schedule = crate::train::LrSchedule::Cosine;
        cfg.warmup = 3;
        let t = tables(&cfg, 100);
        let lr = t.lr.expect("a scheduled SGD's rates");
        assert_eq!(lr.len(), 20);
        for (i, &v) in lr.iter().enumerate() {
            assert_eq!(v, cfg.lr_at(i + 1, 20) as f32);
        }
        assert!(lr[0] < lr[2] && lr[2] > lr[19], "{lr:?}");
        assert!(t.adam.is_none() && t.decay.is_none());
        // AdamW: Adam's pairs and the decay factors 1 − α_t·λ; --max-steps shortens the table,
        // not the schedule's span.
        cfg.optimizer = Optimizer::AdamW;
        cfg.weight_decay = 0.1;
        cfg.max_steps = Some(5);
        let t = tables(&cfg, 100);
        let decay = t.decay.expect("AdamW's factors");
        assert_eq!(decay.len(), 5);
        for (i, &f) in decay.iter().enumerate() {
            assert_eq!(f, (1.0 - cfg.lr_at(i + 1, 20) * 0.1) as f32);
        }
        assert_eq!(t.adam.expect("Adam's pairs").len(), 10);
        assert!(t.lr.is_none());
        cfg.weight_decay = 0.0;
        assert!(tables(&cfg, 100).decay.is_none());
    }
}
