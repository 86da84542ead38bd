//! Twin of `shaders/bias.wgsl`.

use ndarray::{Array1, ArrayView2, Axis, NdFloat};

/// db\[O\] = Σ_B dY\[B,O\]
pub fn bias_backward<F: NdFloat>(dy: ArrayView2<F>) -> Array1<F> {
    dy.sum_axis(Axis(0))
}
