//! Kernel-versus-CPU verification, shared by the test suite and `wgtrain verify`.
//!
//! One harness over the [`crate::backend::Backend`] trait, with the inputs, references and
//! tolerances of [`crate::oracle`]: [`run_backend_family`] runs programs of
//! [`crate::ops::Op`]s on any backend (the GPU's WGSL kernels, the CPU engine), poisoning
//! outputs, guarding the words past every buffer and checking inputs come back unchanged. On
//! the GPU backend it pins each matmul variant in turn, so every variant the autotuner may pick
//! is checked at the edges of its tile. Where a bound assumes the GPU's summation order, the
//! other backends are held to the any-order bound γ_n·Σ|terms|.
//!
//! Each check fills fresh random inputs from a seeded ChaCha8 stream, poisons every output
//! buffer with NaN before the launch (so an element the kernel never writes fails), runs the
//! kernel, and compares against the CPU twin evaluated in f64 on the same f32 inputs, within
//! the tolerances argued in [`crate::oracle`].
//!
//! Files by job: [`shapes`] (what each family runs on), [`ops`] (the checks, one program
//! each), [`dispatch`] (which checks a family runs), [`coverage`] (what must be covered, read
//! from the programs the engine prepares).

pub mod coverage;
pub mod dispatch;
pub mod ops;
pub mod shapes;

pub use crate::oracle::{
    compare, compare_exact, compare_u32, run_seed, softmax_logits, AdamCase, Check, Family, Inputs,
    PoolInput, U,
};
pub use dispatch::{run_backend_family, run_backend_family_async};
pub use shapes::{
    adam_cases, avgpool_shapes, batchnorm_shapes, conv2d_layer_shapes, conv2d_shapes,
    dropout_shapes, maxpool_shapes, ADAM_TEST_MAX, GATHER_SHAPES, MATMUL_SHAPES, ROW_SHAPES,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu;
    use crate::oracle::{adam_bounds, adam_exact, adam_inputs, ADAM_SCHEDULE_LEN};

    /// The adam bound, evaluated with correctly rounded sqrt and division, must hold for the
    /// f32 twin (whose sqrt and division are correctly rounded): a check of the derivation that
    /// needs no GPU.
    #[test]
    fn adam_bounds_hold_for_the_correctly_rounded_twin() {
        let mut inp = Inputs::new(7);
        for case in adam_cases().iter().filter(|c| c.n <= 100_003) {
            let (n, hp) = (case.n, case.hp);
            let [w, g, m, v] = adam_inputs(&mut inp, n);
            let pair = hp.schedule(case.t.min(ADAM_SCHEDULE_LEN));
            let (mut w32, mut m32, mut v32) = (w.clone(), m.clone(), v.clone());
            cpu::adam::adam_update(&mut w32, &g, &mut m32, &mut v32, hp, pair);
            let mut worst = [0.0f64; 3];
            for i in 0..n {
                let (wi, gi, mi, vi) = (w[i] as f64, g[i] as f64, m[i] as f64, v[i] as f64);
                let e = adam_exact(wi, gi, mi, vi, hp, pair);
                let b = adam_bounds(wi, gi, mi, vi, hp, pair, U, U);
                let got = [m32[i] as f64, v32[i] as f64, w32[i] as f64];
                for (k, bk) in [b.0, b.1, b.2].into_iter().enumerate() {
                    let err = (got[k] - e[k]).abs();
                    let ratio = if err == 0.0 { 0.0 } else { err / bk };
                    assert!(
                        ratio <= 1.0,
                        "{case:?} element {i} ({wi}, {gi}, {mi}, {vi}), output {k}: error {err:e} > bound {bk:e}"
                    );
                    worst[k] = worst[k].max(ratio);
                }
            }
            eprintln!(
                "{case:?}: worst error/bound m {:.3} v {:.3} w {:.3}",
                worst[0], worst[1], worst[2]
            );
        }
    }
}
