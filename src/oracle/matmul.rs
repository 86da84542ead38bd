//! Matrix products: inputs and the bound γ_K·(|A|·|B|).

use super::compare::{compare, f64s, to64, Check};
use super::tolerance::{gamma, U};
use super::{Family, Inputs};
use crate::cpu;
use crate::ops::{Epilogue, MatmulSpec};
use ndarray::{Array1, Array2};

/// Random inputs of one matmul check: A and B stored as the spec's transposes say, a bias, a
/// ReLU mask and the C an accumulating product adds to.
pub struct MatmulData {
    /// A, stored [M, K] or [K, M].
    pub a: Array2<f32>,
    /// B, stored [K, N] or [N, K].
    pub b: Array2<f32>,
    /// The bias, \[N\].
    pub bias: Array1<f32>,
    /// The ReLU mask, [M, N], about half exact zeros.
    pub mask: Array2<f32>,
    /// C before an accumulating product, [M, N].
    pub start: Array2<f32>,
}

impl MatmulData {
    /// Fresh inputs for `spec` from `inp`.
    pub fn new(inp: &mut Inputs, spec: &MatmulSpec) -> Self {
        let (m, n, k) = (spec.m, spec.n, spec.k);
        let a = if spec.trans_a {
            inp.matrix(k, m)
        } else {
            inp.matrix(m, k)
        };
        let b = if spec.trans_b {
            inp.matrix(n, k)
        } else {
            inp.matrix(k, n)
        };
        let bias = inp.matrix(1, n).into_shape_with_order(n).unwrap();
        // Like a ReLU output: about half exact zeros, where a mask test `> 0` and `≥ 0`
        // differ (with a uniform mask they never would; found by cargo-mutants).
        let mask = inp.matrix(m, n).mapv(|v| v.max(0.0));
        let start = inp.matrix(m, n);
        MatmulData {
            a,
            b,
            bias,
            mask,
            start,
        }
    }

    /// The epilogue's operand: the bias, the mask, or none.
    pub fn aux(&self, epilogue: Epilogue) -> Option<&[f32]> {
        match epilogue {
            Epilogue::None => None,
            Epilogue::Bias | Epilogue::BiasRelu => Some(self.bias.as_slice().unwrap()),
            Epilogue::ReluMask => Some(self.mask.as_slice().unwrap()),
        }
    }
}

/// "matmul NT Bias +=": transposes, epilogue, accumulation.
pub fn matmul_name(spec: &MatmulSpec) -> String {
    format!(
        "matmul {}{} {:?}{}",
        if spec.trans_a { "T" } else { "N" },
        if spec.trans_b { "T" } else { "N" },
        spec.epilogue,
        if spec.accumulate { " +=" } else { "" }
    )
}

/// The f64 product of one [`MatmulData`] and its per-element bound γ_K·(|A|·|B|) (+ u·|C₀|
/// when accumulating), computed once and compared against any number of computed products
/// of the same inputs (`wgtrain verify` runs one draw on several matmul variants).
pub struct MatmulReference {
    spec: MatmulSpec,
    want: Vec<f64>,
    bound: Vec<f64>,
}

impl MatmulReference {
    /// The reference result and bound of `spec` on `d`.
    pub fn new(spec: &MatmulSpec, d: &MatmulData) -> Self {
        let (a64, b64) = (to64(&d.a), to64(&d.b));
        let mut want = cpu::matmul::matmul(a64.view(), b64.view(), spec.trans_a, spec.trans_b);
        let prod_bound = cpu::matmul::matmul(
            a64.mapv(f64::abs).view(),
            b64.mapv(f64::abs).view(),
            spec.trans_a,
            spec.trans_b,
        );
        let bias64 = d.bias.mapv(|v| v as f64);
        let mask64 = to64(&d.mask);
        cpu::matmul::epilogue(
            &mut want,
            spec.epilogue,
            Some(bias64.view()),
            Some(mask64.view()),
        );
        if spec.accumulate {
            want = want + to64(&d.start);
        }
        let g = gamma(spec.k);
        let extra = if spec.accumulate { U } else { 0.0 };
        let start64 = f64s(d.start.as_slice().unwrap());
        // `dot` of transposed views may come back column-major; iterate in logical order.
        let bound = prod_bound
            .iter()
            .zip(&start64)
            .map(|(&b, &s)| g * b + extra * s.abs())
            .collect();
        MatmulReference {
            spec: *spec,
            want: want.iter().copied().collect(),
            bound,
        }
    }

    /// A computed product `got` against the reference, within the bound and 2u relative.
    pub fn compare(&self, got: &[f32]) -> Check {
        let (m, n, k) = (self.spec.m, self.spec.n, self.spec.k);
        compare(
            Family::Matmul,
            &matmul_name(&self.spec),
            format!("{m}x{n}x{k}"),
            got,
            &self.want,
            |i| (self.bound[i], 2.0 * U),
        )
    }
}

/// A computed product `got` against the f64 product of the same inputs, within γ_K·(|A|·|B|)
/// (+ u·|C₀| when accumulating) and 2u relative.
pub fn matmul_compare(spec: &MatmulSpec, d: &MatmulData, got: &[f32]) -> Check {
    MatmulReference::new(spec, d).compare(got)
}
