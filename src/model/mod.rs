//! Multilayer perceptrons: architecture, parameters, initialisation and file I/O.
//!
//! Weights use PyTorch's `nn.Linear` layout: `weight` is [O, I] (out, in), `bias` is [O], so a
//! saved file loads in PyTorch unchanged.

use crate::{Error, Result};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};

pub mod io;

/// Layer widths from input to output, e.g. `[784, 512, 512, 10]`. Hidden layers use ReLU, the
/// output layer feeds softmax + cross-entropy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    /// Widths, input first; at least two entries.
    pub sizes: Vec<usize>,
}

impl Arch {
    /// Parse `784-512-10` (also accepts `,` or `x` as separators).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidArg {
            name: "--arch",
            reason,
        };
        let sizes = s
            .split(['-', ',', 'x'])
            .map(|p| {
                p.trim()
                    .parse::<usize>()
                    .map_err(|_| bad(format!("{p:?} in {s:?} is not a layer width")))
            })
            .collect::<Result<Vec<_>>>()?;
        if sizes.len() < 2 {
            return Err(bad(format!(
                "{s:?} needs at least an input and an output width, e.g. 784-10"
            )));
        }
        if let Some(z) = sizes.iter().find(|&&w| w == 0 || w > 1 << 20) {
            return Err(bad(format!(
                "layer width {z} in {s:?} must be in 1..=1048576"
            )));
        }
        Ok(Arch { sizes })
    }

    /// Number of dense layers.
    pub fn n_layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// Input width I of the first layer.
    pub fn input(&self) -> usize {
        self.sizes[0]
    }

    /// Number of classes C.
    pub fn classes(&self) -> usize {
        *self.sizes.last().unwrap()
    }

    /// (I, O) of dense layer `l`.
    pub fn layer(&self, l: usize) -> (usize, usize) {
        (self.sizes[l], self.sizes[l + 1])
    }

    /// Total number of parameters.
    pub fn n_params(&self) -> usize {
        (0..self.n_layers())
            .map(|l| {
                let (i, o) = self.layer(l);
                i * o + o
            })
            .sum()
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.sizes.iter().map(|w| w.to_string()).collect();
        f.write_str(&s.join("-"))
    }
}

/// One dense layer: y = x·Wᵀ + b.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// [O, I]
    pub weight: Array2<f32>,
    /// [O]
    pub bias: Array1<f32>,
}

/// A multilayer perceptron with ReLU hidden layers and a softmax output.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    pub arch: Arch,
    pub layers: Vec<Dense>,
}

impl Mlp {
    /// Weights uniform in [-scale, scale], biases 0 (the lecture's initialisation), drawn from a
    /// ChaCha8 stream seeded with `seed` so every platform gets the same network.
    pub fn init_uniform(arch: &Arch, scale: f32, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let layers = (0..arch.n_layers())
            .map(|l| {
                let (i, o) = arch.layer(l);
                Dense {
                    weight: Array2::from_shape_simple_fn((o, i), || {
                        rng.random_range(-scale..=scale)
                    }),
                    bias: Array1::zeros(o),
                }
            })
            .collect();
        Mlp {
            arch: arch.clone(),
            layers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_parses_and_prints() {
        let a = Arch::parse("784-512-10").unwrap();
        assert_eq!(a.sizes, vec![784, 512, 10]);
        assert_eq!(a.to_string(), "784-512-10");
        assert_eq!(a.n_params(), 784 * 512 + 512 + 512 * 10 + 10);
    }

    #[test]
    fn arch_rejects_garbage() {
        assert!(Arch::parse("784").is_err());
        assert!(Arch::parse("784-0-10").is_err());
        assert!(Arch::parse("784-abc").is_err());
    }

    #[test]
    fn init_is_reproducible_and_bounded() {
        let a = Arch::parse("20-7-3").unwrap();
        let m1 = Mlp::init_uniform(&a, 0.07, 5);
        let m2 = Mlp::init_uniform(&a, 0.07, 5);
        assert_eq!(m1, m2);
        assert!(m1.layers[0].weight.iter().all(|w| w.abs() <= 0.07));
        assert!(m1.layers[0].bias.iter().all(|&b| b == 0.0));
    }
}
