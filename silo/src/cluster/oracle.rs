//! [`MembershipOracle`]: one silo's membership state machine (view, probes, stop decision).
//!
//! It owns no table and reads no clock. The driver ([`super::driver`]) feeds it snapshots read
//! from the table and probe results from the silo links; it answers which silos to probe, which
//! to vote against ([`MembershipAction::Suspect`]) and whether this silo must stop serving.

use std::collections::{BTreeMap, VecDeque};

use silica_grains::placement::SiloAddress;

use super::config::MembershipConfig;
use super::snapshot::{MembershipSnapshot, SiloStatus};
use super::votes::superseded_by;

/// Why a silo must stop serving. Final: the incarnation never serves again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The table says this silo is dead (its peers voted it out, or it left).
    DeclaredDead,
    /// A newer generation at the same endpoint joined.
    Superseded {
        /// The newer incarnation.
        by: SiloAddress,
    },
}

/// What the oracle asks its driver to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipAction {
    /// Cast a suspicion vote (read, [`plan_suspicion`](super::plan_suspicion), conditional
    /// write).
    Suspect {
        /// The silo that missed its probes.
        silo: SiloAddress,
        /// When the last missed probe was seen (the vote's time).
        at_ms: u64,
    },
    /// Stop serving: deactivate everything, close links, refuse calls. Emitted once.
    Stop(StopReason),
}

/// One silo's view of the cluster and its failure detector.
#[derive(Clone, Debug)]
pub struct MembershipOracle {
    me: SiloAddress,
    config: MembershipConfig,
    view: MembershipSnapshot,
    missed: BTreeMap<SiloAddress, u32>,
    // When this silo last voted against a target because its store lease expired.
    lease_votes: BTreeMap<SiloAddress, u64>,
    actions: VecDeque<MembershipAction>,
    stopped: Option<StopReason>,
}

impl MembershipOracle {
    /// The oracle of silo incarnation `me`, with an empty view.
    pub fn new(me: SiloAddress, config: MembershipConfig) -> Self {
        Self {
            me,
            config,
            view: MembershipSnapshot::default(),
            missed: BTreeMap::new(),
            lease_votes: BTreeMap::new(),
            actions: VecDeque::new(),
            stopped: None,
        }
    }

    /// This silo's address.
    pub fn me(&self) -> SiloAddress {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// The latest view taken in.
    pub fn view(&self) -> &MembershipSnapshot {
        &self.view
    }

    /// This silo's own status in the view (`None` before its row is read).
    pub fn my_status(&self) -> Option<SiloStatus> {
        self.view.status(&self.me)
    }

    /// Why this silo must stop, once it must. A stopped silo serves nothing.
    pub fn stop_decision(&self) -> Option<StopReason> {
        self.stopped
    }

    /// Whether this silo may serve calls and its directory partition.
    pub fn is_serving(&self) -> bool {
        self.stopped.is_none() && self.my_status() == Some(SiloStatus::Active)
    }

    /// Takes in a snapshot read from the table. Older snapshots than the held view are ignored
    /// (reads can overtake each other); returns whether the view changed.
    ///
    /// Reading its own row as `Dead`, or a newer generation at its endpoint, makes this silo
    /// stop ([`MembershipAction::Stop`]).
    pub fn handle_snapshot(&mut self, snapshot: MembershipSnapshot) -> bool {
        if snapshot.version < self.view.version {
            return false;
        }
        // Same version can still carry newer heartbeats; take it, but it is no view change.
        let changed = snapshot.version > self.view.version;
        self.view = snapshot;
        if self.stopped.is_none() {
            let reason = if let Some(by) = superseded_by(&self.view, &self.me) {
                Some(StopReason::Superseded { by })
            } else if self.view.is_dead(&self.me) {
                Some(StopReason::DeclaredDead)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.stopped = Some(reason);
                self.missed.clear();
                self.actions.clear();
                self.actions.push_back(MembershipAction::Stop(reason));
            }
        }
        let targets = self.probe_targets();
        self.missed.retain(|s, _| targets.contains(s));
        self.lease_votes.retain(|s, _| targets.contains(s));
        changed
    }

    /// The silos this silo probes: the next [`MembershipConfig::num_probed_silos`] active silos
    /// after it in address order, wrapping. Empty unless this silo is serving.
    ///
    /// Every silo derives its targets from the same ordered view, so in a view of `n` active
    /// silos each one is watched by `min(num_probed_silos, n - 1)` others.
    pub fn probe_targets(&self) -> Vec<SiloAddress> {
        if !self.is_serving() {
            return Vec::new();
        }
        let active = self.view.active_silos();
        let Some(me) = active.iter().position(|s| *s == self.me) else {
            return Vec::new();
        };
        let n = self.config.num_probed_silos.min(active.len() - 1);
        (1..=n).map(|i| active[(me + i) % active.len()]).collect()
    }

    /// Takes in the result of one probe of `silo` at `now_ms`.
    ///
    /// A success clears the silo's missed count. After
    /// [`MembershipConfig::num_missed_probes_limit`] consecutive failures the oracle asks for a
    /// vote ([`MembershipAction::Suspect`]) and starts counting again, so a silo that stays
    /// unreachable gets a fresh vote every `limit` rounds and old ones never expire under it.
    /// Results for silos that are not current targets are ignored.
    pub fn handle_probe_result(&mut self, silo: SiloAddress, ok: bool, now_ms: u64) {
        if !self.probe_targets().contains(&silo) {
            return;
        }
        let missed = self.missed.entry(silo).or_insert(0);
        if ok {
            *missed = 0;
            return;
        }
        *missed += 1;
        if *missed >= self.config.num_missed_probes_limit {
            *missed = 0;
            self.queue_suspect(silo, now_ms);
        }
    }

    /// Checks the view's expired store leases (etcd) against this silo's probe targets at
    /// `now_ms`: a target whose lease expired gets a vote at once, as if it had missed
    /// [`MembershipConfig::num_missed_probes_limit`] probes. The vote is renewed every
    /// `num_missed_probes_limit` probe periods while the lease stays expired, the cadence of
    /// probe-driven votes. Death still needs the usual fresh votes from distinct monitors, so an
    /// expired lease only shortens detection; it never declares a silo dead on its own.
    pub fn handle_lease_check(&mut self, now_ms: u64) {
        let renew_ms = u64::from(self.config.num_missed_probes_limit) * self.config.probe_period_ms;
        for silo in self.probe_targets() {
            if !self.view.expired_leases.contains(&silo) {
                self.lease_votes.remove(&silo);
                continue;
            }
            let due = self
                .lease_votes
                .get(&silo)
                .is_none_or(|&at| now_ms.saturating_sub(at) >= renew_ms);
            if due {
                self.lease_votes.insert(silo, now_ms);
                self.queue_suspect(silo, now_ms);
            }
        }
    }

    fn queue_suspect(&mut self, silo: SiloAddress, at_ms: u64) {
        let queued = self
            .actions
            .iter()
            .any(|a| matches!(a, MembershipAction::Suspect { silo: s, .. } if *s == silo));
        if !queued {
            self.actions
                .push_back(MembershipAction::Suspect { silo, at_ms });
        }
    }

    /// Consecutive failed probes of `silo` so far.
    pub fn missed_probes(&self, silo: &SiloAddress) -> u32 {
        self.missed.get(silo).copied().unwrap_or(0)
    }

    /// The next thing the driver must do, if any.
    pub fn poll_action(&mut self) -> Option<MembershipAction> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::snapshot::{MembershipEntry, TableVersion};

    fn silo(port: u16) -> SiloAddress {
        SiloAddress::new(([127, 0, 0, 1], port).into(), 1)
    }

    fn view(expired: &[u16]) -> MembershipSnapshot {
        let mut view = MembershipSnapshot {
            version: TableVersion(3),
            ..Default::default()
        };
        for port in 1..=4 {
            let s = silo(port);
            view.entries
                .insert(s, MembershipEntry::new(s, SiloStatus::Active, 0));
        }
        view.expired_leases = expired.iter().map(|&p| silo(p)).collect();
        view
    }

    fn votes(oracle: &mut MembershipOracle) -> Vec<SiloAddress> {
        std::iter::from_fn(|| oracle.poll_action())
            .filter_map(|a| match a {
                MembershipAction::Suspect { silo, .. } => Some(silo),
                MembershipAction::Stop(_) => None,
            })
            .collect()
    }

    // Pins how an expired store lease enters the failure detector: a vote at once for a probe
    // target (no missed probes needed), nothing for a silo this one does not monitor, and a
    // renewed vote only after `num_missed_probes_limit` probe periods.
    #[test]
    fn expired_lease_votes_at_once_then_at_probe_cadence() {
        let config = MembershipConfig::default().with_num_probed_silos(1);
        let mut oracle = MembershipOracle::new(silo(1), config);
        oracle.handle_snapshot(view(&[2, 3]));
        assert_eq!(oracle.probe_targets(), [silo(2)]);
        oracle.handle_lease_check(1_000);
        assert_eq!(votes(&mut oracle), [silo(2)], "only the monitored silo");
        let renew = u64::from(config.num_missed_probes_limit) * config.probe_period_ms;
        oracle.handle_lease_check(1_000 + renew - 1);
        assert!(votes(&mut oracle).is_empty(), "no vote before the cadence");
        oracle.handle_lease_check(1_000 + renew);
        assert_eq!(votes(&mut oracle), [silo(2)], "renewed at the cadence");
        oracle.handle_snapshot(view(&[]));
        oracle.handle_lease_check(10_000);
        assert!(
            votes(&mut oracle).is_empty(),
            "a renewed lease is no signal"
        );
    }
}
