//! Twin of `shaders/decay.wgsl`.

/// w ← w·f: decoupled weight decay with f = 1 − lr_t·λ (PyTorch's AdamW
/// `param.mul_(1 − lr·weight_decay)`), one f32 product per element, so every backend gives
/// the same bits.
pub fn decay_update(w: &mut [f32], f: f32) {
    w.iter_mut().for_each(|w| *w *= f);
}

/// The entry of a per-update table ([`crate::ops::StepTable`]) that update number `done` + 1
/// uses: entry `done`, or the last past the end.
pub fn table_entry(table: &[f32], done: u32) -> f32 {
    table[(done as usize).min(table.len().saturating_sub(1))]
}
