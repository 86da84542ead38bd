//! Float32 rounding: the unit roundoff [`U`] and Higham's γ_n, from which every tolerance of the
//! checks is argued (see the [parent module](super)).

/// Unit roundoff of f32.
pub const U: f64 = 1.0 / (1u64 << 24) as f64;

/// γ_n = n·u / (1 − n·u): a sum or dot product of n terms computed in any order in f32 (with or
/// without fma) is within γ_n·Σ|terms| of the exact value (Higham, Accuracy and Stability of
/// Numerical Algorithms, §3.1).
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_is_highams_n_u_over_one_minus_n_u() {
        // γ_n = n·u / (1 − n·u), u = 2⁻²⁴ (Higham, Accuracy and Stability, §3.1). At
        // n = 2²⁰, n·u = 1/16 and γ_n = 1/15, well apart from n·u and from 1/17.
        assert_eq!(gamma(1 << 20), (1.0 / 16.0) / (15.0 / 16.0));
        assert!((gamma(1 << 20) - 1.0 / 15.0).abs() < 1e-15);
        assert_eq!(gamma(1), U / (1.0 - U));
        assert!(gamma(1000) > 1000.0 * U);
    }
}
