//! `wgtrain bench` measures through the backends: a row for every op the presets' programs
//! run, each with the GPU backend's and the CPU engine's time, nothing from the reference
//! twins.

mod common;

use wgtrain::bench::{self, BenchOpts};

#[test]
fn bench_has_a_row_with_both_engines_for_every_op_of_the_presets_programs() {
    // The default tiles: tuning every product of every preset would take minutes.
    std::env::set_var("WGTRAIN_AUTOTUNE", "0");
    for ctx in common::contexts("bench") {
        let opts = BenchOpts {
            quick: true,
            max_size: 128,
            repeats: 1,
            train: false,
            ..BenchOpts::default()
        };
        let records = bench::run(&ctx, &opts).unwrap();
        let ops: Vec<&bench::Record> = records
            .iter()
            .filter(|r| r.op != "cpu fma peak" && r.note != "square")
            .collect();
        // Every op family of the presets' programs: dense and conv nets, SGD and Adam,
        // BatchNorm, dropout and residual joins.
        for name in [
            "gather",
            "advance",
            "matmul",
            "bias_backward",
            "im2col",
            "col2im",
            "maxpool_forward",
            "maxpool_backward",
            "softmax_xent_forward",
            "softmax_xent_backward",
            "metrics",
            "sgd",
            "adam",
            // resnet8's (3×32×32 samples of their own) and fashion's.
            "add_forward",
            "add_backward",
            "batchnorm_stats",
            "batchnorm_input_grad",
            "dropout_forward",
        ] {
            assert!(
                ops.iter().any(|r| r.op == name),
                "{}: no {name} row",
                ctx.describe()
            );
        }
        for (i, r) in ops.iter().enumerate() {
            let what = format!("{} {} on {}", r.op, r.shape, ctx.describe());
            assert!(
                r.median_ms.is_finite() && r.median_ms > 0.0,
                "{what}: {r:?}"
            );
            let cpu = r.cpu_median_ms.unwrap_or(f64::NAN);
            assert!(cpu.is_finite() && cpu > 0.0, "{what}: {r:?}");
            assert_eq!(r.cpu_over_gpu, Some(cpu / r.median_ms), "{what}");
            assert!(r.gflops.is_some() != r.gbps.is_some(), "{what}: {r:?}");
            assert!(r.cpu_engine.starts_with("cpu ("), "{what}: {r:?}");
            assert!(
                r.timing.starts_with("timestamp") || r.timing.starts_with("wall"),
                "{what}: {r:?}"
            );
            // One row per distinct op.
            assert!(
                !ops[..i].iter().any(|o| o.op == r.op && o.shape == r.shape),
                "{what} twice"
            );
        }
    }
}
