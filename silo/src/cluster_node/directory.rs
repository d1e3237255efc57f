//! The directory service: this silo's answers to other silos' directory requests, hand-offs,
//! load reports and deactivation requests, and its own requests to other partitions
//! (unregistering, asking an owner).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use silica_client::Envelope;
use silica_grains::placement::SiloAddress;
use silica_grains::{CallError, GrainId, Payload};

use super::protocol::{self, SystemRequest, SystemResponse};
use super::{ClusterNode, lock};
use crate::cluster::{ActivationAddress, DirectoryError, SiloStatus};

impl ClusterNode {
    /// The catalog retired `grain`'s activation: its directory entry goes.
    pub(crate) fn on_deactivated(self: &Arc<Self>, grain: &GrainId) {
        let Some((grain, address)) = self.hosted.remove(grain) else {
            return;
        };
        self.unregistering.fetch_add(1, Ordering::AcqRel);
        let node = self.clone();
        self.tasks.spawn(async move {
            node.unregister(grain, address).await;
            node.unregistering.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Removes `grain`'s entry if it still names `address`, retrying through view changes
    /// for a bounded time (an entry left behind is found stale and removed by the next caller).
    pub(crate) async fn unregister(&self, grain: GrainId, address: ActivationAddress) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline && !self.stop.is_cancelled() {
            let view = self.view();
            let Some(owner) = self.owner(&grain) else {
                return;
            };
            let request = SystemRequest::Unregister {
                version: view.version,
                grain: grain.clone(),
                address,
            };
            match self.ask(owner, request).await {
                Ok(SystemResponse::Unregistered(_)) => return,
                Ok(SystemResponse::Refused(e)) => self.after_refusal(&e.into()).await,
                _ => self.pause().await,
            }
        }
    }

    /// The owner of `grain`'s directory entry in the current view.
    pub(crate) fn owner(&self, grain: &GrainId) -> Option<SiloAddress> {
        lock(&self.partition).ring().owner(grain)
    }

    /// Sends `request` to `to`'s cluster service (answered here when `to` is this silo).
    pub(super) async fn ask(
        &self,
        to: SiloAddress,
        request: SystemRequest,
    ) -> Result<SystemResponse, CallError> {
        if to == self.me {
            return Ok(self.handle(request));
        }
        let envelope = protocol::envelope(&request, Duration::from_secs(2))?;
        let payload = self.network.send(to, envelope).await?;
        protocol::decode_response(&payload)
    }

    /// What a caller does after a partition refused: refresh the view or just wait a little.
    pub(super) async fn after_refusal(&self, error: &DirectoryError) {
        if matches!(error.action(), crate::cluster::DirectoryRetry::RefreshView)
            || matches!(error, DirectoryError::PartitionBehind { .. })
        {
            self.refresh_soon();
        }
        self.pause().await;
    }

    pub(super) async fn pause(&self) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// A request from another silo, arriving at the system target.
    pub(crate) fn handle_envelope(&self, envelope: &Envelope) -> Result<Payload, CallError> {
        let request = protocol::decode_request(envelope)?;
        protocol::encode_response(&self.handle(request))
    }

    /// Answers one directory request, hand-off or load report.
    fn handle(&self, request: SystemRequest) -> SystemResponse {
        let response = match request {
            SystemRequest::Register {
                version,
                grain,
                address,
            } => lock(&self.partition)
                .register(version, grain, address)
                .into(),
            SystemRequest::Lookup { version, grain } => {
                match lock(&self.partition).lookup(version, &grain) {
                    Ok(found) => SystemResponse::Found(found),
                    Err(e) => SystemResponse::Refused(e.into()),
                }
            }
            SystemRequest::Unregister {
                version,
                grain,
                address,
            } => match lock(&self.partition).unregister(version, &grain, address) {
                Ok(removed) => SystemResponse::Unregistered(removed),
                Err(e) => SystemResponse::Refused(e.into()),
            },
            SystemRequest::HandOff {
                from,
                to,
                version,
                entries,
                last,
            } => {
                let handoff = crate::cluster::HandOff {
                    from,
                    to,
                    version,
                    entries,
                    last,
                };
                let result = lock(&self.partition).handle_handoff(handoff);
                match result {
                    Ok(ack) => {
                        self.drop_losers(ack.duplicates.iter().map(|d| (&d.grain, d.loser)));
                        SystemResponse::ack(ack)
                    }
                    Err(e) => SystemResponse::Refused(e.into()),
                }
            }
            SystemRequest::Deactivate { grain, address } => {
                self.drop_losers(std::iter::once((&grain, address)));
                SystemResponse::Done
            }
            SystemRequest::Load(report) => {
                let now = silica_clocks::wall_clock_ms();
                let view = self.view();
                if view.status(&report.silo) == Some(SiloStatus::Active) {
                    lock(&self.load).handle_report(report, now);
                }
                SystemResponse::Done
            }
        };
        // A peer ahead of this silo's view: read the table now rather than at the next period.
        if let SystemResponse::Refused(protocol::WireDirectoryError::PartitionBehind(..)) =
            &response
        {
            self.refresh_soon();
        }
        response
    }

    /// Activations of this silo that lost a merge: they leave the directory's hosted set and
    /// are deactivated (calls already queued on them finish; new calls route to the winner).
    pub(super) fn drop_losers<'a>(
        &self,
        losers: impl Iterator<Item = (&'a GrainId, ActivationAddress)>,
    ) {
        let Some(silo) = self.silo.upgrade() else {
            return;
        };
        for (grain, loser) in losers {
            if loser.silo != self.me {
                // Another silo's activation escaped the directory: tell it (best effort; if
                // the message is lost, that activation gets no calls and is collected idle).
                let Some(node) = self.this.upgrade() else {
                    continue;
                };
                let request = SystemRequest::Deactivate {
                    grain: grain.clone(),
                    address: loser,
                };
                self.tasks.spawn(async move {
                    let _ = node.ask(loser.silo, request).await;
                });
                continue;
            }
            if self.hosted.remove_if(grain, |_, a| *a == loser).is_some() {
                tracing::warn!(%grain, %loser, "duplicate activation found in a hand-off; deactivating it");
                silo.catalog.deactivate(grain);
            }
        }
    }

    /// Hosted activations, for the directory's view changes and hand-offs.
    pub(super) fn hosted_snapshot(&self) -> Vec<(GrainId, ActivationAddress)> {
        self.hosted
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }
}
