//! Silo configuration.

use std::time::Duration;

use silica_client::DEFAULT_CALL_TIMEOUT;
use silica_clocks::{ClockConfig, NodeId};

use crate::gpu::GpuConfig;

/// How a silo behaves. `SiloConfig::default()` suits an embedded silo.
#[derive(Clone, Debug)]
pub struct SiloConfig {
    /// This silo's node id in HLC timestamps and vector clocks; the default is random, so two
    /// silos never tie-break their timestamps the same way by accident.
    pub node_id: NodeId,
    /// Timeout for calls that set none.
    pub default_call_timeout: Duration,
    /// HLC settings, including how far ahead of local time a received timestamp may be.
    pub clock: ClockConfig,
    /// How long graceful shutdown waits for in-flight turns before it aborts them.
    pub shutdown_grace: Duration,
    /// Largest encoded arguments or result a call may carry; larger ones are rejected with
    /// `RejectCode::TooLarge` before they reach the grain (or the caller).
    pub max_message_bytes: usize,
    /// Calls an activation may have queued or running; more are shed with
    /// `RejectCode::Overloaded` instead of growing its mailbox without bound.
    pub max_queued_calls: usize,
    /// Which devices host GPU variants, and how.
    pub gpu: GpuConfig,
}

impl Default for SiloConfig {
    fn default() -> Self {
        Self {
            node_id: random_node_id(),
            default_call_timeout: DEFAULT_CALL_TIMEOUT,
            clock: ClockConfig::default(),
            shutdown_grace: Duration::from_secs(30),
            max_message_bytes: 16 << 20,
            max_queued_calls: 10_000,
            gpu: GpuConfig::default(),
        }
    }
}

fn random_node_id() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    // std's RandomState is seeded from the OS once per process and advanced per instance.
    let bits = std::hash::RandomState::new().build_hasher().finish();
    NodeId((bits ^ (bits >> 32)) as u32)
}
