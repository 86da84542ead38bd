//! Fast twin of `shaders/softmax_xent.wgsl`: each row in one sweep, in place.

/// probs\[B,C\] = softmax(logits), loss\[B\] = −log probs\[label\] (0 for padding rows, label ≥ C).
pub fn forward(
    logits: &[f32],
    labels: &[u32],
    classes: usize,
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
            s.ln() + (m - z[y])
        } else {
            0.0
        };
    }
}

/// dlogits\[B,C\] = (probs − onehot(labels))·scale; padding rows get 0.
pub fn backward(probs: &[f32], labels: &[u32], classes: usize, scale: f32, dlogits: &mut [f32]) {
    for (r, &y) in labels.iter().enumerate() {
        let p = &probs[r * classes..(r + 1) * classes];
        let d = &mut dlogits[r * classes..(r + 1) * classes];
        let y = y as usize;
        if y >= classes {
            d.fill(0.0);
            continue;
        }
        for (c, (d, &p)) in d.iter_mut().zip(p).enumerate() {
            *d = if c == y { p - 1.0 } else { p } * scale;
        }
    }
}
