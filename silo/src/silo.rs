//! `Silo` (the handle users keep) and `SiloBuilder`.

use std::sync::Arc;

use silica_client::Envelope;
use silica_clocks::HybridClock;
use silica_grains::Payload;
use silica_grains::{
    CallError, DeactivationReason, Grain, GrainFactory, GrainReference, GrainType,
};

use crate::cluster::MembershipSnapshot;
use crate::cluster_node::{ClusterConfig, ClusterNode};
use crate::config::SiloConfig;
use crate::error::SiloError;
use crate::gpu::{
    DefaultState, GpuGrain, GpuHost, GpuRoute, GpuStateStore, GpuTypeStatus, HostStart,
};
use crate::link::{NetworkOptions, SiloNetwork};
use crate::registry::{Registration, Registry, TypedHandler};
use crate::runtime::{Lifecycle, SiloInner};
use silica_gpu::Kernel;

/// Builds a silo: register grain types, set options, start.
#[derive(Default)]
pub struct SiloBuilder {
    config: SiloConfig,
    registrations: Vec<(GrainType, Registration)>,
    network: NetworkOptions,
    cluster: Option<ClusterConfig>,
}

impl SiloBuilder {
    /// Hosts grain type `G` under its interface's name.
    pub fn register<G: Grain>(self) -> Self {
        self.register_as::<G>(<G::Interface as GrainReference>::grain_type())
    }

    /// Hosts grain type `G` under an explicit grain type name (for several implementations of
    /// one interface; reach them with `GrainFactory::get_typed`).
    pub fn register_as<G: Grain>(mut self, grain_type: GrainType) -> Self {
        let handler = TypedHandler::<G>::new();
        let registration = Registration {
            options: G::options(),
            handler: Box::new(handler),
            gpu: None,
        };
        self.registrations.push((grain_type, registration));
        self
    }

    /// Hosts grain type `C` with its GPU variant `G`: new activations go to a device when the
    /// silo has one that runs `G`'s kernel, to `C` otherwise. Activations start from
    /// `State::default()` and their final state is dropped; see
    /// [`register_gpu_variant_with_store`](Self::register_gpu_variant_with_store) to keep it.
    pub fn register_gpu_variant<C, G>(self) -> Self
    where
        C: Grain,
        G: GpuGrain<Interface = C::Interface>,
        <G::Kernel as Kernel>::State: Default,
    {
        self.register_gpu_variant_with_store::<C, G>(DefaultState)
    }

    /// Like [`register_gpu_variant`](Self::register_gpu_variant), with `store` giving each GPU
    /// activation its first state and receiving its last.
    pub fn register_gpu_variant_with_store<C, G>(
        mut self,
        store: impl GpuStateStore<G::Kernel>,
    ) -> Self
    where
        C: Grain,
        G: GpuGrain<Interface = C::Interface>,
    {
        let grain_type = <C::Interface as GrainReference>::grain_type();
        let host = GpuHost::<G>::new(grain_type.clone(), Arc::new(store));
        let mut options = C::options();
        options.idle_after = options.idle_after.min(G::options().idle_after);
        let registration = Registration {
            options,
            handler: Box::new(TypedHandler::<C>::new()),
            gpu: Some(Box::new(host)),
        };
        self.registrations.push((grain_type, registration));
        self
    }

    /// Serves silo links on `addr` (port 0 picks a free one). The silo's address is the bound
    /// endpoint plus its generation; see [`Silo::network`].
    pub fn listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.network.listen = Some(addr);
        self
    }

    /// Serves a gateway for external clients (`silica_client::Client`) on `addr`.
    pub fn gateway(mut self, addr: std::net::SocketAddr) -> Self {
        self.network.gateway = Some(addr);
        self
    }

    /// Replaces the network options: endpoints, cluster id, frame size, queues, backoff.
    pub fn network(mut self, options: NetworkOptions) -> Self {
        self.network = options;
        self
    }

    /// Makes the silo a member of a cluster: on start it joins the membership table (its
    /// address is the [`listen`](Self::listen) endpoint plus its generation), runs failure
    /// detection, keeps its share of the grain directory, and routes calls to grains that are
    /// not active here to the silo that hosts them (placing new activations with each type's
    /// placement director). Needs `listen`. See [`Silo::joined`].
    pub fn cluster(mut self, config: ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: SiloConfig) -> Self {
        self.config = config;
        self
    }

    /// Starts the silo on the current Tokio runtime.
    pub fn start(self) -> Result<Silo, SiloError> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(SiloError::NoRuntime);
        };
        if self.cluster.is_some() && self.network.listen.is_none() {
            return Err(SiloError::ClusterWithoutListen);
        }
        let mut registry = Registry::default();
        for (grain_type, registration) in self.registrations {
            if grain_type.as_str() == crate::cluster_node::SYSTEM_GRAIN_TYPE {
                return Err(SiloError::DuplicateGrainType(grain_type.to_string()));
            }
            if registry.contains_key(&grain_type) {
                return Err(SiloError::DuplicateGrainType(grain_type.to_string()));
            }
            registry.insert(grain_type, Arc::new(registration));
        }
        let inner = SiloInner::new(self.config, registry, runtime);
        let network = match self.network.is_enabled() {
            false => None,
            true => match SiloNetwork::start(&inner, self.network) {
                Ok(network) => Some(network),
                Err(error) => {
                    inner.release_factory();
                    return Err(SiloError::Listen(error));
                }
            },
        };
        if let (Some(config), Some(network)) = (self.cluster, &network)
            && let Some(me) = network.address()
        {
            let node = ClusterNode::new(&inner, network.clone(), me, config);
            let _ = inner.cluster.set(node.clone());
            crate::cluster_node::start(&node, &inner);
        }
        start_gpu_variants(&inner);
        crate::collector::start(&inner);
        Ok(Silo { inner, network })
    }
}

/// Starts every GPU variant's rings on the configured devices (once per silo: the device list
/// is resolved once for all variants).
fn start_gpu_variants(inner: &Arc<SiloInner>) {
    let variants: Vec<&dyn GpuRoute> = inner
        .registry
        .values()
        .filter_map(|r| r.gpu.as_deref())
        .collect();
    if variants.is_empty() {
        return;
    }
    let gpu = &inner.config.gpu;
    let (choices, no_devices) = gpu.devices.resolve();
    for variant in variants {
        variant.start(HostStart {
            config: gpu,
            choices: &choices,
            no_devices: no_devices.clone(),
            clock: inner.clock.clone(),
            max_result_bytes: inner.config.max_message_bytes,
            runtime: inner.runtime.clone(),
            tracker: inner.tracker.clone(),
        });
    }
}

/// A running silo. Cloning gives another handle to the same silo.
#[derive(Clone)]
pub struct Silo {
    inner: Arc<SiloInner>,
    network: Option<Arc<SiloNetwork>>,
}

impl Silo {
    /// A builder with the default configuration and no grain types.
    pub fn builder() -> SiloBuilder {
        SiloBuilder::default()
    }

    /// A factory for typed references whose calls run on this silo.
    pub fn grain_factory(&self) -> GrainFactory {
        self.inner.factory()
    }

    /// The silo's hybrid logical clock.
    pub fn clock(&self) -> &HybridClock {
        &self.inner.clock
    }

    /// Activations hosted now (CPU activations; see [`Silo::gpu_status`] for GPU ones).
    pub fn activation_count(&self) -> usize {
        self.inner.catalog.activation_count()
    }

    /// What serves each registered GPU variant: its devices and backends, their load, and why a
    /// device has no ring (no driver, a compile error), in which case the CPU implementation
    /// serves.
    pub fn gpu_status(&self) -> Vec<GpuTypeStatus> {
        let mut status: Vec<GpuTypeStatus> = self
            .inner
            .registry
            .values()
            .filter_map(|r| r.gpu.as_ref().map(|gpu| gpu.status()))
            .collect();
        status.sort_by(|a, b| a.grain_type.as_str().cmp(b.grain_type.as_str()));
        status
    }

    /// Makes every ring of every GPU variant misbehave as `fault` says
    /// (`silica_gpu::Ring::inject_fault`), for tests of device faults; resolves once each ring
    /// that supports the injection has recorded a fault, with how many did.
    #[doc(hidden)]
    pub async fn inject_gpu_fault(&self, fault: silica_gpu::FaultInjection) -> usize {
        let mut taken = 0;
        for gpu in self.inner.registry.values().filter_map(|r| r.gpu.as_ref()) {
            taken += gpu.inject_fault(fault).await;
        }
        taken
    }

    /// Delivers an envelope that arrived from elsewhere (a gateway, a silo link) and waits for the
    /// answer. The envelope's HLC timestamp is merged into the silo clock, or the call is
    /// rejected if it is too far ahead.
    pub async fn deliver(&self, envelope: Envelope) -> Result<Payload, CallError> {
        self.inner.clone().receive(envelope).await
    }

    #[cfg(test)]
    pub(crate) fn inner_for_tests(&self) -> &Arc<SiloInner> {
        &self.inner
    }

    /// The silo's network (its link endpoint, gateway, and links to other silos), if it
    /// serves one.
    pub fn network(&self) -> Option<&Arc<SiloNetwork>> {
        self.network.as_ref()
    }

    /// Waits until this silo is an active member of its cluster (joined the table, took in a
    /// view, owns its directory partition). Fails with why its membership ended (the table
    /// could not be reached, it was declared dead, it left). `Ok` at once for a silo that is
    /// not clustered.
    pub async fn joined(&self) -> Result<(), SiloError> {
        match self.inner.cluster.get() {
            None => Ok(()),
            Some(node) => node.wait_active().await.map_err(SiloError::Cluster),
        }
    }

    /// Resolves when this silo's cluster membership has ended: it left, or the cluster declared
    /// it dead (then it refuses new calls and its host should call [`Silo::shutdown`] and exit).
    /// Never resolves for a silo that is not clustered.
    pub async fn cluster_ended(&self) -> String {
        match self.inner.cluster.get() {
            None => std::future::pending().await,
            Some(node) => {
                node.stop.cancelled().await;
                match node.phase() {
                    crate::cluster_node::Phase::Ended(why) => why,
                    other => format!("{other:?}"),
                }
            }
        }
    }

    /// The membership view this silo routes with: every silo's row and the table version
    /// (`None` for a silo that is not clustered).
    pub fn membership(&self) -> Option<Arc<MembershipSnapshot>> {
        self.inner.cluster.get().map(|node| node.view())
    }

    /// Stops the silo the way a crash would, for tests of failure handling: no leave, no
    /// deactivation hooks, no table writes; its connections drop and its membership task stops,
    /// so the other silos must detect the failure.
    #[doc(hidden)]
    pub async fn crash(&self) {
        let inner = &self.inner;
        inner.set_lifecycle(Lifecycle::Stopped);
        inner.stopping.cancel();
        if let Some(node) = inner.cluster.get() {
            node.crash().await;
        }
        if let Some(network) = &self.network {
            network.stop().await;
        }
        inner.catalog.for_each(|handle| {
            if let Some(task) = handle.abort.get() {
                task.abort();
            }
        });
        inner.release_factory();
    }

    /// Whether `shutdown` has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.lifecycle() != Lifecycle::Running
    }

    /// Graceful shutdown: refuses new calls from outside, lets queued and running calls finish
    /// (calls they make to other grains are still served), runs every `on_deactivate`, then
    /// refuses everything with `CallError::ShuttingDown`. Turns still running after
    /// `SiloConfig::shutdown_grace` are aborted.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.lifecycle() == Lifecycle::Stopped {
            return;
        }
        inner.set_lifecycle(Lifecycle::ShuttingDown);
        inner.stopping.cancel();
        let grace_over = crate::deadline::instant_after(
            tokio::time::Instant::now(),
            inner.config.shutdown_grace,
        );
        // A cluster member leaves first: no silo places new activations here, and the
        // directory partition moves; callers whose calls are refused route them again.
        let cluster = inner.cluster.get().cloned();
        if let Some(node) = &cluster {
            node.begin_leave().await;
        }
        let drained = async {
            loop {
                let changed = inner.catalog.changed();
                tokio::pin!(changed);
                changed.as_mut().enable();
                inner
                    .catalog
                    .for_each(|handle| handle.request_deactivation(DeactivationReason::Shutdown));
                if inner.catalog.is_empty() {
                    return;
                }
                changed.await;
            }
        };
        if tokio::time::timeout_at(grace_over, drained).await.is_err() {
            tracing::warn!("shutdown grace period over; aborting the turns still running");
            inner.catalog.stop_successors();
            inner.catalog.for_each(|handle| {
                if let Some(task) = handle.abort.get() {
                    task.abort();
                }
            });
        }
        // GPU activations save their state once their running calls finish (within the same
        // grace period); their rings finish what is queued, then stop.
        let gpu_variants = inner.registry.values().filter_map(|r| r.gpu.as_ref());
        futures_util::future::join_all(gpu_variants.map(|gpu| gpu.shutdown(grace_over))).await;
        // The entries of the deactivated grains are gone from the directory; the row says Dead.
        if let Some(node) = &cluster {
            node.finish_leave().await;
        }
        inner.set_lifecycle(Lifecycle::Stopped);
        // Connections end now: callers elsewhere see their links go down, not a hang.
        if let Some(network) = &self.network {
            network.stop().await;
        }
        inner.tracker.close();
        inner.tracker.wait().await;
        inner.release_factory();
    }
}

impl std::fmt::Debug for Silo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Silo")
            .field("node", &self.inner.config.node_id)
            .finish_non_exhaustive()
    }
}
