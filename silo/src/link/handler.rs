//! Delivers requests that arrive on links to the silo.

use std::sync::Weak;

use silica_client::link::{LinkHandler, Peer};
use silica_client::{CallChain, Envelope, PendingCall};
use silica_grains::CallError;

use crate::runtime::SiloInner;

/// The silo side of every link connection. Holds the silo weakly: the silo owns its network,
/// not the other way round.
pub(crate) struct SiloHandler {
    silo: Weak<SiloInner>,
}

impl SiloHandler {
    pub(crate) fn new(silo: Weak<SiloInner>) -> Self {
        Self { silo }
    }
}

impl LinkHandler for SiloHandler {
    fn handle(&self, peer: &Peer, mut envelope: Envelope) -> PendingCall {
        let Some(silo) = self.silo.upgrade() else {
            return PendingCall::answered(Err(CallError::ShuttingDown));
        };
        if peer.is_client() {
            // A caller outside the cluster is in no grain turn, whatever its envelope says: a
            // forged chain could otherwise fake a cycle or join a running turn.
            envelope.chain = CallChain::EMPTY;
        }
        // A silo sent it here on purpose (the directory or placement chose this silo).
        let from_silo = !peer.is_client();
        PendingCall::waiting(silo.receive_from(envelope, from_silo))
    }
}
