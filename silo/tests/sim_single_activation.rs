//! Deterministic simulation (turmoil): single activation holds at every simulated millisecond
//! while silos race first calls for a few grains over a lossy, delaying network, and silos
//! crash, restart as new generations, join, get cut off, or have their messages held and
//! delivered late. Replay a run with
//! `SILICA_SIM_SEED=<seed>`.

mod sim_support;

use silica_silo::cluster::{MembershipConfig, MembershipTable};
use sim_support::host::SimCluster;
use sim_support::{announce, ready, seeds};

fn config() -> MembershipConfig {
    let mut config = MembershipConfig::default()
        .with_missed_probes_limit(3)
        .with_votes_for_death(2)
        .with_vote_expiration_ms(3_000);
    config.probe_period_ms = 100;
    config
}

// One seeded run: 4 silos, 12 grains, 8 simulated seconds of first calls with a fault every
// 400 ms. Returns how many first calls resolved, how many faults were injected, and a digest
// of the final state (table and every silo's activations).
fn run(seed: u64) -> (u64, u32, u64) {
    announce("sim_single_activation", seed);
    let mut c = SimCluster::new(seed, 4, config());
    c.world.workload.set((12, 40));
    let mut faults = 0;
    let check = |c: &mut SimCluster| {
        if let Err(violation) = c.check_single_activation() {
            panic!("seed {seed}: {violation} (replay with SILICA_SIM_SEED={seed})");
        }
    };
    for _ in 0..20 {
        c.run(400, check);
        let n = c.names.len();
        let i = c.rng.below(n);
        match c.rng.below(7) {
            0 | 1 => {
                let up = (0..n).filter(|&j| c.is_up(j)).count();
                if up > 2 && c.is_up(i) {
                    c.crash(i);
                    faults += 1;
                }
            }
            2 | 3 => {
                if !c.is_up(i) {
                    c.restart(i);
                    faults += 1;
                }
            }
            4 => {
                if n < 6 {
                    c.add_silo();
                    faults += 1;
                }
            }
            5 => {
                let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
                c.partition(&[i], &others);
                c.run(150, check);
                c.heal();
                faults += 1;
            }
            _ => {
                // Long enough for the held silo to be declared dead, then its stale
                // messages (registrations, answers, hand-offs) arrive.
                let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
                c.hold(&[i], &others);
                c.run(900, check);
                c.release();
                faults += 1;
            }
        }
    }
    c.world.workload.set((0, 0));
    c.run(1_000, check);
    let resolved = c
        .world
        .nodes
        .borrow()
        .values()
        .map(|n| n.borrow().resolved)
        .sum();
    (resolved, faults, digest(&c))
}

// FNV-1a over the final table and every incarnation's hosted activations.
fn digest(c: &SimCluster) -> u64 {
    let table = ready(c.world.table.read_all()).expect("read");
    let mut bytes = postcard::to_allocvec(&table).expect("encode");
    for node in c.world.nodes.borrow().values() {
        let node = node.borrow();
        bytes.extend(postcard::to_allocvec(&(node.me, &node.hosted)).expect("encode"));
    }
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

// Pins single activation under racing first calls and membership changes on a simulated
// network: at no simulated millisecond do two live, undeclared-dead silos host the same
// grain, and no hand-off merge ever finds two activations. Also pins that the runs did work.
#[test]
fn single_activation_holds_under_races_and_faults() {
    for seed in seeds(0x51, 3) {
        let (resolved, faults, _) = run(seed);
        println!("seed {seed}: {resolved} first calls resolved, {faults} faults");
        assert!(
            resolved >= 50,
            "seed {seed}: only {resolved} calls resolved"
        );
        assert!(faults >= 5, "seed {seed}: only {faults} faults injected");
    }
}

// Pins that a seed replays exactly (what makes a printed seed useful): two runs of one seed end
// in the same table and the same activations on every silo, and another seed does not.
#[test]
fn a_seed_replays_exactly() {
    let seed = seeds(0x5a, 1)[0];
    let first = run(seed);
    assert_eq!(first, run(seed), "seed {seed} ran differently twice");
    assert_ne!(
        first.2,
        run(seed + 1).2,
        "seeds {seed} and {} ended alike",
        seed + 1
    );
}
