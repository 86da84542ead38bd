//! Fast twin of `shaders/add.wgsl`: the twin's element-wise sweeps ([`crate::cpu::add`])
//! written into the backend's buffers, split over threads in chunks; each element is the same
//! single addition (or copy) as in the twin, so the result is bit-identical. The loops are
//! specialised on their flags and compiled through `pulp`'s dispatch (AVX-512 / AVX2 where
//! the CPU has them).

use super::PAR_MIN;
use pulp::Arch;
use rayon::prelude::*;

/// y = a + b, then max(0, ·) when `relu`.
pub fn forward(a: &[f32], b: &[f32], relu: bool, y: &mut [f32]) {
    let n = y.len();
    debug_assert!(a.len() >= n && b.len() >= n);
    y.par_chunks_mut(PAR_MIN).enumerate().for_each(|(c, out)| {
        let at = c * PAR_MIN;
        let (a, b) = (&a[at..][..out.len()], &b[at..][..out.len()]);
        Arch::new().dispatch(|| {
            let it = out.iter_mut().zip(a).zip(b);
            if relu {
                it.for_each(|((o, &a), &b)| *o = (a + b).max(0.0));
            } else {
                it.for_each(|((o, &a), &b)| *o = a + b);
            }
        })
    });
}

/// dx = dy where `mask` > 0 (everywhere without one), else 0; `dx +=` that when `accumulate`.
pub fn backward(dy: &[f32], mask: Option<&[f32]>, accumulate: bool, dx: &mut [f32]) {
    dx.par_chunks_mut(PAR_MIN).enumerate().for_each(|(c, out)| {
        let at = c * PAR_MIN;
        let dy = &dy[at..][..out.len()];
        let m = mask.map(|m| &m[at..][..out.len()]);
        Arch::new().dispatch(|| match (m, accumulate) {
            (None, false) => out.copy_from_slice(dy),
            (None, true) => out.iter_mut().zip(dy).for_each(|(o, &d)| *o += d),
            (Some(m), false) => {
                for ((o, &d), &m) in out.iter_mut().zip(dy).zip(m) {
                    *o = if m > 0.0 { d } else { 0.0 };
                }
            }
            (Some(m), true) => {
                for ((o, &d), &m) in out.iter_mut().zip(dy).zip(m) {
                    *o += if m > 0.0 { d } else { 0.0 };
                }
            }
        })
    });
}
