//! The optimiser's part of the engine: the state it keeps beside the weights ([`Slot`]s
//! shaped like the parameters, and Adam's update count), the check that resumed state is the
//! optimiser's, Adam's schedule table, and the update program (SGD with momentum or Adam) of
//! every parameter from its gradient.

use super::Engine;
use crate::backend::Backend;
use crate::error::Setting;
use crate::model::Param;
use crate::ops::{BufId, Op};
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
            Optimizer::Adam => &[Slot::AdamM, Slot::AdamV],
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

/// Adam's update counter (u32, advanced once per step), from the resumed `state`'s; none for
/// SGD.
pub(super) fn step_counter(
    be: &mut dyn Backend,
    opt: Optimizer,
    state: Option<&OptState>,
) -> Result<Option<BufId>> {
    Ok(match opt {
        Optimizer::Sgd => None,
        Optimizer::Adam => {
            let step = be.alloc("adam step", 1)?;
            be.write(step, &[state.map_or(0, |s| s.step as u32)])?;
            Some(step)
        }
    })
}

/// Adam: every update of the run over `train_len` samples, computed on the host once (see
/// `AdamParams::schedule_at`); none for SGD.
pub(super) fn schedule(cfg: &TrainConfig, train_len: usize) -> Option<Vec<f32>> {
    match cfg.optimizer {
        Optimizer::Adam => {
            let steps = cfg.total_steps(train_len).max(1);
            // A schedule spans the configured epochs, whatever --max-steps stops at.
            let span = cfg.epochs * train_len.div_ceil(cfg.batch);
            let hp = cfg.adam(true);
            Some(
                (1..=steps)
                    .flat_map(|t| hp.schedule_at(t, cfg.lr_schedule.lr(cfg.lr, t, span)))
                    .collect(),
            )
        }
        Optimizer::Sgd => None,
    }
}

impl Engine {
    /// The optimiser's update of every parameter from its gradient.
    pub(super) fn update_ops(&self, sched: Option<BufId>) -> Vec<Op> {
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
    }
}
