//! Fast twin of `shaders/softmax_xent.wgsl`: each row in one sweep, in place.

/// probs\[B,C\] = softmax(logits), loss\[B\] = −log probs\[label\] (0 for padding rows, label ≥ C),
/// or with label smoothing ε > 0 (1 − ε)·ℓ_y + (ε/C)·Σ_c ℓ_c, ℓ_c = −log p_c.
pub fn forward(
    logits: &[f32],
    labels: &[u32],
    classes: usize,
    smoothing: f32,
    probs: &mut [f32],
    loss: &mut [f32],
) {
    let rows = labels.len();
    for r in 0..rows {
        let z = &logits[r * classes..(r + 1) * classes];
        let p = &mut probs[r * classes..(r + 1) * classes];
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0.0f32;
        for (p, &z) in p.iter_mut().zip(z) {
            *p = (z - m).exp();
            s += *p;
        }
        p.iter_mut().for_each(|p| *p /= s);
        let y = labels[r] as usize;
        loss[r] = if y < classes {
            let lse = s.ln();
            let ly = lse + (m - z[y]);
            if smoothing == 0.0 {
                ly
            } else {
                let all = z.iter().fold(0.0f32, |a, &zc| a + (lse + (m - zc)));
                (1.0 - smoothing) * ly + (smoothing / classes as f32) * all
            }
        } else {
            0.0
        };
    }
}

/// dlogits\[B,C\] = (probs − target)·scale, target = onehot(labels), or (1 − ε)·onehot + ε/C with
/// label smoothing ε > 0; padding rows get 0.
pub fn backward(
    probs: &[f32],
    labels: &[u32],
    classes: usize,
    scale: f32,
    smoothing: f32,
    dlogits: &mut [f32],
) {
    for (r, &y) in labels.iter().enumerate() {
        let p = &probs[r * classes..(r + 1) * classes];
        let d = &mut dlogits[r * classes..(r + 1) * classes];
        let y = y as usize;
        if y >= classes {
            d.fill(0.0);
            continue;
        }
        if smoothing == 0.0 {
            for (c, (d, &p)) in d.iter_mut().zip(p).enumerate() {
                *d = if c == y { p - 1.0 } else { p } * scale;
            }
        } else {
            let off = smoothing / classes as f32;
            for (c, (d, &p)) in d.iter_mut().zip(p).enumerate() {
                let target = if c == y { 1.0 - smoothing } else { 0.0 } + off;
                *d = (p - target) * scale;
            }
        }
    }
}
