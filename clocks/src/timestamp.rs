//! The HLC timestamp value: 16 bytes, laid out for host and GPU alike.

use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Bits of [`HlcTimestamp::hlc`] that hold the logical counter (the low bits).
///
/// 2^20 stamps per millisecond is about 1 G/s from one node, ten times what a single
/// GPU ring is expected to issue, so the counter carries into the physical part only
/// under pathological load.
pub const LOGICAL_BITS: u32 = 20;

/// A hybrid logical clock timestamp.
///
/// `hlc` packs physical milliseconds since the Unix epoch in bits 63..20 (44 bits, enough
/// until the year 2527) and a logical counter in bits 19..0. Comparing `hlc` as a plain
/// `u64` therefore orders by physical time first, then by counter. When the counter would
/// overflow it carries into the physical part: the value stays strictly increasing, at the
/// cost of running at most a millisecond per 2^20 stamps ahead of wall time.
///
/// Timestamps are totally ordered by `(hlc, node)`; the node id breaks ties between nodes
/// that issued the same `hlc`. The layout is `#[repr(C)]`, 16 bytes, 8-byte aligned, so the
/// same struct can sit in GPU memory; `reserved` pads it and is always 0.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[repr(C)]
pub struct HlcTimestamp {
    /// Physical milliseconds (bits 63..20) and logical counter (bits 19..0).
    pub hlc: u64,
    /// The issuing node, see [`NodeId`].
    pub node: u32,
    /// Padding for an 8-byte-aligned 16-byte layout; always 0, not serialized, and ignored
    /// by [`HlcTimestamp::from_bytes`].
    #[serde(skip)]
    pub reserved: u32,
}

// GPU kernels index arrays of timestamps with this exact layout.
const _: () = assert!(size_of::<HlcTimestamp>() == 16);
const _: () = assert!(align_of::<HlcTimestamp>() == 8);

impl HlcTimestamp {
    /// Bits of `hlc` that hold the logical counter; same as the crate-level [`LOGICAL_BITS`].
    pub const LOGICAL_BITS: u32 = LOGICAL_BITS;
    /// Mask selecting the logical counter in `hlc`.
    pub const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
    /// The largest representable physical time in milliseconds (early in the year 2527).
    pub const MAX_PHYSICAL_MS: u64 = u64::MAX >> LOGICAL_BITS;
    /// Length of [`HlcTimestamp::to_bytes`].
    pub const ENCODED_LEN: usize = 16;
    /// The smallest timestamp: before anything any clock issues.
    pub const ZERO: HlcTimestamp = HlcTimestamp {
        hlc: 0,
        node: 0,
        reserved: 0,
    };

    /// Builds a timestamp from its parts.
    ///
    /// `physical_ms` saturates at [`Self::MAX_PHYSICAL_MS`]. A `logical` of 2^20 or more
    /// carries into the physical part, as the clock itself does on overflow.
    pub const fn new(physical_ms: u64, logical: u32, node: NodeId) -> Self {
        let physical = if physical_ms > Self::MAX_PHYSICAL_MS {
            Self::MAX_PHYSICAL_MS
        } else {
            physical_ms
        };
        Self::from_hlc(
            (physical << LOGICAL_BITS).saturating_add(logical as u64),
            node,
        )
    }

    /// Builds a timestamp from an already packed `hlc` value.
    pub const fn from_hlc(hlc: u64, node: NodeId) -> Self {
        HlcTimestamp {
            hlc,
            node: node.0,
            reserved: 0,
        }
    }

    /// Physical milliseconds since the Unix epoch.
    pub const fn physical_ms(&self) -> u64 {
        self.hlc >> LOGICAL_BITS
    }

    /// The logical counter within [`Self::physical_ms`].
    pub const fn logical(&self) -> u32 {
        (self.hlc & Self::LOGICAL_MASK) as u32
    }

    /// The issuing node as a [`NodeId`].
    pub const fn node_id(&self) -> NodeId {
        NodeId(self.node)
    }

    /// Fixed-size little-endian encoding: `hlc`, `node`, `reserved`.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.hlc.to_le_bytes());
        out[8..12].copy_from_slice(&self.node.to_le_bytes());
        out[12..].copy_from_slice(&self.reserved.to_le_bytes());
        out
    }

    /// Inverse of [`Self::to_bytes`]. Every 16-byte input is a valid timestamp; the reserved
    /// word is read as 0 so a future use of it cannot change how old readers order stamps.
    pub fn from_bytes(bytes: &[u8; Self::ENCODED_LEN]) -> Self {
        let [h0, h1, h2, h3, h4, h5, h6, h7, n0, n1, n2, n3, ..] = *bytes;
        HlcTimestamp {
            hlc: u64::from_le_bytes([h0, h1, h2, h3, h4, h5, h6, h7]),
            node: u32::from_le_bytes([n0, n1, n2, n3]),
            reserved: 0,
        }
    }
}

impl fmt::Display for HlcTimestamp {
    /// `physical.logical@node`, e.g. `1700000000000.3@7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.physical_ms(), self.logical(), self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_16_bytes_8_aligned() {
        // Pins the GPU-shared layout: 16 bytes, 8-byte aligned, fields in declared order.
        assert_eq!(size_of::<HlcTimestamp>(), 16);
        assert_eq!(align_of::<HlcTimestamp>(), 8);
        assert_eq!(std::mem::offset_of!(HlcTimestamp, hlc), 0);
        assert_eq!(std::mem::offset_of!(HlcTimestamp, node), 8);
        assert_eq!(std::mem::offset_of!(HlcTimestamp, reserved), 12);
    }

    #[test]
    fn packs_physical_and_logical() {
        // Pins the bit layout: physical in bits 63..20, logical in bits 19..0.
        let ts = HlcTimestamp::new(1_700_000_000_000, 5, NodeId(3));
        assert_eq!(ts.hlc, (1_700_000_000_000 << 20) | 5);
        assert_eq!(ts.physical_ms(), 1_700_000_000_000);
        assert_eq!(ts.logical(), 5);
        assert_eq!(ts.node_id(), NodeId(3));
        assert_eq!(ts.reserved, 0);
    }

    #[test]
    fn new_carries_logical_overflow_and_saturates_physical() {
        // Pins that `new` treats counter overflow like the clock does (carry) and never wraps.
        let ts = HlcTimestamp::new(10, 1 << 20, NodeId(0));
        assert_eq!((ts.physical_ms(), ts.logical()), (11, 0));
        let max = HlcTimestamp::new(u64::MAX, u32::MAX, NodeId(0));
        assert_eq!(max.hlc, u64::MAX);
    }

    #[test]
    fn orders_by_hlc_then_node() {
        // Pins the total order: hlc first, node id only as a tie-break.
        let a = HlcTimestamp::new(100, 0, NodeId(9));
        let b = HlcTimestamp::new(100, 1, NodeId(1));
        let c = HlcTimestamp::new(100, 1, NodeId(2));
        assert!(a < b && b < c);
        assert!(HlcTimestamp::ZERO < a);
        assert_eq!(HlcTimestamp::default(), HlcTimestamp::ZERO);
    }

    #[test]
    fn bytes_round_trip_little_endian() {
        // Pins the fixed 16-byte little-endian wire form.
        let ts = HlcTimestamp::new(0x0012_3456_789A, 0xBCDEF, NodeId(0x0102_0304));
        let bytes = ts.to_bytes();
        assert_eq!(&bytes[..8], &ts.hlc.to_le_bytes());
        assert_eq!(&bytes[8..12], &[4, 3, 2, 1]);
        assert_eq!(&bytes[12..], &[0; 4]);
        assert_eq!(HlcTimestamp::from_bytes(&bytes), ts);
    }

    #[test]
    fn from_bytes_ignores_reserved() {
        // Pins that a non-zero reserved word on the wire never reaches the ordering.
        let mut bytes = HlcTimestamp::new(1, 2, NodeId(3)).to_bytes();
        bytes[12..].copy_from_slice(&[0xFF; 4]);
        assert_eq!(HlcTimestamp::from_bytes(&bytes).reserved, 0);
    }

    #[test]
    fn serde_skips_reserved() {
        // Pins the serde form: hlc and node only, reserved comes back as 0.
        let ts = HlcTimestamp::new(42, 7, NodeId(5));
        let bytes = postcard::to_allocvec(&ts).unwrap();
        assert_eq!(postcard::from_bytes::<HlcTimestamp>(&bytes).unwrap(), ts);
    }

    #[test]
    fn display_is_physical_logical_at_node() {
        // Pins the log format of a timestamp.
        assert_eq!(HlcTimestamp::new(12, 3, NodeId(4)).to_string(), "12.3@4");
    }
}
