//! Hybrid logical clock stamps for responses, and the host-side clock the batch backends use.
//!
//! The layout is `silica_clocks::HlcTimestamp`'s: `hlc` = physical milliseconds << 20 | a 20-bit
//! logical counter, then the node id. Merge on receive: `max(last + 1, received + 1, wall << 20)`.

use silica_clocks::HlcTimestamp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// An HLC timestamp, laid out as `silica_clocks::HlcTimestamp` (16 bytes, `#[repr(C)]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HlcStamp {
    /// Physical milliseconds since the Unix epoch << 20 | logical counter.
    pub hlc: u64,
    /// The node (silo or GPU clock) that issued it.
    pub node: u32,
    /// Zero.
    pub reserved: u32,
}

impl HlcStamp {
    /// A stamp of `hlc` issued by `node`.
    pub const fn new(hlc: u64, node: u32) -> Self {
        Self {
            hlc,
            node,
            reserved: 0,
        }
    }

    /// Physical milliseconds since the Unix epoch.
    pub const fn physical_ms(&self) -> u64 {
        self.hlc >> 20
    }
}

// Same layout as the silo's timestamp, so arrays of either can be handed to kernels as is.
const _: () = assert!(size_of::<HlcStamp>() == size_of::<HlcTimestamp>());

impl From<HlcTimestamp> for HlcStamp {
    fn from(ts: HlcTimestamp) -> Self {
        Self::new(ts.hlc, ts.node)
    }
}

impl From<HlcStamp> for HlcTimestamp {
    fn from(stamp: HlcStamp) -> Self {
        Self {
            hlc: stamp.hlc,
            node: stamp.node,
            reserved: 0,
        }
    }
}

/// Nanoseconds since the Unix epoch on the host clock.
pub(crate) fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The HLC value of the current wall time.
pub(crate) fn wall_hlc() -> u64 {
    (wall_ns() / 1_000_000) << 20
}

/// An HLC shared by threads that stamp batches: one compare-and-swap per batch.
#[derive(Debug)]
pub(crate) struct HostClock {
    last: AtomicU64,
    node: u32,
}

impl HostClock {
    pub(crate) fn new(node: u32) -> Self {
        Self {
            last: AtomicU64::new(0),
            node,
        }
    }

    pub(crate) fn node(&self) -> u32 {
        self.node
    }

    /// Reserves `count` consecutive stamps after `max_received`; returns the first.
    pub(crate) fn reserve(&self, max_received: u64, count: u64) -> u64 {
        let floor = max_received.saturating_add(1).max(wall_hlc());
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let first = floor.max(last + 1);
            match self.last.compare_exchange_weak(
                last,
                first + count.max(1) - 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return first,
                Err(now) => last = now,
            }
        }
    }

    /// Raises the clock to at least `stamp`, a stamp the ring's device issued, so that the
    /// device word seeded from [`last`](Self::last) after a restart stays ahead of it.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA backends
    pub(crate) fn observe(&self, stamp: u64) {
        self.last.fetch_max(stamp, Ordering::AcqRel);
    }

    /// The last value handed out (seeds the GPU clock word).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by the CUDA backends
    pub(crate) fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire).max(wall_hlc())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins the merge rule: a stamp exceeds both the received stamp and the previous stamp.
    #[test]
    fn reserve_merges_and_is_monotonic() {
        let clock = HostClock::new(7);
        let far = wall_hlc() + (5 << 20);
        let a = clock.reserve(far, 3);
        assert_eq!(a, far + 1);
        let b = clock.reserve(0, 1);
        assert_eq!(b, a + 3);
    }

    // Pins the conversions between the GPU stamp and the silo's timestamp: fields carry over
    // both ways, in the same order, and the reserved word is dropped.
    #[test]
    fn converts_to_and_from_hlc_timestamp() {
        let ts = HlcTimestamp::new(1_800_000_000_123, 45, silica_clocks::NodeId(9));
        let stamp = HlcStamp::from(ts);
        assert_eq!((stamp.hlc, stamp.node, stamp.reserved), (ts.hlc, 9, 0));
        assert_eq!(stamp.physical_ms(), 1_800_000_000_123);
        assert_eq!(HlcTimestamp::from(stamp), ts);
        let odd = HlcStamp {
            reserved: 7,
            ..stamp
        };
        assert_eq!(HlcTimestamp::from(odd), ts);
    }
}
