//! Load reports and placement: this silo's [`SiloLoadReport`] (activations, grain types, GPU
//! device loads from its GPU variants), sent to the other active silos every
//! `load_report_period`, and the placement of new activations from the reports received.

use std::collections::BTreeMap;
use std::sync::Arc;

use silica_clocks::wall_clock_ms;
use silica_grains::placement::SiloAddress;
use silica_grains::{CallError, GrainId};
use silica_placement::{DeviceLoad, PlacementTarget, SiloLoadReport};

use super::protocol::SystemRequest;
use super::{ClusterNode, lock};
use crate::cluster::SiloStatus;
use crate::runtime::SiloInner;

impl ClusterNode {
    /// This silo's load now.
    pub(crate) fn own_report(&self, silo: &SiloInner) -> SiloLoadReport {
        let mut report = SiloLoadReport::new(self.me, wall_clock_ms());
        let mut devices: BTreeMap<_, DeviceLoad> = BTreeMap::new();
        let mut gpu_activations = 0;
        for registration in silo.registry.values() {
            let Some(gpu) = &registration.gpu else {
                continue;
            };
            let status = gpu.status();
            gpu_activations += status.activations;
            // Several variants share a device: their queues add up, the tightest capacity counts.
            for device in status.devices.iter().filter(|d| d.usable) {
                devices
                    .entry(device.load.device)
                    .and_modify(|d| {
                        d.queue_depth += device.load.queue_depth;
                        d.service_rate_per_s =
                            d.service_rate_per_s.max(device.load.service_rate_per_s);
                        d.free_slots = d.free_slots.min(device.load.free_slots);
                        d.free_memory_bytes =
                            d.free_memory_bytes.min(device.load.free_memory_bytes);
                    })
                    .or_insert_with(|| device.load.clone());
            }
        }
        report.activation_count = (silo.catalog.activation_count() + gpu_activations) as u64;
        report.grain_types = Some(
            silo.registry
                .keys()
                .map(|t| t.as_str().to_owned())
                .collect(),
        );
        report.devices = devices.into_values().collect();
        report
    }

    /// Sends this silo's report to every other active silo (best effort: a lost report only
    /// makes the receiver's picture older).
    pub(crate) async fn send_load_reports(self: &Arc<Self>, silo: &SiloInner) {
        let report = self.own_report(silo);
        lock(&self.load).handle_report(report.clone(), report.at_ms);
        let view = self.view();
        let sends = view
            .active_silos()
            .into_iter()
            .filter(|s| *s != self.me)
            .map(|to| {
                let request = SystemRequest::Load(report.clone());
                async move {
                    let _ = self.ask(to, request).await;
                }
            });
        futures_util::future::join_all(sends).await;
    }

    /// Where a new activation of `grain` goes: the type's director over the active silos'
    /// reports (a silo with no report yet counts as idle and hosting every type).
    pub(crate) fn place(
        &self,
        silo: &SiloInner,
        grain: &GrainId,
    ) -> Result<SiloAddress, CallError> {
        let view = self.view();
        let active = view.active_silos();
        let now = wall_clock_ms();
        let registration = silo.registry.get(&grain.grain_type);
        let strategy = registration
            .map(|r| r.options.placement)
            .unwrap_or_default();
        let mut target =
            PlacementTarget::new(grain.grain_type.as_str(), grain.stable_hash(), self.me);
        if registration.is_some_and(|r| r.gpu.is_some()) {
            target = target.with_gpu(0);
        }
        let mut load = lock(&self.load);
        let stale: Vec<SiloAddress> = load
            .reports()
            .map(|r| r.silo)
            .filter(|s| view.status(s) != Some(SiloStatus::Active))
            .collect();
        for s in stale {
            load.remove_silo(&s);
        }
        for s in &active {
            if load.report(s).is_none() {
                load.handle_report(SiloLoadReport::new(*s, now), now);
            }
        }
        if active == [self.me] {
            return Ok(self.me);
        }
        let mut placement = lock(&self.placement);
        let (directors, rng) = &mut *placement;
        match directors.place(strategy, &target, &mut load, now, rng) {
            Ok(decision) if active.contains(&decision.silo) => Ok(decision.silo),
            Ok(_) | Err(_) if active.contains(&self.me) => Ok(self.me),
            Ok(_) | Err(_) => active
                .first()
                .copied()
                .ok_or_else(|| CallError::SiloUnavailable("no active silo in the cluster".into())),
        }
    }
}
