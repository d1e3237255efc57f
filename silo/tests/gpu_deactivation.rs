//! How GPU activations end when something around them goes wrong: a state store whose `save`
//! panics, and a shutdown that finds calls still running on an activation (CPU reference rings).

mod gpu_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gpu_support::*;
use silica_gpu::FaultInjection;
use silica_gpu::samples::{Accumulator, Add, Totals};
use silica_grains::{
    CallError, DeactivationReason, Grain, GrainContext, GrainId, RejectCode, grain,
};
use silica_silo::gpu::{GpuActivation, GpuGrain, GpuStateStore, StateLost};
use silica_silo::{Silo, SiloConfig};

/// A counter whose GPU methods send more than one message per call.
#[grain]
pub trait Steps {
    /// Adds `amount` twice, `pause_ms` apart (host work between two messages of one call);
    /// returns the total.
    async fn add_twice(&mut self, amount: u32, pause_ms: u64) -> u64;
    /// Adds 1 again and again; answers only with an error.
    async fn add_forever(&mut self) -> u64;
}

/// The CPU implementation (registered beside the GPU variant; these tests never reach it).
pub struct StepsCpu(Totals);

impl Grain for StepsCpu {
    type Interface = StepsRef;
    fn create(_: &GrainContext) -> Self {
        StepsCpu(Totals::default())
    }
}

impl Steps for StepsCpu {
    async fn add_twice(&mut self, amount: u32, pause_ms: u64) -> u64 {
        self.0.total += 2 * u64::from(amount);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        self.0.total
    }
    async fn add_forever(&mut self) -> u64 {
        std::future::pending().await
    }
}

/// The GPU variant: the total lives on the device.
pub struct StepsGpu(GpuActivation<Accumulator>);

impl GpuGrain for StepsGpu {
    type Interface = StepsRef;
    type Kernel = Accumulator;
    fn create(activation: GpuActivation<Accumulator>) -> Self {
        StepsGpu(activation)
    }
}

impl Steps for StepsGpu {
    async fn add_twice(&mut self, amount: u32, pause_ms: u64) -> u64 {
        self.0.call(Add { amount }).await;
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        self.0.call(Add { amount }).await.total
    }
    async fn add_forever(&mut self) -> u64 {
        loop {
            self.0.call(Add { amount: 1 }).await;
        }
    }
}

/// A state store that is down: `save` panics (after counting the attempt).
#[derive(Clone, Default)]
struct PanickingSave(Arc<AtomicUsize>);

impl PanickingSave {
    fn attempts(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl GpuStateStore<Accumulator> for PanickingSave {
    fn load(&self, _: &GrainId) -> Totals {
        Totals::default()
    }
    fn save(&self, _: &GrainId, _: Result<Totals, StateLost>, _: DeactivationReason) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("the state store is down");
    }
}

/// A state store whose `load` panics while it is down.
#[derive(Clone, Default)]
struct FlakyLoad(Arc<AtomicBool>);

impl FlakyLoad {
    fn set_down(&self, down: bool) {
        self.0.store(down, Ordering::SeqCst);
    }
}

impl GpuStateStore<Accumulator> for FlakyLoad {
    fn load(&self, _: &GrainId) -> Totals {
        if self.0.load(Ordering::SeqCst) {
            panic!("the state store is down");
        }
        Totals::default()
    }
    fn save(&self, _: &GrainId, _: Result<Totals, StateLost>, _: DeactivationReason) {}
}

/// A silo on one CPU reference ring of 8 slots whose shutdown grace period is `grace`.
fn config(grace: Duration) -> SiloConfig {
    SiloConfig {
        shutdown_grace: grace,
        ..cpu_rings(1, 8)
    }
}

fn steps_silo(config: SiloConfig, store: impl GpuStateStore<Accumulator>) -> Silo {
    Silo::builder()
        .config(config)
        .register_gpu_variant_with_store::<StepsCpu, StepsGpu>(store)
        .start()
        .unwrap()
}

// Pins that a `GpuStateStore::save` that panics when an idle activation ends does not leave the
// grain unreachable: the next call starts a fresh activation (from `load`), within its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_save_leaves_the_grain_reachable() {
    let store = PanickingSave::default();
    let silo = Silo::builder()
        .config(cpu_rings(1, 8))
        .register_gpu_variant_with_store::<TallyCpu, TallyGpu>(store.clone())
        .start()
        .unwrap();
    let tally: TallyRef = silo.grain_factory().get("a");
    assert_eq!(tally.add(1).await.unwrap(), (1, 1));
    // TallyGpu goes idle after 100 ms.
    eventually("the idle activation's save to panic", || {
        store.attempts() >= 1
    })
    .await;
    let next = tokio::time::timeout(Duration::from_secs(5), tally.add(2)).await;
    assert_eq!(
        next.expect("the grain answers after a panicking save"),
        Ok((2, 1)),
        "a fresh activation, from the state `load` gives"
    );
    silo.shutdown().await;
}

// Pins that a `GpuStateStore::save` that panics at shutdown does not escape `Silo::shutdown`:
// shutdown returns, and calls are refused afterwards as after any shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_save_at_shutdown_does_not_escape_it() {
    let store = PanickingSave::default();
    let silo = steps_silo(config(Duration::from_secs(30)), store.clone());
    let steps: StepsRef = silo.grain_factory().get("a");
    assert_eq!(steps.add_twice(1, 0).await.unwrap(), 2);
    tokio::time::timeout(Duration::from_secs(10), silo.shutdown())
        .await
        .expect("shutdown returns");
    assert_eq!(store.attempts(), 1);
    assert_eq!(
        steps.add_twice(1, 0).await.unwrap_err(),
        CallError::ShuttingDown
    );
}

// Pins that shutdown lets a GPU call already running finish before its activation's slot is
// deactivated: its later messages still reach the device, and the saved state holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_gpu_call_finish() {
    let saved = Saved::default();
    let silo = steps_silo(config(Duration::from_secs(30)), saved.clone());
    let steps: StepsRef = silo.grain_factory().get("a");
    // Issued here (its first message is staged): the call is running when shutdown begins.
    let running = tokio::spawn(steps.add_twice(1, 50));
    silo.shutdown().await;
    assert_eq!(running.await.unwrap(), Ok(2));
    let (state, reason) = saved.get("a").expect("saved at shutdown");
    assert_eq!(reason, DeactivationReason::Shutdown);
    assert_eq!(state.unwrap().total, 2);
}

// Pins that a GPU call issued before shutdown but awaited only after it does not end as a device
// fault: shutdown waits for it up to the grace period, then it answers or is refused as shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_call_awaited_after_shutdown_is_no_gpu_fault() {
    let saved = Saved::default();
    let silo = Silo::builder()
        .config(config(Duration::from_millis(200)))
        .register_gpu_variant_with_store::<TallyCpu, TallyGpu>(saved.clone())
        .start()
        .unwrap();
    let tally: TallyRef = silo.grain_factory().get("a");
    tally.add(1).await.unwrap();
    let issued = tally.add(2);
    silo.shutdown().await;
    let result = issued.await;
    assert!(
        matches!(result, Ok((3, 2)) | Err(CallError::ShuttingDown)),
        "{result:?}"
    );
}

// Pins that shutdown stays bounded by its grace period: a GPU call still running when it runs
// out ends with `ShuttingDown` (its slot deactivated under it), never `GpuFault`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_call_running_past_the_grace_fails_with_shutting_down() {
    let saved = Saved::default();
    let silo = steps_silo(config(Duration::from_millis(200)), saved.clone());
    let steps: StepsRef = silo.grain_factory().get("a");
    let running = tokio::spawn(steps.add_forever());
    tokio::time::timeout(Duration::from_secs(10), silo.shutdown())
        .await
        .expect("shutdown returns after its grace period");
    let result = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the call ends")
        .unwrap();
    assert_eq!(result, Err(CallError::ShuttingDown));
    let (state, reason) = saved.get("a").expect("saved at shutdown");
    assert_eq!(reason, DeactivationReason::Shutdown);
    assert!(state.unwrap().total > 0);
}

/// A CPU grain whose calls take a while.
#[grain]
pub trait Slow {
    /// Waits `millis`, then counts the call.
    async fn hold(&mut self, millis: u64) -> u64;
}

/// The only implementation of `Slow`.
pub struct SlowGrain(u64);

impl Grain for SlowGrain {
    type Interface = SlowRef;
    fn create(_: &GrainContext) -> Self {
        SlowGrain(0)
    }
}

impl Slow for SlowGrain {
    async fn hold(&mut self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.0 += 1;
        self.0
    }
}

// Pins that a shutdown whose grace period aborts a CPU turn with a call queued behind it still
// returns, and refuses the queued call, when the silo also hosts a GPU variant (its shutdown
// awaits before the silo counts as stopped; the aborted activation must not start a successor
// for the queued call then, which nothing would ever deactivate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_abort_with_calls_queued_does_not_hang_shutdown() {
    let silo = Silo::builder()
        .config(config(Duration::from_millis(200)))
        .register::<SlowGrain>()
        .register_gpu_variant::<TallyCpu, TallyGpu>()
        .start()
        .unwrap();
    let tally: TallyRef = silo.grain_factory().get("t");
    assert_eq!(tally.add(1).await.unwrap(), (1, 1));
    let slow: SlowRef = silo.grain_factory().get("s");
    let running = tokio::spawn({
        let slow = slow.clone();
        async move { slow.hold(3_000).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = tokio::spawn(async move { slow.hold(3_000).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(10), silo.shutdown())
        .await
        .expect("shutdown returns after its grace period");
    for call in [running, queued] {
        let result = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the call ends")
            .unwrap();
        assert!(result.is_err(), "{result:?}");
    }
}

// Pins that activations idle when their device faulted re-activate on their next call, through
// a reference's memo and through a fresh reference alike: a fresh state from `load`, the lost
// one reported to `save` as `StateLost`, no `GpuFault` and no slot left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activations_idle_at_a_device_fault_reactivate_on_their_next_call() {
    let saved = Saved::default();
    let silo = steps_silo(config(Duration::from_secs(30)), saved.clone());
    let factory = silo.grain_factory();
    let a: StepsRef = factory.get("a");
    // Three calls: the reference remembers the activation from its second on.
    for total in [2, 4, 6] {
        assert_eq!(a.add_twice(1, 0).await, Ok(total));
    }
    let b: StepsRef = factory.get("b");
    assert_eq!(b.add_twice(1, 0).await, Ok(2));
    assert_eq!(
        silo.inject_gpu_fault(FaultInjection::DeviceError).await,
        1,
        "the CPU ring took the injection"
    );
    assert_eq!(a.add_twice(5, 0).await, Ok(10), "a fresh activation of a");
    let b: StepsRef = factory.get("b");
    assert_eq!(b.add_twice(5, 0).await, Ok(10), "a fresh activation of b");
    for key in ["a", "b"] {
        eventually("the lost state saved", || saved.get(key).is_some()).await;
        let (state, reason) = saved.get(key).unwrap();
        assert!(state.is_err(), "{key}: {state:?}");
        assert_eq!(reason, DeactivationReason::Requested);
    }
    eventually("the lost slots given back", || {
        silo.gpu_status()[0].devices[0].activations == 2
    })
    .await;
    silo.shutdown().await;
}

// Pins that a `GpuStateStore::load` that panics fails that call with `Rejected(ActivationFailed)`
// and the panic's message, leaves no activation or slot behind, and a later call activates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_load_fails_the_call_and_a_later_one_activates() {
    let store = FlakyLoad::default();
    store.set_down(true);
    let silo = steps_silo(config(Duration::from_secs(30)), store.clone());
    let steps: StepsRef = silo.grain_factory().get("a");
    let error = steps.add_twice(1, 0).await.unwrap_err();
    assert_eq!(
        error.reject_code(),
        Some(RejectCode::ActivationFailed),
        "{error}"
    );
    assert!(
        error.to_string().contains("the state store is down"),
        "{error}"
    );
    let status = &silo.gpu_status()[0];
    assert_eq!(status.activations, 0, "no catalog entry");
    assert_eq!(status.devices[0].activations, 0, "no slot taken");
    store.set_down(false);
    assert_eq!(steps.add_twice(1, 0).await, Ok(2));
    silo.shutdown().await;
}
