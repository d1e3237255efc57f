//! `Prober`: unary liveness probes to one endpoint, on their own HTTP/2 connection so a probe
//! never waits behind a busy link's calls.

use std::time::Duration;

use silica_grains::placement::SiloAddress;

use super::LinkOptions;
use crate::wire::LinkError;
use crate::wire::proto::{self, silo_link_client::SiloLinkClient};

/// Probes one silo's link endpoint.
#[derive(Clone, Debug)]
pub struct Prober {
    client: SiloLinkClient<tonic::transport::Channel>,
    cluster_id: String,
    timeout: Duration,
}

impl Prober {
    /// A prober of `endpoint` ("host:port"). It connects lazily, on the first probe, and
    /// reconnects by itself; each probe waits at most `timeout`.
    pub fn new(
        endpoint: &str,
        options: &LinkOptions,
        timeout: Duration,
    ) -> Result<Self, LinkError> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| LinkError::Transport(e.to_string()))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            client: SiloLinkClient::new(channel),
            cluster_id: options.cluster_id.clone(),
            timeout,
        })
    }

    /// One probe: the silo that answered (if it said), or why there was no answer.
    pub async fn probe(&self, nonce: u64) -> Result<Option<SiloAddress>, LinkError> {
        let request = proto::ProbeRequest {
            cluster_id: self.cluster_id.clone(),
            nonce,
        };
        let mut client = self.client.clone();
        let reply = tokio::time::timeout(self.timeout, client.probe(request))
            .await
            .map_err(|_| {
                LinkError::Transport(format!("no probe answer within {:?}", self.timeout))
            })?
            .map_err(|status| LinkError::from_tonic(&status))?
            .into_inner();
        if reply.nonce != nonce {
            return Err(LinkError::UnexpectedFrame(
                "a probe answer with another nonce",
            ));
        }
        Ok(reply
            .silo
            .and_then(|silo| super::silo_from_wire(&silo).ok()))
    }
}
