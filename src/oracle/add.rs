//! The residual join (add) forward and backward against the f32 twin, exactly.
//!
//! Tolerance 0, argued: every backend's f32 addition is correctly rounded (IEEE 754; WGSL
//! specifies `+` as correctly rounded), so a + b — and dx + dy when accumulating — is the one
//! f32 the twin computes. WGSL may flush subnormals, but the inputs are uniform in [-1, 1]
//! (multiples of 2⁻²⁴ at least, far above 2⁻¹²⁶), so no sum is subnormal: exact cancellation
//! gives 0. The ReLU and the gradient's mask are comparisons, the pass-through a copy: exact
//! too.

use super::compare::{compare_exact, f64s, Check};
use super::{Family, Inputs};
use crate::cpu;

/// The inputs of one check: a, b, dy, a ReLU-like mask (half zeros) and a gradient already
/// in place to accumulate onto.
pub struct AddData {
    /// The first summand.
    pub a: Vec<f32>,
    /// The second summand.
    pub b: Vec<f32>,
    /// The gradient passed down.
    pub dy: Vec<f32>,
    /// A ReLU output: where ≤ 0 nothing passes.
    pub mask: Vec<f32>,
    /// The gradient an accumulating backward adds to.
    pub acc: Vec<f32>,
}

/// Every input uniform in [-1, 1] (the mask clamped at 0, so about half is masked).
pub fn add_inputs(inp: &mut Inputs, len: usize) -> AddData {
    AddData {
        a: inp.uniform(len, -1.0, 1.0),
        b: inp.uniform(len, -1.0, 1.0),
        dy: inp.uniform(len, -1.0, 1.0),
        mask: inp
            .uniform(len, -1.0, 1.0)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect(),
        acc: inp.uniform(len, -1.0, 1.0),
    }
}

/// "label n=N".
pub fn add_shape(len: usize, label: &str) -> String {
    format!("{label}n={len}")
}

/// What a backend gave for one [`AddData`]: y without and with the ReLU, dx without a mask,
/// with the mask, and with the mask accumulated onto `acc`.
pub struct AddOutputs {
    /// a + b.
    pub y: Vec<f32>,
    /// max(a + b, 0).
    pub y_relu: Vec<f32>,
    /// dy.
    pub dx: Vec<f32>,
    /// dy where mask > 0.
    pub dx_masked: Vec<f32>,
    /// acc + (dy where mask > 0).
    pub dx_acc: Vec<f32>,
}

/// Each output against the f32 twin, exactly.
pub fn add_compare(d: &AddData, got: &AddOutputs, shape: String) -> Vec<Check> {
    let want = [
        (
            "add_forward",
            cpu::add::add_forward(&d.a, &d.b, false),
            &got.y,
        ),
        (
            "add_forward relu",
            cpu::add::add_forward(&d.a, &d.b, true),
            &got.y_relu,
        ),
        (
            "add_backward",
            cpu::add::add_backward(&d.dy, None, None),
            &got.dx,
        ),
        (
            "add_backward masked",
            cpu::add::add_backward(&d.dy, Some(&d.mask), None),
            &got.dx_masked,
        ),
        (
            "add_backward accumulate",
            cpu::add::add_backward(&d.dy, Some(&d.mask), Some(&d.acc)),
            &got.dx_acc,
        ),
    ];
    want.into_iter()
        .map(|(kernel, w, g)| compare_exact(Family::Add, kernel, shape.clone(), g, &f64s(&w)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twin(d: &AddData) -> AddOutputs {
        AddOutputs {
            y: cpu::add::add_forward(&d.a, &d.b, false),
            y_relu: cpu::add::add_forward(&d.a, &d.b, true),
            dx: cpu::add::add_backward(&d.dy, None, None),
            dx_masked: cpu::add::add_backward(&d.dy, Some(&d.mask), None),
            dx_acc: cpu::add::add_backward(&d.dy, Some(&d.mask), Some(&d.acc)),
        }
    }

    #[test]
    fn the_twin_passes_and_each_fault_fails() {
        let d = add_inputs(&mut Inputs::new(3), 1000);
        let good = twin(&d);
        for c in add_compare(&d, &good, String::new()) {
            assert!(c.pass(), "{}: {c:?}", c.kernel);
        }
        // The ReLU forgotten, the mask ignored, the accumulator overwritten, one ULP off.
        let mut bad = twin(&d);
        bad.y_relu = bad.y.clone();
        bad.dx_masked = bad.dx.clone();
        bad.dx_acc = bad.dx_masked.clone();
        bad.y[7] = f32::from_bits(bad.y[7].to_bits() + 1);
        for c in add_compare(&d, &bad, String::new())
            .iter()
            .filter(|c| c.kernel != "add_backward")
        {
            assert!(!c.pass(), "{} passed a fault", c.kernel);
        }
    }
}
