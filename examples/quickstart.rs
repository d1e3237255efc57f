//! Quickstart: an embedded silo with a counter, two bank accounts that call each other, and a
//! GPU grain.
//!
//! Run: `cargo run --release --example quickstart`
//!
//! It starts a silo in this process, calls grains through typed references, shows a grain's own
//! error, a call cycle failing fast, a sensor grain whose state lives in GPU memory (on CUDA,
//! else wgpu, else its CPU implementation; it says which), and a graceful shutdown that runs
//! every `on_deactivate`.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use silica::prelude::*;

/// A counter grain: the "hello world" of virtual actors.
#[grain]
pub trait Counter {
    /// Adds `n` and returns the new total.
    async fn add(&mut self, n: u64) -> u64;
    /// The current total.
    #[grain(read_only)]
    async fn get(&self) -> u64;
}

struct CounterGrain {
    total: u64,
}

impl Grain for CounterGrain {
    type Interface = CounterRef;
    fn create(_: &GrainContext) -> Self {
        CounterGrain { total: 0 }
    }
}

impl Counter for CounterGrain {
    async fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }
    async fn get(&self) -> u64 {
        self.total
    }
}

/// Why a bank operation failed: the account's own error, or the call's.
#[derive(Debug, Serialize, Deserialize)]
pub enum BankError {
    /// Not enough money.
    Insufficient {
        /// The balance at the time.
        balance: i64,
    },
    /// The call to another account failed.
    Call(String),
}

impl From<silica::CallError> for BankError {
    fn from(error: silica::CallError) -> Self {
        BankError::Call(error.to_string())
    }
}

/// A bank account; `transfer` calls the other account's `deposit`.
#[grain]
pub trait Account {
    /// Adds money and returns the balance.
    async fn deposit(&mut self, amount: i64) -> i64;
    /// Moves money to the account named `to`.
    async fn transfer(&mut self, to: String, amount: i64) -> Result<i64, BankError>;
    /// Asks `other` to transfer 0 back to this account: a call cycle on a non-reentrant grain.
    async fn echo_via(&mut self, other: String) -> Result<i64, BankError>;
    /// The balance.
    #[grain(read_only)]
    async fn balance(&self) -> i64;
}

struct AccountGrain {
    ctx: GrainContext,
    balance: i64,
}

impl AccountGrain {
    fn name(&self) -> String {
        match &self.ctx.id().key {
            silica::GrainKey::String(name) => name.to_string(),
            other => other.to_string(),
        }
    }
}

impl Grain for AccountGrain {
    type Interface = AccountRef;
    fn create(ctx: &GrainContext) -> Self {
        AccountGrain {
            ctx: ctx.clone(),
            balance: 0,
        }
    }
    async fn on_activate(&mut self) -> Result<(), GrainError> {
        println!("  [account {}] activated", self.name());
        Ok(())
    }
    async fn on_deactivate(&mut self, reason: DeactivationReason) {
        println!(
            "  [account {}] deactivated ({reason:?}) with balance {}",
            self.name(),
            self.balance
        );
    }
}

impl Account for AccountGrain {
    async fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }
    async fn transfer(&mut self, to: String, amount: i64) -> Result<i64, BankError> {
        if amount > self.balance {
            return Err(BankError::Insufficient {
                balance: self.balance,
            });
        }
        let target: AccountRef = self.ctx.grain_factory().get(to);
        target.deposit(amount).await?;
        self.balance -= amount;
        Ok(self.balance)
    }
    async fn echo_via(&mut self, other: String) -> Result<i64, BankError> {
        let other: AccountRef = self.ctx.grain_factory().get(other);
        other.transfer(self.name(), 0).await?
    }
    async fn balance(&self) -> i64 {
        self.balance
    }
}

/// A sensor keeps an exponential moving average of its readings. It has a CPU implementation
/// and a GPU variant; callers cannot tell them apart except by asking `served_by`.
#[grain]
pub trait Sensor {
    /// Records a reading; returns the new average.
    async fn record(&mut self, value: f32) -> f32;
    /// Which implementation answers.
    #[grain(read_only)]
    async fn served_by(&self) -> String;
}

/// The sensor's state, request and response, laid out identically in Rust, CUDA C and WGSL.
#[derive(Clone, Copy, Debug, Default, GpuType)]
#[repr(C)]
pub struct Average {
    /// The moving average.
    pub value: f32,
    /// Readings so far.
    pub readings: u32,
}

/// One reading.
#[derive(Clone, Copy, Debug, Default, GpuType)]
#[repr(C)]
pub struct Reading {
    /// The measured value.
    pub value: f32,
}

const SMOOTHING: f32 = 0.25;

/// The sensor's GPU kernel: one handler per backend, the Rust one being the reference.
pub struct SensorKernel;

impl Kernel for SensorKernel {
    type State = Average;
    type Request = Reading;
    type Response = Average;
    const NAME: &'static str = "sensor_average";
    const CUDA_HANDLER: &'static str = r#"
__device__ void silica_handle(Average* s, const Reading* r, Average* out) {
    s->value = s->readings == 0 ? r->value : s->value + 0.25f * (r->value - s->value);
    s->readings += 1;
    *out = *s;
}
"#;
    const WGSL_HANDLER: &'static str = r#"
fn silica_handle(s: ptr<function, Average>, r: Reading) -> Average {
    if ((*s).readings == 0u) { (*s).value = r.value; }
    else { (*s).value = (*s).value + 0.25 * (r.value - (*s).value); }
    (*s).readings = (*s).readings + 1u;
    return *s;
}
"#;
    fn handle(s: &mut Average, r: &Reading) -> Average {
        s.value = if s.readings == 0 {
            r.value
        } else {
            s.value + SMOOTHING * (r.value - s.value)
        };
        s.readings += 1;
        *s
    }
}

/// The CPU implementation: the kernel's reference handler on a grain's own state.
struct SensorGrain(Average);

impl Grain for SensorGrain {
    type Interface = SensorRef;
    fn create(_: &GrainContext) -> Self {
        SensorGrain(Average::default())
    }
}

impl Sensor for SensorGrain {
    async fn record(&mut self, value: f32) -> f32 {
        SensorKernel::handle(&mut self.0, &Reading { value }).value
    }
    async fn served_by(&self) -> String {
        "the CPU implementation".into()
    }
}

/// The GPU variant: its state is a slot in the kernel's state table on the device.
struct SensorGpu(GpuActivation<SensorKernel>);

impl GpuGrain for SensorGpu {
    type Interface = SensorRef;
    type Kernel = SensorKernel;
    fn create(activation: GpuActivation<SensorKernel>) -> Self {
        SensorGpu(activation)
    }
}

impl Sensor for SensorGpu {
    async fn record(&mut self, value: f32) -> f32 {
        self.0.call(Reading { value }).await.value
    }
    async fn served_by(&self) -> String {
        self.0.device_name().to_string()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let silo = Silo::builder()
        .register::<CounterGrain>()
        .register::<AccountGrain>()
        .register_gpu_variant::<SensorGrain, SensorGpu>()
        .start()?;
    let grains = silo.grain_factory();
    println!("silo started");

    let counter: CounterRef = grains.get("visits");
    let started = Instant::now();
    for _ in 0..100_000 {
        counter.add(1).await?;
    }
    let per_call = started.elapsed() / 100_000;
    println!(
        "counter {} = {} after 100000 calls ({per_call:?} per call)",
        counter.id(),
        counter.get().await?
    );

    let alice: AccountRef = grains.get("alice");
    let bob: AccountRef = grains.get("bob");
    alice.deposit(100).await?;
    println!(
        "alice -> bob 30: {:?}",
        alice.transfer("bob".into(), 30).await?
    );
    println!(
        "alice -> bob 500: {:?}",
        alice.transfer("bob".into(), 500).await?
    );
    println!(
        "balances: alice {}, bob {}",
        alice.balance().await?,
        bob.balance().await?
    );
    println!(
        "alice -> bob -> alice: {:?}",
        alice.echo_via("bob".into()).await?
    );

    for status in silo.gpu_status() {
        println!("GPU grain {}: {}", status.grain_type, status.served_by());
    }
    let sensor: SensorRef = grains.get("greenhouse");
    println!(
        "sensor {} is served by {}",
        sensor.id(),
        sensor.served_by().await?
    );
    for reading in [20.0, 22.0, 21.0, 30.0] {
        println!(
            "  reading {reading:>4}: average {:.2}",
            sensor.record(reading).await?
        );
    }
    let started = Instant::now();
    for _ in 0..10_000 {
        sensor.record(21.0).await?;
    }
    println!(
        "  10000 more readings: average {:.2} ({:?} per call)",
        sensor.record(21.0).await?,
        started.elapsed() / 10_000
    );

    println!("activations before shutdown: {}", silo.activation_count());
    silo.shutdown().await;
    println!("after shutdown, a call gives: {:?}", counter.get().await);
    Ok(())
}
