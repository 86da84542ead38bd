//! Twin of `shaders/sgd.wgsl`.

use crate::ops::SgdParams;
use ndarray::{ArrayViewD, ArrayViewMutD, Zip};

/// g ← g + λw; v ← μv + g; w ← w − αv, or w ← w − α(g + μv) with Nesterov momentum
/// (PyTorch SGD with momentum, dampening 0, `nesterov` as `hp.nesterov`).
pub fn sgd_update(
    mut w: ArrayViewMutD<f32>,
    g: ArrayViewD<f32>,
    mut v: ArrayViewMutD<f32>,
    hp: SgdParams,
) {
    Zip::from(&mut w).and(&g).and(&mut v).for_each(|w, &g, v| {
        let g = g + hp.l2 * *w;
        *v = hp.momentum * *v + g;
        if hp.nesterov {
            *w -= hp.lr * (g + hp.momentum * *v);
        } else {
            *w -= hp.lr * *v;
        }
    });
}
