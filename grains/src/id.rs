//! Grain identity: a grain type name plus a key.
//!
//! A `GrainId` names a grain forever, whether or not it is active anywhere: that is what makes
//! grains virtual. Keys come in the shapes Orleans users know: string, integer, UUID, and the
//! compound keys (integer or UUID plus a string extension).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The name a grain type is registered and addressed under (by default the interface's name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrainType(Arc<str>);

impl GrainType {
    /// A grain type name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GrainType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for GrainType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key part of a grain id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GrainKey {
    /// A string key, e.g. a user name.
    String(Arc<str>),
    /// An integer key.
    Integer(i64),
    /// A UUID key.
    Uuid(Uuid),
    /// An integer key with a string extension (Orleans' compound key).
    IntegerCompound(i64, Arc<str>),
    /// A UUID key with a string extension (Orleans' compound key).
    UuidCompound(Uuid, Arc<str>),
}

impl fmt::Display for GrainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrainKey::String(s) => write!(f, "{s:?}"),
            GrainKey::Integer(i) => write!(f, "{i}"),
            GrainKey::Uuid(u) => write!(f, "{u}"),
            GrainKey::IntegerCompound(i, ext) => write!(f, "{i}+{ext:?}"),
            GrainKey::UuidCompound(u, ext) => write!(f, "{u}+{ext:?}"),
        }
    }
}

impl From<&str> for GrainKey {
    fn from(value: &str) -> Self {
        GrainKey::String(value.into())
    }
}

impl From<String> for GrainKey {
    fn from(value: String) -> Self {
        GrainKey::String(value.into())
    }
}

impl From<i64> for GrainKey {
    fn from(value: i64) -> Self {
        GrainKey::Integer(value)
    }
}

impl From<Uuid> for GrainKey {
    fn from(value: Uuid) -> Self {
        GrainKey::Uuid(value)
    }
}

impl From<(i64, &str)> for GrainKey {
    fn from((key, ext): (i64, &str)) -> Self {
        GrainKey::IntegerCompound(key, ext.into())
    }
}

impl From<(Uuid, &str)> for GrainKey {
    fn from((key, ext): (Uuid, &str)) -> Self {
        GrainKey::UuidCompound(key, ext.into())
    }
}

/// The identity of one grain: its type and its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrainId {
    /// The grain type the id belongs to.
    pub grain_type: GrainType,
    /// The key within that type.
    pub key: GrainKey,
}

impl GrainId {
    /// The id of the grain of `grain_type` with `key`.
    pub fn new(grain_type: GrainType, key: impl Into<GrainKey>) -> Self {
        Self {
            grain_type,
            key: key.into(),
        }
    }

    /// A stable 64-bit hash of the id (FNV-1a over its encoding), the same in every process.
    ///
    /// Hash-based placement and the directory ring use it, so it must not depend on
    /// `std`'s randomly seeded hasher.
    pub fn stable_hash(&self) -> u64 {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

impl fmt::Display for GrainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.grain_type, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins that the stable hash does not change between runs or processes (it feeds placement).
    #[test]
    fn stable_hash_is_deterministic_and_key_sensitive() {
        let a = GrainId::new(GrainType::new("Counter"), "a");
        let b = GrainId::new(GrainType::new("Counter"), "b");
        assert_eq!(a.stable_hash(), a.clone().stable_hash());
        assert_ne!(a.stable_hash(), b.stable_hash());
        assert_eq!(
            a.stable_hash(),
            0xab44_69d3_55f2_2958,
            "hash changed: placement would move"
        );
    }

    // Pins the display form used in logs and errors.
    #[test]
    fn display_shows_type_and_key() {
        let id = GrainId::new(GrainType::new("Account"), (7_i64, "eur"));
        assert_eq!(id.to_string(), "Account/7+\"eur\"");
    }
}
