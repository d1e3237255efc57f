//! The turmoil side: the host loop of one silo, the [`World`] the test thread inspects, and
//! [`SimCluster`], which builds the simulation and steps it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use silica_grains::placement::SiloAddress;
use silica_silo::cluster::{InMemoryMembershipTable, MembershipConfig};
use turmoil::net::UdpSocket;
use turmoil::{Builder, Sim};

use super::Rng;
use super::node::Node;
use super::wire::{decode, encode};

/// The UDP port every silo listens on (each host has its own IP).
const PORT: u16 = 7100;
/// How often a silo runs its timers.
const TICK: Duration = Duration::from_millis(20);

/// Simulated milliseconds (offset so that no time is 0).
fn now_ms() -> u64 {
    1_000 + turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// What the silos share and what the test thread inspects between steps.
#[derive(Debug)]
pub(crate) struct World {
    /// The membership table.
    pub(crate) table: InMemoryMembershipTable,
    config: MembershipConfig,
    seed: u64,
    /// The latest incarnation's state of each host, by host name.
    pub(crate) nodes: RefCell<BTreeMap<String, Rc<RefCell<Node>>>>,
    generations: RefCell<BTreeMap<String, u64>>,
    /// (grains, percent chance per tick) of new first calls on every silo.
    pub(crate) workload: Cell<(u64, u32)>,
}

/// One silo host's software: join, then serve datagrams and timers until it reads its own death.
async fn run_silo(world: Rc<World>, name: String) -> turmoil::Result {
    let generation = {
        let mut generations = world.generations.borrow_mut();
        let g = generations.entry(name.clone()).or_insert(0);
        *g += 1;
        *g
    };
    let me = SiloAddress::new(
        SocketAddr::new(turmoil::lookup(name.as_str()), PORT),
        generation,
    );
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).await?;
    let seed = Rng::new(world.seed ^ hash(&name) ^ generation.wrapping_mul(0x9e37_79b9)).next_u64();
    let node = Node::new(
        me,
        world.table.clone(),
        world.config,
        seed,
        world.workload.get(),
    );
    let node = Rc::new(RefCell::new(node));
    world.nodes.borrow_mut().insert(name, node.clone());
    node.borrow_mut().join(now_ms());
    let mut tick = tokio::time::interval(TICK);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // `biased`: no random branch choice, so a seed replays exactly.
        let out = tokio::select! {
            biased;
            received = socket.recv_from(&mut buf) => {
                let (n, _) = received?;
                node.borrow_mut().handle(decode(&buf[..n]), now_ms())
            }
            _ = tick.tick() => {
                let mut node = node.borrow_mut();
                node.set_workload(world.workload.get());
                node.tick(now_ms())
            }
        };
        for envelope in out {
            // A partitioned link drops the datagram; the protocol retries.
            let _ = socket
                .send_to(&encode(&envelope), envelope.to.endpoint)
                .await;
        }
        if node.borrow().stopped.is_some() {
            return Ok(());
        }
    }
}

fn hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A simulated cluster of silo hosts named `silo-0`, `silo-1`, ...
pub(crate) struct SimCluster {
    /// The turmoil simulation.
    pub(crate) sim: Sim<'static>,
    /// The shared state.
    pub(crate) world: Rc<World>,
    /// Host names, by index.
    pub(crate) names: Vec<String>,
    /// The controller's random source (events between steps).
    pub(crate) rng: Rng,
}

impl SimCluster {
    /// `silos` hosts with membership `config`, seeded with `seed`.
    pub(crate) fn new(seed: u64, silos: usize, config: MembershipConfig) -> Self {
        let sim = Builder::new()
            .rng_seed(seed)
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(Duration::from_millis(1))
            .max_message_latency(Duration::from_millis(8))
            .simulation_duration(Duration::from_secs(3_600))
            .enable_random_order()
            .build();
        let world = Rc::new(World {
            table: InMemoryMembershipTable::new(),
            config,
            seed,
            nodes: RefCell::new(BTreeMap::new()),
            generations: RefCell::new(BTreeMap::new()),
            workload: Cell::new((0, 0)),
        });
        let mut cluster = Self {
            sim,
            world,
            names: Vec::new(),
            rng: Rng::new(seed ^ 0x5eed),
        };
        for _ in 0..silos {
            cluster.add_silo();
        }
        cluster
    }

    /// Adds a host that starts (joins) on the next step. Returns its index.
    pub(crate) fn add_silo(&mut self) -> usize {
        let name = format!("silo-{}", self.names.len());
        let world = self.world.clone();
        let host_name = name.clone();
        self.sim.host(name.as_str(), move || {
            run_silo(world.clone(), host_name.clone())
        });
        self.names.push(name);
        self.names.len() - 1
    }

    /// Runs `steps` simulated milliseconds, calling `check` after each.
    pub(crate) fn run(&mut self, steps: u64, mut check: impl FnMut(&mut Self)) {
        for _ in 0..steps {
            self.sim.step().expect("simulation step");
            check(self);
        }
    }

    /// Kills host `i` (its process and all its state are gone).
    pub(crate) fn crash(&mut self, i: usize) {
        let name = self.names[i].clone();
        if self.sim.is_host_running(name.as_str()) {
            self.sim.crash(name.as_str());
        }
    }

    /// Starts host `i` again as a new generation (after a crash or after it stopped).
    pub(crate) fn restart(&mut self, i: usize) {
        self.sim.bounce(self.names[i].as_str());
    }

    /// Whether host `i` runs a silo that has not stopped.
    pub(crate) fn is_up(&mut self, i: usize) -> bool {
        let name = self.names[i].clone();
        self.sim.is_host_running(name.as_str())
            && self
                .world
                .nodes
                .borrow()
                .get(&name)
                .is_some_and(|n| n.borrow().stopped.is_none())
    }

    /// Cuts every link between the hosts in `a` and those in `b`.
    pub(crate) fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &i in a {
            for &j in b {
                self.sim
                    .partition(self.names[i].as_str(), self.names[j].as_str());
            }
        }
    }

    /// Holds every message between the hosts in `a` and those in `b` (delivered on
    /// [`Self::release`]): the worst delay a network can do.
    pub(crate) fn hold(&mut self, a: &[usize], b: &[usize]) {
        for &i in a {
            for &j in b {
                self.sim
                    .hold(self.names[i].as_str(), self.names[j].as_str());
            }
        }
    }

    /// Delivers every held message and stops holding.
    pub(crate) fn release(&mut self) {
        for i in 0..self.names.len() {
            for j in i + 1..self.names.len() {
                self.sim
                    .release(self.names[i].as_str(), self.names[j].as_str());
            }
        }
    }

    /// Restores every link.
    pub(crate) fn heal(&mut self) {
        for i in 0..self.names.len() {
            for j in i + 1..self.names.len() {
                self.sim
                    .repair(self.names[i].as_str(), self.names[j].as_str());
            }
        }
    }

    /// The up silos' nodes (running, not stopped).
    pub(crate) fn up_nodes(&mut self) -> Vec<Rc<RefCell<Node>>> {
        let up: Vec<usize> = (0..self.names.len()).filter(|&i| self.is_up(i)).collect();
        let nodes = self.world.nodes.borrow();
        up.into_iter()
            .filter_map(|i| nodes.get(&self.names[i]).cloned())
            .collect()
    }
}
