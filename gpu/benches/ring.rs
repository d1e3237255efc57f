//! Ring benchmarks (plain binary, `harness = false`): round trip p50/p99 per backend,
//! throughput with many producers and 64-byte H2K entries, GPU HLC stamp cost.
//! Run: `cargo bench -p silica-gpu --features cuda --bench ring` (CPU-only without CUDA).
//! `SILICA_BENCH_ONLY=rt` runs only the round trips, `=tp` only throughput;
//! `SILICA_BENCH_PRODUCERS=N` throughput with N producers x batches of 1024 only;
//! `SILICA_BENCH_WARPS=W` worker warps (default: the config's, 7; before 2026-11-23 (night) the
//! throughput rows used 16); `SILICA_BENCH_LOADERS=L` loader warps (default: the config's);
//! `SILICA_BENCH_WINDOW=G` groups of 32 a
//! worker examines per pass and `SILICA_BENCH_PREFETCH=D` the completion thread's K2H
//! prefetch distance, `SILICA_BENCH_LONE=0|1` the workers' short path for a lone entry,
//! `SILICA_BENCH_STREAM=0|1` non-temporal H2K stores (persistent ring knobs, see
//! `silica_gpu::cuda::Tuning`).

use silica_gpu::samples::{Empty, VecPair, VectorAdd};
use silica_gpu::{BackendChoice, BackendKind, HlcStamp, Ring, RingConfig};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

fn spin_on<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::hint::spin_loop();
    }
}

/// Blocks like a tokio worker would: registers a waker that unparks this thread, then parks.
fn park_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn config(kind: BackendKind) -> RingConfig {
    RingConfig {
        backend: BackendChoice::Exact { kind, device: 0 },
        slots: 4096,
        // Room for every producer's 4 batches in flight with slack for the callers that
        // read late (a full ring makes the completion thread rescue unread entries).
        capacity: 1 << 17,
        max_batch: 512,
        consumer_spin: Duration::from_secs(5),
        reply_spin: Duration::from_millis(10),
        ..RingConfig::default()
    }
}

/// Round trip of one caller. `park`: the caller registers its waker at once and parks (the
/// completion thread's unpark is on the path); otherwise it spins on its reply cell first
/// (DESIGN §3 rule 10: measure both ways).
fn round_trip(kind: BackendKind, n: usize, park: bool) {
    round_trip_after(kind, n, park, Duration::ZERO);
}

/// Round trip of one caller that pauses `pause` before each call (spin unless `park`): the
/// kernel's poller has gone idle (and backed off) when the message arrives.
fn round_trip_after(kind: BackendKind, n: usize, park: bool, pause: Duration) {
    let base = config(kind);
    let cfg = RingConfig {
        worker_warps: env_u32("SILICA_BENCH_WARPS").unwrap_or(base.worker_warps),
        loader_warps: env_u32("SILICA_BENCH_LOADERS").unwrap_or(base.loader_warps),
        reply_spin: if park {
            Duration::ZERO
        } else {
            Duration::from_millis(10)
        },
        ..base
    };
    let ring = match Ring::<VectorAdd>::start(cfg) {
        Ok(ring) => ring,
        Err(e) => {
            println!("{kind:?}: unavailable: {e}");
            return;
        }
    };
    let slot = ring.activate(&Empty::default()).unwrap();
    let req = VecPair {
        a: [1.5; 6],
        b: [2.25; 6],
    };
    let call = |ring: &Ring<VectorAdd>| {
        if park {
            park_on(ring.submit(slot, req, HlcStamp::default())).unwrap()
        } else {
            spin_on(ring.submit(slot, req, HlcStamp::default())).unwrap()
        }
    };
    for _ in 0..n / 10 {
        call(&ring);
    }
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            let s = Instant::now();
            call(&ring);
            s.elapsed().as_nanos() as f64 / 1000.0
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    let how = match (park, pause.is_zero()) {
        (true, _) => "park".to_owned(),
        (false, true) => "spin".to_owned(),
        (false, false) => format!("spin, each call after {pause:?} idle"),
    };
    println!(
        "round_trip {kind:?} ({how}): p50 {:.2} us  p99 {:.2} us  (n={n})",
        t[n / 2],
        t[n * 99 / 100]
    );
    // Inside the kernel, for messages found on an idle ring: found -> worker pass -> its chunk
    // -> handlers done -> stamp -> K2H stores issued (the rest is PCIe and the host).
    let stats = ring.backend_stats();
    let stat = |name: &str| stats.iter().find(|s| s.0 == name).map_or(0, |s| s.1);
    let finds = stat("kernel_idle_finds");
    let mean = |name: &str| stat(name) as f64 / finds.max(1) as f64;
    if finds > 0 {
        println!(
            "   in the kernel, {finds} messages found idle, mean ns: found -> worker pass {:.0}, \
             -> chunk {:.0}, -> handlers done {:.0}, -> stamp {:.0}, -> K2H stores issued {:.0}",
            mean("kernel_idle_handoff_ns"),
            mean("kernel_idle_pick_ns"),
            mean("kernel_idle_handler_ns"),
            mean("kernel_idle_stamp_ns"),
            mean("kernel_idle_write_ns"),
        );
    }
}

fn throughput(kind: BackendKind, producers: usize, batch: usize, secs: f64) {
    let warps = env_u32("SILICA_BENCH_WARPS").unwrap_or(RingConfig::default().worker_warps);
    let loaders = env_u32("SILICA_BENCH_LOADERS").unwrap_or(RingConfig::default().loader_warps);
    let ring = match Ring::<VectorAdd>::start(RingConfig {
        worker_warps: warps,
        loader_warps: loaders,
        // Producers poll their oldest batch in a loop (`spin_on`); a spinning poll would hold
        // the first poll of every new batch until that batch is done.
        reply_spin: Duration::ZERO,
        ..config(kind)
    }) {
        Ok(ring) => ring,
        Err(e) => {
            println!("{kind:?}: unavailable: {e}");
            return;
        }
    };
    let ring = Arc::new(ring);
    let slots: Vec<_> = (0..1024)
        .map(|_| ring.activate(&Empty::default()).unwrap())
        .collect();
    let start = Instant::now();
    // A watchdog: a run that has not finished well after its window prints what the ring
    // reports and ends the process, rather than hanging the benchmark.
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (ring, finished) = (ring.clone(), finished.clone());
        std::thread::spawn(move || {
            let limit = Duration::from_secs_f64(secs + 10.0);
            while !finished.load(std::sync::atomic::Ordering::Relaxed) {
                if start.elapsed() > limit {
                    println!(
                        "STUCK {kind:?} after {:?}: {:?}\n  stats {:?}",
                        start.elapsed(),
                        ring.health(),
                        ring.backend_stats()
                    );
                    std::thread::sleep(Duration::from_secs(2));
                    println!("  2 s later: {:?}", ring.backend_stats());
                    std::process::exit(3);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let (ring, slots) = (ring.clone(), slots.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                let mut k = p;
                let mut inflight = std::collections::VecDeque::new();
                while start.elapsed().as_secs_f64() < secs {
                    let items: Vec<_> = (0..batch)
                        .map(|i| {
                            (
                                slots[(k + i) % slots.len()],
                                VecPair {
                                    a: [i as f32; 6],
                                    b: [1.0; 6],
                                },
                            )
                        })
                        .collect();
                    k += batch;
                    // Futures are lazy: poll once so the batch goes on the ring now and up to
                    // 4 batches per producer are really in flight (until 2026-12-02 the bench
                    // submitted each batch only when it waited on it: one in flight each).
                    let mut f = ring.submit_batch(items, HlcStamp::default());
                    let mut cx = Context::from_waker(Waker::noop());
                    match std::pin::Pin::new(&mut f).poll(&mut cx) {
                        Poll::Ready(out) => done += out.unwrap().len() as u64,
                        Poll::Pending => inflight.push_back(f),
                    }
                    if inflight.len() >= 4 {
                        done += spin_on(inflight.pop_front().unwrap()).unwrap().len() as u64;
                    }
                }
                for f in inflight {
                    done += spin_on(f).unwrap().len() as u64;
                }
                done
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    finished.store(true, std::sync::atomic::Ordering::Relaxed);
    let stats = ring.backend_stats();
    if !stats.is_empty() {
        println!("  stats {kind:?}: {stats:?}");
        let get = |k: &str| stats.iter().find(|(n, _)| *n == k).map_or(0, |s| s.1) as f64;
        let entries = get("completion_entries").max(1.0);
        let publishes = get("kernel_publishes").max(1.0);
        println!(
            "  per message: completion scan {:.1} ns + count {:.1} ns; kernel poll {:.1} ns busy; \
             {:.0} entries per publish; workers trail the poller by {:.0} entries at a publish; \
             {:.0} entries rescued",
            get("completion_scan_ns") / entries,
            get("completion_complete_ns") / entries,
            get("kernel_poll_busy_ns") / get("kernel_published_entries").max(1.0),
            get("kernel_published_entries") / publishes,
            get("kernel_worker_lag_sum") / publishes,
            get("completion_rescued_entries"),
        );
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "throughput {kind:?}: {producers} producers x batches of {batch}: {:.2} M msg/s ({total} msgs, 64 data bytes per H2K entry)",
        total as f64 / el / 1e6
    );
}

fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    #[cfg(feature = "cuda")]
    {
        let mut t = silica_gpu::cuda::Tuning::default();
        t.worker_window = env_u32("SILICA_BENCH_WINDOW").unwrap_or(t.worker_window);
        t.k2h_prefetch = env_u32("SILICA_BENCH_PREFETCH").unwrap_or(t.k2h_prefetch);
        t.lone_path = env_u32("SILICA_BENCH_LONE").map_or(t.lone_path, |v| v != 0);
        t.h2k_streaming = env_u32("SILICA_BENCH_STREAM").map_or(t.h2k_streaming, |v| v != 0);
        println!("persistent ring tuning: {t:?}");
        silica_gpu::cuda::set_tuning(t);
    }
    let only: Option<BackendKind> = std::env::args().find_map(|a| match a.as_str() {
        "--cpu" => Some(BackendKind::Cpu),
        "--wgpu" => Some(BackendKind::Wgpu),
        "--cuda" => Some(BackendKind::CudaPersistent),
        _ => None,
    });
    let kinds: Vec<BackendKind> = [
        BackendKind::CudaPersistent,
        BackendKind::CudaBatch,
        BackendKind::Wgpu,
        BackendKind::Cpu,
    ]
    .into_iter()
    .filter(|k| match only {
        None => true,
        Some(BackendKind::CudaPersistent) => {
            matches!(k, BackendKind::CudaPersistent | BackendKind::CudaBatch)
        }
        Some(o) => *k == o,
    })
    .collect();
    let n = if quick { 2000 } else { 20000 };
    let part = std::env::var("SILICA_BENCH_ONLY").unwrap_or_default();
    if part != "tp" {
        for &kind in &kinds {
            let n = if kind == BackendKind::Wgpu { n / 10 } else { n };
            round_trip(kind, n, false);
            round_trip(kind, n, true);
            if kind == BackendKind::CudaPersistent {
                round_trip_after(kind, n / 100, false, Duration::from_millis(5));
            }
        }
    }
    if part == "rt" {
        return;
    }
    let secs = if quick { 0.5 } else { 2.0 };
    if let Some(p) = std::env::var("SILICA_BENCH_PRODUCERS")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        for &kind in &kinds {
            throughput(kind, p, 1024, secs);
        }
        return;
    }
    for &kind in &kinds {
        throughput(kind, 8, 256, secs);
        if kind != BackendKind::Wgpu {
            throughput(kind, 12, 1024, secs);
        }
    }
    #[cfg(feature = "cuda")]
    if only.is_none() || only == Some(BackendKind::CudaPersistent) {
        for (blocks, iters, what) in [
            (
                1,
                200_000,
                "ring configuration: 1 block x 8 warps, one atomic add per warp per batch of 32",
            ),
            (
                528,
                1000,
                "contention worst case: 528 blocks x 8 warps stamp one word back to back",
            ),
        ] {
            match silica_gpu::cuda::bench_hlc_stamp::<VectorAdd>(0, blocks, iters) {
                Ok(ns) => println!("gpu_hlc_stamp: {ns:.3} ns per stamp amortized ({what})"),
                Err(e) => println!("gpu_hlc_stamp: unavailable: {e}"),
            }
        }
    }
}
