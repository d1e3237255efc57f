//! In-memory multi-silo harness for the cluster state machines: several silos (membership
//! oracle, directory partition, cache, hosted activations) over one shared in-memory table,
//! driven step by step with a fake clock and a seeded random source. No tasks, no sockets:
//! a "message" is a method call, so a test controls every interleaving.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use silica_grains::placement::SiloAddress;
use silica_grains::{GrainId, GrainType};
use silica_silo::cluster::{
    ActivationAddress, ActivationId, DEFAULT_DIRECTORY_VIRTUAL_NODES, DirectoryCache,
    DirectoryError, DirectoryPartition, DirectoryRetry, Duplicate, InMemoryMembershipTable,
    MembershipConfig, MembershipOracle, MembershipSnapshot, MembershipTable, Registration,
    SiloStatus, StopReason, driver,
};

/// Runs a future that must complete on its first poll (the in-memory table never waits).
pub(crate) fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory cluster step waited"),
    }
}

/// A small seeded random source (splitmix64), so a failing run replays from its seed.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A source seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The seeds a randomized test runs: `CLUSTER_SEED` alone when set (to replay), else `count`
/// seeds from `base`. Each seed is printed, so a failure's output names it.
pub(crate) fn seeds(base: u64, count: u64) -> Vec<u64> {
    match std::env::var("CLUSTER_SEED") {
        Ok(s) => vec![s.parse().expect("CLUSTER_SEED is a u64")],
        Err(_) => (base..base + count).collect(),
    }
}

/// The address of a silo on 127.0.0.1.
pub(crate) fn addr(port: u16, generation: u64) -> SiloAddress {
    SiloAddress::new(SocketAddr::from(([127, 0, 0, 1], port)), generation)
}

/// A grain id for tests.
pub(crate) fn grain(key: u64) -> GrainId {
    GrainId::new(GrainType::new("Counter"), key as i64)
}

/// One simulated silo process.
#[derive(Debug)]
pub(crate) struct SimSilo {
    /// Its address.
    pub(crate) address: SiloAddress,
    /// Its membership state machine.
    pub(crate) oracle: MembershipOracle,
    /// Its directory partition.
    pub(crate) partition: DirectoryPartition,
    /// Its directory cache.
    pub(crate) cache: DirectoryCache,
    /// The activations it runs.
    pub(crate) hosted: HashMap<GrainId, ActivationAddress>,
    /// False once killed: it takes no steps and answers nothing.
    pub(crate) running: bool,
    /// Set once it read its own death or supersession and stopped serving.
    pub(crate) stopped: Option<StopReason>,
}

/// How a call through the harness ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    /// The grain's activation (possibly just created on the caller).
    Done(ActivationAddress),
    /// The directory refused; the caller would retry.
    Refused(DirectoryError),
    /// The owner's process is gone (the caller waits for the view to change).
    OwnerUnreachable(SiloAddress),
    /// The calling silo is not serving.
    CallerDown,
    /// The registered activation is gone; its entry was dropped and the caller retries.
    ForwardMissed(ActivationAddress),
}

/// Several silos over one in-memory table.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// The shared table.
    pub(crate) table: InMemoryMembershipTable,
    /// The silos, by index (a restart adds a new one).
    pub(crate) silos: Vec<SimSilo>,
    /// The fake clock, milliseconds.
    pub(crate) now_ms: u64,
    /// The membership configuration every silo uses.
    pub(crate) config: MembershipConfig,
    blocked: BTreeSet<(usize, usize)>,
    next_activation: u64,
    /// Duplicates reported by hand-off merges (must stay empty).
    pub(crate) duplicates: Vec<Duplicate>,
}

impl Cluster {
    /// An empty cluster.
    pub(crate) fn new(config: MembershipConfig) -> Self {
        Self {
            table: InMemoryMembershipTable::new(),
            silos: Vec::new(),
            now_ms: 1_000,
            config,
            blocked: BTreeSet::new(),
            next_activation: 1,
            duplicates: Vec::new(),
        }
    }

    /// A cluster of `n` active silos with settled views.
    pub(crate) fn with_silos(config: MembershipConfig, n: usize) -> Self {
        let mut cluster = Self::new(config);
        for i in 0..n {
            cluster.start_silo(11_000 + i as u16, 1);
        }
        cluster.settle();
        cluster
    }

    /// Starts a silo process: joins (superseding older generations at its endpoint) and goes
    /// active. Returns its index. Other silos see it when they refresh.
    pub(crate) fn start_silo(&mut self, port: u16, generation: u64) -> usize {
        let address = addr(port, generation);
        let mut oracle = MembershipOracle::new(address, self.config);
        ready(driver::join(&self.table, &mut oracle, self.now_ms)).expect("join");
        ready(driver::set_status(
            &self.table,
            &mut oracle,
            SiloStatus::Active,
            self.now_ms,
        ))
        .expect("activate");
        self.silos.push(SimSilo {
            address,
            oracle,
            partition: DirectoryPartition::new(address, DEFAULT_DIRECTORY_VIRTUAL_NODES),
            cache: DirectoryCache::new(1024),
            hosted: HashMap::new(),
            running: true,
            stopped: None,
        });
        let i = self.silos.len() - 1;
        self.refresh(i);
        i
    }

    /// Kills silo `i`'s process (SIGKILL): its activations are gone, it answers nothing.
    pub(crate) fn kill(&mut self, i: usize) {
        self.silos[i].running = false;
        self.silos[i].hosted.clear();
    }

    /// Makes probes between `a` and `b` fail both ways (a network partition of the probes).
    pub(crate) fn partition_probes(&mut self, a: usize, b: usize) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Heals every probe partition.
    pub(crate) fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Whether silo `i` runs and has not stopped.
    pub(crate) fn is_up(&self, i: usize) -> bool {
        self.silos[i].running && self.silos[i].stopped.is_none()
    }

    /// Silo `i` reads the table; its partition and cache take in a new view, and it stops when
    /// it reads its own death.
    pub(crate) fn refresh(&mut self, i: usize) {
        if !self.is_up(i) {
            return;
        }
        let silo = &mut self.silos[i];
        let _ = ready(driver::refresh(&self.table, &mut silo.oracle));
        if let Some(reason) = silo.oracle.stop_decision() {
            silo.stopped = Some(reason);
            silo.partition.handle_stop();
            silo.hosted.clear();
            return;
        }
        let view = silo.oracle.view().clone();
        if let Some(duplicates) = silo.partition.handle_view_change(&view, &silo.hosted) {
            self.duplicates.extend(duplicates);
        }
        silo.cache.handle_view_change(&view);
    }

    /// Every up silo refreshes.
    pub(crate) fn refresh_all(&mut self) {
        for i in 0..self.silos.len() {
            self.refresh(i);
        }
    }

    fn index_of(&self, address: SiloAddress) -> Option<usize> {
        self.silos.iter().position(|s| s.address == address)
    }

    /// Every up silo sends its pending hand-offs; receivers at the same view take them in.
    pub(crate) fn exchange_handoffs(&mut self) {
        for i in 0..self.silos.len() {
            if !self.is_up(i) {
                continue;
            }
            let handoffs = self.silos[i].partition.handoffs(&self.silos[i].hosted);
            for handoff in handoffs {
                let Some(j) = self.index_of(handoff.to).filter(|&j| self.is_up(j)) else {
                    continue;
                };
                if let Ok(ack) = self.silos[j].partition.handle_handoff(handoff) {
                    self.silos[i].partition.handle_handoff_ack(&ack);
                    self.duplicates.extend(ack.duplicates);
                }
            }
        }
    }

    /// Refreshes and exchanges hand-offs until every up silo holds the table's version and is
    /// settled (bounded; panics if it does not converge).
    pub(crate) fn settle(&mut self) {
        for _ in 0..16 {
            self.refresh_all();
            self.exchange_handoffs();
            let version = ready(self.table.read_all()).expect("read").version;
            let done = (0..self.silos.len()).filter(|&i| self.is_up(i)).all(|i| {
                let p = &self.silos[i].partition;
                p.version() == version && p.is_settled()
            });
            if done {
                return;
            }
        }
        let state: Vec<String> = self
            .silos
            .iter()
            .map(|s| {
                format!(
                    "{} running={} stopped={:?} status={:?} view={} settled={} awaiting={:?}",
                    s.address,
                    s.running,
                    s.stopped,
                    s.oracle.my_status(),
                    s.partition.version(),
                    s.partition.is_settled(),
                    s.partition
                        .awaiting()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        panic!(
            "cluster did not settle at {:?}:\n{}",
            self.table_view().version,
            state.join("\n")
        );
    }

    /// One probe round: the clock advances one probe period, every up silo probes its targets
    /// (a probe fails when the target is down or the pair is partitioned) and casts the votes
    /// its oracle asks for.
    pub(crate) fn probe_round(&mut self) {
        self.now_ms += self.config.probe_period_ms;
        for i in 0..self.silos.len() {
            if !self.is_up(i) {
                continue;
            }
            for target in self.silos[i].oracle.probe_targets() {
                let ok = self
                    .index_of(target)
                    .is_some_and(|t| self.silos[t].running && !self.blocked.contains(&(i, t)));
                self.silos[i]
                    .oracle
                    .handle_probe_result(target, ok, self.now_ms);
            }
            let silo = &mut self.silos[i];
            let _ = ready(driver::process_actions(&self.table, &mut silo.oracle));
        }
    }

    /// Silo `i` deactivates its activation of `grain` (idle collection) and unregisters it.
    /// Returns whether the directory dropped the entry (it may refuse; then a later caller's
    /// forward misses and drops it).
    pub(crate) fn deactivate(&mut self, i: usize, grain: &GrainId) -> bool {
        if !self.is_up(i) {
            return false;
        }
        let Some(address) = self.silos[i].hosted.remove(grain) else {
            return false;
        };
        let version = self.silos[i].partition.version();
        let owner = self.silos[i].partition.ring().owner(grain);
        let Some(o) = owner
            .and_then(|o| self.index_of(o))
            .filter(|&o| self.is_up(o))
        else {
            return false;
        };
        self.silos[o].partition.unregister(version, grain, address) == Ok(true)
    }

    /// Calls `grain` from silo `from` until it resolves, settling the cluster between tries.
    pub(crate) fn call_until_done(&mut self, from: usize, grain: &GrainId) -> ActivationAddress {
        for _ in 0..8 {
            if let CallOutcome::Done(a) = self.call(from, grain) {
                return a;
            }
            self.settle();
        }
        panic!("call to {grain} from silo {from} never resolved");
    }

    /// Indices of the silos that run and have not stopped.
    pub(crate) fn up_silos(&self) -> Vec<usize> {
        (0..self.silos.len()).filter(|&i| self.is_up(i)).collect()
    }

    /// Table refreshes and probe rounds (as the membership task would run them) until every
    /// killed silo is declared dead, then settle.
    pub(crate) fn detect_and_settle(&mut self) {
        for _ in 0..4 * self.config.num_missed_probes_limit {
            self.refresh_all();
            self.probe_round();
        }
        self.settle();
    }

    /// The table as it is now.
    pub(crate) fn table_view(&self) -> MembershipSnapshot {
        ready(self.table.read_all()).expect("read")
    }

    /// A first call to `grain` from silo `from`: activate locally and register, first wins.
    /// Follows Orleans: cache, then the owner's partition at the caller's view version.
    pub(crate) fn call(&mut self, from: usize, grain: &GrainId) -> CallOutcome {
        if !self.is_up(from) || !self.silos[from].oracle.is_serving() {
            return CallOutcome::CallerDown;
        }
        if let Some(&own) = self.silos[from].hosted.get(grain) {
            return CallOutcome::Done(own);
        }
        if let Some(cached) = self.silos[from].cache.get(grain) {
            let alive = self
                .index_of(cached.silo)
                .is_some_and(|s| self.is_up(s) && self.silos[s].hosted.get(grain) == Some(&cached));
            if alive {
                return CallOutcome::Done(cached);
            }
            self.silos[from].cache.handle_forward_miss(grain, cached);
        }
        let version = self.silos[from].partition.version();
        let Some(owner) = self.silos[from].partition.ring().owner(grain) else {
            return CallOutcome::Refused(DirectoryError::NotOwner {
                owner: None,
                version,
            });
        };
        let Some(o) = self.index_of(owner).filter(|&o| self.is_up(o)) else {
            return CallOutcome::OwnerUnreachable(owner);
        };
        let mine =
            ActivationAddress::new(self.silos[from].address, ActivationId(self.next_activation));
        self.next_activation += 1;
        match self.silos[o]
            .partition
            .register(version, grain.clone(), mine)
        {
            Ok(Registration::Registered(a)) => {
                self.silos[from].hosted.insert(grain.clone(), a);
                CallOutcome::Done(a)
            }
            Ok(Registration::Existing(winner)) => {
                let alive = self.index_of(winner.silo).is_some_and(|s| {
                    self.is_up(s) && self.silos[s].hosted.get(grain) == Some(&winner)
                });
                if alive {
                    self.silos[from].cache.insert(grain.clone(), winner);
                    return CallOutcome::Done(winner);
                }
                // The forward would miss: drop the stale entry so the retry can activate.
                let _ = self.silos[o].partition.unregister(version, grain, winner);
                CallOutcome::ForwardMissed(winner)
            }
            Err(e) => {
                if e.action() == DirectoryRetry::RefreshView {
                    self.refresh(from);
                }
                CallOutcome::Refused(e)
            }
        }
    }

    /// Checks single activation: among silos that run, have not stopped and are not dead in the
    /// table, no grain has two activations; and no hand-off found a duplicate.
    pub(crate) fn assert_single_activation(&self, context: &str) {
        let table = self.table_view();
        let mut seen: HashMap<&GrainId, ActivationAddress> = HashMap::new();
        for (i, silo) in self.silos.iter().enumerate() {
            if !self.is_up(i) || table.is_dead(&silo.address) {
                continue;
            }
            for (g, a) in &silo.hosted {
                if let Some(other) = seen.insert(g, *a) {
                    panic!("{context}: {g} has two activations: {other} and {a}");
                }
            }
        }
        assert!(
            self.duplicates.is_empty(),
            "{context}: hand-off duplicates {:?}",
            self.duplicates
        );
    }
}
