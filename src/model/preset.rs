//! The named networks (`--preset`): one table of name, network and description. Their training
//! settings are [`crate::train::TrainConfig::preset`]'s.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Arch;
use crate::error::Setting;
use crate::Error;

/// A named network with its training settings.
///
/// The doc comments are the CLI's help for each value (clap's `ValueEnum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The lecture's small network: 784-10-10-10; SGD lr 0.05, momentum 0.9, batch 100, init ±0.07.
    SeedSmall,
    /// The lecture's large network: 784-512-512-512-10; SGD lr 0.05, momentum 0.9, batch 100, init ±0.07.
    SeedLarge,
    /// LeNet-5: 1x28x28-c6k5p2-m2-c16k5-m2-120-84-10; Adam lr 0.001 with cosine decay, batch 100, PyTorch init.
    Lenet5,
    /// A larger CNN: 1x28x28-c32k5p2-m2-c64k5p2-m2-1024-10; Adam lr 0.001 with cosine decay, batch 100, PyTorch init.
    Cnn,
    /// For Fashion-MNIST: 1x28x28-c32k3p1-b-c32k3p1-b-m2-c64k3p1-b-c64k3p1-b-m2-d0.25-256-b-d0.5-10; Adam lr 0.001 with cosine decay, batch 100, 15 epochs, --augment crop:2,flip, --normalize auto, PyTorch init.
    Fashion,
    /// A ResNet-8 for 3×32×32 images (CIFAR-10): 3x32x32-c16k3p1-b-r(c16k3p1-b-c16k3p1-b)-r(c32k3s2p1-b-c32k3p1-b)-r(c64k3s2p1-b-c64k3p1-b)-g-10; Adam lr 0.001 with cosine decay, batch 100, PyTorch init.
    Resnet8,
}

/// Name and network of each preset, in [`Preset::ALL`]'s order.
const TABLE: [(Preset, &str, &str); 6] = [
    (Preset::SeedSmall, "seed-small", "784-10-10-10"),
    (Preset::SeedLarge, "seed-large", "784-512-512-512-10"),
    (
        Preset::Lenet5,
        "lenet5",
        "1x28x28-c6k5p2-m2-c16k5-m2-120-84-10",
    ),
    (Preset::Cnn, "cnn", "1x28x28-c32k5p2-m2-c64k5p2-m2-1024-10"),
    (
        Preset::Fashion,
        "fashion",
        "1x28x28-c32k3p1-b-c32k3p1-b-m2-c64k3p1-b-c64k3p1-b-m2-d0.25-256-b-d0.5-10",
    ),
    (
        Preset::Resnet8,
        "resnet8",
        "3x32x32-c16k3p1-b-r(c16k3p1-b-c16k3p1-b)-r(c32k3s2p1-b-c32k3p1-b)-r(c64k3s2p1-b-c64k3p1-b)-g-10",
    ),
];

impl Preset {
    /// Every preset, smallest network first (the MNIST ones, then `fashion` and `resnet8`).
    pub const ALL: [Preset; 6] = [
        Preset::SeedSmall,
        Preset::SeedLarge,
        Preset::Lenet5,
        Preset::Cnn,
        Preset::Fashion,
        Preset::Resnet8,
    ];

    fn row(self) -> &'static (Preset, &'static str, &'static str) {
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .expect("every preset has a row")
    }

    /// Its name (`seed-large`).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Its network as an arch string (`784-512-512-512-10`).
    pub fn arch_str(self) -> &'static str {
        self.row().2
    }

    /// Its network.
    pub fn arch(self) -> Arch {
        Arch::parse(self.arch_str()).expect("a preset's network parses")
    }

    /// The preset called `name`, if any.
    pub fn from_name(name: &str) -> Option<Preset> {
        TABLE.iter().find(|r| r.1 == name).map(|r| r.0)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Preset::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = TABLE.iter().map(|r| r.1).collect();
            Error::setting(
                Setting::Preset,
                format!("unknown preset {s:?}: expected one of {}", names.join(", ")),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_preset_has_one_row_its_network_parses_and_clap_names_match() {
        for (i, p) in Preset::ALL.into_iter().enumerate() {
            assert_eq!(TABLE[i].0, p);
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
            assert_eq!(p.to_possible_value().unwrap().get_name(), p.name());
            assert_eq!(p.arch().to_string(), p.arch_str());
        }
        assert_eq!(Preset::value_variants().len(), Preset::ALL.len());
        let e = "resnet".parse::<Preset>().unwrap_err().to_string();
        assert!(
            e.contains("unknown preset \"resnet\"") && e.contains("lenet5"),
            "{e}"
        );
    }
}
