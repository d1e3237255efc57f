//! Starts a throwaway single-node etcd for one test: free 127.0.0.1 ports, a temp data dir,
//! ready within a deadline, killed (and its dir removed) on drop.
//!
//! The binary is `$SILICA_ETCD`, else `/usr/bin/etcd` (Debian's etcd-server), else `etcd` on
//! the PATH. A machine without it fails the test with a message saying what to install:
//! these tests never pass by skipping.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use silica_silo::cluster::{EtcdMembershipTable, EtcdTableOptions};

/// A running etcd.
pub(crate) struct Etcd {
    child: Child,
    dir: PathBuf,
    /// Its client URL, `http://127.0.0.1:<port>`.
    pub(crate) endpoint: String,
}

fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SILICA_ETCD") {
        return path.into();
    }
    if Path::new("/usr/bin/etcd").exists() {
        return "/usr/bin/etcd".into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|p| p.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "etcd not found: the etcd tests need it. Install Debian's etcd-server \
             (scripts/test does when run as root), or set SILICA_ETCD to an etcd binary"
        )
    })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Etcd {
    /// Starts etcd and waits (at most 30 s) until it answers a read. Panics with etcd's own
    /// log when it exits or never answers.
    pub(crate) async fn start() -> Etcd {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let binary = etcd_binary();
        // A port taken between probing and binding makes etcd exit; try fresh ports again.
        let mut last_log = String::new();
        for _ in 0..3 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("silica-etcd-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create etcd temp dir");
            let (client, peer) = (free_port(), free_port());
            let endpoint = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log file");
            let child = Command::new(&binary)
                .args(["--name", "silica-test", "--data-dir"])
                .arg(dir.join("data"))
                .args(["--listen-client-urls", &endpoint])
                .args(["--advertise-client-urls", &endpoint])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("silica-test={peer_url}")])
                // Short raft ticks: a 1 s lease TTL is allowed and expiry is noticed fast.
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut etcd = Etcd {
                child,
                dir,
                endpoint,
            };
            match etcd.wait_ready().await {
                Ok(()) => return etcd,
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not start:\n{last_log}");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let options = EtcdTableOptions::default()
            .with_connect_timeout(Duration::from_millis(500))
            .with_request_timeout(Duration::from_millis(500));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited ({status}):\n{}", self.log()));
            }
            if EtcdMembershipTable::connect(&[&self.endpoint], "ready", options)
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("etcd not ready within 30 s:\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// A table of `cluster_id` on this etcd, with short timeouts.
    pub(crate) async fn table(&self, cluster_id: &str) -> EtcdMembershipTable {
        EtcdMembershipTable::connect(&[&self.endpoint], cluster_id, options())
            .await
            .expect("connect to the test etcd")
    }
}

/// The table options tests use: failures surface within a second.
pub(crate) fn options() -> EtcdTableOptions {
    EtcdTableOptions::default()
        .with_connect_timeout(Duration::from_secs(1))
        .with_request_timeout(Duration::from_secs(1))
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
