//! Matrix products beyond the presets' programs: square sizes as one-op programs on both
//! backends, and (`--variants`) every tile variant of a product on the GPU.

use super::ops::time_program;
use super::{filled, sample, BenchOpts, Record, Sample};
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::{GpuBackend, Stopwatch};
use crate::backend::Backend;
use crate::gpu::kernels::{self, Epilogue, MatmulSpec, MatmulTile};
use crate::gpu::{autotune, GpuContext};
use crate::ops::Op;
use crate::Result;

/// The tile the GPU backend runs `spec` with, `autotuned:` when it is the autotuner's choice.
pub(super) fn autotuned_label(ctx: &GpuContext, spec: &MatmulSpec) -> String {
    let tile = autotune::tile_for(ctx, spec);
    if autotune::enabled() {
        format!("autotuned: {tile}")
    } else {
        tile.to_string()
    }
}

/// `spec` (epilogue none) on seeded inputs as a one-op program on `be`, timed.
fn time_product(be: &mut dyn Backend, spec: &MatmulSpec, opts: &BenchOpts) -> Result<Sample> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let a = be.upload_f32(
        "bench a",
        filled(m, k, 1).as_slice().expect("standard layout"),
    )?;
    let b = be.upload_f32(
        "bench b",
        filled(k, n, 2).as_slice().expect("standard layout"),
    )?;
    let c = be.alloc("bench c", m * n)?;
    let p = be.prepare(&[Op::Matmul {
        spec: *spec,
        a,
        b,
        aux: None,
        c,
    }])?;
    time_program(be, p, opts.repeats(), 0.05)
}

/// Square products of 128, 256, … up to the largest size (plain NN) as one-op programs on a
/// GPU backend and on the CPU engine; with `opts.variants`, every tile variant up to 1024³.
pub(super) fn square_records(ctx: &GpuContext, opts: &BenchOpts) -> Result<Vec<Record>> {
    let mut gpu = GpuBackend::new(GpuContext::from_adapter(ctx.adapter.clone())?);
    let mut cpu = opts.cpu.then(CpuBackend::new);
    let mut out = Vec::new();
    let mut size = 128;
    while size <= opts.max_size(ctx) {
        let spec = MatmulSpec::new(size, size, size);
        let mut r = Record::new(ctx, "matmul", spec.to_string());
        r.note = "square".into();
        match time_product(&mut gpu, &spec, opts) {
            Ok(g) => {
                r.median_ms = g.secs * 1e3;
                r.timing = g.describe();
                r.variant = autotuned_label(ctx, &spec);
            }
            Err(e) => r.note = format!("square; failed: {e}"),
        }
        if let Some(cpu) = cpu.as_mut() {
            let c = time_product(cpu, &spec, opts)?;
            r.cpu_median_ms = Some(c.secs * 1e3);
        }
        super::set_flops(&mut r, spec.flops());
        out.push(r);
        if opts.variants {
            out.extend(variant_records(ctx, opts, &spec, "square")?);
        }
        size *= 2;
    }
    Ok(out)
}

/// Every tile variant the adapter can run on `spec` except the autotuned one (which the ops
/// and square rows measure through the backend), one record each, GPU only: the GPU backend
/// always runs the autotuned tile, so these launch the kernel directly (timed as the backend
/// times a run, see [`Stopwatch`]). Products above 1024³'s FLOPs are skipped: the slow
/// variants would take minutes.
pub(super) fn variant_records(
    ctx: &GpuContext,
    opts: &BenchOpts,
    spec: &MatmulSpec,
    label: &str,
) -> Result<Vec<Record>> {
    if spec.flops() > 2.2e9 {
        return Ok(Vec::new());
    }
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (a_rows, a_cols) = if spec.trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if spec.trans_b { (n, k) } else { (k, n) };
    let a = ctx.upload("bench a", filled(a_rows, a_cols, 1).as_slice().unwrap());
    let b = ctx.upload("bench b", filled(b_rows, b_cols, 2).as_slice().unwrap());
    let aux = match spec.epilogue {
        Epilogue::ReluMask => ctx.upload("bench mask", filled(m, n, 4).as_slice().unwrap()),
        _ => ctx.upload("bench bias", filled(1, n, 3).as_slice().unwrap()),
    };
    let c = ctx.storage("bench c", (m * n * 4) as u64);
    let watch = Stopwatch::new(ctx);
    let chosen = autotune::tile_for(ctx, spec);
    let tiles = MatmulTile::CANDIDATES
        .into_iter()
        .filter(|t| *t != chosen && t.unsupported_for(ctx, spec).is_none());
    let mut out = Vec::new();
    for tile in tiles {
        let mut r = Record::new(ctx, "matmul", spec.to_string());
        r.variant = tile.to_string();
        r.note = format!("{label}; tile variant, kernel launched directly");
        let timed = kernels::matmul(ctx, spec, &tile, &a, &b, Some(&aux), &c).and_then(|l| {
            let run = |inner: usize| watch.time(ctx, || ctx.submit(&[&l], inner).map(|_| ()));
            run(1)?;
            sample(opts.repeats(), 0.02, run)
        });
        match timed {
            Ok(g) => {
                r.median_ms = g.secs * 1e3;
                r.timing = g.describe();
                super::set_flops(&mut r, spec.flops());
            }
            Err(e) => r.note = format!("{label}; failed: {e}"),
        }
        out.push(r);
    }
    Ok(out)
}
