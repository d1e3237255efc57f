//! GPU variants in a silo, on CPU reference rings: the same host path (slots, placement, turn
//! order, idle collection, shutdown, faults of capacity) that CUDA and wgpu rings take.

mod gpu_support;

use std::borrow::Cow;

use gpu_support::*;
use silica_client::{CallChain, Envelope};
use silica_grains::{CallError, DeactivationReason, GrainId, GrainReference, Payload, RejectCode};
use silica_silo::gpu::{GpuConfig, GpuDevices};
use silica_silo::{Silo, SiloConfig};

fn tally_silo(config: SiloConfig, saved: &Saved) -> Silo {
    Silo::builder()
        .config(config)
        .register_gpu_variant_with_store::<TallyCpu, TallyGpu>(saved.clone())
        .start()
        .unwrap()
}

// Pins that a registered GPU variant serves calls when the silo has a device, through the same
// typed reference, and that the kernel's state persists across calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_variant_serves_through_the_typed_reference() {
    let silo = tally_silo(cpu_rings(1, 64), &Saved::default());
    let tally: TallyRef = silo.grain_factory().get("a");
    for i in 1..=5u32 {
        assert_eq!(tally.add(i).await.unwrap(), (u64::from(i * (i + 1) / 2), i));
    }
    assert_eq!(tally.served_by().await.unwrap(), "CPU reference ring");
    let status = silo.gpu_status();
    assert_eq!(status.len(), 1);
    assert!(status[0].on_device());
    assert_eq!(status[0].activations, 1);
    eventually("the ring to count every message", || {
        silo.gpu_status()[0].devices[0].messages == 5
    })
    .await;
    assert_eq!(silo.activation_count(), 0, "no CPU activation was made");
    silo.shutdown().await;
}

// Pins turn order on the device: calls issued back to back to one activation run in the order
// they were issued, one at a time, whenever they are awaited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_one_gpu_activation_run_in_issue_order() {
    let silo = tally_silo(cpu_rings(2, 64), &Saved::default());
    let tally: TallyRef = silo.grain_factory().get("ordered");
    let calls: Vec<_> = (0..200).map(|_| tally.add(1)).collect();
    let results = futures_util::future::join_all(calls).await;
    for (i, result) in results.into_iter().enumerate() {
        let n = i as u32 + 1;
        assert_eq!(result.unwrap(), (u64::from(n), n));
    }
    silo.shutdown().await;
}

// Pins the fallback: with no device, the CPU implementation serves the same reference, and the
// status says why.
#[tokio::test]
async fn cpu_implementation_serves_without_devices() {
    let config = SiloConfig {
        gpu: GpuConfig {
            devices: GpuDevices::Off,
            ..GpuConfig::default()
        },
        ..SiloConfig::default()
    };
    let silo = tally_silo(config, &Saved::default());
    let tally: TallyRef = silo.grain_factory().get("a");
    assert_eq!(tally.add(2).await.unwrap(), (2, 1));
    assert_eq!(tally.served_by().await.unwrap(), "cpu");
    let status = &silo.gpu_status()[0];
    assert!(!status.on_device());
    assert!(
        status.served_by().contains("turned off"),
        "{}",
        status.served_by()
    );
    silo.shutdown().await;
}

// Pins placement constraints inside a silo: a device whose slot table is full takes no new
// activation, so they go to the other device until both are full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_go_to_devices_with_free_slots() {
    let silo = tally_silo(cpu_rings(2, 10), &Saved::default());
    let factory = silo.grain_factory();
    for i in 0..20 {
        let tally: TallyRef = factory.get(i as i64);
        assert_eq!(tally.add(1).await.unwrap(), (1, 1));
    }
    let status = &silo.gpu_status()[0];
    let per_device: Vec<u64> = status.devices.iter().map(|d| d.activations).collect();
    assert_eq!(per_device, vec![10, 10]);
    silo.shutdown().await;
}

// Pins the full-slot-table fault: a new activation with no free slot anywhere is rejected as
// overloaded, while existing activations and other grain types keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_slot_table_rejects_new_activations_and_serves_the_rest() {
    let silo = Silo::builder()
        .config(cpu_rings(1, 2))
        .register_gpu_variant::<TallyCpu, TallyGpu>()
        .register::<AdderCpu>()
        .start()
        .unwrap();
    let factory = silo.grain_factory();
    let (a, b, c): (TallyRef, TallyRef, TallyRef) =
        (factory.get("a"), factory.get("b"), factory.get("c"));
    a.add(1).await.unwrap();
    b.add(1).await.unwrap();
    let error = c.add(1).await.unwrap_err();
    assert_eq!(error.reject_code(), Some(RejectCode::Overloaded), "{error}");
    assert_eq!(a.add(1).await.unwrap(), (2, 2));
    let adder: AdderRef = factory.get(0i64);
    assert_eq!(adder.add([1.0; 6], [2.0; 6]).await.unwrap(), [3.0; 6]);
    silo.shutdown().await;
}

// Pins idle collection of GPU activations: an idle activation's state is read back and saved,
// its slot freed, and the next call activates it again from the saved state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gpu_activations_save_state_and_resume_from_it() {
    let saved = Saved::default();
    let silo = tally_silo(cpu_rings(1, 8), &saved);
    let tally: TallyRef = silo.grain_factory().get("sleepy");
    assert_eq!(tally.add(7).await.unwrap(), (7, 1));
    eventually("the idle activation to be saved", || {
        saved.get("sleepy").is_some()
    })
    .await;
    eventually("the slot to be freed", || {
        silo.gpu_status()[0].activations == 0
    })
    .await;
    let (state, reason) = saved.get("sleepy").unwrap();
    assert_eq!(reason, DeactivationReason::Idle);
    assert_eq!(state.unwrap().total, 7);
    assert_eq!(
        tally.add(1).await.unwrap(),
        (8, 2),
        "resumed from the saved state"
    );
    silo.shutdown().await;
}

// Pins shutdown: every GPU activation's final state is saved before the silo stops, and calls
// afterwards fail with a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_saves_every_gpu_activation() {
    let saved = Saved::default();
    let silo = tally_silo(cpu_rings(2, 8), &saved);
    let factory = silo.grain_factory();
    for (key, amount) in [("x", 3), ("y", 4), ("z", 5)] {
        let tally: TallyRef = factory.get(key);
        tally.add(amount).await.unwrap();
    }
    silo.shutdown().await;
    for (key, amount) in [("x", 3), ("y", 4), ("z", 5)] {
        let (state, reason) = saved.get(key).expect("saved at shutdown");
        assert_eq!(reason, DeactivationReason::Shutdown);
        assert_eq!(state.unwrap().total, amount);
    }
    let tally: TallyRef = factory.get("x");
    assert_eq!(tally.add(1).await.unwrap_err(), CallError::ShuttingDown);
}

// Pins stateless GPU workers: each call goes to the least loaded ring, so concurrent calls use
// every device, and every answer is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_gpu_workers_use_every_device() {
    let silo = Silo::builder()
        .config(cpu_rings(2, 8))
        .register_gpu_variant::<AdderCpu, AdderGpu>()
        .start()
        .unwrap();
    let adder: AdderRef = silo.grain_factory().get(0i64);
    for round in 0..20 {
        let calls: Vec<_> = (0..200)
            .map(|i| adder.add([i as f32; 6], [round as f32; 6]))
            .collect();
        for (i, sum) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(sum.unwrap(), [(i + round) as f32; 6]);
        }
    }
    // A ring counts a message completed just after its answer is out: wait (bounded) for the
    // last counts to land.
    let mut messages = Vec::new();
    for _ in 0..500 {
        let status = &silo.gpu_status()[0];
        messages = status.devices.iter().map(|d| d.messages).collect();
        if messages.iter().sum::<u64>() == 4_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(messages.iter().sum::<u64>(), 4_000);
    assert!(
        messages.iter().all(|&m| m > 0),
        "both devices served: {messages:?}"
    );
    silo.shutdown().await;
}

// Pins bad input on the GPU path: an unknown method and undecodable arguments are typed
// rejections, and the activation keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_to_a_gpu_variant_are_rejected() {
    let silo = tally_silo(cpu_rings(1, 8), &Saved::default());
    let target = GrainId::new(TallyRef::grain_type(), "a");
    let envelope = |method: &'static str, args: &[u8]| Envelope {
        target: target.clone(),
        interface: Cow::Borrowed(TallyRef::INTERFACE),
        method: Cow::Borrowed(method),
        args: Payload::from_slice(args),
        hlc: silo.clock().last(),
        chain: CallChain::EMPTY,
        timeout: std::time::Duration::from_secs(5),
    };
    let unknown = silo.deliver(envelope("nope", &[])).await.unwrap_err();
    assert_eq!(unknown.reject_code(), Some(RejectCode::UnknownMethod));
    let garbage = silo.deliver(envelope("add", &[0xff; 9])).await.unwrap_err();
    assert_eq!(garbage.reject_code(), Some(RejectCode::BadArguments));
    let tally: TallyRef = silo.grain_factory().get("a");
    assert_eq!(tally.add(1).await.unwrap(), (1, 1));
    silo.shutdown().await;
}

// Pins that a reference's remembered route (its `RouteMemo`, set by its first call) checks
// every later call as the envelope path does: an unknown method, oversized arguments and a cast
// to an interface the grain does not implement are each refused with their typed error, and the
// reference's next good call reaches the same activation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_route_still_checks_every_call() {
    let config = SiloConfig {
        max_message_bytes: 64,
        ..cpu_rings(1, 8)
    };
    let silo = tally_silo(config, &Saved::default());
    let tally: TallyRef = silo.grain_factory().get("memo");
    assert_eq!(tally.add(1).await.unwrap(), (1, 1));
    let raw = tally.as_raw();
    let unknown = raw
        .invoke_raw(TallyRef::INTERFACE, "nope", Payload::new())
        .await
        .unwrap_err();
    assert_eq!(unknown.reject_code(), Some(RejectCode::UnknownMethod));
    let oversized = raw
        .invoke_raw(TallyRef::INTERFACE, "add", Payload::from_slice(&[1; 65]))
        .await
        .unwrap_err();
    assert_eq!(oversized.reject_code(), Some(RejectCode::TooLarge));
    let adder: AdderRef = tally.cast();
    let wrong = adder.add([0.0; 6], [0.0; 6]).await.unwrap_err();
    assert_eq!(wrong.reject_code(), Some(RejectCode::WrongInterface));
    assert_eq!(tally.add(1).await.unwrap(), (2, 2), "the same activation");
    silo.shutdown().await;
}

// Pins clocks through the device: the stamp the ring puts on a response is merged into the
// silo's clock, so what the grain did on the device happened before anything the caller does
// next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_stamps_advance_the_silo_clock() {
    let silo = tally_silo(cpu_rings(1, 8), &Saved::default());
    let tally: TallyRef = silo.grain_factory().get("a");
    let before = silo.clock().last();
    tally.add(1).await.unwrap();
    assert!(silo.clock().last() > before);
    silo.shutdown().await;
}
