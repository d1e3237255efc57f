//! `cluster_silo`: one silo of a cluster whose membership table is in etcd, hosting a demo
//! counter grain; and a small client that calls it through the gateways.
//!
//! Build: `cargo build --release --features etcd --bin cluster_silo` (needs protoc; see the
//! README, "Run a 3-silo cluster").
//!
//! ```text
//! cluster_silo silo --listen 127.0.0.1:11111 --gateway 127.0.0.1:30001 \
//!                   --etcd http://127.0.0.1:2379 --cluster demo
//! cluster_silo call --gateways 127.0.0.1:30001,127.0.0.1:30002 --cluster demo --key ada --add 5
//! ```
//!
//! A silo prints `listening <silo address> gateway <endpoint>` once it joined, then one line
//! per activation it hosts; Ctrl-C (or SIGTERM) leaves the cluster gracefully (its grains move to
//! the other silos). `call` prints which silo served the call and the counter's new value.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use silica::client::link::LinkOptions;
use silica::client::{Client, ClientOptions};
use silica::prelude::*;
use silica::silo::cluster::{EtcdMembershipTable, EtcdTableOptions};
use silica::silo::{ClusterConfig, ClusterTable, NetworkOptions};

/// What served a call of the demo counter.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Served {
    /// The silo hosting the activation (its link endpoint and generation).
    pub silo: String,
    /// A random id of the activation: two ids for one key at once would be two activations.
    pub activation: u64,
    /// The counter after the call.
    pub total: u64,
}

/// The demo grain: a counter that says where it runs.
#[grain]
pub trait DemoCounter {
    /// Adds `n`; says which silo and activation served it.
    async fn add(&mut self, n: u64) -> Served;
}

struct DemoCounterGrain {
    silo: String,
    activation: u64,
    total: u64,
}

impl Grain for DemoCounterGrain {
    type Interface = DemoCounterRef;
    fn create(ctx: &GrainContext) -> Self {
        let silo = SILO.get().cloned().unwrap_or_default();
        let activation = random_u64();
        println!("activate {} as {activation:x} on {silo}", ctx.id());
        Self {
            silo,
            activation,
            total: 0,
        }
    }
}

impl DemoCounter for DemoCounterGrain {
    async fn add(&mut self, n: u64) -> Served {
        self.total += n;
        Served {
            silo: self.silo.clone(),
            activation: self.activation,
            total: self.total,
        }
    }
}

static SILO: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::hash::RandomState::new().build_hasher().finish()
}

/// `--name value` pairs after the subcommand.
struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        let at = self.0.iter().position(|a| *a == flag)?;
        self.0.get(at + 1).map(String::as_str)
    }

    fn need(&self, name: &str) -> Result<&str, String> {
        self.get(name).ok_or_else(|| format!("missing --{name}"))
    }

    fn addr(&self, name: &str) -> Result<SocketAddr, String> {
        let value = self.need(name)?;
        value.parse().map_err(|e| format!("--{name} {value}: {e}"))
    }
}

const USAGE: &str = "usage:
  cluster_silo silo --listen HOST:PORT --gateway HOST:PORT --etcd URL[,URL..] --cluster ID
  cluster_silo call --gateways HOST:PORT[,..] --cluster ID --key KEY [--add N]";

#[tokio::main]
async fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let command = if argv.is_empty() {
        String::new()
    } else {
        argv.remove(0)
    };
    let args = Args(argv);
    let result = match command.as_str() {
        "silo" => run_silo(&args).await,
        "call" => call(&args).await,
        _ => Err(USAGE.to_owned()),
    };
    if let Err(message) = result {
        eprintln!("cluster_silo: {message}");
        std::process::exit(2);
    }
}

async fn run_silo(args: &Args) -> Result<(), String> {
    let listen = args.addr("listen")?;
    let gateway = args.addr("gateway")?;
    let cluster_id = args.need("cluster")?.to_owned();
    let endpoints: Vec<&str> = args.need("etcd")?.split(',').collect();
    let table = EtcdMembershipTable::connect(&endpoints, &cluster_id, EtcdTableOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let silo = Silo::builder()
        .register::<DemoCounterGrain>()
        .network(NetworkOptions {
            listen: Some(listen),
            gateway: Some(gateway),
            link: LinkOptions {
                cluster_id,
                ..LinkOptions::default()
            },
            generation: None,
        })
        .cluster(ClusterConfig::new(ClusterTable::etcd(table)))
        .start()
        .map_err(|e| e.to_string())?;
    let network = silo.network().expect("the silo serves links");
    let address = network.address().expect("a link endpoint");
    let _ = SILO.set(address.to_string());
    silo.joined().await.map_err(|e| e.to_string())?;
    println!(
        "listening {address} gateway {}",
        network.gateway_address().expect("a gateway")
    );
    tokio::select! {
        _ = shutdown_signal() => println!("leaving the cluster"),
        why = silo.cluster_ended() => println!("membership ended: {why}"),
    }
    silo.shutdown().await;
    println!("stopped");
    Ok(())
}

/// Ctrl-C, or SIGTERM where there is one.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn call(args: &Args) -> Result<(), String> {
    let gateways: Vec<&str> = args.need("gateways")?.split(',').collect();
    let key = args.need("key")?.to_owned();
    let add: u64 = args
        .get("add")
        .unwrap_or("1")
        .parse()
        .map_err(|e| format!("--add: {e}"))?;
    let options = ClientOptions {
        link: LinkOptions {
            cluster_id: args.need("cluster")?.to_owned(),
            ..LinkOptions::default()
        },
        default_call_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(gateways, options)
        .await
        .map_err(|e| e.to_string())?;
    let counter: DemoCounterRef = client.get(key.as_str());
    let served = counter.add(add).await.map_err(|e| e.to_string())?;
    println!(
        "{key}: total {} (silo {}, activation {:x})",
        served.total, served.silo, served.activation
    );
    Ok(())
}
