//! A grain interface with a CPU implementation and a GPU variant on the `Accumulator` kernel,
//! a stateless GPU worker on `VectorAdd`, and a state store that records what it saves; shared
//! by the GPU-variant tests (CPU reference rings here, wgpu and CUDA in their own files).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use silica_gpu::samples::{Accumulator, Add, Totals, VecPair, VectorAdd};
use silica_gpu::{BackendChoice, BackendKind};
use silica_grains::{DeactivationReason, Grain, GrainContext, GrainId, GrainOptions, grain};
use silica_silo::SiloConfig;
use silica_silo::gpu::{GpuActivation, GpuConfig, GpuDevices, GpuGrain, GpuStateStore, StateLost};

#[grain]
pub trait Tally {
    /// Adds `amount`; returns (total, messages handled by this activation).
    async fn add(&mut self, amount: u32) -> (u64, u32);
    /// Which implementation answers: "cpu", or the device's description.
    #[grain(read_only)]
    async fn served_by(&self) -> String;
}

pub struct TallyCpu {
    totals: Totals,
}

impl Grain for TallyCpu {
    type Interface = TallyRef;
    fn create(_: &GrainContext) -> Self {
        TallyCpu {
            totals: Totals::default(),
        }
    }
}

impl Tally for TallyCpu {
    async fn add(&mut self, amount: u32) -> (u64, u32) {
        self.totals.total += u64::from(amount);
        self.totals.count += 1;
        (self.totals.total, self.totals.count)
    }
    async fn served_by(&self) -> String {
        "cpu".into()
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
            idle_after: Duration::from_millis(100),
            ..GrainOptions::DEFAULT
        }
    }
}

impl Tally for TallyGpu {
    async fn add(&mut self, amount: u32) -> (u64, u32) {
        let totals = self.0.call(Add { amount }).await;
        (totals.total, totals.count)
    }
    async fn served_by(&self) -> String {
        self.0.device_name().to_string()
    }
}

/// One saved final state and why the activation ended.
pub type SavedState = (Result<Totals, StateLost>, DeactivationReason);

/// Saves final states by grain key; loads them back.
#[derive(Clone, Default)]
pub struct Saved(pub Arc<Mutex<HashMap<String, SavedState>>>);

impl Saved {
    pub fn get(&self, key: &str) -> Option<SavedState> {
        self.0.lock().unwrap().get(&format!("{key:?}")).cloned()
    }
}

impl GpuStateStore<Accumulator> for Saved {
    fn load(&self, grain: &GrainId) -> Totals {
        match self.0.lock().unwrap().get(&grain.key.to_string()) {
            Some((Ok(totals), _)) => *totals,
            _ => Totals::default(),
        }
    }
    fn save(&self, grain: &GrainId, state: Result<Totals, StateLost>, reason: DeactivationReason) {
        self.0
            .lock()
            .unwrap()
            .insert(grain.key.to_string(), (state, reason));
    }
}

/// A stateless interface: vector addition on whichever device is least loaded.
#[grain(stateless_worker = 2)]
pub trait Adder {
    async fn add(&self, a: [f32; 6], b: [f32; 6]) -> [f32; 6];
}

pub struct AdderCpu;

impl Grain for AdderCpu {
    type Interface = AdderRef;
    fn create(_: &GrainContext) -> Self {
        AdderCpu
    }
}

impl Adder for AdderCpu {
    async fn add(&self, a: [f32; 6], b: [f32; 6]) -> [f32; 6] {
        std::array::from_fn(|i| a[i] + b[i])
    }
}

pub struct AdderGpu(GpuActivation<VectorAdd>);

impl GpuGrain for AdderGpu {
    type Interface = AdderRef;
    type Kernel = VectorAdd;
    fn create(activation: GpuActivation<VectorAdd>) -> Self {
        AdderGpu(activation)
    }
}

impl Adder for AdderGpu {
    async fn add(&self, a: [f32; 6], b: [f32; 6]) -> [f32; 6] {
        self.0.call(VecPair { a, b }).await.v
    }
}

/// A silo config whose GPU variants run on `n` CPU reference rings of `slots` slots each.
pub fn cpu_rings(n: usize, slots: u32) -> SiloConfig {
    devices(
        (0..n)
            .map(|device| BackendChoice::Exact {
                kind: BackendKind::Cpu,
                device,
            })
            .collect(),
        slots,
    )
}

/// A silo config whose GPU variants run on the persistent CUDA ring of device 0, `slots` slots.
pub fn cuda_persistent(slots: u32) -> SiloConfig {
    devices(
        vec![BackendChoice::Exact {
            kind: BackendKind::CudaPersistent,
            device: 0,
        }],
        slots,
    )
}

/// A silo config whose GPU variants run on exactly `choices`.
pub fn devices(choices: Vec<BackendChoice>, slots: u32) -> SiloConfig {
    SiloConfig {
        gpu: GpuConfig {
            devices: GpuDevices::Exact(choices),
            slots_per_device: slots,
            ..GpuConfig::default()
        },
        ..SiloConfig::default()
    }
}

/// Polls `check` every millisecond until it holds, failing after 10 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A kernel whose CUDA and WGSL handlers do not compile.
pub struct Broken;

impl silica_gpu::Kernel for Broken {
    type State = Totals;
    type Request = Add;
    type Response = Totals;
    const NAME: &'static str = "broken";
    const CUDA_HANDLER: &'static str = r#"
__device__ void silica_handle(Totals* state, const Add* req, Totals* resp) {
    state->total += req->no_such_field;
}
"#;
    const WGSL_HANDLER: &'static str = r#"
fn silica_handle(state: ptr<function, Totals>, req: Add) -> Totals {
    return (*state).no_such_field;
}
"#;
    fn handle(state: &mut Totals, _: &Add) -> Totals {
        *state
    }
}

/// The `Tally` interface on the kernel that does not compile.
pub struct TallyBroken(GpuActivation<Broken>);

impl GpuGrain for TallyBroken {
    type Interface = TallyRef;
    type Kernel = Broken;
    fn create(activation: GpuActivation<Broken>) -> Self {
        TallyBroken(activation)
    }
}

impl Tally for TallyBroken {
    async fn add(&mut self, amount: u32) -> (u64, u32) {
        let totals = self.0.call(Add { amount }).await;
        (totals.total, totals.count)
    }
    async fn served_by(&self) -> String {
        self.0.device_name().to_string()
    }
}

/// An interface over the `Faulty` sample kernel: op 0 answers `arg`, op 1 stalls for `arg` ms
/// on CUDA, op 2 writes to an illegal address on CUDA.
#[grain]
pub trait Hazard {
    async fn run(&mut self, op: u32, arg: u32) -> u32;
    #[grain(read_only)]
    async fn served_by(&self) -> String;
}

pub struct HazardCpu;

impl Grain for HazardCpu {
    type Interface = HazardRef;
    fn create(_: &GrainContext) -> Self {
        HazardCpu
    }
}

impl Hazard for HazardCpu {
    async fn run(&mut self, _op: u32, arg: u32) -> u32 {
        arg
    }
    async fn served_by(&self) -> String {
        "cpu".into()
    }
}

pub struct HazardGpu(GpuActivation<silica_gpu::samples::Faulty>);

impl GpuGrain for HazardGpu {
    type Interface = HazardRef;
    type Kernel = silica_gpu::samples::Faulty;
    fn create(activation: GpuActivation<silica_gpu::samples::Faulty>) -> Self {
        HazardGpu(activation)
    }
}

impl Hazard for HazardGpu {
    async fn run(&mut self, op: u32, arg: u32) -> u32 {
        let command = silica_gpu::samples::Command { op, arg };
        self.0.call(command).await.amount
    }
    async fn served_by(&self) -> String {
        self.0.device_name().to_string()
    }
}
