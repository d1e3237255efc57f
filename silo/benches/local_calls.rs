//! In-silo call benchmarks (DESIGN §4 L1, L2, L3), with kameo and raw tokio asks measured in the
//! same run as reference points.
//!
//! Run: `cargo bench -p silica-silo --bench local_calls` (add `-- quick` for a shorter run).
//! Prints one line per figure; docs/BENCHMARKS.md records them.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use kameo::Actor;
use kameo::actor::Spawn;
use kameo::message::{Context, Message};
use silica_grains::{Grain, GrainContext, grain};
use silica_silo::Silo;

#[grain(idle_after_secs = 3600)]
pub trait Adder {
    async fn add(&mut self, n: u64) -> u64;
}

pub struct AdderGrain(u64);

impl Grain for AdderGrain {
    type Interface = AdderRef;
    fn create(_: &GrainContext) -> Self {
        AdderGrain(0)
    }
}

impl Adder for AdderGrain {
    async fn add(&mut self, n: u64) -> u64 {
        self.0 += n;
        self.0
    }
}

#[derive(Actor)]
struct KameoAdder(u64);

struct Add(u64);

impl Message<Add> for KameoAdder {
    type Reply = u64;
    async fn handle(&mut self, msg: Add, _: &mut Context<Self, Self::Reply>) -> u64 {
        self.0 += msg.0;
        self.0
    }
}

struct Percentiles {
    p50: Duration,
    p99: Duration,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn report(name: &str, p: Percentiles) {
    println!(
        "{name:<52} p50 {:>8.3} us   p99 {:>8.3} us",
        p.p50.as_secs_f64() * 1e6,
        p.p99.as_secs_f64() * 1e6
    );
}

async fn silica_round_trips(calls: usize) -> Percentiles {
    let silo = Silo::builder().register::<AdderGrain>().start().unwrap();
    let adder: AdderRef = silo.grain_factory().get(1_i64);
    for _ in 0..10_000 {
        adder.add(1).await.unwrap();
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        std::hint::black_box(adder.add(1).await.unwrap());
        samples.push(start.elapsed());
    }
    silo.shutdown().await;
    percentiles(samples)
}

async fn kameo_round_trips(calls: usize) -> Percentiles {
    let actor = KameoAdder::spawn(KameoAdder(0));
    for _ in 0..10_000 {
        actor.ask(Add(1)).await.unwrap();
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        std::hint::black_box(actor.ask(Add(1)).await.unwrap());
        samples.push(start.elapsed());
    }
    percentiles(samples)
}

async fn tokio_round_trips(calls: usize) -> Percentiles {
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(u64, tokio::sync::oneshot::Sender<u64>)>();
    tokio::spawn(async move {
        let mut total = 0;
        while let Some((n, reply)) = rx.recv().await {
            total += n;
            let _ = reply.send(total);
        }
    });
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls + 10_000 {
        let start = Instant::now();
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send((1, reply)).unwrap();
        std::hint::black_box(answer.await.unwrap());
        if i >= 10_000 {
            samples.push(start.elapsed());
        }
    }
    percentiles(samples)
}

/// Pipelined load: `callers` tasks, each keeping `depth` calls in flight, spread round-robin
/// over the targets by `call(target index)`. Returns calls per second.
async fn pipelined<F, Fut, E>(
    targets: usize,
    callers: usize,
    depth: usize,
    per_caller: usize,
    call: F,
) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<u64, E>> + Send + 'static,
    E: std::fmt::Debug,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut in_flight = FuturesUnordered::new();
                let mut sent = 0;
                let mut next = c * 7919;
                while sent < per_caller || !in_flight.is_empty() {
                    while sent < per_caller && in_flight.len() < depth {
                        next = (next + 1) % targets;
                        in_flight.push(call(next));
                        sent += 1;
                    }
                    in_flight.next().await.unwrap().unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (callers * per_caller) as f64 / start.elapsed().as_secs_f64()
}

/// A silo with `grains` adders, each already activated, and references to them.
async fn active_adders(grains: usize) -> (Silo, std::sync::Arc<Vec<AdderRef>>) {
    let silo = Silo::builder().register::<AdderGrain>().start().unwrap();
    let refs: Vec<AdderRef> = (0..grains as i64)
        .map(|k| silo.grain_factory().get(k))
        .collect();
    for r in &refs {
        r.add(0).await.unwrap();
    }
    (silo, std::sync::Arc::new(refs))
}

/// Windowed load: each caller issues `window` calls (they are sent when issued), then awaits
/// them in order, and repeats. Returns calls per second. Silica's calls are sent eagerly, so
/// this pipelines without a `FuturesUnordered` per caller.
async fn windowed(grains: usize, callers: usize, window: usize, per_caller: usize) -> f64 {
    let (silo, refs) = active_adders(grains).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let refs = refs.clone();
            tokio::spawn(async move {
                let mut next = c * 7919;
                let mut batch = Vec::with_capacity(window);
                for _ in 0..per_caller / window {
                    for _ in 0..window {
                        next = (next + 1) % refs.len();
                        batch.push(refs[next].add(1));
                    }
                    for call in batch.drain(..) {
                        call.await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rate = (callers * (per_caller / window * window)) as f64 / start.elapsed().as_secs_f64();
    silo.shutdown().await;
    rate
}

/// L2: pipelined calls over `grains` grains.
async fn silica_throughput(grains: usize, callers: usize, depth: usize, per_caller: usize) -> f64 {
    let (silo, refs) = active_adders(grains).await;
    let rate = pipelined(grains, callers, depth, per_caller, move |i| refs[i].add(1)).await;
    silo.shutdown().await;
    rate
}

/// L2 reference: the same load shape against kameo actors.
async fn kameo_throughput(actors: usize, callers: usize, depth: usize, per_caller: usize) -> f64 {
    let refs: Vec<_> = (0..actors)
        .map(|_| KameoAdder::spawn(KameoAdder(0)))
        .collect();
    let refs = std::sync::Arc::new(refs);
    pipelined(actors, callers, depth, per_caller, move |i| {
        let actor = refs[i].clone();
        async move { actor.ask(Add(1)).await }
    })
    .await
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// L3: activate `count` grains (one call each) and report RSS growth and activations per second.
async fn idle_activations(count: usize) {
    let silo = Silo::builder().register::<AdderGrain>().start().unwrap();
    let factory = silo.grain_factory();
    let before = rss_bytes();
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for k in 0..count as i64 {
        in_flight.push(factory.get::<AdderRef>(k).add(1));
        if in_flight.len() >= 1024 {
            in_flight.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = in_flight.next().await {
        r.unwrap();
    }
    let elapsed = start.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "L3 {count} idle activations: {:.0} MiB RSS growth ({} B each), {:.0} activations/s",
        grown as f64 / (1 << 20) as f64,
        grown / count as u64,
        count as f64 / elapsed.as_secs_f64()
    );
    let start = Instant::now();
    silo.shutdown().await;
    println!(
        "L3 shutdown of {count} activations: {:.2} s",
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let only = std::env::args().find_map(|a| a.strip_prefix("only=").map(str::to_owned));
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let calls = if quick { 20_000 } else { 200_000 };
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let multi = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };

    if only.as_deref() == Some("l2-current") {
        let rate = current().block_on(silica_throughput(1000, 2, 256, 50_000));
        println!(
            "current-thread, 2 callers x 256 in flight: {:.2} M calls/s",
            rate / 1e6
        );
        return;
    }
    if only.as_deref() == Some("l1-silica") {
        report(
            "silica grain call, current-thread runtime",
            current().block_on(silica_round_trips(calls)),
        );
        return;
    }
    if run("l1") {
        println!("== L1: round trip, one caller, one grain ({calls} calls)");
        report(
            "silica grain call, current-thread runtime",
            current().block_on(silica_round_trips(calls)),
        );
        report(
            "kameo ask, current-thread runtime",
            current().block_on(kameo_round_trips(calls)),
        );
        report(
            "tokio mpsc+oneshot ask, current-thread runtime",
            current().block_on(tokio_round_trips(calls)),
        );
        report(
            "silica grain call, multi-thread runtime (2 workers)",
            multi().block_on(async { tokio::spawn(silica_round_trips(calls)).await.unwrap() }),
        );
        report(
            "kameo ask, multi-thread runtime (2 workers)",
            multi().block_on(async { tokio::spawn(kameo_round_trips(calls)).await.unwrap() }),
        );
        report(
            "tokio mpsc+oneshot ask, multi-thread runtime (2 workers)",
            multi().block_on(async { tokio::spawn(tokio_round_trips(calls)).await.unwrap() }),
        );
    }
    if run("l2") {
        // Five trials per row: this VM's neighbours can halve any single one, so the median
        // and the spread are printed; kameo in the same trials shows how noisy they were.
        let trials = 5;
        let per_caller = if quick { 20_000 } else { 250_000 };
        let measure = |make: &dyn Fn() -> f64| -> String {
            let mut rates: Vec<f64> = (0..trials).map(|_| make() / 1e6).collect();
            rates.sort_by(f64::total_cmp);
            format!(
                "median {:.2} M/s (min {:.2}, max {:.2}, {trials} trials)",
                rates[trials / 2],
                rates[0],
                rates[trials - 1]
            )
        };
        println!("== L2: throughput over 1000 grains, pipelined callers");
        for (callers, window) in [(2, 256), (8, 128)] {
            let rate = measure(&|| multi().block_on(windowed(1000, callers, window, per_caller)));
            println!(
                "silica, multi-thread (2 workers), {callers} callers, windows of {window}: {rate}"
            );
        }
        for (callers, depth) in [(2, 256), (8, 128)] {
            let rate =
                measure(&|| multi().block_on(silica_throughput(1000, callers, depth, per_caller)));
            println!(
                "silica, multi-thread (2 workers), {callers} callers x {depth} in flight: {rate}"
            );
        }
        let rate = measure(&|| current().block_on(silica_throughput(1000, 2, 256, per_caller)));
        println!("silica, current-thread, 2 callers x 256 in flight: {rate}");
        for (callers, depth) in [(2, 256), (8, 128)] {
            let rate =
                measure(&|| multi().block_on(kameo_throughput(1000, callers, depth, per_caller)));
            println!(
                "kameo, multi-thread (2 workers), {callers} callers x {depth} in flight: {rate}"
            );
        }
    }
    if run("l3") {
        println!("== L3: idle activations");
        let count = if quick { 100_000 } else { 1_000_000 };
        multi().block_on(idle_activations(count));
    }
}
