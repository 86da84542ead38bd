//! The ops rows: every distinct op of the presets' programs, read from the programs the
//! training engine prepares, each timed as a one-op program on the GPU backend and on the CPU
//! engine.

use super::{sample, BenchOpts, Record, Sample};
use crate::backend::gpu::GpuBackend;
use crate::backend::{Backend, EngineKind, ProgramId};
use crate::data::Dataset;
use crate::gpu::GpuContext;
use crate::model::Preset;
use crate::ops::{BufId, DataId, Op};
use crate::train::{Engine, TrainConfig};
use crate::Result;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A backend's state under [`OpByOp`]: the programs the engine prepared, as their ops, and the
/// one-op programs prepared on the backend so far.
struct Shared {
    be: Box<dyn Backend>,
    /// Words of every buffer allocated.
    words: HashMap<BufId, usize>,
    programs: Vec<Vec<Op>>,
    /// The programs run, with their repeats, in order.
    ran: Vec<(usize, usize)>,
    one_op: Vec<(Op, ProgramId)>,
}

impl Shared {
    /// The one-op program of `op` on the backend, prepared on first use.
    fn one_op(&mut self, op: &Op) -> Result<ProgramId> {
        if let Some((_, p)) = self.one_op.iter().find(|(o, _)| o == op) {
            return Ok(*p);
        }
        let p = self.be.prepare(std::slice::from_ref(op))?;
        self.one_op.push((*op, p));
        Ok(p)
    }
}

/// A backend over another that keeps every program prepared through it as its ops and runs
/// each op as a one-op program of its own (so the CPU engine fuses nothing, and the programs
/// timed are the ones that filled the buffers).
struct OpByOp(Rc<RefCell<Shared>>);

impl Backend for OpByOp {
    fn describe(&self) -> String {
        self.0.borrow().be.describe()
    }
    fn kind(&self) -> EngineKind {
        self.0.borrow().be.kind()
    }
    fn adapter(&self) -> (String, String) {
        self.0.borrow().be.adapter()
    }
    fn alloc(&mut self, label: &str, words: usize) -> Result<BufId> {
        let mut s = self.0.borrow_mut();
        let b = s.be.alloc(label, words)?;
        s.words.insert(b, words);
        Ok(b)
    }
    fn write(&mut self, buf: BufId, data: &[u32]) -> Result<()> {
        self.0.borrow_mut().be.write(buf, data)
    }
    fn read(&mut self, buf: BufId, words: usize) -> Result<Vec<u32>> {
        self.0.borrow_mut().be.read(buf, words)
    }
    fn read_into(&mut self, bufs: &[(BufId, usize)], out: &mut [u32]) -> Result<()> {
        self.0.borrow_mut().be.read_into(bufs, out)
    }
    fn dataset(&mut self, d: &Dataset) -> Result<DataId> {
        self.0.borrow_mut().be.dataset(d)
    }
    fn prepare(&mut self, ops: &[Op]) -> Result<ProgramId> {
        let mut s = self.0.borrow_mut();
        s.programs.push(ops.to_vec());
        Ok(ProgramId(s.programs.len() - 1))
    }
    fn run(&mut self, program: ProgramId, repeat: usize) -> Result<()> {
        let mut s = self.0.borrow_mut();
        s.ran.push((program.0, repeat));
        let ops = s.programs[program.0].clone();
        for _ in 0..repeat {
            for op in &ops {
                let p = s.one_op(op)?;
                s.be.run(p, 1)?;
            }
        }
        Ok(())
    }
}

/// A preset's training engine built on one backend: its programs, the ops of one training
/// step, and the backend holding the buffers that step filled.
pub(super) struct Recorded {
    shared: Rc<RefCell<Shared>>,
    /// The ops of one training step, in order (the programs `run_raw_steps(1, 1)` ran).
    pub step: Vec<Op>,
}

impl Recorded {
    /// Build `cfg`'s engine on `be` over `data` and run one training step, op by op.
    pub fn new(be: Box<dyn Backend>, cfg: &TrainConfig, data: &Dataset) -> Result<Self> {
        let shared = Rc::new(RefCell::new(Shared {
            be,
            words: HashMap::new(),
            programs: Vec::new(),
            ran: Vec::new(),
            one_op: Vec::new(),
        }));
        let model = cfg.init_model();
        let mut engine = Engine::new(
            Box::new(OpByOp(Rc::clone(&shared))),
            cfg,
            &model,
            None,
            data,
            None,
        )?;
        engine.run_raw_steps(1, 1)?;
        let step = {
            let s = shared.borrow();
            s.ran
                .iter()
                .flat_map(|&(p, r)| std::iter::repeat_n(&s.programs[p], r).flatten())
                .copied()
                .collect()
        };
        Ok(Recorded { shared, step })
    }

    /// Every op of every program the engine prepared, in program order.
    pub fn ops(&self) -> Vec<Op> {
        self.shared.borrow().programs.concat()
    }

    /// Bytes of the buffers `op` reads and writes, each counted once.
    pub fn bytes(&self, op: &Op) -> f64 {
        let (mut bufs, writes) = op.buffers();
        bufs.extend(writes);
        bufs.sort_by_key(|b| b.0);
        bufs.dedup();
        let s = self.shared.borrow();
        4.0 * bufs.iter().map(|b| s.words[b]).sum::<usize>() as f64
    }

    /// `op` as a one-op program, timed (see [`time_program`]).
    pub fn time(&self, op: &Op, opts: &BenchOpts, target_s: f64) -> Result<Sample> {
        let mut s = self.shared.borrow_mut();
        let p = s.one_op(op)?;
        time_program(s.be.as_mut(), p, opts.repeats(), target_s)
    }
}

/// Median seconds per run of `program` on `be`: one run to warm up (the first may compile),
/// then [`sample`]s of [`Backend::run_timed`] (`inner` runs are one submission on the GPU).
pub(super) fn time_program(
    be: &mut dyn Backend,
    program: ProgramId,
    repeats: usize,
    target_s: f64,
) -> Result<Sample> {
    be.run(program, 1)?;
    sample(repeats, target_s, |inner| be.run_timed(program, inner))
}

/// What the ops rows found about one preset's training step, for the training rows.
#[derive(Clone, Debug)]
pub(super) struct StepOps {
    /// The preset.
    pub preset: Preset,
    /// Σ 2·M·N·K over the step's products.
    pub flops: f64,
    /// Seconds of the step's products run one by one (GPU, CPU engine; NaN where unmeasured).
    pub matmul_secs: (f64, f64),
    /// Seconds of all the step's ops run one by one.
    pub op_secs: (f64, f64),
}

/// The ops rows, and per preset what its step's ops cost one by one, on the adapter of `ctx`
/// (a device of its own per preset) and the CPU engine.
pub(super) fn op_records(
    ctx: &GpuContext,
    opts: &BenchOpts,
    data: &[Dataset],
) -> Result<(Vec<Record>, Vec<StepOps>)> {
    let mut rows: Vec<Record> = Vec::new();
    // (name, shape) of each row, GPU and CPU seconds.
    let mut seen: Vec<((&'static str, String), f64, f64)> = Vec::new();
    let mut steps = Vec::new();
    // Every preset, on the synthetic set of its input shape.
    for preset in Preset::ALL {
        let data = super::data_for(data, preset);
        let mut cfg = TrainConfig::preset(preset);
        cfg.batch = 100;
        let gpu = GpuBackend::new(GpuContext::from_adapter(ctx.adapter.clone())?);
        let on_gpu = Recorded::new(Box::new(gpu), &cfg, data)?;
        let on_cpu = if opts.cpu {
            Some(Recorded::new(
                Box::new(crate::backend::cpu::CpuBackend::new()),
                &cfg,
                data,
            )?)
        } else {
            None
        };
        let (ops, cpu_ops) = (on_gpu.ops(), on_cpu.as_ref().map(Recorded::ops));
        for op in &ops {
            let key = (op.name(), op.shape());
            if let Some(at) = seen.iter().position(|(k, ..)| *k == key) {
                let note = &mut rows[at].note;
                if !note.split(", ").any(|p| p == preset.name()) {
                    *note += &format!(", {preset}");
                }
                continue;
            }
            let mut r = Record::new(ctx, key.0, key.1.clone());
            r.note = preset.name().to_string();
            let flops = match op {
                Op::Matmul { spec, .. } => Some(spec.flops()),
                _ => None,
            };
            let bytes = on_gpu.bytes(op);
            let target = if flops.is_some() { 0.02 } else { 0.01 };
            let g = on_gpu.time(op, opts, target)?;
            r.median_ms = g.secs * 1e3;
            r.timing = g.describe();
            if let Op::Matmul { spec, .. } = op {
                r.variant = super::matmul::autotuned_label(ctx, spec);
            }
            let mut c_secs = f64::NAN;
            let cpu_op = cpu_ops
                .iter()
                .flatten()
                .find(|o| (o.name(), o.shape()) == key);
            if let (Some(cpu), Some(cop)) = (&on_cpu, cpu_op) {
                let c = cpu.time(cop, opts, target)?;
                c_secs = c.secs;
                r.cpu_median_ms = Some(c.secs * 1e3);
            }
            match flops {
                Some(f) => super::set_flops(&mut r, f),
                None => super::set_bytes(&mut r, bytes),
            }
            seen.push((key, g.secs, c_secs));
            rows.push(r);
        }
        let mut s = StepOps {
            preset,
            flops: 0.0,
            matmul_secs: (0.0, 0.0),
            op_secs: (0.0, 0.0),
        };
        let (mut mg, mut mc, mut og, mut oc) = (0.0, 0.0, 0.0, 0.0);
        for op in &on_gpu.step {
            let key = (op.name(), op.shape());
            let (_, g, c) = seen.iter().find(|(k, ..)| *k == key).expect("timed above");
            if let Op::Matmul { spec, .. } = op {
                s.flops += spec.flops();
                mg += g;
                mc += c;
            }
            og += g;
            oc += c;
        }
        s.matmul_secs = (mg, mc);
        s.op_secs = (og, oc);
        steps.push(s);
    }
    Ok((rows, steps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    #[test]
    fn one_recorded_step_runs_every_product_once_and_each_op_runs_alone() {
        let data = crate::bench::synthetic(300);
        let cfg = TrainConfig::preset(Preset::SeedSmall);
        let rec = Recorded::new(Box::new(CpuBackend::new()), &cfg, &data).unwrap();
        // 784-10-10-10 at batch 100: the forward product and the weight gradient of every
        // layer, the input gradient of all but the first: 2·B·I·O FLOPs each.
        let io = [784.0 * 10.0, 10.0 * 10.0, 10.0 * 10.0];
        let want = 2.0 * 100.0 * (2.0 * io.iter().sum::<f64>() + io[1] + io[2]);
        let flops: f64 = rec
            .step
            .iter()
            .filter_map(|op| match op {
                Op::Matmul { spec, .. } => Some(spec.flops()),
                _ => None,
            })
            .sum();
        assert_eq!(flops, want);
        let names: Vec<&str> = rec.step.iter().map(Op::name).collect();
        for n in [
            "gather",
            "softmax_xent_backward",
            "bias_backward",
            "sgd",
            "advance",
        ] {
            assert!(names.contains(&n), "{n} missing from the step {names:?}");
        }
        let opts = BenchOpts {
            repeats: 1,
            ..BenchOpts::default()
        };
        for op in rec.ops() {
            let s = rec.time(&op, &opts, 1e-4).unwrap();
            assert!(s.secs.is_finite() && s.secs > 0.0, "{op:?}: {s:?}");
            assert!(rec.bytes(&op) >= 4.0, "{op:?}");
        }
    }

    #[test]
    fn a_layer_type_in_no_bench_list_gets_rows_from_its_program() {
        // Average and global pooling appear nowhere in bench: their rows come from the step.
        let data = crate::bench::synthetic(300);
        let arch = crate::model::Arch::parse("1x28x28-c4k3p1-a2-c8k3p1-g-10").unwrap();
        let cfg = TrainConfig::lecture(arch);
        let rec = Recorded::new(Box::new(CpuBackend::new()), &cfg, &data).unwrap();
        let ops = rec.ops();
        let shapes: std::collections::BTreeSet<String> = ops
            .iter()
            .filter(|op| op.name().starts_with("avgpool"))
            .map(|op| format!("{} {}", op.name(), op.shape()))
            .collect();
        let want = [
            "avgpool_backward 100x14x14x8 k14x14 ReluMask",
            "avgpool_backward 100x28x28x4 k2x2 ReluMask",
            "avgpool_forward 100x14x14x8 k14x14",
            "avgpool_forward 100x28x28x4 k2x2",
        ];
        assert_eq!(shapes.iter().map(String::as_str).collect::<Vec<_>>(), want);
        let opts = BenchOpts {
            repeats: 1,
            ..BenchOpts::default()
        };
        for op in ops.iter().filter(|op| op.name().starts_with("avgpool")) {
            let s = rec.time(op, &opts, 1e-4).unwrap();
            assert!(s.secs.is_finite() && s.secs > 0.0, "{op:?}: {s:?}");
        }
    }
}
