//! Twin of `shaders/matmul.wgsl`.

use crate::ops::Epilogue;
use ndarray::{Array2, ArrayView1, ArrayView2, LinalgScalar};

/// C\[M,N\] = op(A)·op(B), op = transpose when the flag is set (A stored \[K,M\], B stored \[N,K\]).
pub fn matmul<F: LinalgScalar>(
    a: ArrayView2<F>,
    b: ArrayView2<F>,
    trans_a: bool,
    trans_b: bool,
) -> Array2<F> {
    let a = if trans_a { a.t() } else { a };
    let b = if trans_b { b.t() } else { b };
    a.dot(&b)
}

/// The epilogue applied to a finished product, as the kernel does it.
pub fn epilogue<F: LinalgScalar + PartialOrd>(
    c: &mut Array2<F>,
    epi: Epilogue,
    bias: Option<ArrayView1<F>>,
    mask: Option<ArrayView2<F>>,
) {
    let zero = F::zero();
    match epi {
        Epilogue::None => {}
        Epilogue::Bias | Epilogue::BiasRelu => {
            let bias = bias.expect("bias epilogue needs a bias");
            for mut row in c.rows_mut() {
                row.zip_mut_with(&bias, |v, &b| *v = *v + b);
            }
            if epi == Epilogue::BiasRelu {
                c.mapv_inplace(|v| if v > zero { v } else { zero });
            }
        }
        Epilogue::ReluMask => {
            let mask = mask.expect("mask epilogue needs a mask");
            ndarray::Zip::from(c)
                .and(mask)
                .for_each(|v, &m| *v = if m > zero { *v } else { zero });
        }
    }
}
