//! Fast twin of `shaders/bias.wgsl` (the backward; the forward is the matmul epilogue).

/// db\[O\] = Σ_B dY\[B,O\]. With few columns (a convolution's bias, O = 6 over B·OH·OW = 78,400
/// rows) a row is too short to vectorise, so groups of ⌊64/O⌋ rows are summed lane by lane
/// into 64 accumulators first and the groups' sums folded at the end: each db element is then
/// a sum in a different order than the twin's, within the same γ_B bound.
pub fn bias_backward(dy: &[f32], rows: usize, cols: usize, db: &mut [f32]) {
    let db = &mut db[..cols];
    db.fill(0.0);
    let dy = &dy[..rows * cols];
    let add = |db: &mut [f32], row: &[f32]| {
        for (d, &v) in db.iter_mut().zip(row) {
            *d += v;
        }
    };
    if cols == 0 || cols > 32 {
        dy.chunks_exact(cols.max(1)).for_each(|row| add(db, row));
        return;
    }
    let lanes = 64 / cols * cols;
    let mut acc = [0.0f32; 64];
    let acc = &mut acc[..lanes];
    let mut groups = dy.chunks_exact(lanes);
    for g in &mut groups {
        add(acc, g);
    }
    for row in acc
        .chunks_exact(cols)
        .chain(groups.remainder().chunks_exact(cols))
    {
        add(db, row);
    }
}
