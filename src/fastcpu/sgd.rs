//! Fast twin of `shaders/sgd.wgsl`: the twin's update, one sweep, split over threads.

use super::PAR_MIN;
use crate::cpu;
use crate::ops::SgdParams;
use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};
use rayon::prelude::*;

/// g ← g + λw; v ← μv + g; w ← w − α·(v, or g + μv with Nesterov) over the first `w.len()` elements.
pub fn sgd_update(w: &mut [f32], g: &[f32], v: &mut [f32], hp: SgdParams) {
    let n = w.len();
    w.par_chunks_mut(PAR_MIN)
        .zip(g[..n].par_chunks(PAR_MIN))
        .zip(v[..n].par_chunks_mut(PAR_MIN))
        .for_each(|((w, g), v)| {
            let len = IxDyn(&[w.len()]);
            cpu::sgd::sgd_update(
                ArrayViewMutD::from_shape(len.clone(), w).expect("chunk"),
                ArrayViewD::from_shape(len.clone(), g).expect("chunk"),
                ArrayViewMutD::from_shape(len, v).expect("chunk"),
                hp,
            )
        });
}
