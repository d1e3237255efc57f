//! C1: cross-silo calls per second through a silo link on 127.0.0.1, in the Orleans
//! ping shape (100 concurrent callers x 500 requests), the p50 of one caller's round trip, the
//! external client's throughput through a gateway, and a plain tonic unary call (the link's
//! `Probe` RPC) measured in the same run as the baseline.
//!
//! Run: `cargo run --release -p silica-silo --example link_bench [-- processes]`
//! (`LINK_BENCH_WORKERS`, default 2: Tokio worker threads per process; `LINK_BENCH_TRIALS`,
//! default 3.) By default both silos and the callers share one process and its worker threads,
//! so every figure pays for both ends of the link. With `processes`, the called silo (with the
//! gateway) runs in a second process of this example (`serve` mode), as in C1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use silica_client::link::{LinkOptions, Prober};
use silica_client::{Client, ClientOptions};
use silica_grains::{Grain, GrainContext, GrainFactory, grain};
use silica_silo::{NetworkOptions, Silo};

const CALLERS: usize = 100;
const REQUESTS: usize = 500;

/// The benchmark's grain: answers at once.
#[grain]
pub trait Ping {
    /// Returns `n + 1`.
    async fn ping(&self, n: u64) -> u64;
}

struct PingGrain;

impl Grain for PingGrain {
    type Interface = PingRef;
    fn create(_: &GrainContext) -> Self {
        PingGrain
    }
}

impl Ping for PingGrain {
    async fn ping(&self, n: u64) -> u64 {
        n + 1
    }
}

fn start(gateway: bool) -> Silo {
    let localhost: SocketAddr = ([127, 0, 0, 1], 0).into();
    Silo::builder()
        .register::<PingGrain>()
        .network(NetworkOptions {
            listen: Some(localhost),
            gateway: gateway.then_some(localhost),
            ..NetworkOptions::default()
        })
        .start()
        .expect("silo starts")
}

/// `CALLERS` tasks, each making `REQUESTS` sequential calls to its own grain: calls per second.
async fn ping_shape(factory: &GrainFactory) -> f64 {
    let grains: Vec<PingRef> = (0..CALLERS).map(|i| factory.get(i as i64)).collect();
    for grain in &grains {
        grain.ping(0).await.expect("warm-up");
    }
    let started = Instant::now();
    let tasks: Vec<_> = grains
        .into_iter()
        .map(|grain| {
            tokio::spawn(async move {
                for n in 0..REQUESTS as u64 {
                    grain.ping(n).await.expect("ping");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    (CALLERS * REQUESTS) as f64 / started.elapsed().as_secs_f64()
}

/// The same shape with the link's unary `Probe` RPC: one plain tonic unary call per request.
async fn unary_shape(prober: &Prober) -> f64 {
    prober.probe(0).await.expect("warm-up");
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let prober = prober.clone();
            tokio::spawn(async move {
                for n in 0..REQUESTS as u64 {
                    prober.probe(n).await.expect("probe");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    (CALLERS * REQUESTS) as f64 / started.elapsed().as_secs_f64()
}

/// Round trips of one caller, one call at a time: the median, in microseconds.
async fn p50_one_caller(factory: &GrainFactory) -> f64 {
    let grain: PingRef = factory.get(-1_i64);
    let mut samples = Vec::with_capacity(5_000);
    for n in 0..5_000 {
        let started = Instant::now();
        grain.ping(n).await.expect("ping");
        samples.push(started.elapsed());
    }
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    format!("{:.0}-{:.0}", min / 1e3, max / 1e3)
}

/// `serve` mode: the called silo, until stdin closes; prints its two endpoints.
async fn serve() {
    let b = start(true);
    let network = b.network().unwrap();
    let address = network.address().unwrap();
    println!(
        "{} {} {}",
        address.endpoint,
        address.generation,
        network.gateway_address().unwrap()
    );
    tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
        .await
        .ok();
    b.shutdown().await;
}

async fn run(trials: usize, processes: bool) {
    let a = start(false);
    let (local, mut child, b_address, gateway) = if processes {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("serve")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("serve process starts");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .expect("serve process prints its endpoints");
        let parts: Vec<&str> = line.split_whitespace().collect();
        let address =
            silica_grains::SiloAddress::new(parts[0].parse().unwrap(), parts[1].parse().unwrap());
        (
            None,
            Some(child),
            address,
            parts[2].parse::<SocketAddr>().unwrap(),
        )
    } else {
        let b = start(true);
        let address = b.network().unwrap().address().unwrap();
        let gateway = b.network().unwrap().gateway_address().unwrap();
        (Some(b), None, address, gateway)
    };
    let to_b = a.network().unwrap().remote_factory(b_address);
    let client = Client::connect_with([gateway], ClientOptions::default())
        .await
        .expect("client connects");
    let prober = Prober::new(
        &b_address.endpoint.to_string(),
        &LinkOptions::default(),
        Duration::from_secs(10),
    )
    .expect("prober");

    let (mut link, mut external, mut unary) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..trials {
        link.push(ping_shape(&to_b).await);
        external.push(ping_shape(&client.grain_factory()).await);
        unary.push(unary_shape(&prober).await);
    }
    let p50 = p50_one_caller(&to_b).await;
    let p50_unary = {
        let mut samples = Vec::new();
        for n in 0..5_000 {
            let started = Instant::now();
            prober.probe(n).await.expect("probe");
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
        median(samples)
    };
    let shape = if processes {
        "2 processes"
    } else {
        "in-process"
    };
    println!(
        "C1 {shape}, {CALLERS} callers x {REQUESTS} requests, median of {trials} trials (min-max in k/s):"
    );
    println!(
        "  silo link, silo -> silo:       {:>8.0} calls/s ({})",
        median(link.clone()),
        spread(&link)
    );
    println!(
        "  gateway, external client:      {:>8.0} calls/s ({})",
        median(external.clone()),
        spread(&external)
    );
    println!(
        "  tonic unary (Probe RPC):       {:>8.0} calls/s ({})",
        median(unary.clone()),
        spread(&unary)
    );
    println!(
        "  p50 round trip, one caller:    silo link {p50:.1} us, tonic unary {p50_unary:.1} us"
    );
    client.close();
    a.shutdown().await;
    if let Some(b) = local {
        b.shutdown().await;
    }
    if let Some(child) = child.as_mut() {
        drop(child.stdin.take());
        child.wait().expect("serve process ends");
    }
}

fn main() {
    let workers = std::env::var("LINK_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let trials = std::env::var("LINK_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    match std::env::args().nth(1).as_deref() {
        Some("serve") => runtime.block_on(serve()),
        Some("processes") => runtime.block_on(run(trials, true)),
        _ => runtime.block_on(run(trials, false)),
    }
}
