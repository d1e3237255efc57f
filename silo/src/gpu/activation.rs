//! One GPU activation as the silo tracks it ([`Slotted`]), and the per-ring settings the call
//! path reads without touching any shared reference count ([`RingSettings`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use silica_clocks::HybridClock;
use silica_gpu::{Kernel, RingError, SlotId, SlotStatus, StageMark};
use silica_grains::{CallError, GrainId};

use super::host::HostCore;
use super::rings::DeviceRing;

/// What the call path needs from the silo, shared by every activation of a GPU variant.
pub(crate) struct RingSettings {
    pub(crate) clock: Arc<HybridClock>,
    pub(crate) max_result_bytes: usize,
    pub(crate) reply_spin: Duration,
}

/// A GPU activation: a slot in one ring. Calls clone this (it is per grain, so cores calling
/// different grains never share its reference count).
pub(crate) struct Slotted<K: Kernel> {
    pub(crate) grain: Arc<GrainId>,
    pub(crate) ring: Arc<DeviceRing<K>>,
    pub(crate) slot: SlotId,
    /// Calls running now; an activation is only deactivated at zero.
    pub(crate) in_flight: AtomicU32,
    /// The order of this activation's staged messages (`Ring::stage_marked`): beside
    /// `in_flight`, which every call writes anyway, rather than in the ring's table, where 8
    /// slots of different callers share a cache line.
    pub(crate) mark: StageMark,
    /// Set by every call, cleared by the idle sweep.
    pub(crate) used: AtomicBool,
    /// Consecutive sweeps that found it unused.
    pub(crate) idle_sweeps: AtomicU32,
    /// Set before the activation is retired (and cleared if an idle close finds a call in
    /// flight after all): references' memos check it (see `memo`). A stateless worker's is
    /// set by the failure that replaces it, so it is replaced once.
    pub(crate) retiring: AtomicBool,
    /// For stateless workers: which pool entry this is (ring index, worker index).
    pub(crate) worker: Option<(usize, usize)>,
    /// Weak: the catalog holds activations, so a strong reference would be a cycle. Only a
    /// failure upgrades it.
    pub(crate) host: Weak<HostCore<K>>,
}

impl<K: Kernel> Slotted<K> {
    /// Marks a call starting. `SeqCst`: a call entering through the thread's cache or a
    /// reference's memo pairs it with the host's epoch or `retiring` (see `recent`, `memo`).
    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    /// Marks a call finished.
    pub(crate) fn exit(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether a device fault lost this activation's slot: one load of the slot's status,
    /// which staging the call's first message reads anyway.
    pub(crate) fn is_lost(&self) -> bool {
        self.ring.ring.slot_status(self.slot) == SlotStatus::Lost
    }

    /// The call error for a ring failure seen by a call to this activation. A lost or closed
    /// slot also retires the activation, so the next call starts a fresh one.
    pub(crate) fn fail(self: &Arc<Self>, error: RingError) -> CallError {
        // A ring that stopped after a device fault answers `ShutDown` too; only a ring that
        // never faulted was shut down by the silo.
        if matches!(error, RingError::ShutDown) && self.ring.ring.health().faults == 0 {
            return CallError::ShuttingDown;
        }
        let host = self.host.upgrade();
        // A call still running when the shutdown grace period ran out had its slot deactivated
        // under it by the silo, not by a fault.
        if matches!(error, RingError::SlotNotActive(_))
            && host.as_ref().is_some_and(|h| h.is_shut_down())
        {
            return CallError::ShuttingDown;
        }
        let message = error.to_string();
        if let Some(host) = host {
            host.retire_failed(self, &message);
        }
        CallError::GpuFault {
            grain: (*self.grain).clone(),
            message,
        }
    }
}
