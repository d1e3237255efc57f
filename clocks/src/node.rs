//! Node identity shared by both clock kinds.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies the node (silo, client or GPU ring) that issued a timestamp or owns a
/// vector-clock entry. It breaks ties between equal HLC values, so it must be unique
/// within a cluster.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u32> for NodeId {
    fn from(id: u32) -> Self {
        NodeId(id)
    }
}

impl From<NodeId> for u32 {
    fn from(id: NodeId) -> Self {
        id.0
    }
}
