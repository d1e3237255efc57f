//! The running cluster: what a silo built with
//! [`SiloBuilder::cluster`](crate::SiloBuilder::cluster) does on top of the state machines of
//! [`crate::cluster`] and the links of [`crate::link`].
//!
//! # Layout
//! - [`config`] — [`ClusterConfig`].
//! - [`table`] — [`ClusterTable`]: the membership table with its type erased, and leases.
//! - `mod.rs` — `ClusterNode`, the shared state: view, directory partition and cache, hosted
//!   activations, load.
//! - `directory` — the directory service answering other silos, and requests to other
//!   partitions.
//! - `protocol` — directory requests, hand-offs and load reports as calls to a system target.
//! - `membership` — the membership task: join, refresh, probes, votes, heartbeats, the etcd
//!   lease, view changes and hand-offs.
//! - `leave` — graceful leave (two halves around `Silo::shutdown`'s drain), and a crash.
//! - `routing` — the call path of a grain not active here: directory, placement, forwarding.
//! - `load` — this silo's load report and the reports of the others.
//!
//! See `docs/cluster.md`, "The running cluster".
//!
//! # Example
//!
//! Two silos of one process over the in-memory table (across processes, use
//! `ClusterTable::etcd`; the `cluster_silo` binary of the `silica` crate is a runnable host):
//!
//! ```
//! use silica_grains::{grain, Grain, GrainContext};
//! use silica_silo::cluster::InMemoryMembershipTable;
//! use silica_silo::{ClusterConfig, ClusterTable, Silo};
//!
//! #[grain]
//! pub trait Greeter {
//!     async fn greet(&mut self, name: String) -> String;
//! }
//!
//! struct Hello;
//! impl Grain for Hello {
//!     type Interface = GreeterRef;
//!     fn create(_: &GrainContext) -> Self { Hello }
//! }
//! impl Greeter for Hello {
//!     async fn greet(&mut self, name: String) -> String { format!("hello, {name}") }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let table = InMemoryMembershipTable::new();
//! let start = || {
//!     Silo::builder()
//!         .register::<Hello>()
//!         .listen(([127, 0, 0, 1], 0).into())
//!         .cluster(ClusterConfig::new(ClusterTable::new(table.clone())))
//!         .start()
//!         .unwrap()
//! };
//! let (a, b) = (start(), start());
//! a.joined().await.unwrap();
//! b.joined().await.unwrap();
//! // Wherever its activation was placed, both silos reach it.
//! let greeter: GreeterRef = b.grain_factory().get("en");
//! assert_eq!(greeter.greet("ada".into()).await.unwrap(), "hello, ada");
//! b.shutdown().await; // a graceful leave
//! a.shutdown().await;
//! # }
//! ```

pub mod config;
mod directory;
mod leave;
mod load;
mod membership;
mod protocol;
mod routing;
pub mod table;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use dashmap::DashMap;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use silica_grains::GrainId;
use silica_grains::placement::SiloAddress;
use silica_placement::{ClusterLoad, PlacementDirectors};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{
    ActivationAddress, ActivationId, DEFAULT_DIRECTORY_VIRTUAL_NODES, DirectoryCache,
    DirectoryPartition, MembershipOracle, MembershipSnapshot,
};
use crate::link::SiloNetwork;
use crate::runtime::SiloInner;
pub use config::ClusterConfig;
pub use table::ClusterTable;

pub(crate) use membership::start;
pub(crate) use protocol::{SYSTEM_GRAIN_TYPE, is_system};

/// Where a clustered silo is in its membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Joining,
    Active,
    /// Left, was declared dead, or failed to join: the reason.
    Ended(String),
}

/// One clustered silo's shared cluster state.
pub(crate) struct ClusterNode {
    pub(crate) me: SiloAddress,
    pub(crate) config: ClusterConfig,
    pub(crate) network: Arc<SiloNetwork>,
    silo: Weak<SiloInner>,
    /// The latest view, as the directory took it in.
    view: watch::Sender<Arc<MembershipSnapshot>>,
    phase: watch::Sender<Phase>,
    partition: Mutex<DirectoryPartition>,
    cache: Mutex<DirectoryCache>,
    /// Activations of this silo registered in the directory (the directory's "hosted").
    pub(crate) hosted: DashMap<GrainId, ActivationAddress, foldhash::fast::RandomState>,
    next_activation: AtomicU64,
    load: Mutex<ClusterLoad>,
    placement: Mutex<(PlacementDirectors, SmallRng)>,
    /// Wakes the membership task to read the table now (a peer showed a newer view).
    refresh_now: Notify,
    /// One resolution at a time per grain on this silo: racing first calls share its answer.
    resolving: routing::Gates,
    /// Stops the membership task: after a leave, a death, or a simulated crash.
    pub(crate) stop: CancellationToken,
    /// This node, for tasks spawned from `&self`.
    this: Weak<ClusterNode>,
    /// The membership task and everything it spawns (probes, hand-offs, unregisters).
    pub(crate) tasks: TaskTracker,
    /// The failure detector and view; the membership task and a graceful leave take turns.
    oracle: tokio::sync::Mutex<MembershipOracle>,
    lease: tokio::sync::Mutex<Option<Box<dyn table::ErasedLease>>>,
    handoffs_in_flight: AtomicBool,
    /// Unregistrations under way (a graceful leave waits for them).
    unregistering: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClusterNode {
    pub(crate) fn new(
        silo: &Arc<SiloInner>,
        network: Arc<SiloNetwork>,
        me: SiloAddress,
        config: ClusterConfig,
    ) -> Arc<Self> {
        let capacity = config.directory_cache_capacity;
        let max_age = (config.load_report_period * 5).as_millis() as u64;
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            me,
            network,
            silo: Arc::downgrade(silo),
            view: watch::Sender::new(Arc::new(MembershipSnapshot::default())),
            phase: watch::Sender::new(Phase::Joining),
            partition: Mutex::new(DirectoryPartition::new(me, DEFAULT_DIRECTORY_VIRTUAL_NODES)),
            cache: Mutex::new(DirectoryCache::new(capacity)),
            hosted: DashMap::default(),
            next_activation: AtomicU64::new(1),
            load: Mutex::new(ClusterLoad::new(max_age)),
            placement: Mutex::new((
                PlacementDirectors::default(),
                SmallRng::seed_from_u64(me.generation ^ u64::from(me.endpoint.port())),
            )),
            refresh_now: Notify::new(),
            resolving: DashMap::default(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            oracle: tokio::sync::Mutex::new(MembershipOracle::new(me, config.membership)),
            lease: tokio::sync::Mutex::new(None),
            handoffs_in_flight: AtomicBool::new(false),
            unregistering: AtomicUsize::new(0),
            config,
        })
    }

    /// The current view.
    pub(crate) fn view(&self) -> Arc<MembershipSnapshot> {
        self.view.borrow().clone()
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Waits until the silo is active in the cluster (or its membership ended).
    pub(crate) async fn wait_active(&self) -> Result<(), String> {
        let mut rx = self.phase.subscribe();
        let phase = rx
            .wait_for(|p| !matches!(p, Phase::Joining))
            .await
            .map(|p| p.clone())
            .unwrap_or(Phase::Ended("the silo stopped".into()));
        match phase {
            Phase::Active => Ok(()),
            Phase::Ended(why) => Err(why),
            Phase::Joining => unreachable!("waited past Joining"),
        }
    }

    fn fresh_address(&self) -> ActivationAddress {
        let id = self.next_activation.fetch_add(1, Ordering::Relaxed);
        ActivationAddress::new(self.me, ActivationId(id))
    }

    /// A request for the membership task to read the table now.
    pub(crate) fn refresh_soon(&self) {
        self.refresh_now.notify_one();
    }
}
