//! [`ClusterLoad`]: the latest report per silo, as one silo's directors see the cluster.
//!
//! # Optimistic updates
//!
//! Reports arrive every few hundred milliseconds; a burst of placements between two reports would
//! all see the same numbers and all pick the same device. So every decision a director makes is
//! also applied to this view at once ([`ClusterLoad::record_placement`]): the chosen silo's
//! activation count and the chosen device's queue depth go up by one, its free slots down by one
//! and its free memory down by the activation's state size. The bump is remembered with the time
//! it was made; when the silo's next report arrives, it replaces the view and bumps made *after*
//! the report was measured are applied again on top (the report cannot include them yet), while
//! older ones are dropped (the report already counts them).
//!
//! Only this silo's own decisions are known; decisions other silos made since the last report
//! stay invisible until it arrives. Power-of-k sampling in the queue-depth director keeps those
//! independent deciders from all herding onto the same device.

use std::collections::BTreeMap;

use silica_grains::placement::SiloAddress;

use crate::load::{DeviceId, SiloLoadReport};
use crate::target::{PlacementDecision, PlacementTarget};

/// One optimistic bump, kept until a report measured after it arrives.
#[derive(Clone, Copy, Debug)]
struct Bump {
    at_ms: u64,
    device: Option<DeviceId>,
    state_bytes: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    report: SiloLoadReport,
    bumps: Vec<Bump>,
}

/// The latest load report per silo, with stale ones dropped by `now`.
///
/// Iteration order is by [`SiloAddress`], so directors seeded with the same random source make
/// the same decisions.
#[derive(Clone, Debug)]
pub struct ClusterLoad {
    max_age_ms: u64,
    silos: BTreeMap<SiloAddress, Entry>,
}

impl ClusterLoad {
    /// An empty table that treats reports older than `max_age_ms` as gone.
    pub fn new(max_age_ms: u64) -> Self {
        Self {
            max_age_ms,
            silos: BTreeMap::new(),
        }
    }

    /// How old a report may be before it is dropped, in milliseconds.
    pub fn max_age_ms(&self) -> u64 {
        self.max_age_ms
    }

    /// Takes in a report. Returns `false` (and ignores it) when it is already stale at `now_ms` or
    /// older than the one held for the same silo.
    pub fn handle_report(&mut self, report: SiloLoadReport, now_ms: u64) -> bool {
        if self.is_stale(report.at_ms, now_ms) {
            return false;
        }
        match self.silos.get_mut(&report.silo) {
            Some(entry) if entry.report.at_ms > report.at_ms => false,
            Some(entry) => {
                entry.bumps.retain(|b| b.at_ms > report.at_ms);
                entry.report = report;
                let Entry { report, bumps } = entry;
                for bump in bumps.iter() {
                    apply(report, *bump);
                }
                true
            }
            None => {
                self.silos.insert(
                    report.silo,
                    Entry {
                        report,
                        bumps: Vec::new(),
                    },
                );
                true
            }
        }
    }

    /// Drops every report that is stale at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let max_age = self.max_age_ms;
        self.silos
            .retain(|_, e| now_ms.saturating_sub(e.report.at_ms) <= max_age);
    }

    /// Forgets a silo at once (membership declared it dead).
    pub fn remove_silo(&mut self, silo: &SiloAddress) -> bool {
        self.silos.remove(silo).is_some()
    }

    /// The held reports, optimistic bumps included, in address order. Call [`Self::expire`] first
    /// to leave out stale ones; directors do.
    pub fn reports(&self) -> impl Iterator<Item = &SiloLoadReport> {
        self.silos.values().map(|e| &e.report)
    }

    /// The held report for `silo`, optimistic bumps included.
    pub fn report(&self, silo: &SiloAddress) -> Option<&SiloLoadReport> {
        self.silos.get(silo).map(|e| &e.report)
    }

    /// Number of silos held.
    pub fn len(&self) -> usize {
        self.silos.len()
    }

    /// Whether no silo is held.
    pub fn is_empty(&self) -> bool {
        self.silos.is_empty()
    }

    /// Applies a decision to this view at once (see the module docs). Directors call this for
    /// every decision they return.
    pub fn record_placement(
        &mut self,
        decision: &PlacementDecision,
        target: &PlacementTarget,
        now_ms: u64,
    ) {
        let Some(entry) = self.silos.get_mut(&decision.silo) else {
            return;
        };
        let bump = Bump {
            at_ms: now_ms,
            device: decision.device,
            state_bytes: target.gpu.map_or(0, |g| g.state_bytes),
        };
        apply(&mut entry.report, bump);
        entry.bumps.push(bump);
    }

    fn is_stale(&self, at_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(at_ms) > self.max_age_ms
    }
}

fn apply(report: &mut SiloLoadReport, bump: Bump) {
    report.activation_count += 1;
    if let Some(device) = bump.device.and_then(|d| report.device_mut(d)) {
        device.queue_depth += 1;
        device.free_slots = device.free_slots.saturating_sub(1);
        device.free_memory_bytes = device.free_memory_bytes.saturating_sub(bump.state_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::DeviceLoad;

    fn silo(port: u16) -> SiloAddress {
        SiloAddress::new(([127, 0, 0, 1], port).into(), 1)
    }

    fn report(port: u16, at_ms: u64, depth: u64) -> SiloLoadReport {
        let mut r = SiloLoadReport::new(silo(port), at_ms);
        let mut d = DeviceLoad::idle(DeviceId(0), 1000.0, 10, 1000);
        d.queue_depth = depth;
        r.devices.push(d);
        r
    }

    #[test]
    fn stale_and_older_reports_are_dropped() {
        // Pins staleness: a report older than max_age is refused or expired, and an older report
        // never replaces a newer one.
        let mut load = ClusterLoad::new(100);
        assert!(!load.handle_report(report(1, 0, 0), 101));
        assert!(load.handle_report(report(1, 50, 5), 100));
        assert!(!load.handle_report(report(1, 40, 9), 100));
        assert_eq!(load.report(&silo(1)).unwrap().devices[0].queue_depth, 5);
        load.expire(150);
        assert_eq!(load.len(), 1);
        load.expire(151);
        assert!(load.is_empty());
    }

    #[test]
    fn bumps_after_a_report_survive_it_and_older_ones_do_not() {
        // Pins optimistic updates across reports: a new report replaces the view, then bumps made
        // after its measurement time are applied again.
        let mut load = ClusterLoad::new(1_000);
        load.handle_report(report(1, 0, 0), 0);
        let target = PlacementTarget::new("T", 0, silo(1)).with_gpu(100);
        let decision = PlacementDecision {
            silo: silo(1),
            device: Some(DeviceId(0)),
        };
        load.record_placement(&decision, &target, 5);
        load.record_placement(&decision, &target, 20);
        let d = &load.report(&silo(1)).unwrap().devices[0];
        assert_eq!(
            (d.queue_depth, d.free_slots, d.free_memory_bytes),
            (2, 8, 800)
        );
        load.handle_report(report(1, 10, 3), 30);
        let r = load.report(&silo(1)).unwrap();
        assert_eq!((r.devices[0].queue_depth, r.activation_count), (4, 1));
    }

    #[test]
    fn reports_round_trip_through_postcard() {
        // Pins that reports can travel: serde encoding is lossless.
        let mut r = report(7, 42, 3);
        r.grain_types = Some(vec!["A".into()]);
        let bytes = postcard::to_allocvec(&r).unwrap();
        assert_eq!(postcard::from_bytes::<SiloLoadReport>(&bytes).unwrap(), r);
    }
}
