//! Three silo processes (the `cluster_silo` binary) on 127.0.0.1 over a real etcd: one is
//! killed with SIGKILL under load. Every call resolves (a value or a typed error), no grain
//! ever has two activations, and the killed silo's grains answer again within 5 s (C2, printed).
//!
//! Needs etcd (Debian's etcd-server; `scripts/test` installs it as root) and the `etcd` feature.

// The etcd harness of the silo crate's etcd tests (this test uses only `Etcd::start`).
#[allow(dead_code)]
#[path = "../silo/tests/cluster_etcd/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use silica::CallError;
use silica::client::link::LinkOptions;
use silica::client::{Client, ClientOptions};
use silica::prelude::*;

/// What served a call (the binary's demo grain, matched by interface and method names).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Served {
    silo: String,
    activation: u64,
    total: u64,
}

/// The binary's demo counter.
#[grain]
pub trait DemoCounter {
    /// Adds `n`; says which silo and activation served it.
    async fn add(&mut self, n: u64) -> Served;
}

/// A silo process, killed when dropped.
struct SiloProcess {
    child: Child,
    address: String,
    gateway: String,
}

impl Drop for SiloProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a silo process and waits (at most 30 s) for its "listening" line.
fn start_silo(etcd: &str, cluster: &str) -> SiloProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cluster_silo"))
        .args([
            "silo",
            "--listen",
            "127.0.0.1:0",
            "--gateway",
            "127.0.0.1:0",
        ])
        .args(["--etcd", etcd, "--cluster", cluster])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start cluster_silo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads every line (so the pipe never fills); the first "listening" line goes to the test.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the silo joins within 30 s");
    let words: Vec<&str> = line.split_whitespace().collect();
    let address = words[1].to_owned();
    let gateway = words[3].to_owned();
    SiloProcess {
        child,
        address,
        gateway,
    }
}

/// Three silo processes, a client on their gateways, and 30 grains spread over all three
/// (key -> hosting silo).
async fn spread_cluster(
    etcd: &harness::Etcd,
    cluster: &str,
) -> (Vec<SiloProcess>, Client, BTreeMap<String, String>) {
    let silos: Vec<SiloProcess> = (0..3)
        .map(|_| start_silo(&etcd.endpoint, cluster))
        .collect();
    let client = connect(silos.iter().map(|s| s.gateway.clone()), cluster).await;
    let keys: Vec<String> = (0..30).map(|k| format!("g{k}")).collect();
    // Every silo must see the others before placement spreads the grains over all three.
    let mut hosts: BTreeMap<String, String> = BTreeMap::new();
    let warm = Instant::now();
    while hosts.values().collect::<BTreeSet<_>>().len() < 3 {
        assert!(
            warm.elapsed() < Duration::from_secs(20),
            "grains never spread: {hosts:?}"
        );
        for key in &keys {
            let grain: DemoCounterRef = client.get(key.as_str());
            let served = grain.add(0).await.expect("warm-up call");
            hosts.insert(key.clone(), served.silo);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (silos, client, hosts)
}

/// A client of `gateways` whose calls time out after 3 s.
async fn connect(gateways: impl IntoIterator<Item = String>, cluster: &str) -> Client {
    let options = ClientOptions {
        link: LinkOptions {
            cluster_id: cluster.into(),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..LinkOptions::default()
        },
        default_call_timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    };
    Client::connect_with(gateways, options)
        .await
        .expect("client connects")
}

type CallResults = Vec<(String, Result<Served, CallError>)>;

/// Four callers, one call at a time each, over every key until `stop`; `calls` counts the
/// calls that ended.
fn start_load(
    client: &Client,
    keys: &[String],
    stop: &Arc<AtomicBool>,
    calls: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<CallResults>> {
    (0..4)
        .map(|c| {
            let client = client.clone();
            let keys = keys.to_vec();
            let stop = stop.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                let mut i = c * 7;
                while !stop.load(Ordering::Relaxed) {
                    let key = keys[i % keys.len()].clone();
                    i += 1;
                    let grain: DemoCounterRef = client.get(key.as_str());
                    results.push((key, grain.add(1).await));
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                results
            })
        })
        .collect()
}

/// Waits (at most 10 s) until `n` more calls of the load have ended.
async fn calls_pass(calls: &AtomicUsize, n: usize) {
    let target = calls.load(Ordering::Relaxed) + n;
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "the load made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Stops the load and gathers its results: every caller must end within 10 s (no call hangs).
async fn finish_load(
    callers: Vec<tokio::task::JoinHandle<CallResults>>,
    stop: &AtomicBool,
) -> CallResults {
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for caller in callers {
        let done = tokio::time::timeout(Duration::from_secs(10), caller).await;
        results.extend(done.expect("every caller's calls end").expect("caller"));
    }
    results
}

/// Errors by kind, and asserts no grain had two activations: at most one on the silo that
/// went away (`gone`) and one on the others.
fn check(results: &CallResults, gone: &str) -> BTreeMap<String, usize> {
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut activations: BTreeMap<&str, BTreeSet<(&str, u64)>> = BTreeMap::new();
    for (key, result) in results {
        match result {
            Ok(served) => {
                activations
                    .entry(key.as_str())
                    .or_default()
                    .insert((served.silo.as_str(), served.activation));
            }
            Err(e) => {
                if std::env::var_os("SILICA_SHOW_ERRORS").is_some() {
                    println!("{key}: {e}");
                }
                let kind = format!("{e:?}");
                let kind = kind.split(['(', ' ', '{']).next().unwrap_or("").to_owned();
                *errors.entry(kind).or_default() += 1;
            }
        }
    }
    for (key, seen) in &activations {
        let others: Vec<_> = seen.iter().filter(|(s, _)| *s != gone).collect();
        assert!(others.len() <= 1, "{key} had two activations: {seen:?}");
        assert!(seen.len() - others.len() <= 1, "{key}: {seen:?}");
    }
    println!(
        "{} calls under load; errors by kind: {errors:?}",
        results.len()
    );
    errors
}

// Pins C2 and the failure semantics across processes: SIGKILL one of three silos while four
// callers keep calling 30 grains through the gateways; every call ends (value or typed error),
// no grain has two activations at once, and the killed silo's grains answer again within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_reactivates_within_five_seconds() {
    let etcd = harness::Etcd::start().await;
    let (mut silos, client, hosts) = spread_cluster(&etcd, "sigkill").await;
    let keys: Vec<String> = hosts.keys().cloned().collect();
    let mut victim = silos.remove(0);
    let lost: Vec<String> = keys
        .iter()
        .filter(|k| hosts[*k] == victim.address)
        .cloned()
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers = start_load(&client, &keys, &stop, &calls);
    calls_pass(&calls, 100).await;

    let killed = Instant::now();
    victim.child.kill().expect("SIGKILL");
    let _ = victim.child.wait();
    let mut first_success: BTreeMap<String, Duration> = BTreeMap::new();
    while first_success.len() < lost.len() {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "grains not back: {first_success:?}"
        );
        let waiting: Vec<&String> = lost
            .iter()
            .filter(|k| !first_success.contains_key(*k))
            .collect();
        for key in waiting {
            let grain: DemoCounterRef = client.get(key.as_str());
            if let Ok(served) = grain.add(0).await {
                assert_ne!(served.silo, victim.address);
                first_success.insert(key.clone(), killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = first_success.values().min().copied().unwrap();
    let all = first_success.values().max().copied().unwrap();
    println!(
        "C2: first call to a killed silo's grain succeeded {:.0} ms after SIGKILL; all {} of its grains by {:.0} ms",
        first.as_secs_f64() * 1e3,
        lost.len(),
        all.as_secs_f64() * 1e3
    );
    calls_pass(&calls, 100).await;
    let results = finish_load(callers, &stop).await;
    let errors = check(&results, &victim.address);
    assert!(
        errors
            .keys()
            .all(|k| k == "SiloUnavailable" || k == "Timeout"),
        "only the killed silo's calls may fail: {errors:?}"
    );
    assert!(all <= Duration::from_secs(5), "C2 over 5 s: {all:?}");
}

// Pins a graceful leave across processes: SIGTERM makes a silo leave while four callers keep
// calling 30 grains through all three gateways; not one call fails, and its grains answer from
// the other silos afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_without_a_failed_call() {
    let etcd = harness::Etcd::start().await;
    let (mut silos, client, hosts) = spread_cluster(&etcd, "sigterm").await;
    let keys: Vec<String> = hosts.keys().cloned().collect();
    let mut leaving = silos.remove(0);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers = start_load(&client, &keys, &stop, &calls);
    calls_pass(&calls, 100).await;
    let status = Command::new("kill")
        .args(["-TERM", &leaving.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let left = Instant::now();
    let exit = loop {
        if let Some(exit) = leaving.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            left.elapsed() < Duration::from_secs(15),
            "the silo never left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(exit.success(), "the leaving silo exits cleanly: {exit}");
    println!("left in {:?}", left.elapsed());
    calls_pass(&calls, 100).await;
    let results = finish_load(callers, &stop).await;
    let errors = check(&results, &leaving.address);
    assert!(
        errors.is_empty(),
        "calls failed during a graceful leave: {errors:?}"
    );
    for key in hosts.keys().filter(|k| hosts[*k] == leaving.address) {
        let grain: DemoCounterRef = client.get(key.as_str());
        let served = grain.add(0).await.expect("answers after the leave");
        assert_ne!(served.silo, leaving.address);
    }
}

// Pins failure detection of a silo that hangs instead of dying (SIGSTOP: its connections stay
// open, probes time out, its etcd lease lapses): its grains answer again within 5 s, no grain
// has two activations, and once it runs again (SIGCONT) it finds itself declared dead and
// stops serving: its process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_silo_is_declared_dead_and_stops_when_it_wakes() {
    let etcd = harness::Etcd::start().await;
    let (mut silos, client, hosts) = spread_cluster(&etcd, "sigstop").await;
    let keys: Vec<String> = hosts.keys().cloned().collect();
    let mut frozen = silos.remove(0);
    let lost: Vec<String> = keys
        .iter()
        .filter(|k| hosts[*k] == frozen.address)
        .cloned()
        .collect();
    let signal = |name: &str, pid: u32| {
        let status = Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {name}");
    };
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers = start_load(&client, &keys, &stop, &calls);
    calls_pass(&calls, 100).await;
    let stopped = Instant::now();
    signal("-STOP", frozen.child.id());
    let mut back = BTreeSet::new();
    while back.len() < lost.len() {
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "grains not back: {back:?}"
        );
        for key in &lost {
            if back.contains(key) {
                continue;
            }
            let grain: DemoCounterRef = client.get(key.as_str());
            if let Ok(served) = grain.add(0).await
                && served.silo != frozen.address
            {
                back.insert(key.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all = stopped.elapsed();
    println!(
        "frozen silo: all {} of its grains answered elsewhere {:.0} ms after SIGSTOP",
        lost.len(),
        all.as_secs_f64() * 1e3
    );
    calls_pass(&calls, 100).await;
    signal("-CONT", frozen.child.id());
    let woke = Instant::now();
    let exit = loop {
        if let Some(exit) = frozen.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            woke.elapsed() < Duration::from_secs(15),
            "the silo declared dead kept running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "woken silo exited {:?} after SIGCONT ({exit})",
        woke.elapsed()
    );
    let results = finish_load(callers, &stop).await;
    let errors = check(&results, &frozen.address);
    assert!(
        errors
            .keys()
            .all(|k| k == "SiloUnavailable" || k == "Timeout" || k == "ShuttingDown"),
        "only the frozen silo's calls may fail: {errors:?}"
    );
    assert!(all <= Duration::from_secs(5), "over 5 s: {all:?}");
}
