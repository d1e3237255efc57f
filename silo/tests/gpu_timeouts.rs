//! Call timeouts on a GPU variant and on its CPU implementation: a call that outlives its
//! timeout ends with `Timeout` on either path (the silo's deadline wheel, not the method, ends
//! it), and the grain keeps serving.

mod gpu_support;

use std::time::Duration;

use gpu_support::*;
use silica_gpu::samples::{Accumulator, Add, Totals};
use silica_grains::{CallError, Grain, GrainContext, GrainReference, grain};
use silica_silo::gpu::{GpuActivation, GpuConfig, GpuDevices, GpuGrain};
use silica_silo::{Silo, SiloConfig};

/// A counter whose method can be made to outlast its call's timeout.
#[grain]
pub trait Meter {
    /// Adds `amount`, then waits `linger_ms` before answering with the total.
    async fn add_then_linger(&mut self, amount: u32, linger_ms: u64) -> u64;
    /// Which implementation answers: "cpu", or the device's description.
    #[grain(read_only)]
    async fn served_by(&self) -> String;
}

/// The CPU implementation.
pub struct MeterCpu(Totals);

impl Grain for MeterCpu {
    type Interface = MeterRef;
    fn create(_: &GrainContext) -> Self {
        MeterCpu(Totals::default())
    }
}

impl Meter for MeterCpu {
    async fn add_then_linger(&mut self, amount: u32, linger_ms: u64) -> u64 {
        self.0.total += u64::from(amount);
        tokio::time::sleep(Duration::from_millis(linger_ms)).await;
        self.0.total
    }
    async fn served_by(&self) -> String {
        "cpu".into()
    }
}

/// The GPU variant: the sum lives on the device.
pub struct MeterGpu(GpuActivation<Accumulator>);

impl GpuGrain for MeterGpu {
    type Interface = MeterRef;
    type Kernel = Accumulator;
    fn create(activation: GpuActivation<Accumulator>) -> Self {
        MeterGpu(activation)
    }
}

impl Meter for MeterGpu {
    async fn add_then_linger(&mut self, amount: u32, linger_ms: u64) -> u64 {
        let totals = self.0.call(Add { amount }).await;
        tokio::time::sleep(Duration::from_millis(linger_ms)).await;
        totals.total
    }
    async fn served_by(&self) -> String {
        self.0.device_name().to_string()
    }
}

fn meter_silo(config: SiloConfig) -> Silo {
    Silo::builder()
        .config(config)
        .register_gpu_variant::<MeterCpu, MeterGpu>()
        .start()
        .unwrap()
}

/// Calls `meter` with a 50 ms timeout on a method that lingers for half a second, expecting
/// `Timeout`; then checks that the grain still answers (a CPU turn that already runs finishes
/// first).
async fn lingering_call_times_out(meter: MeterRef) {
    let timeout = Duration::from_millis(50);
    let error = meter
        .with_timeout(timeout)
        .add_then_linger(1, 500)
        .await
        .unwrap_err();
    assert_eq!(error, CallError::Timeout(timeout));
    assert_eq!(meter.add_then_linger(2, 0).await.unwrap(), 3);
}

// Pins that a GPU call whose method outlives the call's timeout ends with Timeout, while other
// calls on the same thread come and go, and the activation keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_call_past_its_timeout_ends_with_timeout() {
    let silo = meter_silo(cpu_rings(1, 64));
    let factory = silo.grain_factory();
    let meter: MeterRef = factory.get("gpu");
    assert_eq!(meter.served_by().await.unwrap(), "CPU reference ring");
    let busy: MeterRef = factory.get("busy");
    let (_, sums) = tokio::join!(lingering_call_times_out(meter), async {
        let mut last = 0;
        for _ in 0..100 {
            last = busy.add_then_linger(1, 0).await.unwrap();
        }
        last
    });
    assert_eq!(sums, 100);
    silo.shutdown().await;
}

// Pins the same for the CPU implementation serving the interface when there is no device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_call_past_its_timeout_ends_with_timeout() {
    let silo = meter_silo(SiloConfig {
        gpu: GpuConfig {
            devices: GpuDevices::Off,
            ..GpuConfig::default()
        },
        ..SiloConfig::default()
    });
    let meter: MeterRef = silo.grain_factory().get("cpu");
    assert_eq!(meter.served_by().await.unwrap(), "cpu");
    lingering_call_times_out(meter).await;
    silo.shutdown().await;
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::time::{Duration, Instant};

    use silica_grains::{CallError, GrainReference};
    use silica_silo::Silo;

    use super::gpu_support::*;

    // Pins the timeout of a GPU call stuck on the persistent ring (its kernel stalls for 400 ms):
    // the silo's deadline wheel ends it on time, not its late reply, and the grain answers again
    // once the stall is over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a CUDA GPU"]
    async fn gpu_call_stuck_on_its_ring_ends_with_timeout() {
        let silo = Silo::builder()
            .config(cuda_persistent(16))
            .register_gpu_variant::<HazardCpu, HazardGpu>()
            .start()
            .unwrap();
        let hazard: HazardRef = silo.grain_factory().get("slow");
        assert!(hazard.served_by().await.unwrap().starts_with("CUDA "));
        let timeout = Duration::from_millis(50);
        let start = Instant::now();
        let error = hazard.with_timeout(timeout).run(1, 400).await.unwrap_err();
        let waited = start.elapsed();
        assert_eq!(error, CallError::Timeout(timeout));
        assert!(waited >= timeout, "timed out early: {waited:?}");
        assert!(
            waited < Duration::from_millis(250),
            "timed out {waited:?} after the call, its kernel stalls 400 ms"
        );
        assert_eq!(hazard.run(0, 7).await.unwrap(), 7);
        silo.shutdown().await;
    }
}
