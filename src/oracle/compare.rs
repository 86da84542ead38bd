//! The outcome of one check ([`Check`]) and the element-wise comparisons every check ends in.

use super::Family;
use crate::ops::MatmulTile;
use ndarray::Array2;

/// Outcome of one kernel on one shape.
#[derive(Clone, Debug)]
pub struct Check {
    /// The family of the kernel or op.
    pub family: Family,
    /// The kernel entry point or op and which of its outputs, e.g. `softmax_xent_forward loss`.
    pub kernel: String,
    /// The matmul variant a GPU product ran with (none for the other kernels and for ops).
    pub tile: Option<MatmulTile>,
    /// The shape (and any label) it ran on.
    pub shape: String,
    /// Largest |gpu − cpu|.
    pub max_abs: f64,
    /// Largest |gpu − cpu| / |cpu| over elements with cpu ≠ 0.
    pub max_rel: f64,
    /// Largest error / tolerance (≤ 1 passes).
    pub worst: f64,
    /// Elements out of tolerance (NaN counts: an unwritten element stays NaN).
    pub bad: usize,
    /// Elements compared.
    pub elements: usize,
}

impl Check {
    /// A check of `cpu_len` reference elements with nothing wrong yet, or wholly failed when
    /// the kernel produced a different number of elements.
    fn start(family: Family, kernel: &str, shape: String, gpu_len: usize, cpu_len: usize) -> Check {
        let mut c = Check {
            family,
            kernel: kernel.to_string(),
            tile: None,
            shape,
            max_abs: 0.0,
            max_rel: 0.0,
            worst: 0.0,
            bad: 0,
            elements: cpu_len,
        };
        if gpu_len != cpu_len {
            c.bad = cpu_len.max(1);
            c.worst = f64::INFINITY;
        }
        c
    }

    /// The kernel and, for a matmul variant, its tile (`matmul NT Bias wg16x16_r4x4_k16`): what
    /// `wgtrain verify` shows one table row per.
    pub fn name(&self) -> String {
        match &self.tile {
            Some(tile) => format!("{} {tile}", self.kernel),
            None => self.kernel.clone(),
        }
    }

    /// Within tolerance everywhere.
    pub fn pass(&self) -> bool {
        self.bad == 0
    }
}

/// Compare `gpu` against `cpu` with per-element tolerance `atol[i] + rtol[i]·|cpu[i]|`.
pub fn compare(
    family: Family,
    kernel: &str,
    shape: String,
    gpu: &[f32],
    cpu: &[f64],
    tol: impl Fn(usize) -> (f64, f64),
) -> Check {
    let mut c = Check::start(family, kernel, shape, gpu.len(), cpu.len());
    if c.bad > 0 {
        return c;
    }
    for (i, (&g, &r)) in gpu.iter().zip(cpu).enumerate() {
        if g as f64 == r {
            continue; // covers equal infinities (whose difference is NaN)
        }
        let err = (g as f64 - r).abs();
        let (atol, rtol) = tol(i);
        let t = atol + rtol * r.abs();
        // Unequal and either side NaN or infinite: a failure (an infinite reference would
        // also make the relative tolerance infinite and pass anything).
        if !err.is_finite() {
            c.bad += 1;
            c.worst = f64::INFINITY;
            c.max_abs = f64::INFINITY;
            continue;
        }
        c.max_abs = c.max_abs.max(err);
        if r != 0.0 {
            c.max_rel = c.max_rel.max(err / r.abs());
        }
        let ratio = if t > 0.0 { err / t } else { f64::INFINITY };
        c.worst = c.worst.max(ratio);
        if err > t {
            c.bad += 1;
        }
    }
    c
}

/// Exact comparison of u32 outputs (e.g. maxpool's idx); every mismatch is bad.
pub fn compare_u32(family: Family, kernel: &str, shape: String, gpu: &[u32], cpu: &[u32]) -> Check {
    let mut c = Check::start(family, kernel, shape, gpu.len(), cpu.len());
    if c.bad > 0 {
        return c;
    }
    for (&g, &r) in gpu.iter().zip(cpu) {
        if g != r {
            c.bad += 1;
            c.worst = f64::INFINITY;
            c.max_abs = c.max_abs.max((g as f64 - r as f64).abs());
        }
    }
    c
}

/// Exact comparison where NaN in the reference must be NaN in the output (and nowhere else),
/// and infinities must match.
pub fn compare_exact(
    family: Family,
    kernel: &str,
    shape: String,
    gpu: &[f32],
    cpu: &[f64],
) -> Check {
    let same: Vec<usize> = (0..cpu.len().min(gpu.len()))
        .filter(|&i| (cpu[i].is_nan() && gpu[i].is_nan()) || gpu[i] as f64 == cpu[i])
        .collect();
    let (mut g, mut r) = (gpu.to_vec(), cpu.to_vec());
    for i in same {
        g[i] = 0.0;
        r[i] = 0.0;
    }
    compare(family, kernel, shape, &g, &r, |_| (0.0, 0.0))
}

/// On extreme inputs an infinite or NaN error is a failure even where the reference is too.
pub fn fail_nonfinite(checks: &mut [Check]) {
    for c in checks {
        if !c.max_abs.is_finite() {
            c.bad = c.bad.max(1);
        }
    }
}

/// f32 values as f64.
pub(crate) fn f64s(a: &[f32]) -> Vec<f64> {
    a.iter().map(|&v| v as f64).collect()
}

/// An f32 matrix as f64.
pub(crate) fn to64(a: &Array2<f32>) -> Array2<f64> {
    a.mapv(|v| v as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_out_of_tolerance_and_nan_and_reports_exact_statistics() {
        // Tolerance 0.5 + 0.25·|cpu|. Element 0: error 0.5 of tolerance 1.0 (cpu 2);
        // element 1: error exactly at its tolerance 0.5 (cpu 0) passes; element 2: error 3 of
        // tolerance 1.5 (cpu 4) fails; element 3: equal infinities pass.
        let c = compare(
            Family::Matmul,
            "k",
            "s".into(),
            &[2.5, 0.5, 1.0, f32::INFINITY],
            &[2.0, 0.0, 4.0, f64::INFINITY],
            |_| (0.5, 0.25),
        );
        assert_eq!((c.bad, c.elements), (1, 4));
        assert_eq!(c.max_abs, 3.0);
        assert_eq!(c.max_rel, 0.75, "3/4; the zero reference is left out");
        assert_eq!(c.worst, 2.0, "3 / 1.5");
        // NaN anywhere fails, NaN against NaN included; opposite infinities fail.
        for (g, r) in [
            (f32::NAN, 1.0),
            (1.0, f64::NAN),
            (f32::NAN, f64::NAN),
            (f32::INFINITY, f64::NEG_INFINITY),
        ] {
            let c = compare(Family::Matmul, "k", "s".into(), &[g], &[r], |_| (1.0, 1.0));
            assert_eq!(c.bad, 1, "{g} vs {r}");
            assert_eq!(c.worst, f64::INFINITY, "{g} vs {r}");
        }
    }

    #[test]
    fn compare_exact_passes_equal_values_and_matching_nans_and_fails_a_nan_for_a_number() {
        let ok = compare_exact(
            Family::Maxpool,
            "k",
            "s".into(),
            &[1.0, f32::NAN, f32::INFINITY],
            &[1.0, f64::NAN, f64::INFINITY],
        );
        assert_eq!(ok.bad, 0, "equal values, NaN for NaN, equal infinities");
        // An unwritten (NaN-poisoned) output where the reference is a number, a number where
        // the reference is NaN, and a plain wrong value each fail.
        for (g, r) in [(f32::NAN, 1.0), (1.0, f64::NAN), (2.0, 1.0)] {
            let c = compare_exact(Family::Maxpool, "k", "s".into(), &[g], &[r]);
            assert_eq!(c.bad, 1, "{g} vs {r}");
        }
    }
}
