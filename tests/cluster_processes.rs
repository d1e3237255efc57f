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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
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

// Pins C2 and the failure semantics across processes: SIGKILL one of three silos while four
// callers keep calling 30 grains through the gateways; every call ends (value or typed error),
// no grain has two activations at once, and the killed silo's grains answer again within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_reactivates_within_five_seconds() {
    let etcd = harness::Etcd::start().await;
    let cluster = "processes";
    let mut silos: Vec<SiloProcess> = (0..3)
        .map(|_| start_silo(&etcd.endpoint, cluster))
        .collect();
    let gateways: Vec<String> = silos.iter().map(|s| s.gateway.clone()).collect();
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
    let client = Client::connect_with(&gateways, options)
        .await
        .expect("client connects");
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
    let victim = silos.remove(0);
    let lost: Vec<String> = keys
        .iter()
        .filter(|k| hosts[*k] == victim.address)
        .cloned()
        .collect();
    assert!(!lost.is_empty());

    // Bounded load: four callers, one call at a time each, over all keys.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|c| {
            let client = client.clone();
            let keys = keys.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                let mut i = c * 7;
                while !stop.load(Ordering::Relaxed) {
                    let key = keys[i % keys.len()].clone();
                    i += 1;
                    let grain: DemoCounterRef = client.get(key.as_str());
                    results.push((key, grain.add(1).await));
                }
                results
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut victim = victim;
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for caller in callers {
        let done = tokio::time::timeout(Duration::from_secs(10), caller).await;
        results.extend(done.expect("every caller's calls end").expect("caller"));
    }

    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut activations: BTreeMap<&str, BTreeSet<(&str, u64)>> = BTreeMap::new();
    for (key, result) in &results {
        match result {
            Ok(served) => {
                activations
                    .entry(key.as_str())
                    .or_default()
                    .insert((served.silo.as_str(), served.activation));
            }
            Err(e) => {
                let kind = format!("{e:?}");
                *errors
                    .entry(kind.split('(').next().unwrap_or("").to_owned())
                    .or_default() += 1;
            }
        }
    }
    println!(
        "{} calls under load; errors by kind: {errors:?}",
        results.len()
    );
    assert!(
        errors
            .keys()
            .all(|k| k == "SiloUnavailable" || k == "Timeout"),
        "only the killed silo's calls may fail: {errors:?}"
    );
    for (key, seen) in &activations {
        let survivors: Vec<_> = seen.iter().filter(|(s, _)| *s != victim.address).collect();
        assert!(survivors.len() <= 1, "{key} had two activations: {seen:?}");
        assert!(seen.len() - survivors.len() <= 1, "{key}: {seen:?}");
    }
    assert!(all <= Duration::from_secs(5), "C2 over 5 s: {all:?}");
}
