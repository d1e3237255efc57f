//! Ring benchmarks (plain binary, `harness = false`): round trip p50/p99 per backend,
//! throughput with many producers and 64-byte H2K entries, GPU HLC stamp cost.
//! Run: `cargo bench -p silica-gpu --features cuda --bench ring` (CPU-only without CUDA).

use silica_gpu::samples::{Empty, VecPair, VectorAdd};
use silica_gpu::{BackendChoice, BackendKind, HlcStamp, Ring, RingConfig};
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

fn config(kind: BackendKind) -> RingConfig {
    RingConfig {
        backend: BackendChoice::Exact { kind, device: 0 },
        slots: 4096,
        capacity: 65536,
        max_batch: 512,
        consumer_spin: Duration::from_secs(5),
        reply_spin: Duration::from_millis(10),
        ..RingConfig::default()
    }
}

fn round_trip(kind: BackendKind, n: usize) {
    let Ok(ring) = Ring::<VectorAdd>::start(config(kind)) else {
        println!("{kind:?}: unavailable");
        return;
    };
    let slot = ring.activate(&Empty::default()).unwrap();
    let req = VecPair {
        a: [1.5; 6],
        b: [2.25; 6],
    };
    for _ in 0..n / 10 {
        spin_on(ring.submit(slot, req, HlcStamp::default())).unwrap();
    }
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            spin_on(ring.submit(slot, req, HlcStamp::default())).unwrap();
            s.elapsed().as_nanos() as f64 / 1000.0
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    println!(
        "round_trip {kind:?}: p50 {:.2} us  p99 {:.2} us  (n={n})",
        t[n / 2],
        t[n * 99 / 100]
    );
}

fn throughput(kind: BackendKind, producers: usize, batch: usize, secs: f64) {
    let Ok(ring) = Ring::<VectorAdd>::start(RingConfig {
        worker_warps: 16,
        ..config(kind)
    }) else {
        println!("{kind:?}: unavailable");
        return;
    };
    let ring = Arc::new(ring);
    let slots: Vec<_> = (0..1024)
        .map(|_| ring.activate(&Empty::default()).unwrap())
        .collect();
    let start = Instant::now();
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
                    inflight.push_back(ring.submit_batch(items, HlcStamp::default()));
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
    let el = start.elapsed().as_secs_f64();
    println!(
        "throughput {kind:?}: {producers} producers x batches of {batch}: {:.2} M msg/s ({total} msgs, 64-byte H2K entries)",
        total as f64 / el / 1e6
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2000 } else { 20000 };
    for kind in [
        BackendKind::CudaPersistent,
        BackendKind::CudaBatch,
        BackendKind::Wgpu,
        BackendKind::Cpu,
    ] {
        round_trip(kind, n);
    }
    let secs = if quick { 0.5 } else { 2.0 };
    for kind in [
        BackendKind::CudaPersistent,
        BackendKind::CudaBatch,
        BackendKind::Cpu,
    ] {
        throughput(kind, 8, 256, secs);
    }
    #[cfg(feature = "cuda")]
    match silica_gpu::cuda::bench_hlc_stamp::<VectorAdd>(0, 528, 1000) {
        Ok(ns) => println!(
            "gpu_hlc_stamp: {ns:.3} ns per stamp amortized (528 blocks x 256 threads x 1000, one CAS per warp)"
        ),
        Err(e) => println!("gpu_hlc_stamp: unavailable: {e}"),
    }
}
