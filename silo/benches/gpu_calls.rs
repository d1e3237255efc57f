//! GPU grain benchmarks (DESIGN §4 G1, G2, G4): typed references calling a GPU variant hosted by
//! an in-process silo, on the backends this machine has.
//!
//! Run: `cargo bench -p silica-silo --features cuda --bench gpu_calls` (on the GPU machine,
//! the packed binary `silica-silo.gpu_calls.test`). Environment:
//! - `SILICA_BENCH_BACKENDS`: comma list of `cuda`, `batch`, `wgpu`, `cpu` (default `cuda,batch`
//!   when a CUDA device is present, else `cpu`).
//! - `SILICA_BENCH_ONLY`: `g1`, `g2` or `g4` (default all).
//! - `SILICA_BENCH_G4`: activations for G4 (default 1,000,000).
//! - `SILICA_BENCH_SECS`: seconds per G2 configuration (default 2).
//! - `SILICA_BENCH_WARMUP_SECS`: seconds of the same G2 configuration run first and not counted
//!   (default 1): the first calls activate the grains, and a fresh process (or machine) is
//!   slower at first.
//! - `SILICA_BENCH_G2`: G2 configurations, `callers x window x spin_us` separated by commas,
//!   `f` appended for fan-out rounds, `t` for a task per call, `p` for pipelined callers on
//!   threads of their own, `b` for pipelined callers keeping their window in a fixed-capacity
//!   set (`futures_buffered::FuturesUnorderedBounded`, which reuses its slots, where
//!   `FuturesUnordered` allocates a task for each call) (default: pipelined, 4 callers a core
//!   x 64 and x 256 without spin,
//!   1 a core x 256 spinning 50 us; fan-out, 4 callers a core x 256; a task per call, 4 x
//!   256). A pipelined caller keeps `window` calls in flight,
//!   each answer starting the next call; a fan-out caller issues `window` calls, awaits them
//!   all, and starts again; with `t`, each of the `window` calls is a task of its own that
//!   calls its grain again as soon as it is answered; with `p`, the callers are spread over
//!   threads that each run a current-thread runtime (thread-per-core services), so no caller
//!   moves between threads.
//! - `SILICA_BENCH_CALLER_THREADS`: threads for `p` (default `TOKIO_WORKER_THREADS`, else one a
//!   core less two).
//! - `SILICA_BENCH_CAPACITY`: ring entries (default `GpuConfig`'s).
//! - `SILICA_BENCH_LEAD_ONLY`: `1` to have the persistent ring's completion thread wake one
//!   future per finished run (`silica_gpu::cuda::Tuning::lead_only_wake`, the default), `0`
//!   for all.
//! - `SILICA_BENCH_DECODE`: `1` to have the persistent ring's completion thread decode every
//!   finished run into its reply cell (`silica_gpu::cuda::Tuning::decode_on_completion`), `0`
//!   to leave it to the run's first reader.
//! - `SILICA_BENCH_SWEEP_US`: the persistent ring's fallback sweep period
//!   (`silica_gpu::cuda::Tuning::staged_sweep`, default 100 us).
//! - `SILICA_BENCH_PIN`: `1` to give each persistent ring's completion thread core 0 to
//!   itself and pin the runtime's threads to the other cores, one each in turn (Linux).
//! - `TOKIO_WORKER_THREADS`: the runtime's workers (Tokio's own variable).
//! - `SILICA_BENCH_GLOBAL_QUEUE_INTERVAL`: Tokio's `global_queue_interval` (how many local tasks
//!   a worker runs between looks at the queue of tasks woken from outside the runtime, such as
//!   by a ring's completion thread).
//!
//! Prints one line per figure; docs/BENCHMARKS.md records them.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use silica_gpu::samples::{Accumulator, Add, Totals};
use silica_gpu::{BackendChoice, BackendKind};
use silica_grains::{Grain, GrainContext, GrainOptions, grain};
use silica_silo::gpu::{GpuActivation, GpuConfig, GpuDevices, GpuGrain};
use silica_silo::{Silo, SiloConfig};

#[grain(idle_after_secs = 3600)]
pub trait Tally {
    async fn add(&mut self, amount: u32) -> u64;
}

pub struct TallyCpu(Totals);

impl Grain for TallyCpu {
    type Interface = TallyRef;
    fn create(_: &GrainContext) -> Self {
        TallyCpu(Totals::default())
    }
}

impl Tally for TallyCpu {
    async fn add(&mut self, amount: u32) -> u64 {
        self.0.total += u64::from(amount);
        self.0.total
    }
}

pub struct TallyGpu(GpuActivation<Accumulator>);

impl GpuGrain for TallyGpu {
    type Interface = TallyRef;
    type Kernel = Accumulator;
    fn create(activation: GpuActivation<Accumulator>) -> Self {
        TallyGpu(activation)
    }
    fn options() -> GrainOptions {
        GrainOptions {
            idle_after: Duration::from_secs(3600),
            ..GrainOptions::DEFAULT
        }
    }
}

impl Tally for TallyGpu {
    async fn add(&mut self, amount: u32) -> u64 {
        self.0.call(Add { amount }).await.total
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn backends() -> Vec<(&'static str, BackendKind)> {
    let default = if silica_gpu::devices::cuda_devices().is_ok_and(|d| !d.is_empty()) {
        "cuda,batch"
    } else {
        "cpu"
    };
    env("SILICA_BENCH_BACKENDS")
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .map(|name| match name.trim() {
            "cuda" => ("cuda persistent", BackendKind::CudaPersistent),
            "batch" => ("cuda launch-per-batch", BackendKind::CudaBatch),
            "wgpu" => ("wgpu", BackendKind::Wgpu),
            "cpu" => ("cpu reference ring", BackendKind::Cpu),
            other => panic!("unknown backend {other}"),
        })
        .collect()
}

fn silo(kind: BackendKind, slots: u32, reply_spin: Duration) -> Silo {
    let mut gpu = GpuConfig {
        devices: GpuDevices::Exact(vec![BackendChoice::Exact { kind, device: 0 }]),
        slots_per_device: slots,
        reply_spin,
        ..GpuConfig::default()
    };
    if let Some(capacity) = env("SILICA_BENCH_CAPACITY") {
        gpu.ring.capacity = capacity
            .parse()
            .expect("SILICA_BENCH_CAPACITY: ring entries");
    }
    let config = SiloConfig {
        gpu,
        ..SiloConfig::default()
    };
    let silo = Silo::builder()
        .config(config)
        .register_gpu_variant::<TallyCpu, TallyGpu>()
        .start()
        .expect("silo starts");
    let status = &silo.gpu_status()[0];
    assert!(status.on_device(), "no device ring: {:?}", status.problems);
    if pinning() {
        pin_completion_threads();
    }
    silo
}

fn pinning() -> bool {
    env("SILICA_BENCH_PIN").is_some_and(|v| v == "1")
}

/// Pins thread `tid` (0: the calling thread) to core `cpu`.
fn pin(tid: libc::pid_t, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the call reads it and changes only affinity.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(result, 0, "sched_setaffinity({tid}, {cpu})");
}

/// Gives the persistent rings' completion threads (`silica-k2h-*`) core 0.
fn pin_completion_threads() {
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("a task");
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("silica-k2h") {
            let tid = task
                .file_name()
                .to_string_lossy()
                .parse()
                .expect("a thread id");
            pin(tid, 0);
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q) as usize]
}

/// G1: one caller, one call at a time, spinning on the reply (and parking, for reference).
async fn g1(name: &str, kind: BackendKind) {
    for (how, spin) in [
        ("spin", Duration::from_micros(50)),
        ("park", Duration::ZERO),
    ] {
        let silo = silo(kind, 1024, spin);
        let tally: TallyRef = silo.grain_factory().get("g1");
        let calls = if kind == BackendKind::Wgpu {
            300
        } else {
            20_000
        };
        for _ in 0..calls / 10 {
            tally.add(1).await.unwrap();
        }
        let mut samples = Vec::with_capacity(calls);
        for _ in 0..calls {
            let start = Instant::now();
            tally.add(1).await.unwrap();
            samples.push(start.elapsed());
        }
        samples.sort_unstable();
        println!(
            "G1 {name}, {how}: typed call round trip p50 {:.2} us, p99 {:.2} us ({calls} calls)",
            percentile(&samples, 0.5).as_secs_f64() * 1e6,
            percentile(&samples, 0.99).as_secs_f64() * 1e6,
        );
        println!("   {}", staging_summary(&ring_stats(&silo, &[])));
        silo.shutdown().await;
    }
}

/// How a G2 caller keeps its calls in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum G2Mode {
    /// `window` calls always in flight: each answer (in any order) starts the next call.
    Pipelined,
    /// Rounds of fan-out: `window` calls issued at once, then all of them awaited, in order
    /// (a `join_all`; the next round starts when the slowest call of this one answered).
    FanOut,
    /// Each of the `window` calls is its own task, awaiting one call at a time (the Orleans
    /// shape: many callers, each one call in flight).
    Tasks,
    /// Pipelined callers spread over threads of their own, each running a current-thread
    /// runtime (thread-per-core services): a caller never moves between threads, so the calls
    /// of one staged run wake callers on the thread that issued them.
    PerThread,
    /// Pipelined, each caller's window kept in a fixed-capacity set that reuses its slots
    /// (`FuturesUnordered` allocates a task for every call it holds).
    Bounded,
}

/// Whether the run goes on; reads the clock once every 64 answers (a read per call would be
/// the caller's cost, not the silo's).
struct Running {
    started: Instant,
    run_for: Duration,
    answers: u64,
    running: bool,
}

impl Running {
    fn answered(&mut self) -> bool {
        self.answers += 1;
        if self.answers.is_multiple_of(64) {
            self.running = self.started.elapsed() < self.run_for;
        }
        self.running
    }
}

/// One caller of `mode` (for `Tasks`, one of a caller's tasks, with one grain): its answers.
async fn caller(grains: Vec<TallyRef>, mode: G2Mode, mut running: Running) -> u64 {
    match mode {
        G2Mode::Tasks => {
            while running.answered() {
                grains[0].add(1).await.unwrap();
            }
        }
        G2Mode::FanOut => {
            while running.started.elapsed() < running.run_for {
                let calls: Vec<_> = grains.iter().map(|g| g.add(1)).collect();
                for call in calls {
                    call.await.unwrap();
                    running.answers += 1;
                }
            }
        }
        G2Mode::Bounded => {
            let set = futures_buffered::FuturesUnorderedBounded::new(grains.len());
            pipeline(&grains, &mut running, set, |s, g| s.push(g.add(1))).await;
        }
        G2Mode::Pipelined | G2Mode::PerThread => {
            let set = FuturesUnordered::new();
            pipeline(&grains, &mut running, set, |s, g| s.push(g.add(1))).await;
        }
    }
    running.answers - u64::from(mode == G2Mode::Tasks)
}

/// A pipelined caller: keeps a call to each of `grains` in flight in `set` (`push` adds one),
/// each answer starting the next call, until `running` says stop.
async fn pipeline<S, E>(
    grains: &[TallyRef],
    running: &mut Running,
    mut set: S,
    push: impl Fn(&mut S, &TallyRef),
) where
    S: futures_util::Stream<Item = Result<u64, E>> + Unpin,
    E: std::fmt::Debug,
{
    for g in grains {
        push(&mut set, g);
    }
    let mut next = 0usize;
    while let Some(result) = set.next().await {
        result.unwrap();
        if running.answered() {
            push(&mut set, &grains[next % grains.len()]);
            next += 1;
        }
    }
}

/// G2: `callers` callers, each keeping `window` calls in flight to its own grains, as `mode` says.
/// A warm-up round of the same shape goes first and is not counted: it activates the grains
/// (G4 measures activation) and lets the process reach its steady state.
async fn g2(
    name: &str,
    kind: BackendKind,
    (callers, window, spin, mode): (usize, usize, Duration, G2Mode),
) {
    let silo = silo(kind, 1 << 16, spin);
    let factory = silo.grain_factory();
    let secs: f64 = env("SILICA_BENCH_SECS").map_or(2.0, |s| s.parse().unwrap());
    let warmup: f64 = env("SILICA_BENCH_WARMUP_SECS").map_or(1.0, |s| s.parse().unwrap());
    let grains: Vec<Vec<TallyRef>> = (0..callers)
        .map(|c| {
            (0..window)
                .map(|i| factory.get(format!("g2-{c}-{i}")))
                .collect()
        })
        .collect();
    if warmup > 0.0 {
        run_callers(&grains, mode, Duration::from_secs_f64(warmup)).await;
    }
    let before = ring_stats(&silo, &[]);
    let parks_before = WORKER_PARKS.load(std::sync::atomic::Ordering::Relaxed);
    let run_for = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks = spawn_callers(&grains, mode, started, run_for);
    // The ring's queue depth (submitted, not yet completed) while the callers run: where a
    // call waits.
    // A thread of its own: a Tokio timer starved while every worker was busy with callers.
    let depths = {
        let silo = silo.clone();
        std::thread::spawn(move || {
            let mut depths = Vec::new();
            while started.elapsed() < run_for {
                std::thread::sleep(Duration::from_millis(2));
                depths.push(silo.gpu_status()[0].devices[0].load.queue_depth);
            }
            depths
        })
    };
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let depths = depths.join().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let capacity = env("SILICA_BENCH_CAPACITY").unwrap_or_else(|| "default".into());
    let how = match mode {
        G2Mode::Pipelined => "pipelined".to_string(),
        G2Mode::Bounded => "pipelined, bounded set".to_string(),
        G2Mode::FanOut => "fan-out rounds".to_string(),
        G2Mode::Tasks => "a task per call".to_string(),
        G2Mode::PerThread => format!(
            "pipelined, on {} threads of current-thread runtimes",
            caller_threads().min(callers)
        ),
    };
    println!(
        "G2 {name}: {callers} callers x {window} in flight ({how}), spin {:?}, ring capacity \
         {capacity}: {:.2} M calls/s ({total} calls)",
        spin,
        total as f64 / elapsed / 1e6
    );
    let stats = ring_stats(&silo, &before);
    println!("   {}", staging_summary(&stats));
    let parks = WORKER_PARKS.load(std::sync::atomic::Ordering::Relaxed) - parks_before;
    let mean = depths.iter().sum::<u64>() as f64 / depths.len().max(1) as f64;
    let max = depths.iter().max().copied().unwrap_or(0);
    println!(
        "   ring queue depth: mean {mean:.0}, max {max} ({} samples); runtime threads parked \
         {parks} times; {}",
        depths.len(),
        ring_summary(&stats)
    );
    silo.shutdown().await;
}

/// Times the runtime's threads went to sleep for want of tasks (Tokio's `on_thread_park`).
static WORKER_PARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The callers of one G2 round over `grains` (a list per caller), started now.
fn spawn_callers(
    grains: &[Vec<TallyRef>],
    mode: G2Mode,
    started: Instant,
    run_for: Duration,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let running = move || Running {
        started,
        run_for,
        answers: 0,
        running: true,
    };
    let mut tasks = Vec::new();
    if mode == G2Mode::PerThread {
        let threads = caller_threads().min(grains.len()).max(1);
        for thread in 0..threads {
            let mine: Vec<Vec<TallyRef>> = grains
                .iter()
                .skip(thread)
                .step_by(threads)
                .cloned()
                .collect();
            let callers = running;
            tasks.push(tokio::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a caller thread's runtime");
                runtime.block_on(async move {
                    let local: Vec<_> = mine
                        .into_iter()
                        .map(|g| tokio::spawn(caller(g, mode, callers())))
                        .collect();
                    let mut answers = 0;
                    for t in local {
                        answers += t.await.unwrap();
                    }
                    answers
                })
            }));
        }
        return tasks;
    }
    for caller_grains in grains {
        if mode == G2Mode::Tasks {
            for g in caller_grains {
                tasks.push(tokio::spawn(caller(vec![g.clone()], mode, running())));
            }
        } else {
            tasks.push(tokio::spawn(caller(caller_grains.clone(), mode, running())));
        }
    }
    tasks
}

/// Threads for `PerThread` callers: `SILICA_BENCH_CALLER_THREADS`, else the runtime's workers
/// (`TOKIO_WORKER_THREADS`), else one a core less two (the ring's completion thread and the
/// silo's own tasks keep theirs).
fn caller_threads() -> usize {
    env("SILICA_BENCH_CALLER_THREADS")
        .or_else(|| env("TOKIO_WORKER_THREADS"))
        .map(|n| {
            n.parse()
                .expect("SILICA_BENCH_CALLER_THREADS: a thread count")
        })
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, |n| n.get().saturating_sub(2).max(1))
        })
}

/// One G2 round of `run_for`, its answers not counted.
async fn run_callers(grains: &[Vec<TallyRef>], mode: G2Mode, run_for: Duration) {
    for t in spawn_callers(grains, mode, Instant::now(), run_for) {
        t.await.unwrap();
    }
}

/// The ring's counters (`name`, value), less those of `before` (counters only grow).
fn ring_stats(silo: &Silo, before: &[(&'static str, u64)]) -> Vec<(&'static str, u64)> {
    let earlier = |name: &str| before.iter().find(|(n, _)| *n == name).map_or(0, |s| s.1);
    silo.gpu_status()[0].devices[0]
        .ring_stats
        .iter()
        .map(|&(n, v)| (n, v.saturating_sub(earlier(n))))
        .collect()
}

/// The ring's own counters but the staging ones (`name=value`), for diagnosis.
fn ring_summary(stats: &[(&'static str, u64)]) -> String {
    stats
        .iter()
        .filter(|(n, _)| !n.starts_with("stage_"))
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How the ring took the calls: mean messages per submitted staged batch, and what submitted
/// the batches (the ring's `stage_*` counters).
fn staging_summary(stats: &[(&'static str, u64)]) -> String {
    let get = |name: &str| stats.iter().find(|(n, _)| *n == name).map_or(0, |s| s.1);
    let (batches, messages) = (get("stage_batches"), get("stage_messages"));
    let causes: Vec<String> = stats
        .iter()
        .filter_map(|(n, v)| Some(format!("{}={v}", n.strip_prefix("stage_flush_")?)))
        .collect();
    format!(
        "staged batches: {batches}, mean {:.1} messages each; flushed by {}",
        messages as f64 / batches.max(1) as f64,
        causes.join(" ")
    )
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// G4: `n` resident activations on one device; activation and deactivation cost.
async fn g4(name: &str, kind: BackendKind, n: usize) {
    let rss_before = rss_mib();
    let silo = silo(kind, n as u32 + 1024, Duration::from_micros(50));
    let factory = silo.grain_factory();
    let callers = 64;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let factory = factory.clone();
            tokio::spawn(async move {
                for i in (c..n).step_by(callers) {
                    let tally: TallyRef = factory.get(i as i64);
                    assert_eq!(tally.add(1).await.unwrap(), 1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let activate = started.elapsed();
    let status = &silo.gpu_status()[0];
    assert_eq!(status.activations, n);
    let rss = rss_mib() - rss_before;
    let probe: TallyRef = factory.get(7i64);
    assert_eq!(
        probe.add(1).await.unwrap(),
        2,
        "state survived beside a million others"
    );
    let started = Instant::now();
    silo.shutdown().await;
    let deactivate = started.elapsed();
    println!(
        "G4 {name}: {n} resident activations; activate (first call) {:.2} us each over {callers} callers \
         ({:.1} s), deactivate with state read-back {:.2} us each ({:.1} s), host RSS {rss:.0} MiB \
         ({:.0} B per activation, device state table included)",
        activate.as_secs_f64() * 1e6 / n as f64,
        activate.as_secs_f64(),
        deactivate.as_secs_f64() * 1e6 / n as f64,
        deactivate.as_secs_f64(),
        rss * 1024.0 * 1024.0 / n as f64,
    );
}

/// G2's (callers, calls in flight each, reply spin, mode): `SILICA_BENCH_G2` as
/// `callers x window x spin_us` items separated by commas, with `f` appended for fan-out rounds,
/// `t` for a task per call, `p` for callers on threads of their own or `b` for a bounded set
/// (e.g. `64x256x0f`), else four defaults.
fn g2_configs() -> Vec<(usize, usize, Duration, G2Mode)> {
    const FORMAT: &str = "SILICA_BENCH_G2: callers x window x spin_us, f, t, p or b appended for fan-out, \
         tasks, caller threads or a bounded set";
    if let Some(list) = env("SILICA_BENCH_G2") {
        return list
            .split(',')
            .map(|item| {
                let item = item.trim();
                let (item, mode) = if let Some(rest) = item.strip_suffix('f') {
                    (rest, G2Mode::FanOut)
                } else if let Some(rest) = item.strip_suffix('t') {
                    (rest, G2Mode::Tasks)
                } else if let Some(rest) = item.strip_suffix('b') {
                    (rest, G2Mode::Bounded)
                } else if let Some(rest) = item.strip_suffix('p') {
                    (rest, G2Mode::PerThread)
                } else {
                    (item, G2Mode::Pipelined)
                };
                let n: Vec<u64> = item
                    .split('x')
                    .map(|v| v.trim().parse().expect(FORMAT))
                    .collect();
                assert_eq!(n.len(), 3, "{FORMAT}");
                (
                    n[0] as usize,
                    n[1] as usize,
                    Duration::from_micros(n[2]),
                    mode,
                )
            })
            .collect();
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    vec![
        (threads * 4, 64, Duration::ZERO, G2Mode::Pipelined),
        (threads * 4, 256, Duration::ZERO, G2Mode::Pipelined),
        (threads, 256, Duration::from_micros(50), G2Mode::Pipelined),
        (threads * 4, 256, Duration::ZERO, G2Mode::FanOut),
        (threads * 4, 256, Duration::ZERO, G2Mode::Tasks),
    ]
}

fn main() {
    let only = env("SILICA_BENCH_ONLY");
    let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
    #[cfg(feature = "cuda")]
    {
        let mut tuning = silica_gpu::cuda::Tuning::default();
        if let Some(lead) = env("SILICA_BENCH_LEAD_ONLY") {
            tuning.lead_only_wake = lead == "1";
        }
        if let Some(decode) = env("SILICA_BENCH_DECODE") {
            tuning.decode_on_completion = decode == "1";
        }
        if let Some(us) = env("SILICA_BENCH_SWEEP_US") {
            tuning.staged_sweep = Duration::from_micros(us.parse().expect("SILICA_BENCH_SWEEP_US"));
        }
        silica_gpu::cuda::set_tuning(tuning);
    }
    // Tokio's worker count comes from TOKIO_WORKER_THREADS when set (default: one per core).
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    builder.on_thread_park(|| {
        WORKER_PARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    if pinning() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let next = std::sync::atomic::AtomicUsize::new(0);
        builder.on_thread_start(move || {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            pin(0, 1 + n % (cores - 1).max(1));
        });
    }
    if let Some(n) = env("SILICA_BENCH_GLOBAL_QUEUE_INTERVAL") {
        builder.global_queue_interval(n.parse().expect("SILICA_BENCH_GLOBAL_QUEUE_INTERVAL"));
    }
    let runtime = builder.build().unwrap();
    runtime.block_on(async {
        for (name, kind) in backends() {
            if wants("g1") {
                g1(name, kind).await;
            }
            if wants("g2") {
                for config in g2_configs() {
                    g2(name, kind, config).await;
                }
            }
            if wants("g4") && kind != BackendKind::Wgpu {
                let n = env("SILICA_BENCH_G4").map_or(1_000_000, |s| s.parse().unwrap());
                g4(name, kind, n).await;
            }
        }
    });
}
