//! Fast twin of `shaders/adam.wgsl`: the twin's update, one sweep, split over threads.

use super::PAR_MIN;
use crate::cpu;
use crate::ops::AdamParams;
use rayon::prelude::*;

/// One Adam step over the first `w.len()` elements with `sched` = [step size, √(1 − β2ᵗ)].
pub fn adam_update(
    w: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    hp: AdamParams,
    sched: [f32; 2],
) {
    let n = w.len();
    w.par_chunks_mut(PAR_MIN)
        .zip(g[..n].par_chunks(PAR_MIN))
        .zip(m[..n].par_chunks_mut(PAR_MIN))
        .zip(v[..n].par_chunks_mut(PAR_MIN))
        .for_each(|(((w, g), m), v)| cpu::adam::adam_update(w, g, m, v, hp, sched));
}
