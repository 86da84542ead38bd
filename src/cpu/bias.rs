//! Twin of `shaders/bias.wgsl`.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, NdFloat};

/// Y\[B,O\] = X\[B,O\] + b\[O\]
pub fn bias_add<F: NdFloat>(x: ArrayView2<F>, bias: ArrayView1<F>) -> Array2<F> {
    &x + &bias
}

/// db\[O\] = Σ_B dY\[B,O\]
pub fn bias_backward<F: NdFloat>(dy: ArrayView2<F>) -> Array1<F> {
    dy.sum_axis(Axis(0))
}
