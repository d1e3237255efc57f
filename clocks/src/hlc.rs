//! The hybrid logical clock: one atomic word, safe to share between threads.

use crate::{ClockError, HlcTimestamp, LOGICAL_BITS, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch from the system clock; 0 if the clock reads before
/// the epoch. The only I/O in this crate: everything else takes time as an argument.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Settings of a [`HybridClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockConfig {
    /// How far ahead of local wall time (in ms) a received timestamp may be before
    /// [`HybridClock::update`] rejects it. Default 500 ms.
    pub max_forward_offset_ms: u64,
}

impl ClockConfig {
    /// The default for [`ClockConfig::max_forward_offset_ms`].
    pub const DEFAULT_MAX_FORWARD_OFFSET_MS: u64 = 500;
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            max_forward_offset_ms: Self::DEFAULT_MAX_FORWARD_OFFSET_MS,
        }
    }
}

/// A lock-free hybrid logical clock for one node.
///
/// Every stamp it issues is strictly greater than every stamp it issued before, from any
/// thread, whatever the wall time passed in does (it may stall or go backwards). The state
/// is the last issued `hlc` in one `AtomicU64`, advanced by compare-and-swap.
///
/// At the end of the representable range (the year 2527) the clock saturates at
/// `u64::MAX` instead of wrapping.
pub struct HybridClock {
    last: AtomicU64,
    node: NodeId,
    config: ClockConfig,
}

impl HybridClock {
    /// A clock for `node` that has issued nothing yet.
    pub fn new(node: NodeId, config: ClockConfig) -> Self {
        HybridClock {
            last: AtomicU64::new(0),
            node,
            config,
        }
    }

    /// Stamps a local or send event: `max(last + 1, wall_ms << 20)`.
    pub fn now(&self, wall_ms: u64) -> HlcTimestamp {
        let floor = physical_floor(wall_ms);
        self.advance(|last| last.saturating_add(1).max(floor))
    }

    /// Stamps a receive event: `max(last + 1, received.hlc + 1, wall_ms << 20)`.
    ///
    /// The result is greater than `received` and than every earlier stamp of this clock.
    /// A `received` more than `max_forward_offset_ms` ahead of `wall_ms` is rejected with
    /// [`ClockError::TooFarAhead`] and leaves the clock unchanged.
    pub fn update(&self, received: HlcTimestamp, wall_ms: u64) -> Result<HlcTimestamp, ClockError> {
        let max_offset_ms = self.config.max_forward_offset_ms;
        if received.physical_ms() > wall_ms.saturating_add(max_offset_ms) {
            return Err(ClockError::TooFarAhead {
                received_ms: received.physical_ms(),
                local_ms: wall_ms,
                max_offset_ms,
            });
        }
        let floor = physical_floor(wall_ms).max(received.hlc.saturating_add(1));
        Ok(self.advance(|last| last.saturating_add(1).max(floor)))
    }

    /// The last stamp this clock issued, stamped with this node (`hlc` 0 if none yet).
    pub fn last(&self) -> HlcTimestamp {
        HlcTimestamp::from_hlc(self.last.load(Ordering::Acquire), self.node)
    }

    /// The node this clock stamps for.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The settings this clock was built with.
    pub fn config(&self) -> ClockConfig {
        self.config
    }

    fn advance(&self, next: impl Fn(u64) -> u64) -> HlcTimestamp {
        // The CAS makes each issued value unique and the sequence strictly increasing; no
        // other memory is published through this word, but AcqRel keeps stamps ordered with
        // whatever the caller did before stamping at no extra cost on x86.
        let prev = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(next(last)))
            .unwrap_or_else(|never| never);
        HlcTimestamp::from_hlc(next(prev), self.node)
    }
}

/// `wall_ms << 20`, saturating so that absurd wall times cannot wrap to the past.
fn physical_floor(wall_ms: u64) -> u64 {
    wall_ms.min(HlcTimestamp::MAX_PHYSICAL_MS) << LOGICAL_BITS
}

impl fmt::Debug for HybridClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridClock")
            .field("node", &self.node)
            .field("last", &self.last())
            .field("config", &self.config)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000_000;

    fn clock() -> HybridClock {
        HybridClock::new(NodeId(1), ClockConfig::default())
    }

    #[test]
    fn now_follows_wall_time() {
        // Pins that a fresh clock stamps at wall time with logical 0.
        let c = clock();
        let ts = c.now(T);
        assert_eq!(
            (ts.physical_ms(), ts.logical(), ts.node_id()),
            (T, 0, NodeId(1))
        );
        assert_eq!(c.last(), ts);
    }

    #[test]
    fn now_counts_when_wall_stalls_or_goes_back() {
        // Pins strict increase via the logical counter when wall time does not advance.
        let c = clock();
        let a = c.now(T);
        let b = c.now(T);
        let d = c.now(T - 1_000);
        assert_eq!((b.physical_ms(), b.logical()), (T, 1));
        assert_eq!((d.physical_ms(), d.logical()), (T, 2));
        assert!(a < b && b < d);
    }

    #[test]
    fn update_adopts_received_ahead_within_offset() {
        // Pins that a receive moves the clock past a slightly-ahead sender.
        let c = clock();
        let received = HlcTimestamp::new(T + 400, 7, NodeId(2));
        let ts = c.update(received, T).unwrap();
        assert_eq!((ts.physical_ms(), ts.logical()), (T + 400, 8));
        assert!(ts > received);
        assert!(c.now(T) > ts);
    }

    #[test]
    fn update_rejects_far_future_and_keeps_state() {
        // Pins rule: a timestamp too far ahead is rejected, not adopted.
        let c = clock();
        let before = c.now(T);
        let received = HlcTimestamp::new(T + 501, 0, NodeId(2));
        let err = c.update(received, T).unwrap_err();
        assert_eq!(
            err,
            ClockError::TooFarAhead {
                received_ms: T + 501,
                local_ms: T,
                max_offset_ms: 500
            }
        );
        assert_eq!(c.last(), before);
        // Exactly at the limit is still accepted.
        assert!(
            c.update(HlcTimestamp::new(T + 500, 0, NodeId(2)), T)
                .is_ok()
        );
    }

    #[test]
    fn update_with_old_received_still_advances() {
        // Pins that a stale received stamp cannot move the clock backwards.
        let c = clock();
        let a = c.now(T);
        let b = c
            .update(HlcTimestamp::new(T - 10, 0, NodeId(2)), T)
            .unwrap();
        assert!(b > a);
    }

    #[test]
    fn saturates_at_end_of_range() {
        // Pins that extreme inputs saturate instead of wrapping to the past.
        let c = HybridClock::new(
            NodeId(1),
            ClockConfig {
                max_forward_offset_ms: u64::MAX,
            },
        );
        let ts = c
            .update(HlcTimestamp::from_hlc(u64::MAX, NodeId(2)), u64::MAX)
            .unwrap();
        assert_eq!(ts.hlc, u64::MAX);
        assert_eq!(c.now(u64::MAX).hlc, u64::MAX);
    }

    #[test]
    fn wall_clock_is_after_2020() {
        // Pins that wall_clock_ms reads milliseconds, not seconds or micros.
        let ms = wall_clock_ms();
        assert!(ms > 1_577_836_800_000 && ms < HlcTimestamp::MAX_PHYSICAL_MS);
    }
}
