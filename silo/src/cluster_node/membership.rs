//! The membership task of a clustered silo.
//!
//! One task per silo runs the Orleans loop on the state machines of [`crate::cluster`]: join
//! (`Joining`, then `Active`), then on timers read the table (`refresh_period`, or at once when
//! a peer showed a newer view), write heartbeats, renew the store lease, send load reports and
//! unacknowledged hand-offs; a second task probes the oracle's targets over their link
//! endpoints (`link::Prober`) and feeds the results back. Votes are cast as the oracle asks.
//! Each new view goes to the directory partition and cache, links to dead silos are closed,
//! and a silo that reads itself dead (or superseded) stops serving.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use silica_client::link::Prober;
use silica_clocks::wall_clock_ms;
use silica_grains::placement::SiloAddress;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use super::protocol::{SystemRequest, SystemResponse, WireDirectoryError};
use super::{ClusterNode, Phase, lock};
use crate::cluster::{
    HANDOFF_PART_BYTES, MembershipOracle, MembershipSnapshot, SiloStatus, StopReason, driver,
};
use crate::runtime::{Lifecycle, SiloInner};

/// Starts the membership task (joining first) on the node's tracker.
pub(crate) fn start(node: &Arc<ClusterNode>, silo: &Arc<SiloInner>) {
    let node = node.clone();
    let silo = Arc::downgrade(silo);
    node.tasks.clone().spawn(async move {
        let stop = node.stop.clone();
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = run(node.clone(), silo) => {}
        }
        node.tasks.close();
    });
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

async fn join(node: &Arc<ClusterNode>) -> Result<(), String> {
    let table = &node.config.table;
    let mut oracle = node.oracle.lock().await;
    driver::join(table, &mut oracle, wall_clock_ms())
        .await
        .map_err(|e| format!("joining the membership table failed: {e}"))?;
    driver::set_status(table, &mut oracle, SiloStatus::Active, wall_clock_ms())
        .await
        .map_err(|e| format!("becoming active failed: {e}"))?;
    match table.grant_lease(node.me, node.config.lease_ttl).await {
        Ok(lease) => *node.lease.lock().await = lease,
        Err(e) => tracing::warn!(error = %e, "no store lease; failure detection relies on probes"),
    }
    node.apply_view(oracle.view());
    Ok(())
}

async fn run(node: Arc<ClusterNode>, silo: std::sync::Weak<SiloInner>) {
    if let Err(why) = join(&node).await {
        tracing::error!(silo = %node.me, %why, "the silo could not join its cluster");
        node.end(why, &silo);
        return;
    }
    node.set_phase(Phase::Active);
    tracing::info!(silo = %node.me, version = %node.view().version, "joined the cluster");
    let (results_tx, mut results) = mpsc::channel(64);
    let (targets_tx, targets) = watch::channel(Vec::new());
    node.tasks
        .spawn(probe_loop(node.clone(), targets, results_tx));
    let config = node.config.membership;
    let mut refresh = interval(node.config.refresh_period);
    let mut heartbeat = interval(Duration::from_millis(config.i_am_alive_period_ms));
    let mut lease = interval(node.config.lease_ttl / 3);
    let mut load = interval(node.config.load_report_period);
    let mut handoffs = interval(Duration::from_millis(50));
    loop {
        let mut oracle = tokio::select! {
            biased;
            Some((target, ok, at)) = results.recv() => {
                let mut oracle = node.oracle.lock().await;
                oracle.handle_probe_result(target, ok, at);
                oracle
            }
            _ = node.refresh_now.notified() => node.refreshed().await,
            _ = refresh.tick() => node.refreshed().await,
            _ = heartbeat.tick() => {
                let oracle = node.oracle.lock().await;
                if let Err(e) = driver::heartbeat(&node.config.table, &oracle, wall_clock_ms()).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
                oracle
            }
            _ = lease.tick() => {
                node.keep_lease_alive().await;
                node.oracle.lock().await
            }
            _ = load.tick() => {
                if let Some(silo) = silo.upgrade() {
                    let node = node.clone();
                    node.tasks.clone().spawn(async move { node.send_load_reports(&silo).await });
                }
                continue;
            }
            _ = handoffs.tick() => {
                node.send_handoffs();
                continue;
            }
        };
        oracle.handle_lease_check(wall_clock_ms());
        let stop = match driver::process_actions(&node.config.table, &mut oracle).await {
            Ok(stop) => stop,
            Err(e) => {
                tracing::warn!(error = %e, "casting a suspicion vote failed");
                oracle.stop_decision()
            }
        };
        node.apply_view(oracle.view());
        targets_tx.send_replace(oracle.probe_targets());
        drop(oracle);
        if let Some(reason) = stop {
            let why = match reason {
                StopReason::DeclaredDead => "declared dead by the cluster".to_owned(),
                StopReason::Superseded { by } => format!("superseded by {by}"),
            };
            tracing::error!(silo = %node.me, %why, "this silo stops serving");
            node.end(why, &silo);
            return;
        }
    }
}

/// Probes the oracle's targets every probe period, each on its own connection, and reports
/// `(target, answered, at_ms)`.
async fn probe_loop(
    node: Arc<ClusterNode>,
    targets: watch::Receiver<Vec<SiloAddress>>,
    results: mpsc::Sender<(SiloAddress, bool, u64)>,
) {
    let mut probers: std::collections::HashMap<SiloAddress, Prober> = Default::default();
    let mut tick = interval(Duration::from_millis(
        node.config.membership.probe_period_ms,
    ));
    let options = node.network.link_options().clone();
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let current = targets.borrow().clone();
        probers.retain(|s, _| current.contains(s));
        let probes = current.into_iter().filter_map(|target| {
            let prober = match probers.get(&target) {
                Some(p) => p.clone(),
                None => {
                    let p = Prober::new(&target.endpoint.to_string(), &options, node.config.probe_timeout).ok()?;
                    probers.insert(target, p.clone());
                    p
                }
            };
            nonce += 1;
            let nonce = nonce;
            Some(async move {
                // A different generation answering at the endpoint is not the target.
                let ok = matches!(prober.probe(nonce).await, Ok(answer) if answer.is_none_or(|a| a == target));
                (target, ok)
            })
        });
        for (target, ok) in futures_util::future::join_all(probes).await {
            if results.send((target, ok, wall_clock_ms())).await.is_err() {
                return;
            }
        }
    }
}

impl ClusterNode {
    async fn refreshed(&self) -> tokio::sync::MutexGuard<'_, MembershipOracle> {
        let mut oracle = self.oracle.lock().await;
        if let Err(e) = driver::refresh(&self.config.table, &mut oracle).await {
            tracing::warn!(error = %e, "reading the membership table failed");
        }
        oracle
    }

    async fn keep_lease_alive(&self) {
        let mut lease = self.lease.lock().await;
        let Some(held) = lease.as_mut() else {
            return;
        };
        if let Err(e) = held.keep_alive().await {
            tracing::warn!(error = %e, "renewing the store lease failed");
            self.refresh_soon();
        }
    }

    /// Takes in `view` if it is newer than the directory's: the partition and cache change
    /// views, links to silos that died are closed, and their load reports dropped.
    pub(crate) fn apply_view(self: &Arc<Self>, view: &MembershipSnapshot) {
        let old = self.view();
        if view.version <= old.version {
            return;
        }
        let hosted = self.hosted_snapshot();
        let duplicates =
            lock(&self.partition).handle_view_change(view, hosted.iter().map(|(g, a)| (g, a)));
        if let Some(duplicates) = duplicates {
            self.drop_losers(duplicates.iter().map(|d| (&d.grain, d.loser)));
        }
        lock(&self.cache).handle_view_change(view);
        let mut load = lock(&self.load);
        for silo in view.entries.keys() {
            if view.status(silo) != Some(SiloStatus::Active) {
                load.remove_silo(silo);
            }
            // A silo voted dead may never answer: its waiting calls fail now. One that left
            // gracefully answers everything sent to it before it stops, so its link goes once
            // those calls are answered.
            let left = old.status(silo) == Some(SiloStatus::ShuttingDown);
            if view.is_dead(silo) && !old.is_dead(silo) && *silo != self.me {
                if left {
                    self.network
                        .close_link_when_drained(*silo, self.config.leave_timeout);
                } else {
                    self.network.close_link(*silo);
                }
            }
        }
        drop(load);
        tracing::debug!(silo = %self.me, version = %view.version, "new membership view");
        self.view.send_replace(Arc::new(view.clone()));
        self.send_handoffs();
    }

    /// Sends the partition's unacknowledged hand-offs (one round at a time).
    fn send_handoffs(self: &Arc<Self>) {
        let hosted = self.hosted_snapshot();
        let handoffs = lock(&self.partition).handoffs(hosted.iter().map(|(g, a)| (g, a)));
        if handoffs.is_empty() || self.handoffs_in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let node = self.clone();
        self.tasks.spawn(async move {
            let sends = handoffs.into_iter().map(|handoff| {
                let node = &node;
                async move {
                    // Part by part, each once the one before it is acknowledged (see
                    // `HandOff::into_parts`); a failed part ends this round, and the next
                    // round sends them all again (merging a part twice changes nothing).
                    for part in handoff.into_parts(HANDOFF_PART_BYTES) {
                        let (to, last) = (part.to, part.last);
                        match node.ask(to, SystemRequest::handoff(part)).await {
                            Ok(SystemResponse::HandOffAck {
                                from,
                                version,
                                duplicates,
                            }) => {
                                let ack = SystemResponse::into_ack(from, version, duplicates);
                                if last {
                                    lock(&node.partition).handle_handoff_ack(&ack);
                                }
                                node.drop_losers(
                                    ack.duplicates.iter().map(|d| (&d.grain, d.loser)),
                                );
                            }
                            Ok(SystemResponse::Refused(WireDirectoryError::StaleView(..))) => {
                                node.refresh_soon();
                                return;
                            }
                            _ => return,
                        }
                    }
                }
            });
            futures_util::future::join_all(sends).await;
            node.handoffs_in_flight.store(false, Ordering::Release);
        });
    }

    /// The silo stops serving for good (declared dead, superseded, or it could not join).
    fn end(&self, why: String, silo: &std::sync::Weak<SiloInner>) {
        lock(&self.partition).handle_stop();
        if let Some(silo) = silo.upgrade()
            && silo.lifecycle() == Lifecycle::Running
        {
            silo.set_lifecycle(Lifecycle::ShuttingDown);
        }
        self.set_phase(Phase::Ended(why));
        self.stop.cancel();
    }
}
