//! Fast twin of `shaders/bias.wgsl` (the backward; the forward is the matmul epilogue).

/// db[O] = Σ_B dY[B,O], summed row after row (each db element a serial sum in row order).
pub fn bias_backward(dy: &[f32], rows: usize, cols: usize, db: &mut [f32]) {
    let db = &mut db[..cols];
    db.fill(0.0);
    for row in dy[..rows * cols].chunks_exact(cols) {
        for (d, &v) in db.iter_mut().zip(row) {
            *d += v;
        }
    }
}
