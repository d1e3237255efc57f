//! [`ActivationAddress`]: where one activation of a grain lives.

use serde::{Deserialize, Serialize};
use silica_grains::placement::SiloAddress;

/// Names one activation on its silo; a re-activation gets a new id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActivationId(pub u64);

/// One activation: the silo incarnation hosting it and its id there.
///
/// The id tells two activations of the same grain on the same silo apart (one deactivated, the
/// next activated), so a late unregister of the old one cannot remove the new one's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActivationAddress {
    /// The silo hosting the activation.
    pub silo: SiloAddress,
    /// The activation's id on that silo.
    pub activation: ActivationId,
}

impl ActivationAddress {
    /// The address of activation `activation` on `silo`.
    pub fn new(silo: SiloAddress, activation: ActivationId) -> Self {
        Self { silo, activation }
    }
}

impl std::fmt::Display for ActivationAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.silo, self.activation.0)
    }
}
