//! The call path of a grain that is not active on this silo.
//!
//! A call *enters* the cluster on some silo (a reference made there, or its gateway). If the
//! grain is hosted here (registered in the directory to this silo) it runs here. Otherwise the
//! entry silo finds its activation (the directory cache, else the owner of its directory
//! entry), or, when it has none, places it with the type's placement director and either
//! registers it here or forwards the call to the chosen silo. A call that arrives *from another
//! silo* was routed here on purpose: if the grain is not hosted, this silo registers an
//! activation of its own (first wins), and forwards to the winner when it loses.
//!
//! Each attempt is bounded by the call's deadline, and every path ends in a value or a typed
//! error. A forward refused with `ShuttingDown` (the silo is leaving and ran nothing), or not sent
//! because the link to that silo is down, is routed again; one that fails with `SiloUnavailable`
//! is returned (the call may have run: at most once) and its cached address is dropped, so the
//! next call asks the directory again.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use silica_client::Envelope;
use silica_client::link::LinkStatus;
use silica_grains::placement::SiloAddress;
use silica_grains::{CallError, GrainId, Payload};
use tokio::time::Instant;

use super::protocol::{SystemRequest, SystemResponse, WireDirectoryError};
use super::{ClusterNode, lock};
use crate::activation::Answered;
use crate::cluster::{ActivationAddress, DirectoryError};
use crate::runtime::SiloInner;

/// What each forward takes off the call's remaining time, so a call bounced between silos
/// whose views disagree runs out of time instead of travelling forever.
const FORWARD_COST: Duration = Duration::from_millis(5);

/// Where a call goes, as far as one resolution step found.
enum Located {
    /// Hosted here (registered to this silo).
    Here,
    /// An activation registered elsewhere.
    At(ActivationAddress),
    /// No activation anywhere; placement chose this other silo.
    PlaceOn(SiloAddress),
    /// Not decidable now (view changing, hand-off pending): try again shortly.
    Retry,
}

impl ClusterNode {
    /// The cluster's part of routing `envelope`: `Err(envelope)` when the grain is hosted here
    /// and the call takes the local path, else the answer of the cluster path.
    // The envelope comes back by value: boxing it would cost an allocation on every call.
    #[allow(clippy::result_large_err)]
    pub(crate) fn route(
        self: &Arc<Self>,
        silo: &Arc<SiloInner>,
        envelope: Envelope,
        from_silo: bool,
    ) -> Result<Answered, Envelope> {
        if self.hosted.contains_key(&envelope.target) {
            return Err(envelope);
        }
        let node = self.clone();
        let silo = silo.clone();
        Ok(Answered::Running(Box::pin(async move {
            node.resolve(silo, envelope, from_silo).await
        })))
    }

    async fn resolve(
        self: Arc<Self>,
        silo: Arc<SiloInner>,
        envelope: Envelope,
        from_silo: bool,
    ) -> Result<Payload, CallError> {
        let deadline = crate::deadline::instant_after(Instant::now(), envelope.timeout);
        let grain = envelope.target.clone();
        loop {
            if Instant::now() >= deadline {
                return Err(CallError::Timeout(envelope.timeout));
            }
            if self.stop.is_cancelled() {
                return Err(CallError::ShuttingDown);
            }
            if self.hosted.contains_key(&grain) {
                return silo.route_here(envelope).await;
            }
            // The common case, a cached activation elsewhere, takes no gate.
            let cached = (!from_silo)
                .then(|| lock(&self.cache).get(&grain))
                .flatten()
                .filter(|a| a.silo != self.me);
            let located = match cached {
                Some(address) => Located::At(address),
                None => {
                    // Racing first calls on this silo wait for one resolution and share it.
                    let gate = ResolvingGate::enter(&self.resolving, &grain);
                    let turn = gate.gate.lock().await;
                    let located = if self.hosted.contains_key(&grain) {
                        Ok(Located::Here)
                    } else {
                        self.locate(&silo, &grain, from_silo).await
                    };
                    drop(turn);
                    drop(gate);
                    located?
                }
            };
            let to = match located {
                Located::Here => return silo.route_here(envelope).await,
                Located::Retry => {
                    self.pause().await;
                    continue;
                }
                Located::At(address) => address.silo,
                Located::PlaceOn(to) => to,
            };
            if matches!(
                self.network.link_status(to),
                Some(LinkStatus::Down(_) | LinkStatus::Closed)
            ) {
                // Not sent (so at most once still holds): the silo is unreachable, maybe dead or
                // gone; route again once the view or the link changes.
                self.forget_silo_for(&grain, to);
                self.refresh_soon();
                self.pause().await;
                continue;
            }
            match self.forward(to, envelope.clone(), deadline).await {
                Err(CallError::ShuttingDown) => {
                    // It ran nothing: route again, without that silo.
                    self.forget_silo_for(&grain, to);
                    self.refresh_soon();
                    self.pause().await;
                }
                Err(CallError::SiloUnavailable(why)) => {
                    self.forget_silo_for(&grain, to);
                    return Err(CallError::SiloUnavailable(why));
                }
                other => return other,
            }
        }
    }

    async fn forward(
        &self,
        to: SiloAddress,
        mut envelope: Envelope,
        deadline: Instant,
    ) -> Result<Payload, CallError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left <= FORWARD_COST {
            return Err(CallError::Timeout(envelope.timeout));
        }
        envelope.timeout = left - FORWARD_COST;
        self.network.send(to, envelope).await
    }

    /// Drops cached knowledge that `grain` lives on `silo`, and `silo` as a placement choice
    /// until its next load report.
    fn forget_silo_for(&self, grain: &GrainId, silo: SiloAddress) {
        let mut cache = lock(&self.cache);
        if let Some(cached) = cache.get(grain)
            && cached.silo == silo
        {
            cache.handle_forward_miss(grain, cached);
        }
        drop(cache);
        lock(&self.load).remove_silo(&silo);
    }

    /// One resolution step for a grain not hosted here.
    async fn locate(
        &self,
        silo: &SiloInner,
        grain: &GrainId,
        from_silo: bool,
    ) -> Result<Located, CallError> {
        if !from_silo && let Some(cached) = lock(&self.cache).get(grain) {
            if cached.silo != self.me {
                return Ok(Located::At(cached));
            }
            lock(&self.cache).handle_forward_miss(grain, cached);
        }
        let view = self.view();
        let Some(owner) = self.owner(grain) else {
            // Not joined yet, or no silo is active: wait for a view.
            self.refresh_soon();
            return Ok(Located::Retry);
        };
        if !from_silo {
            let lookup = SystemRequest::Lookup {
                version: view.version,
                grain: grain.clone(),
            };
            match self.ask_owner(owner, lookup).await? {
                Some(SystemResponse::Found(Some(found))) => {
                    return Ok(self.found(grain, found).await);
                }
                Some(SystemResponse::Found(None)) => {
                    let to = self.place(silo, grain)?;
                    if to != self.me {
                        return Ok(Located::PlaceOn(to));
                    }
                }
                _ => return Ok(Located::Retry),
            }
        }
        self.register_here(grain).await
    }

    /// A directory answer naming `found`: forward there, or (our own stale entry) remove it.
    async fn found(&self, grain: &GrainId, found: ActivationAddress) -> Located {
        if found.silo != self.me {
            lock(&self.cache).insert(grain.clone(), found);
            return Located::At(found);
        }
        if self.hosted.get(grain).is_some_and(|a| *a == found) {
            return Located::Here;
        }
        // An activation of ours that has gone: its entry is stale.
        self.unregister(grain.clone(), found).await;
        Located::Retry
    }

    /// Registers a new activation of `grain` on this silo with its directory owner, at the
    /// current view; hosts it only once the registration holds at the view it was made in.
    async fn register_here(&self, grain: &GrainId) -> Result<Located, CallError> {
        let address = self.fresh_address();
        loop {
            let view = self.view();
            let Some(owner) = self.owner(grain) else {
                return Ok(Located::Retry);
            };
            let request = SystemRequest::Register {
                version: view.version,
                grain: grain.clone(),
                address,
            };
            let answer = self.ask_owner(owner, request).await?;
            let moved_on = self.view().version != view.version;
            match answer {
                Some(SystemResponse::Registered(a)) if !moved_on => {
                    self.hosted.insert(grain.clone(), a);
                    return Ok(Located::Here);
                }
                // Registered, but the view changed while the answer travelled: the entry may
                // not be in any hand-off, so register again in the new view.
                Some(SystemResponse::Registered(_)) => continue,
                Some(SystemResponse::Existing(w)) if w == address && !moved_on => {
                    self.hosted.insert(grain.clone(), w);
                    return Ok(Located::Here);
                }
                Some(SystemResponse::Existing(w)) if w == address => continue,
                Some(SystemResponse::Existing(w)) => return Ok(self.found(grain, w).await),
                Some(SystemResponse::Refused(WireDirectoryError::SiloNotActive(s)))
                    if s == self.me =>
                {
                    // This silo is leaving (or not active yet): it may not host new grains.
                    return Err(CallError::ShuttingDown);
                }
                _ => return Ok(Located::Retry),
            }
        }
    }

    /// Asks `owner` and sorts the answer: `Ok(None)` after a refusal or an unreachable owner
    /// (the caller retries; the view is refreshed when that may help).
    async fn ask_owner(
        &self,
        owner: SiloAddress,
        request: SystemRequest,
    ) -> Result<Option<SystemResponse>, CallError> {
        match self.ask(owner, request).await {
            Ok(SystemResponse::Refused(WireDirectoryError::SiloNotActive(s))) => Ok(Some(
                SystemResponse::Refused(WireDirectoryError::SiloNotActive(s)),
            )),
            Ok(SystemResponse::Refused(e)) => {
                let error: DirectoryError = e.into();
                self.after_refusal(&error).await;
                Ok(None)
            }
            Ok(answer) => Ok(Some(answer)),
            // The owner is unreachable (maybe dead, not yet declared): wait for the view.
            Err(
                CallError::SiloUnavailable(_) | CallError::Timeout(_) | CallError::ShuttingDown,
            ) => {
                self.refresh_soon();
                self.pause().await;
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }
}

/// The resolution gates of grains being resolved now (`ClusterNode::resolving`).
pub(super) type Gates = DashMap<GrainId, Arc<tokio::sync::Mutex<()>>, foldhash::fast::RandomState>;

/// A call's hold on its grain's resolution gate. The last one out removes the gate, also when
/// the call is dropped while it waits (its deadline passed): a gate left behind would stay
/// until the grain is resolved again.
struct ResolvingGate<'a> {
    gates: &'a Gates,
    grain: &'a GrainId,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> ResolvingGate<'a> {
    fn enter(gates: &'a Gates, grain: &'a GrainId) -> Self {
        let gate = gates.entry(grain.clone()).or_default().clone();
        Self { gates, grain, gate }
    }
}

impl Drop for ResolvingGate<'_> {
    fn drop(&mut self) {
        // Two references while this hold lives: the map's and this one.
        self.gates.remove_if(self.grain, |_, g| {
            Arc::ptr_eq(g, &self.gate) && Arc::strong_count(g) == 2
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silica_grains::GrainType;

    // Pins that a grain's resolution gate goes with its last hold, also when that hold is a
    // call dropped while it resolved or waited (its deadline passed): none is left behind.
    #[tokio::test]
    async fn gates_go_with_their_last_hold_even_a_cancelled_one() {
        let gates = Gates::default();
        let grain = GrainId::new(GrainType::new("G"), "k");
        let resolve_forever = || async {
            let gate = ResolvingGate::enter(&gates, &grain);
            let _turn = gate.gate.lock().await;
            std::future::pending::<()>().await;
        };
        let short = Duration::from_millis(10);
        // A lone call dropped while it resolves.
        assert!(
            tokio::time::timeout(short, resolve_forever())
                .await
                .is_err()
        );
        assert_eq!(gates.len(), 0, "the cancelled call removed its gate");
        // A call dropped while it waits behind another, then the other one dropped too.
        let first = ResolvingGate::enter(&gates, &grain);
        let turn = first.gate.lock().await;
        assert!(
            tokio::time::timeout(short, resolve_forever())
                .await
                .is_err()
        );
        assert_eq!(gates.len(), 1, "the first call still holds it");
        drop(turn);
        drop(first);
        assert_eq!(gates.len(), 0, "the last hold removed the gate");
    }
}
