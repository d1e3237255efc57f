//! Helpers of the in-process cluster tests: three (or more) clustered silos on 127.0.0.1 over
//! one in-memory membership table, a grain that says which silo runs it, and a record of live
//! activations to check single activation.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use silica_client::link::LinkOptions;
use silica_grains::{
    CallError, DeactivationReason, Grain, GrainContext, GrainError, GrainOptions, GrainReference,
    PlacementStrategy, grain,
};
use silica_silo::cluster::{InMemoryMembershipTable, MembershipConfig};
use silica_silo::{ClusterConfig, ClusterTable, NetworkOptions, Silo};

/// Every wait ends by this deadline: a hang fails the test instead of blocking it.
pub const DEADLINE: Duration = Duration::from_secs(20);

#[grain]
pub trait Tracked {
    /// Counts the call; returns (index of the silo running the grain, calls so far).
    async fn hit(&mut self) -> (usize, u64);
    /// Sleeps, then counts like `hit`.
    async fn slow_hit(&mut self, millis: u64) -> (usize, u64);
    /// Deactivates this activation once the turn ends.
    async fn retire(&mut self);
}

/// Grain key -> silo indices with a live activation of it (pushed by `on_activate`, removed by
/// `on_deactivate`; a crashed silo's stay, as nothing deactivates them).
pub static LIVE: Mutex<Option<HashMap<String, Vec<usize>>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashMap<String, Vec<usize>>>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The silos holding a live activation of `key`, leaving out `crashed` silo indices.
pub fn live_on(key: &str, crashed: &[usize]) -> Vec<usize> {
    let live = live();
    let mut on: Vec<usize> = live
        .as_ref()
        .and_then(|m| m.get(key))
        .map(|v| v.iter().copied().filter(|s| !crashed.contains(s)).collect())
        .unwrap_or_default();
    on.sort_unstable();
    on
}

/// Silo `N`'s implementation of `Tracked` (all silos register it under the same type name).
pub struct TrackedGrain<const N: usize> {
    key: String,
    count: u64,
    ctx: GrainContext,
}

impl<const N: usize> Grain for TrackedGrain<N> {
    type Interface = TrackedRef;
    fn create(ctx: &GrainContext) -> Self {
        Self {
            key: ctx.id().key.to_string(),
            count: 0,
            ctx: ctx.clone(),
        }
    }
    async fn on_activate(&mut self) -> Result<(), GrainError> {
        live()
            .get_or_insert_default()
            .entry(self.key.clone())
            .or_default()
            .push(N);
        Ok(())
    }
    async fn on_deactivate(&mut self, _: DeactivationReason) {
        if let Some(v) = live().get_or_insert_default().get_mut(&self.key)
            && let Some(i) = v.iter().position(|s| *s == N)
        {
            v.swap_remove(i);
        }
    }
}

impl<const N: usize> Tracked for TrackedGrain<N> {
    async fn hit(&mut self) -> (usize, u64) {
        self.count += 1;
        (N, self.count)
    }
    async fn slow_hit(&mut self, millis: u64) -> (usize, u64) {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.hit().await
    }
    async fn retire(&mut self) {
        self.ctx.deactivate_on_idle();
    }
}

#[grain]
pub trait Local {
    /// The index of the silo that ran the call.
    async fn where_am_i(&self) -> usize;
}

/// Silo `N`'s stateless worker: a local pool on every silo, no directory entry.
pub struct LocalGrain<const N: usize>;

impl<const N: usize> Grain for LocalGrain<N> {
    type Interface = LocalRef;
    fn create(_: &GrainContext) -> Self {
        Self
    }
    fn options() -> GrainOptions {
        GrainOptions {
            stateless_worker: Some(2),
            ..GrainOptions::DEFAULT
        }
    }
}

impl<const N: usize> Local for LocalGrain<N> {
    async fn where_am_i(&self) -> usize {
        N
    }
}

#[grain]
pub trait Near {
    /// The index of the silo hosting the activation.
    async fn host(&self) -> usize;
}

/// Silo `N`'s implementation of `Near`, placed with `PlacementStrategy::PreferLocal`.
pub struct NearGrain<const N: usize>;

impl<const N: usize> Grain for NearGrain<N> {
    type Interface = NearRef;
    fn create(_: &GrainContext) -> Self {
        Self
    }
    fn options() -> GrainOptions {
        GrainOptions {
            placement: PlacementStrategy::PreferLocal,
            ..GrainOptions::DEFAULT
        }
    }
}

impl<const N: usize> Near for NearGrain<N> {
    async fn host(&self) -> usize {
        N
    }
}

/// Fast failure detection for tests: probes every 100 ms, suspect after 3 misses.
pub fn fast_membership() -> MembershipConfig {
    let mut config = MembershipConfig::default().with_missed_probes_limit(3);
    config.probe_period_ms = 100;
    config.i_am_alive_period_ms = 500;
    config
}

/// Silo `N` of cluster `cluster_id` over `table`, serving links (and a gateway) on 127.0.0.1.
pub fn silo<const N: usize>(table: &InMemoryMembershipTable, cluster_id: &str) -> Silo {
    let cluster = ClusterConfig::new(ClusterTable::new(table.clone()))
        .with_membership(fast_membership())
        .with_refresh_period(Duration::from_millis(100));
    Silo::builder()
        .register_as::<TrackedGrain<N>>(<TrackedRef as GrainReference>::grain_type())
        .register_as::<LocalGrain<N>>(<LocalRef as GrainReference>::grain_type())
        .register_as::<NearGrain<N>>(<NearRef as GrainReference>::grain_type())
        .network(NetworkOptions {
            listen: Some(([127, 0, 0, 1], 0).into()),
            gateway: Some(([127, 0, 0, 1], 0).into()),
            link: LinkOptions {
                cluster_id: cluster_id.into(),
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(200),
                connect_timeout: Duration::from_secs(2),
                ..LinkOptions::default()
            },
            generation: None,
        })
        .cluster(cluster)
        .start()
        .expect("silo starts")
}

/// Three silos of one cluster, all joined.
pub async fn three(cluster_id: &str) -> [Silo; 3] {
    let table = InMemoryMembershipTable::new();
    let silos = [
        silo::<0>(&table, cluster_id),
        silo::<1>(&table, cluster_id),
        silo::<2>(&table, cluster_id),
    ];
    for s in &silos {
        within("join", s.joined()).await.expect("joined");
    }
    // Every silo sees all three active before the test starts.
    within("views", async {
        loop {
            let all = silos
                .iter()
                .all(|s| s.membership().is_some_and(|v| v.active_silos().len() == 3));
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    silos
}

/// Callers that keep calling `Tracked` grains, one call at a time each, until finished.
pub struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<CallError>>>,
}

impl Load {
    /// One caller per silo in `silos`, each going round `keys` (calls sleep `slow_ms` inside
    /// the grain, so turns overlap the membership changes under test).
    pub fn start(silos: &[Silo], keys: &[i64], slow_ms: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks = silos
            .iter()
            .enumerate()
            .map(|(n, silo)| {
                let (silo, keys) = (silo.clone(), keys.to_vec());
                let (stop, calls) = (stop.clone(), calls.clone());
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    let mut i = n * 7;
                    while !stop.load(Ordering::Relaxed) {
                        let grain: TrackedRef = silo.grain_factory().get(keys[i % keys.len()]);
                        i += 1;
                        if let Err(e) = grain.slow_hit(slow_ms).await {
                            failures.push(e);
                        }
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                    failures
                })
            })
            .collect();
        Load { stop, calls, tasks }
    }

    /// Waits until `n` more calls have completed.
    pub async fn calls_pass(&self, n: usize) {
        let target = self.calls.load(Ordering::Relaxed) + n;
        within("load progress", async {
            while self.calls.load(Ordering::Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
    }

    /// Stops the callers: (calls made, the failed ones' errors).
    pub async fn finish(self) -> (usize, Vec<CallError>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for task in self.tasks {
            failures.extend(within("callers end", task).await.expect("caller"));
        }
        (self.calls.load(Ordering::Relaxed), failures)
    }
}

/// Awaits `future`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {DEADLINE:?}"),
    }
}
