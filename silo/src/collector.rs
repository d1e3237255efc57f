//! The idle collector: one task per silo that deactivates activations idle for their type's
//! `idle_after` (Orleans' activation collector).
//!
//! Each sweep clears every activation's `active` flag; an activation found idle (no call since
//! the last sweep, nothing in flight) on enough consecutive sweeps is asked to deactivate. So an
//! activation goes between `idle_after` and `idle_after` plus one sweep period after its last
//! call. One timer for the whole silo keeps idle activations down to their mailbox and state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use silica_grains::DeactivationReason;

use crate::runtime::SiloInner;

/// Sweeps at least this often, so long idle ages are still honoured closely.
const MAX_PERIOD: Duration = Duration::from_secs(60);
/// Sweeps at most this often.
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// Starts the collector of `silo`; it stops when shutdown begins.
pub(crate) fn start(silo: &Arc<SiloInner>) {
    let Some(shortest) = silo.registry.values().map(|r| r.options.idle_after).min() else {
        return;
    };
    let period = (shortest / 4).clamp(MIN_PERIOD, MAX_PERIOD);
    let weak = Arc::downgrade(silo);
    let stopping = silo.stopping.clone();
    silo.tracker.spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(silo) = weak.upgrade() else { return };
            sweep(&silo, period);
        }
    });
}

fn sweep(silo: &SiloInner, period: Duration) {
    for gpu in silo.registry.values().filter_map(|r| r.gpu.as_ref()) {
        gpu.sweep(period);
    }
    silo.catalog.for_each(|handle| {
        let was_active = handle.active.swap(false, Ordering::Relaxed);
        if was_active || handle.queue_depth() > 0 {
            handle.idle_sweeps.store(0, Ordering::Relaxed);
            return;
        }
        let sweeps = handle.idle_sweeps.fetch_add(1, Ordering::Relaxed) + 1;
        if period * sweeps >= handle.idle_after {
            handle.request_deactivation(DeactivationReason::Idle);
        }
    });
}
