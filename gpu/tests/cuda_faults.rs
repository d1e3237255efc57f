//! CUDA faults: a stalled handler, an out-of-bounds write and an unexpected kernel exit each
//! fail every in-flight call with a typed fault, restart the ring and report the lost slots;
//! the ring's stamps keep increasing across a restart; a machine without libcuda gets a typed
//! error, not a panic.
#![cfg(feature = "cuda")]

mod common;
use common::{block_on, config};
use silica_gpu::samples::{Add, Command, Faulty};
use silica_gpu::{
    BackendKind, FaultInjection, FaultKind, HlcStamp, Ring, RingConfig, RingError, SlotStatus,
};
use std::future::Future;
use std::time::Duration;

fn ring() -> Ring<Faulty> {
    let cfg = RingConfig {
        stall_timeout: Duration::from_millis(300),
        ..config(BackendKind::CudaPersistent)
    };
    Ring::<Faulty>::start(cfg).expect("start ring")
}

fn expect_fault(ring: &Ring<Faulty>, trigger: Command, kind: FaultKind, restarts: bool) {
    let slot = ring.activate(&Add { amount: 7 }).unwrap();
    assert_eq!(
        block_on(ring.submit(slot, Command { op: 0, arg: 5 }, HlcStamp::default()))
            .unwrap()
            .response
            .amount,
        5
    );
    let err = block_on(ring.submit(slot, trigger, HlcStamp::default())).unwrap_err();
    let RingError::Fault(fault) = err else {
        panic!("expected a fault, got {err}")
    };
    assert_eq!(fault.kind, kind, "{}", fault.detail);
    assert!(fault.lost_slots.contains(&slot));
    assert_eq!(ring.slot_status(slot), SlotStatus::Lost);
    assert!(matches!(
        block_on(ring.submit(slot, Command::default(), HlcStamp::default())),
        Err(RingError::SlotLost(_))
    ));
    if !restarts {
        // A sticky CUDA error: the ring is failed for good, calls end with a typed error.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ring.health().running && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!ring.health().running);
        assert!(matches!(
            ring.activate(&Add::default()),
            Err(RingError::ShutDown)
        ));
        return;
    }
    // The ring restarted: a fresh activation works.
    assert!(matches!(
        block_on(ring.deactivate(slot)),
        Err(RingError::SlotLost(_))
    ));
    let fresh = ring.activate(&Add::default()).unwrap();
    assert_eq!(
        block_on(ring.submit(fresh, Command { op: 0, arg: 9 }, HlcStamp::default()))
            .unwrap()
            .response
            .amount,
        9
    );
    assert_eq!(block_on(ring.deactivate(fresh)).unwrap().amount, 1);
    assert_eq!(ring.health().faults, 1);
}

// Pins: a handler that stops the heartbeat is detected as a stall and the ring restarts.
#[test]
#[ignore = "needs a CUDA GPU"]
fn heartbeat_stall_restarts() {
    expect_fault(
        &ring(),
        Command { op: 1, arg: 1500 },
        FaultKind::HeartbeatStall,
        true,
    );
}

// Pins: an out-of-bounds write becomes a CudaError fault for the in-flight call, the slots
// are reported lost, and the ring fails for good (a sticky error poisons the process's CUDA
// use). Run it in its own process: `--exact illegal_address_fails_ring`.
#[test]
#[ignore = "needs a CUDA GPU"]
fn illegal_address_fails_ring() {
    expect_fault(
        &ring(),
        Command { op: 2, arg: 3 },
        FaultKind::CudaError,
        false,
    );
}

// Pins: a sticky fault also ends staged calls that wait in an open batch on a busy ring (their
// batch would otherwise wait for a completion pass that never comes): they are woken with an
// error. Run it in its own process: `--exact illegal_address_fails_waiting_staged_calls`.
#[test]
#[ignore = "needs a CUDA GPU"]
fn illegal_address_fails_waiting_staged_calls() {
    let ring = std::sync::Arc::new(ring());
    let (busy, faulty, waiting) = (
        ring.activate(&Add::default()).unwrap(),
        ring.activate(&Add::default()).unwrap(),
        ring.activate(&Add::default()).unwrap(),
    );
    // A 150 ms handler keeps the ring busy (shorter than the 300 ms stall timeout), so the
    // staged call below waits in its open batch for a completion pass.
    let mut sleeper = Box::pin(ring.submit(busy, Command { op: 1, arg: 150 }, HlcStamp::default()));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(sleeper.as_mut().poll(&mut cx).is_pending());
    let staged = {
        let ring = ring.clone();
        std::thread::spawn(move || {
            common::block_on_woken(ring.stage(waiting, Command::default(), HlcStamp::default()))
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let err =
        block_on(ring.submit(faulty, Command { op: 2, arg: 3 }, HlcStamp::default())).unwrap_err();
    assert!(matches!(err, RingError::Fault(_)), "{err}");
    assert!(staged.join().unwrap().is_err());
}

// Pins: a kernel that exits unasked is a KernelExited fault followed by a restart.
#[test]
#[ignore = "needs a CUDA GPU"]
fn unexpected_exit_restarts() {
    let ring = ring();
    let slot = ring.activate(&Add::default()).unwrap();
    assert!(ring.inject_fault(FaultInjection::KernelExit));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ring.health().faults == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let fault = ring.health().last_fault.expect("fault recorded");
    assert_eq!(fault.kind, FaultKind::KernelExited);
    assert_eq!(fault.lost_slots, vec![slot]);
    let fresh = ring.activate(&Add::default()).unwrap();
    assert_eq!(
        block_on(ring.submit(fresh, Command { op: 0, arg: 3 }, HlcStamp::default()))
            .unwrap()
            .response
            .amount,
        3
    );
}

// Pins: the ring's stamps keep increasing across a restart. A request stamped 10 s ahead
// pushes the kernel's clock word there; after an unexpected exit the relaunched kernel still
// stamps above every stamp issued before (it had restarted from the wall clock).
#[test]
#[ignore = "needs a CUDA GPU"]
fn stamps_keep_increasing_across_a_restart() {
    let ring = ring();
    let slot = ring.activate(&Add::default()).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ahead = HlcStamp::new((now_ms + 10_000) << 20, 1);
    let before = block_on(ring.submit(slot, Command { op: 0, arg: 1 }, ahead))
        .unwrap()
        .stamp;
    assert!(
        before.hlc > ahead.hlc,
        "a reply is stamped after its request"
    );
    assert!(ring.inject_fault(FaultInjection::KernelExit));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ring.health().faults == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ring.health().faults, 1);
    let fresh = ring.activate(&Add::default()).unwrap();
    let after = block_on(ring.submit(fresh, Command { op: 0, arg: 2 }, HlcStamp::default()))
        .unwrap()
        .stamp;
    assert!(
        after.hlc > before.hlc,
        "after the restart {after:?}, before it {before:?}"
    );
}

// Pins: NVRTC compile errors carry the generated source with line numbers.
#[test]
#[ignore = "needs a CUDA GPU"]
fn compile_error_has_line_numbers() {
    struct Broken;
    impl silica_gpu::Kernel for Broken {
        type State = Add;
        type Request = Add;
        type Response = Add;
        const NAME: &'static str = "broken";
        const CUDA_HANDLER: &'static str =
            "__device__ void silica_handle(Add* s, const Add* r, Add* o) { this is not C }";
        const WGSL_HANDLER: &'static str = "";
        fn handle(_: &mut Add, r: &Add) -> Add {
            *r
        }
    }
    let err = silica_gpu::cuda::compile::<Broken>(0).unwrap_err();
    let text = err.to_string();
    let (_, line) = silica_gpu::cuda::generated_source::<Broken>();
    assert!(
        text.contains(&format!("{line:5} | __device__ void silica_handle")),
        "{text}"
    );
    assert!(text.contains("broken.cu("), "{text}");
}

// Pins: device enumeration works, or says clearly why not (no driver is an error, not a panic).
#[test]
fn enumeration_never_panics() {
    match silica_gpu::devices::cuda_devices() {
        Ok(devs) => devs.iter().for_each(|d| println!("{d:?}")),
        Err(e) => println!("no CUDA here: {e}"),
    }
    if silica_gpu::devices::cuda_devices().is_err() {
        let err = Ring::<Faulty>::start(config(BackendKind::CudaPersistent))
            .err()
            .expect("no ring without a driver");
        assert!(matches!(err, RingError::Device(_)), "{err}");
    }
}
