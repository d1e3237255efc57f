//! The invoker behind `SiloNetwork::remote_factory`: references whose calls go to one remote
//! silo over its link.

use std::borrow::Cow;
use std::time::Duration;

use silica_client::{Envelope, PendingCall};
use silica_grains::placement::SiloAddress;
use silica_grains::{CallError, Invoker, Request};

use super::WeakNetwork;
use crate::caller::chain_for_outgoing_call;

pub(crate) struct RemoteInvoker {
    network: WeakNetwork,
    to: SiloAddress,
    default_timeout: Duration,
}

impl RemoteInvoker {
    pub(crate) fn new(network: WeakNetwork, to: SiloAddress, default_timeout: Duration) -> Self {
        Self {
            network,
            to,
            default_timeout,
        }
    }
}

impl Invoker for RemoteInvoker {
    fn invoke(&self, request: Request) -> PendingCall {
        let Some(network) = self.network.upgrade() else {
            return PendingCall::answered(Err(CallError::ShuttingDown));
        };
        network.send(
            self.to,
            Envelope {
                target: request.target,
                interface: Cow::Borrowed(request.interface),
                method: Cow::Borrowed(request.method),
                args: request.args,
                // Stamped with a tick by the link as it leaves.
                hlc: silica_clocks::HlcTimestamp::ZERO,
                chain: chain_for_outgoing_call(),
                timeout: request.options.timeout.unwrap_or(self.default_timeout),
            },
        )
    }
}
