//! The placement experiment: queue-depth against random placement on simulated devices.
//!
//! Run with `cargo run --release -p silica-placement --example queue_depth_experiment`.
//! The model and the metric are documented in `silica_placement::sim::experiment`.

use silica_placement::QueueDepthConfig;
use silica_placement::sim::experiment::{DirectorChoice, ExperimentConfig, run};

fn main() {
    let seeds = 1..=10u64;
    let base = ExperimentConfig {
        duration_ms: 20_000,
        ..ExperimentConfig::default()
    };
    println!(
        "4 silos x 2 devices, rates [8,2] [4,4] [6,3] [12,3] msg/ms, 10 seeds x 20 s simulated"
    );
    println!(
        "| scenario | director | imbalance (mean / worst seed) | raw-depth imbalance | mean wait ms | max wait ms |"
    );
    println!("|---|---|---|---|---|---|");
    let scenarios = [
        ("default: load 0.9, reports every 10 ms", base.clone()),
        (
            "reports every 100 ms",
            ExperimentConfig {
                report_interval_ms: 100,
                ..base.clone()
            },
        ),
        (
            "load 0.7",
            ExperimentConfig {
                load_factor: 0.7,
                ..base.clone()
            },
        ),
        (
            "load 0.97",
            ExperimentConfig {
                load_factor: 0.97,
                ..base.clone()
            },
        ),
    ];
    for (name, config) in &scenarios {
        let choices = [
            ("random", DirectorChoice::Random),
            (
                "queue-depth k=2",
                DirectorChoice::QueueDepth(QueueDepthConfig::default()),
            ),
            (
                "queue-depth k=1",
                DirectorChoice::QueueDepth(QueueDepthConfig {
                    sample_size: 1,
                    ..Default::default()
                }),
            ),
            (
                "queue-depth k=7",
                DirectorChoice::QueueDepth(QueueDepthConfig {
                    sample_size: 7,
                    ..Default::default()
                }),
            ),
        ];
        for (label, choice) in choices {
            let outcomes: Vec<_> = seeds.clone().map(|s| run(config, choice, s)).collect();
            let n = outcomes.len() as f64;
            let mean = |f: fn(&silica_placement::sim::experiment::ExperimentOutcome) -> f64| {
                outcomes.iter().map(f).sum::<f64>() / n
            };
            let worst = outcomes.iter().map(|o| o.imbalance).fold(0.0, f64::max);
            println!(
                "| {name} | {label} | {:.3} / {:.3} | {:.3} | {:.2} | {:.2} |",
                mean(|o| o.imbalance),
                worst,
                mean(|o| o.raw_depth_imbalance),
                mean(|o| o.mean_wait_ms),
                mean(|o| o.max_wait_ms),
            );
        }
    }
}
