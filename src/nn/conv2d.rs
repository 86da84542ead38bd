//! Conv2d as im2col + the tuned matmul: cols[B·OH·OW, C·K·K] = im2col(x), then
//! y[B·OH·OW, O] = cols·Wᵀ + b (ReLU fused), which is y\[B,OH,OW,O\] channels-last. W is
//! PyTorch's \[O,C,K,K\] read as [O, C·K·K], whose column order im2col follows.
//!
//! Why im2col: every FLOP then runs in the matmul the autotuner already picks per adapter and
//! shape (see BENCHMARKS.md for the measured rates); the price is the cols buffer
//! (B·OH·OW·C·K·K words, 63 MB for the `cnn` preset's second convolution at batch 100). The
//! CPU engine fuses these ops back into direct or cache-friendly kernels where the program
//! allows (`backend/cpu.rs`); the ops stay the one description of the layer.

use super::{
    image_input, number, Build, Grammar, Io, Layer, LayerKind, Mode, Refusal, Shape, MAX_DIM,
};
use crate::backend::Backend;
use crate::ops::{BufId, Conv2dSpec, Epilogue, MatmulSpec, Op};
use crate::Result;
use std::fmt;

/// A 2-D convolution, `c{out}k{k}` with optional `s{stride}` and `p{pad}` in an architecture:
/// `out` channels, a `k`×`k` kernel, stride and zero padding on every side; PyTorch's
/// `nn.Conv2d`, weight \[O, C, K, K\] and bias \[O\].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv {
    /// Output channels O.
    pub out: usize,
    /// Kernel side K.
    pub k: usize,
    /// Step between kernel positions, in pixels (1 by default).
    pub stride: usize,
    /// Zero padding on each side, in pixels (0 by default).
    pub pad: usize,
}

impl Grammar for Conv {
    const TOKEN: &'static str = "c{o}k{k}[s{s}][p{p}]";
    const MEANING: &'static str =
        "a convolution with o channels, a k×k kernel, stride s (1) and zero padding p (0)";
    const EXAMPLE: &'static str = "c32k5p2";
    /// `c32k5`, `c8k3s2p1` (`s` and `p` in any order, each at most once).
    fn parse(tok: &str) -> Option<Self> {
        let rest = tok.strip_prefix('c')?;
        // Split into letter-led fields: the channel count, then k, then optional s and p.
        let (out, rest) = rest.split_at(rest.find(|c: char| !c.is_ascii_digit())?);
        let out = number(out)?;
        let mut fields = Vec::new();
        let mut rest = rest;
        while let Some(tag) = rest.chars().next() {
            let body = &rest[1..];
            let end = body
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(body.len());
            fields.push((tag, number(&body[..end])?));
            rest = &body[end..];
        }
        let [('k', k), ref suffixes @ ..] = fields[..] else {
            return None;
        };
        let (mut stride, mut pad) = (None, None);
        for &(tag, v) in suffixes {
            let slot = match tag {
                's' => &mut stride,
                'p' => &mut pad,
                _ => return None,
            };
            if slot.replace(v).is_some() {
                return None;
            }
        }
        Some(Conv {
            out,
            k,
            stride: stride.unwrap_or(1),
            pad: pad.unwrap_or(0),
        })
    }
}

impl fmt::Display for Conv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}k{}", self.out, self.k)?;
        if self.stride != 1 {
            write!(f, "s{}", self.stride)?;
        }
        if self.pad != 0 {
            write!(f, "p{}", self.pad)?;
        }
        Ok(())
    }
}

impl LayerKind for Conv {
    fn output(&self, input: Shape, from: &str) -> std::result::Result<Shape, Refusal> {
        let (_, h, w) = image_input(input, "a convolution", from)?;
        let Conv {
            out,
            k,
            stride,
            pad,
        } = *self;
        for (v, name, min) in [
            (out, "output channels", 1),
            (k, "kernel size", 1),
            (stride, "stride", 1),
            (pad, "padding", 0),
        ] {
            if v < min {
                return Err(format!("{name} must be at least {min}"));
            }
            if v > MAX_DIM {
                return Err(format!("{name} {v} is over {MAX_DIM}"));
            }
        }
        let (ph, pw) = (h.saturating_add(2 * pad), w.saturating_add(2 * pad));
        if k > ph || k > pw {
            return Err(format!(
                "{k}x{k} kernel is larger than its input {input} padded to {ph}x{pw}"
            ));
        }
        Ok(Shape::Image {
            c: out,
            h: (ph - k) / stride + 1,
            w: (pw - k) / stride + 1,
        })
    }

    fn params(&self, input: Shape) -> Option<(Vec<usize>, usize)> {
        let c = match input {
            Shape::Image { c, .. } => c,
            Shape::Flat(n) => n,
        };
        Some((vec![self.out, c, self.k, self.k], self.out))
    }

    fn relu_after(&self) -> bool {
        true
    }

    fn build(&self, b: Build<'_>) -> Result<Box<dyn Layer>> {
        let Build {
            input,
            output,
            batch,
            relu,
            be,
            ..
        } = b;
        let Shape::Image { c, h, w } = input else {
            unreachable!("Arch::shapes refuses a convolution after a flat shape")
        };
        let spec = Conv2dSpec {
            batch,
            c_in: c,
            h,
            w,
            c_out: self.out,
            k: self.k,
            stride: self.stride,
            pad: self.pad,
        };
        debug_assert_eq!(output.len() * batch, spec.output_len());
        Ok(Box::new(ConvLayer::new(spec, relu, be)?))
    }
}

/// A convolution layer over a batch (see the module docs), with its im2col buffers.
pub struct ConvLayer {
    spec: Conv2dSpec,
    relu: bool,
    /// None when im2col would be the identity (1×1 kernel, stride 1, no padding).
    cols: Option<BufId>,
    dcols: Option<BufId>,
}

impl ConvLayer {
    /// The layer `spec` (ReLU fused if `relu`), allocating its cols and dcols buffers on `be`
    /// unless im2col is the identity; fails if the device cannot hold them.
    pub fn new(spec: Conv2dSpec, relu: bool, be: &mut dyn Backend) -> Result<Self> {
        let identity = spec.k == 1 && spec.stride == 1 && spec.pad == 0;
        let n = spec.col_rows() * spec.col_cols();
        let (cols, dcols) = if identity {
            (None, None)
        } else {
            (
                Some(be.alloc("conv cols", n)?),
                Some(be.alloc("conv dcols", n)?),
            )
        };
        Ok(ConvLayer {
            spec,
            relu,
            cols,
            dcols,
        })
    }

    fn gemm(&self) -> (usize, usize, usize) {
        (self.spec.col_rows(), self.spec.c_out, self.spec.col_cols())
    }
}

impl Layer for ConvLayer {
    fn param_lens(&self) -> Option<(usize, usize)> {
        Some((self.spec.c_out * self.spec.col_cols(), self.spec.c_out))
    }

    fn relu(&self) -> bool {
        self.relu
    }

    fn forward(&self, io: &Io, _mode: Mode, ops: &mut Vec<Op>) {
        let p = io.p.expect("conv parameters");
        let cols = match self.cols {
            Some(cols) => {
                ops.push(Op::Im2col {
                    spec: self.spec,
                    x: io.x,
                    cols,
                });
                cols
            }
            None => io.x,
        };
        let (m, n, k) = self.gemm();
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                trans_b: true,
                epilogue: if self.relu {
                    Epilogue::BiasRelu
                } else {
                    Epilogue::Bias
                },
                ..MatmulSpec::new(m, n, k)
            },
            a: cols,
            b: p.w,
            aux: Some(p.b),
            c: io.y,
        });
    }

    fn backward(&self, io: &Io, ops: &mut Vec<Op>) {
        let p = io.p.expect("conv parameters");
        let (m, n, k) = self.gemm();
        // dW[O, C·K·K] = dYᵀ·cols, db[O] = Σ over B·OH·OW rows of dY
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                trans_a: true,
                ..MatmulSpec::new(n, k, m)
            },
            a: io.dy,
            b: self.cols.unwrap_or(io.x),
            aux: None,
            c: p.dw,
        });
        ops.push(Op::BiasBackward {
            rows: m,
            cols: n,
            dy: io.dy,
            db: p.db,
        });
        let Some(dx) = io.dx else { return };
        // dcols[B·OH·OW, C·K·K] = dY·W, then summed back onto the input positions.
        let (target, epilogue, aux) = match self.dcols {
            Some(dcols) => (dcols, Epilogue::None, None),
            // 1×1: dcols is dx itself, masked in the matmul.
            None if io.mask.is_some() => (dx, Epilogue::ReluMask, io.mask),
            None => (dx, Epilogue::None, None),
        };
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                epilogue,
                ..MatmulSpec::new(m, k, n)
            },
            a: io.dy,
            b: p.w,
            aux,
            c: target,
        });
        if let Some(dcols) = self.dcols {
            ops.push(Op::Col2im {
                spec: self.spec,
                dcols,
                mask: io.mask,
                dx,
            });
        }
    }
}
