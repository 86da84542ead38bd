//! A dense layer y = x·Wᵀ + b (ReLU optional), W \[O,I\] as PyTorch's `nn.Linear`. After a
//! convolution or pooling block its input is the channels-last image viewed as [B, H·W·C].

use super::{number, Build, Grammar, Io, Layer, LayerKind, Mode, Refusal, Shape, MAX_DIM};
use crate::ops::{Epilogue, MatmulSpec, Op};
use crate::Result;
use std::fmt;

/// A dense layer of `out` outputs, `512` in an architecture (a flatten is implied when its
/// input is an image); PyTorch's `nn.Linear`, weight \[O, I\] and bias \[O\].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dense {
    /// Outputs O.
    pub out: usize,
}

impl Grammar for Dense {
    const TOKEN: &'static str = "{o}";
    const MEANING: &'static str = "a dense layer of o outputs (flatten implied)";
    const EXAMPLE: &'static str = "512";
    fn parse(tok: &str) -> Option<Self> {
        number(tok).map(|out| Dense { out })
    }
}

impl fmt::Display for Dense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.out)
    }
}

impl LayerKind for Dense {
    fn output(&self, _input: Shape, _from: &str) -> std::result::Result<Shape, Refusal> {
        if self.out == 0 {
            return Err("width must be at least 1".into());
        }
        if self.out > MAX_DIM {
            return Err(format!("width is over {MAX_DIM}"));
        }
        Ok(Shape::Flat(self.out))
    }

    fn params(&self, input: Shape) -> Option<(Vec<usize>, usize)> {
        Some((vec![self.out, input.len()], self.out))
    }

    fn relu_after(&self) -> bool {
        true
    }

    fn build(&self, b: Build<'_>) -> Result<Box<dyn Layer>> {
        let Build {
            input, batch, relu, ..
        } = b;
        Ok(Box::new(DenseLayer::new(input, self.out, batch, relu)))
    }
}

/// A dense layer over a batch of rows (see the module docs).
pub struct DenseLayer {
    batch: usize,
    i: usize,
    o: usize,
    relu: bool,
    /// (C, H, W) when the input is an image: the flatten is a view of channels-last data, so
    /// the weight's columns are stored in H,W,C order inside the engine.
    image: Option<(usize, usize, usize)>,
}

impl DenseLayer {
    /// A layer from `input` (flattened) to `out` outputs over `batch` rows, ReLU fused if `relu`.
    pub fn new(input: Shape, out: usize, batch: usize, relu: bool) -> Self {
        let image = match input {
            Shape::Image { c, h, w } if c > 1 => Some((c, h, w)),
            _ => None,
        };
        DenseLayer {
            batch,
            i: input.len(),
            o: out,
            relu,
            image,
        }
    }

    /// Permute each row's columns between C,H,W and H,W,C order.
    fn permute(&self, w: Vec<f32>, to_engine: bool) -> Vec<f32> {
        let Some((c, h, wd)) = self.image else {
            return w;
        };
        let mut out = vec![0.0; w.len()];
        for (src_row, dst_row) in w.chunks(self.i).zip(out.chunks_mut(self.i)) {
            for ci in 0..c {
                for p in 0..h * wd {
                    let chw = ci * h * wd + p;
                    let hwc = p * c + ci;
                    if to_engine {
                        dst_row[hwc] = src_row[chw];
                    } else {
                        dst_row[chw] = src_row[hwc];
                    }
                }
            }
        }
        out
    }
}

impl Layer for DenseLayer {
    fn param_lens(&self) -> Option<(usize, usize)> {
        Some((self.o * self.i, self.o))
    }

    fn relu(&self) -> bool {
        self.relu
    }

    fn forward(&self, io: &Io, _mode: Mode, ops: &mut Vec<Op>) {
        let p = io.p.expect("dense parameters");
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                trans_b: true,
                epilogue: if self.relu {
                    Epilogue::BiasRelu
                } else {
                    Epilogue::Bias
                },
                ..MatmulSpec::new(self.batch, self.o, self.i)
            },
            a: io.x,
            b: p.w,
            aux: Some(p.b),
            c: io.y,
        });
    }

    fn backward(&self, io: &Io, ops: &mut Vec<Op>) {
        let p = io.p.expect("dense parameters");
        // dW[O,I] = dYᵀ·X, db[O] = Σ_B dY
        ops.push(Op::Matmul {
            spec: MatmulSpec {
                trans_a: true,
                ..MatmulSpec::new(self.o, self.i, self.batch)
            },
            a: io.dy,
            b: io.x,
            aux: None,
            c: p.dw,
        });
        ops.push(Op::BiasBackward {
            rows: self.batch,
            cols: self.o,
            dy: io.dy,
            db: p.db,
        });
        if let Some(dx) = io.dx {
            // dX[B,I] = dY·W, masked by the ReLU of the layer below
            ops.push(Op::Matmul {
                spec: MatmulSpec {
                    epilogue: if io.mask.is_some() {
                        Epilogue::ReluMask
                    } else {
                        Epilogue::None
                    },
                    ..MatmulSpec::new(self.batch, self.i, self.o)
                },
                a: io.dy,
                b: p.w,
                aux: io.mask,
                c: dx,
            });
        }
    }

    fn weight_to_engine(&self, w: Vec<f32>) -> Vec<f32> {
        self.permute(w, true)
    }

    fn weight_from_engine(&self, w: Vec<f32>) -> Vec<f32> {
        self.permute(w, false)
    }
}
