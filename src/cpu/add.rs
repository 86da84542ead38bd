//! Twin of `shaders/add.wgsl`: a residual block's join y = a + b (then the ReLU) and its
//! gradient, which passes dy through to each summand (zero where the mask of the ReLU below
//! is not > 0), overwriting or accumulating.

use ndarray::NdFloat;

/// y = a + b, then max(0, ·) when `relu`.
pub fn add_forward<F: NdFloat>(a: &[F], b: &[F], relu: bool) -> Vec<F> {
    assert_eq!(a.len(), b.len(), "add_forward: a and b differ in length");
    a.iter()
        .zip(b)
        .map(|(&u, &v)| {
            let s = u + v;
            if relu {
                s.max(F::zero())
            } else {
                s
            }
        })
        .collect()
}

/// dy where `mask` > 0 (everywhere without a mask), else 0; added to `acc` when given (the
/// gradient already there), else written.
pub fn add_backward<F: NdFloat>(dy: &[F], mask: Option<&[F]>, acc: Option<&[F]>) -> Vec<F> {
    dy.iter()
        .enumerate()
        .map(|(i, &g)| {
            let d = if mask.is_none_or(|m| m[i] > F::zero()) {
                g
            } else {
                F::zero()
            };
            match acc {
                Some(a) => a[i] + d,
                None => d,
            }
        })
        .collect()
}
