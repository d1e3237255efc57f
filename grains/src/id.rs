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
///
/// Names known at compile time (interface names) are held as `&'static str`: cloning one, which
/// every call does, then touches no shared reference count that cores would fight over. Names
/// made at run time (decoded from the wire, registered under a computed name) are shared.
#[derive(Clone)]
pub struct GrainType(Name);

#[derive(Clone)]
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl GrainType {
    /// A grain type name made at run time.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(Name::Shared(name.into()))
    }

    /// A grain type name known at compile time; cheaper to clone.
    pub const fn from_static(name: &'static str) -> Self {
        Self(Name::Static(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Static(name) => name,
            Name::Shared(name) => name,
        }
    }
}

impl PartialEq for GrainType {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.as_str(), other.as_str());
        // The same static name (the common case on the call path) compares without a memcmp.
        std::ptr::eq(a, b) || a == b
    }
}

impl Eq for GrainType {}

impl std::hash::Hash for GrainType {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for GrainType {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GrainType {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Serialize for GrainType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for GrainType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(GrainType::new(Arc::<str>::deserialize(deserializer)?))
    }
}

impl fmt::Debug for GrainType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for GrainType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
        let fnv = |bytes: &[u8]| {
            bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        // Most ids encode in a few dozen bytes: no allocation for them.
        let mut buffer = [0_u8; 128];
        match postcard::to_slice(self, &mut buffer) {
            Ok(encoded) => fnv(encoded),
            Err(_) => fnv(&postcard::to_allocvec(self).expect("a GrainId always encodes")),
        }
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
        let long = GrainId::new(GrainType::new("Counter"), "k".repeat(500));
        assert_eq!(
            long.stable_hash(),
            long.clone().stable_hash(),
            "long keys hash too"
        );
        assert_ne!(a.stable_hash(), b.stable_hash());
        assert_eq!(
            a.stable_hash(),
            0xab44_69d3_55f2_2958,
            "hash changed: placement would move"
        );
    }

    // Pins that static and shared names of the same text are the same grain type, on the wire
    // too (the hash, which placement uses, does not depend on how the name is held).
    #[test]
    fn static_and_shared_names_are_interchangeable() {
        let a = GrainId::new(GrainType::from_static("Counter"), 1_i64);
        let b = GrainId::new(GrainType::new("Counter"), 1_i64);
        assert_eq!(a, b);
        assert_eq!(a.stable_hash(), b.stable_hash());
        let decoded: GrainId = postcard::from_bytes(&postcard::to_allocvec(&a).unwrap()).unwrap();
        assert_eq!(decoded, a);
    }

    // Pins the display form used in logs and errors.
    #[test]
    fn display_shows_type_and_key() {
        let id = GrainId::new(GrainType::new("Account"), (7_i64, "eur"));
        assert_eq!(id.to_string(), "Account/7+\"eur\"");
    }
}
