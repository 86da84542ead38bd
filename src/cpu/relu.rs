//! Twin of `shaders/relu.wgsl`.

use ndarray::{Array2, ArrayView2, NdFloat, Zip};

/// Y = max(X, 0)
pub fn relu_forward<F: NdFloat>(x: ArrayView2<F>) -> Array2<F> {
    x.mapv(|v| v.max(F::zero()))
}

/// dX = dY · 1\[Y > 0\]
pub fn relu_backward<F: NdFloat>(y: ArrayView2<F>, dy: ArrayView2<F>) -> Array2<F> {
    Zip::from(&y)
        .and(&dy)
        .map_collect(|&y, &d| if y > F::zero() { d } else { F::zero() })
}
