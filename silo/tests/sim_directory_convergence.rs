//! Deterministic simulation (turmoil): after a network partition heals, the grain directory
//! converges. Silos register grains, the network splits in two while calls go on (each side
//! suspects the other; some silos are declared dead and stop, and are restarted as new
//! generations), then heals. Replay a run with `SILICA_SIM_SEED=<seed>`.

mod sim_support;

use silica_silo::cluster::{MembershipConfig, MembershipTable};
use sim_support::host::SimCluster;
use sim_support::{announce, ready, seeds};

const SILOS: usize = 5;

fn config() -> MembershipConfig {
    let mut config = MembershipConfig::default()
        .with_missed_probes_limit(3)
        .with_votes_for_death(2)
        .with_vote_expiration_ms(3_000);
    config.probe_period_ms = 100;
    config
}

// Runs `ms` simulated milliseconds in chunks, restarting (as a new generation) every host
// whose silo stopped or was never started, as a process supervisor would.
fn run_supervised(c: &mut SimCluster, ms: u64) {
    for _ in 0..ms / 100 {
        c.run(100, |_| {});
        for i in 0..c.names.len() {
            if !c.is_up(i) {
                c.restart(i);
            }
        }
    }
}

// One seeded run. Returns (membership changes during the split, simulated ms from the heal
// to convergence, in 100 ms steps, calls going on for the first 300, grains hosted at the end).
fn run(seed: u64) -> (u64, u64, usize) {
    announce("sim_directory_convergence", seed);
    let mut c = SimCluster::new(seed, SILOS, config());
    c.world.workload.set((24, 30));
    run_supervised(&mut c, 1_500);
    // A random split into two non-empty sides.
    let cut = 1 + c.rng.below(SILOS - 1);
    let mut order: Vec<usize> = (0..SILOS).collect();
    for i in (1..SILOS).rev() {
        order.swap(i, c.rng.below(i + 1));
    }
    let (a, b) = order.split_at(cut);
    let before = ready(c.world.table.read_all()).expect("read").version;
    c.partition(a, b);
    run_supervised(&mut c, 2_000);
    let changes = ready(c.world.table.read_all()).expect("read").version.0 - before.0;
    c.heal();
    run_supervised(&mut c, 300);
    c.world.workload.set((0, 0));
    let mut last = String::new();
    for waited in 0..150u64 {
        match c.check_converged() {
            Ok(()) => {
                let hosted = c.up_nodes().iter().map(|n| n.borrow().hosted.len()).sum();
                return (changes, 300 + waited * 100, hosted);
            }
            Err(why) => last = why,
        }
        run_supervised(&mut c, 100);
    }
    panic!(
        "seed {seed}: no convergence 15 s after the heal: {last} \
         (replay with SILICA_SIM_SEED={seed})"
    );
}

// Pins directory convergence after a partition heals: every silo serves at the table's
// version, settled, with every hand-off acknowledged, and each hosted activation has exactly
// one directory entry, at its grain's ring owner, with no entry left dangling. Also pins that
// the split changed membership (it was a real fault) and that grains were registered.
#[test]
fn directory_converges_after_partition_heals() {
    for seed in seeds(0xd1c, 3) {
        let (changes, converge_ms, hosted) = run(seed);
        println!(
            "seed {seed}: {changes} membership changes during the split, converged within \
             {converge_ms} ms of the heal, {hosted} grains hosted"
        );
        assert!(changes > 0, "seed {seed}: the split changed no membership");
        assert!(hosted >= 10, "seed {seed}: only {hosted} grains hosted");
    }
}
