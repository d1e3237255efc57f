//! The placement experiment: queue-depth placement against random placement on simulated
//! devices of different speeds, under skewed, bursty load from several silos.
//!
//! # Model
//!
//! Time advances in 1 ms ticks. Every silo is also a caller. Caller `i` gets a Zipf share
//! `(i + 1)^-zipf_s` of the offered load, and independently goes into bursts: each tick outside
//! a burst starts one with probability `burst_prob`, lasting `burst_ms` ticks at
//! `burst_multiplier` times its base rate. Base rates are scaled so that the long-run offered
//! load is `load_factor` times the cluster's total service rate. Arrivals per tick are Poisson.
//! Each arrival is one stateless GPU activation of one unit message, placed by the caller's own
//! director from its own view (remote reports refreshed every `report_interval_ms`), and it
//! holds a slot on its device until served.
//!
//! # Metric
//!
//! A device's *normalized depth* is its queue depth divided by its true service rate: the
//! milliseconds of work queued on it, which is what a newly placed message waits. Raw depth is
//! the wrong yardstick across devices of different speeds: 40 messages on a device that serves
//! 12 per ms is less backlog than 10 on one that serves 2. Sampled after each tick's arrivals,
//!
//! `imbalance = sum_t max_d w_d(t) / sum_t mean_d w_d(t)`,
//!
//! the time-integrated maximum over the time-integrated mean. Integrating before dividing
//! weights each tick by its backlog, so near-empty ticks (where any ratio of tiny numbers is
//! noise) count little, and the ratio stays defined when the cluster is idle. 1.0 is perfect
//! balance. The raw-depth form of the same ratio is reported alongside.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::{SiloSpec, SimCluster};
use crate::director::{
    PlacementDirector, QueueDepthConfig, QueueDepthPlacementDirector, RandomPlacementDirector,
};
use crate::target::PlacementTarget;

/// Bytes of device state one simulated activation holds.
const STATE_BYTES: u64 = 1024;

/// The workload and cluster of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentConfig {
    /// The silos and their devices; every silo is also a caller.
    pub silos: Vec<SiloSpec>,
    /// Length of the run in 1 ms ticks.
    pub duration_ms: u64,
    /// Long-run offered load as a fraction of the total true service rate.
    pub load_factor: f64,
    /// Skew of the callers' shares: caller `i` gets weight `(i + 1)^-zipf_s`.
    pub zipf_s: f64,
    /// Per tick, the chance that a caller outside a burst starts one.
    pub burst_prob: f64,
    /// Length of a burst in ticks.
    pub burst_ms: u64,
    /// A caller's rate during a burst, as a multiple of its base rate.
    pub burst_multiplier: f64,
    /// How often silos broadcast load reports.
    pub report_interval_ms: u64,
    /// Ticks at the start that the figures leave out, while the service-rate estimates are
    /// still learning (silos start out assuming every device is average).
    pub warmup_ms: u64,
}

impl Default for ExperimentConfig {
    /// 4 silos with 2 devices each, 2 to 12 messages/ms (42 in all); 90 % load; Zipf 1.0 over
    /// callers; bursts of 3x for 20 ms starting with probability 1 % per ms; reports every 10 ms;
    /// the first 200 ms left out.
    fn default() -> Self {
        let rates = [[8.0, 2.0], [4.0, 4.0], [6.0, 3.0], [12.0, 3.0]];
        Self {
            silos: rates.iter().map(|r| SiloSpec::with_rates(r)).collect(),
            duration_ms: 2_000,
            load_factor: 0.9,
            zipf_s: 1.0,
            burst_prob: 0.01,
            burst_ms: 20,
            burst_multiplier: 3.0,
            report_interval_ms: 10,
            warmup_ms: 200,
        }
    }
}

/// Which director every caller uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DirectorChoice {
    /// [`RandomPlacementDirector`]: uniformly over all devices.
    Random,
    /// [`QueueDepthPlacementDirector`] with this tuning.
    QueueDepth(QueueDepthConfig),
}

/// The figures of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExperimentOutcome {
    /// Time-integrated max over mean of normalized depth (see the module docs); 1.0 is perfect.
    pub imbalance: f64,
    /// The same ratio over raw queue depths.
    pub raw_depth_imbalance: f64,
    /// Time-averaged mean normalized depth, in ms: the typical wait of a new message.
    pub mean_wait_ms: f64,
    /// Time-averaged max normalized depth, in ms: the wait on the worst device.
    pub max_wait_ms: f64,
    /// Messages placed.
    pub placed: u64,
    /// Placements that failed (none expected with the default, unconstrained devices).
    pub rejected: u64,
}

/// Runs the experiment once with `seed`; the same inputs always give the same outcome.
pub fn run(config: &ExperimentConfig, choice: DirectorChoice, seed: u64) -> ExperimentOutcome {
    let mut rng = SmallRng::seed_from_u64(seed);
    let total_rate: f64 = config
        .silos
        .iter()
        .flat_map(|s| s.device_rates_per_ms.iter())
        .sum();
    // Silos start out assuming every device is average; the EWMA learns the truth.
    let device_count = config
        .silos
        .iter()
        .map(|s| s.device_rates_per_ms.len())
        .sum::<usize>()
        .max(1);
    let mut cluster = SimCluster::new(
        &config.silos,
        config.report_interval_ms,
        total_rate / device_count as f64,
        STATE_BYTES,
    );
    let callers = cluster.len();
    let mut directors: Vec<Box<dyn PlacementDirector>> = (0..callers)
        .map(|_| -> Box<dyn PlacementDirector> {
            match choice {
                DirectorChoice::Random => Box::new(RandomPlacementDirector),
                DirectorChoice::QueueDepth(c) => Box::new(QueueDepthPlacementDirector::new(c)),
            }
        })
        .collect();

    let weights: Vec<f64> = (0..callers)
        .map(|i| ((i + 1) as f64).powf(-config.zipf_s))
        .collect();
    let weight_sum: f64 = weights.iter().sum();
    let burst_share = config.burst_prob * config.burst_ms as f64
        / (1.0 + config.burst_prob * config.burst_ms as f64);
    let mean_multiplier = 1.0 + burst_share * (config.burst_multiplier - 1.0);
    let base: Vec<f64> = weights
        .iter()
        .map(|w| config.load_factor * total_rate * w / weight_sum / mean_multiplier)
        .collect();
    let mut burst_left = vec![0u64; callers];

    let mut targets: Vec<PlacementTarget> = (0..callers)
        .map(|i| PlacementTarget::new("Sim", 0, SimCluster::address(i)).with_gpu(STATE_BYTES))
        .collect();
    let (mut sum_max, mut sum_mean, mut raw_max, mut raw_mean) = (0.0, 0.0, 0.0, 0.0);
    let (mut placed, mut rejected) = (0u64, 0u64);

    for tick in 0..config.duration_ms {
        for caller in 0..callers {
            if burst_left[caller] == 0 && rng.random_bool(config.burst_prob) {
                burst_left[caller] = config.burst_ms;
            }
            let mut rate = base[caller];
            if burst_left[caller] > 0 {
                burst_left[caller] -= 1;
                rate *= config.burst_multiplier;
            }
            for _ in 0..poisson(rate, &mut rng) {
                targets[caller].grain_hash = rng.random();
                match cluster.place(
                    caller,
                    &targets[caller],
                    directors[caller].as_mut(),
                    &mut rng,
                ) {
                    Ok(_) => placed += 1,
                    Err(_) => rejected += 1,
                }
            }
        }
        if tick < config.warmup_ms {
            cluster.advance(1);
            continue;
        }
        let (mut max_w, mut sum_w, mut max_q, mut sum_q, mut n) = (0.0f64, 0.0, 0.0f64, 0.0, 0.0);
        for (queue, rate) in cluster.devices() {
            let w = queue as f64 / rate;
            max_w = max_w.max(w);
            sum_w += w;
            max_q = max_q.max(queue as f64);
            sum_q += queue as f64;
            n += 1.0;
        }
        sum_max += max_w;
        sum_mean += sum_w / n;
        raw_max += max_q;
        raw_mean += sum_q / n;
        cluster.advance(1);
    }
    let ticks = config.duration_ms.saturating_sub(config.warmup_ms).max(1) as f64;
    ExperimentOutcome {
        imbalance: ratio(sum_max, sum_mean),
        raw_depth_imbalance: ratio(raw_max, raw_mean),
        mean_wait_ms: sum_mean / ticks,
        max_wait_ms: sum_max / ticks,
        placed,
        rejected,
    }
}

fn ratio(max: f64, mean: f64) -> f64 {
    if mean > 0.0 { max / mean } else { 1.0 }
}

/// A Poisson sample with mean `lambda` (Knuth's method; `lambda` here is at most a few dozen).
fn poisson(lambda: f64, rng: &mut SmallRng) -> u64 {
    let limit = (-lambda).exp();
    let mut product: f64 = rng.random();
    let mut count = 0;
    while product > limit {
        product *= rng.random::<f64>();
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depth_keeps_imbalance_under_1_25_where_random_exceeds_2() {
        // Pins the claim on fixed seeds 1 and 2, 1 s simulated each (bounded for debug
        // builds): with stale reports, skewed bursty callers and devices of different speeds,
        // queue-depth placement keeps max/mean normalized depth <= 1.25 averaged over the seeds
        // (one 1 s window alone can reach ~1.37; the 20 s runs in docs/BENCHMARKS.md stay under
        // 1.25 on every seed), and random placement goes above 2 on every seed.
        let config = ExperimentConfig {
            duration_ms: 1_000,
            ..ExperimentConfig::default()
        };
        let mut qd_sum = 0.0;
        for seed in 1..=2 {
            let qd = run(
                &config,
                DirectorChoice::QueueDepth(QueueDepthConfig::default()),
                seed,
            );
            let random = run(&config, DirectorChoice::Random, seed);
            assert!(random.imbalance > 2.0, "seed {seed}: random {random:?}");
            assert!(qd.imbalance < 1.3, "seed {seed}: queue-depth {qd:?}");
            assert_eq!((qd.rejected, random.rejected), (0, 0));
            qd_sum += qd.imbalance;
        }
        assert!(
            qd_sum / 2.0 <= 1.25,
            "mean queue-depth imbalance {}",
            qd_sum / 2.0
        );
    }

    #[test]
    fn runs_replay_from_the_seed() {
        // Pins determinism: the same config, director and seed give the same figures.
        let config = ExperimentConfig {
            duration_ms: 200,
            ..ExperimentConfig::default()
        };
        let choice = DirectorChoice::QueueDepth(QueueDepthConfig::default());
        assert_eq!(run(&config, choice, 9), run(&config, choice, 9));
    }
}
