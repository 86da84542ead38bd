//! The families of kernels and ops that are checked together.

/// A family of kernels (on a GPU adapter) or ops (on any backend) checked together, as
/// `wgtrain verify --kernel` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Family {
    /// Matrix products: every variant, transpose, epilogue and accumulation.
    #[value(name = "matmul")]
    Matmul,
    /// The bias gradient (column sums; the bias add is a matmul epilogue).
    #[value(name = "bias")]
    Bias,
    /// Softmax with cross-entropy, forward and backward, with and without label smoothing.
    #[value(name = "softmax_xent")]
    SoftmaxXent,
    /// SGD with momentum (plain and Nesterov) and L2, at a fixed or scheduled learning rate.
    #[value(name = "sgd")]
    Sgd,
    /// The metrics accumulation (loss sum, correct and seen counts).
    #[value(name = "metrics")]
    Metrics,
    /// The minibatch gather and the cursor's advance.
    #[value(name = "gather")]
    Gather,
    /// im2col, col2im and (on a backend) whole convolution layers.
    #[value(name = "conv2d")]
    Conv2d,
    /// Max-pooling forward and backward.
    #[value(name = "maxpool")]
    Maxpool,
    /// Average-pooling forward and backward (K×K and global).
    #[value(name = "avgpool")]
    Avgpool,
    /// The Adam update and AdamW's decoupled weight decay.
    #[value(name = "adam")]
    Adam,
    /// Dropout forward and backward (the mask bit for bit).
    #[value(name = "dropout")]
    Dropout,
    /// Batch normalisation: training and evaluation statistics, the normalisation, the
    /// parameter and input gradients.
    #[value(name = "batchnorm")]
    Batchnorm,
    /// The residual join: the add (+ ReLU) and its pass-through / accumulating gradient.
    #[value(name = "add")]
    Add,
}

impl Family {
    /// Every family, in the order `wgtrain verify` runs them.
    pub const ALL: [Family; 13] = [
        Family::Matmul,
        Family::Bias,
        Family::SoftmaxXent,
        Family::Sgd,
        Family::Metrics,
        Family::Gather,
        Family::Conv2d,
        Family::Maxpool,
        Family::Avgpool,
        Family::Adam,
        Family::Dropout,
        Family::Batchnorm,
        Family::Add,
    ];

    /// The name on the command line and in reports, e.g. `softmax_xent`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Matmul => "matmul",
            Family::Bias => "bias",
            Family::SoftmaxXent => "softmax_xent",
            Family::Sgd => "sgd",
            Family::Metrics => "metrics",
            Family::Gather => "gather",
            Family::Conv2d => "conv2d",
            Family::Maxpool => "maxpool",
            Family::Avgpool => "avgpool",
            Family::Adam => "adam",
            Family::Dropout => "dropout",
            Family::Batchnorm => "batchnorm",
            Family::Add => "add",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = String;

    /// A family by its [`name`](Family::name).
    fn from_str(s: &str) -> Result<Self, String> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown kernel family {s:?}; expected one of {:?}",
                    Family::ALL.map(Family::name)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_round_trip_through_clap_and_from_str() {
        for f in Family::ALL {
            assert_eq!(f.to_string(), f.name());
            assert_eq!(f.name().parse::<Family>(), Ok(f));
            assert_eq!(Family::from_str(f.name(), false), Ok(f));
            assert_eq!(f.to_possible_value().unwrap().get_name(), f.name());
        }
        assert_eq!(Family::value_variants(), Family::ALL);
        assert!("softmax-xent".parse::<Family>().is_err());
        assert!("relu".parse::<Family>().is_err());
    }
}
