//! The training rows: each preset's training step on the GPU engine and on the CPU engine,
//! and the cost of submitting every step separately.

use super::ops::StepOps;
use super::{median, BenchOpts, Record};
use crate::data::Dataset;
use crate::gpu::GpuContext;
use crate::train::{self, Engine, TrainConfig};
use crate::Result;
use web_time::Instant;

/// Median seconds per step over a few samples of `steps` steps, `per_submit` per program run.
fn time_steps(engine: &mut Engine, steps: usize, per_submit: usize, samples: usize) -> Result<f64> {
    let s = (0..samples)
        .map(|_| {
            let t = Instant::now();
            engine.run_raw_steps(steps, per_submit)?;
            Ok(t.elapsed().as_secs_f64() / steps as f64)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(median(s))
}

/// "products one by one: X GFLOP/s, all ops one by one: Y ms" from the ops rows.
fn one_by_one(flops: f64, matmul_secs: f64, op_secs: f64) -> String {
    if matmul_secs.is_nan() {
        return "not measured".into();
    }
    format!(
        "products {:.2} GFLOP/s, all ops {:.3} ms",
        flops / matmul_secs / 1e9,
        op_secs * 1e3
    )
}

/// Images/s and achieved GFLOP/s (the step's products, Σ 2·M·N·K read from its program) of
/// each preset's step at batch 100, on the GPU engine and on the CPU engine, beside what its
/// ops cost one by one (`steps`, from the ops rows); then the dispatch overhead on the GPU.
pub(super) fn train_records(
    ctx: &GpuContext,
    opts: &BenchOpts,
    data: &[Dataset],
    steps: &[StepOps],
) -> Result<Vec<Record>> {
    let samples = opts.repeats().min(5);
    let mut out = Vec::new();
    for ops in steps {
        let (name, arch) = (ops.preset.name(), ops.preset.arch());
        let data = super::data_for(data, ops.preset);
        let mut cfg = TrainConfig::preset(ops.preset);
        cfg.batch = 100;
        let batch = cfg.batch;
        let model = cfg.init_model();
        // Conv nets take far longer per step on CPU adapters: fewer steps keep the run short.
        let n = if arch.is_mlp() {
            opts.train_steps()
        } else {
            (opts.train_steps() / 4).max(2)
        };
        // A device of its own on the same adapter: the engine owns its context.
        let gctx = GpuContext::from_adapter(ctx.adapter.clone())?;
        let mut engine = Engine::gpu(gctx, &cfg, &model, None, data, None)?;
        engine.run_raw_steps(2, 2)?; // warm up: compile every pipeline
        let per_step = time_steps(&mut engine, n, train::CHUNK, samples)?;
        let mut r = Record::new(ctx, &format!("train {name}"), format!("batch {batch}"));
        r.median_ms = per_step * 1e3;
        r.images_per_s = Some(batch as f64 / per_step);
        r.gflops = Some(ops.flops / per_step / 1e9);
        r.timing = format!(
            "wall ({samples} samples x {n} steps, {} steps per submit)",
            train::CHUNK
        );
        r.variant = "autotuned".into();
        r.note = format!(
            "{arch}, {}; {:.1} MFLOP per step; one-op programs: GPU {}",
            cfg.optimizer,
            ops.flops / 1e6,
            one_by_one(ops.flops, ops.matmul_secs.0, ops.op_secs.0)
        );
        if opts.cpu {
            let mut cpu = Engine::cpu(&cfg, &model, None, data, None)?;
            cpu.run_raw_steps(1, 1)?;
            let c = time_steps(&mut cpu, n, train::CHUNK, samples)?;
            r.cpu_median_ms = Some(c * 1e3);
            r.cpu_images_per_s = Some(batch as f64 / c);
            r.cpu_gflops = Some(ops.flops / c / 1e9);
            r.cpu_over_gpu = Some(c / per_step);
            r.note += &format!(
                ", CPU engine {}",
                one_by_one(ops.flops, ops.matmul_secs.1, ops.op_secs.1)
            );
        }
        out.push(r);

        // Dispatch overhead: every step its own submission (and wait) versus CHUNK per
        // submission.
        let single = time_steps(&mut engine, n, 1, samples)?;
        let mut d = Record::new(
            ctx,
            &format!("dispatch overhead {name}"),
            format!("batch {batch}"),
        );
        d.median_ms = (single - per_step) * 1e3;
        d.timing = format!(
            "wall: per step with 1 step per submit ({:.3} ms) minus with {} ({:.3} ms)",
            single * 1e3,
            train::CHUNK,
            per_step * 1e3
        );
        d.note = if single > per_step {
            format!(
                "{:.0}% of a step submitted alone",
                100.0 * (single - per_step) / single
            )
        } else {
            "no measurable difference (within the noise of the two medians)".into()
        };
        out.push(d);
    }
    Ok(out)
}
