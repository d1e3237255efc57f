//! Deterministic simulations of a silo cluster on turmoil's simulated network.
//!
//! Each simulated silo is a turmoil host running the real cluster state machines
//! (`MembershipOracle`, `DirectoryPartition`) behind a small UDP message protocol: probes,
//! directory registrations and hand-offs ([`wire`]). The membership table is the in-memory
//! table, shared out of band the way every silo reaches etcd: partitions cut silo-to-silo
//! links, not the store. The test thread steps the simulation and, between steps, checks an
//! invariant on every silo's state, crashes and restarts hosts, partitions and heals links.
//!
//! Everything random comes from one seed: turmoil's network (latencies, host order) and each
//! silo's workload. A sim prints its seed; `SILICA_SIM_SEED=<seed>` replays exactly that run.
//!
//! - [`wire`]: the messages.
//! - [`node`]: one silo as a synchronous state machine (`tick`, `handle`).
//! - [`host`]: the turmoil host loop, the shared [`host::World`] and [`host::SimCluster`].
//! - [`check`]: the invariants, checked between steps.
#![allow(dead_code)] // each sim uses a different part

pub(crate) mod check;
pub(crate) mod host;
pub(crate) mod node;
pub(crate) mod wire;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use silica_grains::{GrainId, GrainType};

/// Runs a future that completes on its first poll (in-memory table steps never wait).
pub(crate) fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory cluster step waited"),
    }
}

/// A small seeded random source (splitmix64).
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

/// The seeds a sim runs: `SILICA_SIM_SEED` alone when set (to replay one run), else `count`
/// seeds from `base`. Each is printed before it runs, so a failure's output names it.
pub(crate) fn seeds(base: u64, count: u64) -> Vec<u64> {
    match std::env::var("SILICA_SIM_SEED") {
        Ok(s) => vec![s.trim().parse().expect("SILICA_SIM_SEED is a u64")],
        Err(_) => (base..base + count).collect(),
    }
}

/// Announces a run's seed (shown with a failing test's output).
pub(crate) fn announce(sim: &str, seed: u64) {
    println!("{sim}: seed {seed} (replay with SILICA_SIM_SEED={seed})");
}

/// A grain id for the sims.
pub(crate) fn grain(key: u64) -> GrainId {
    GrainId::new(GrainType::new("SimGrain"), key as i64)
}
