//! Helpers shared by the integration tests: a blocking executor, random numbers, configs.
#![allow(dead_code, unreachable_pub)]

use silica_gpu::{BackendChoice, BackendKind, RingConfig};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

struct ThreadWaker(std::thread::Thread);
impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Wakes a parked thread and records that it did.
struct Flag(std::thread::Thread, AtomicBool);
impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.1.store(true, Ordering::SeqCst);
        self.0.unpark();
    }
}

/// Runs `f` to completion, re-polling only when its waker fires: a lost wake-up fails the
/// test (after a 10 s bound) instead of being covered by a timed re-poll.
pub fn block_on_woken<F: Future>(f: F) -> F::Output {
    let flag = Arc::new(Flag(std::thread::current(), AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut f = std::pin::pin!(f);
    loop {
        flag.1.store(false, Ordering::SeqCst);
        if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return v;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !flag.1.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "a pending staged future was never woken"
            );
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

/// Runs a future to completion on this thread.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// xorshift64*: fresh inputs per run; the seed is printed to replay.
pub struct Rng(pub u64);
impl Rng {
    pub fn fresh(test: &str) -> Self {
        let seed = std::env::var("SILICA_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("{test}: SILICA_SEED={seed}");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n)) as u32
    }
}

pub fn config(kind: BackendKind) -> RingConfig {
    RingConfig {
        backend: BackendChoice::Exact { kind, device: 0 },
        slots: 256,
        capacity: 1024,
        max_batch: 256,
        consumer_spin: Duration::from_micros(200),
        ..RingConfig::default()
    }
}

/// True (after printing a note) when `kind` is wgpu and no wgpu adapter exists at all, so the
/// test should skip; every other case runs (a wgpu build with an adapter must pass).
pub fn skip(kind: BackendKind) -> bool {
    if kind != BackendKind::Wgpu || !silica_gpu::devices::wgpu_adapters().is_empty() {
        return false;
    }
    println!("note: no wgpu adapter on this machine (install mesa-vulkan-drivers); skipping");
    true
}
