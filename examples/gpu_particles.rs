//! A particle simulation: every particle is a GPU grain whose state lives in GPU memory, driven
//! by CPU grains (swarms) that step their particles and aggregate what they see.
//!
//! Run: `cargo run --release --example gpu_particles` (optionally `-- SWARMS PARTICLES TICKS`,
//! default 16 swarms x 1024 particles x 100 ticks).
//!
//! On a machine with a CUDA device the particles live in a persistent ring kernel's state table;
//! with wgpu they run as compute dispatches; with neither, their CPU implementation runs the
//! same physics. Each particle starts from a state derived from its key (the `Spawner` state
//! store) and hands its final state back at shutdown.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use silica::grains::GrainKey;
use silica::prelude::*;
use silica::{GpuStateStore, GrainId, StateLost};

/// One particle: a position and velocity in a 2-D box with a floor.
#[grain(idle_after_secs = 3600)]
pub trait Particle {
    /// Advances the particle by `dt` seconds; returns where it is and how fast it moves.
    async fn step(&mut self, dt: f32) -> Sample;
}

/// What a step reports.
#[derive(Clone, Copy, Debug, Default, GpuType, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct Sample {
    /// Height above the floor.
    pub height: f32,
    /// Speed.
    pub speed: f32,
    /// Bounces off the floor so far.
    pub bounces: u32,
    /// Steps so far.
    pub steps: u32,
}

/// A particle's state on the device.
#[derive(Clone, Copy, Debug, Default, GpuType)]
#[repr(C)]
pub struct Body {
    /// Position (x, height).
    pub pos: [f32; 2],
    /// Velocity.
    pub vel: [f32; 2],
    /// Bounces so far.
    pub bounces: u32,
    /// Steps so far.
    pub steps: u32,
}

/// One step's parameters.
#[derive(Clone, Copy, Debug, Default, GpuType)]
#[repr(C)]
pub struct Tick {
    /// Seconds to advance.
    pub dt: f32,
}

const GRAVITY: f32 = -9.81;
/// Share of the speed kept when bouncing off the floor.
const RESTITUTION: f32 = 0.8;

/// The physics, in CUDA C, WGSL and Rust (the reference the others are tested against).
pub struct Physics;

impl Kernel for Physics {
    type State = Body;
    type Request = Tick;
    type Response = Sample;
    const NAME: &'static str = "particle_physics";
    const CUDA_HANDLER: &'static str = r#"
__device__ void silica_handle(Body* b, const Tick* t, Sample* s) {
    b->vel[1] = b->vel[1] + (-9.81f) * t->dt;
    b->pos[0] = b->pos[0] + b->vel[0] * t->dt;
    b->pos[1] = b->pos[1] + b->vel[1] * t->dt;
    if (b->pos[1] < 0.0f) {
        b->pos[1] = -b->pos[1];
        b->vel[1] = -b->vel[1] * 0.8f;
        b->bounces += 1;
    }
    b->steps += 1;
    s->height = b->pos[1];
    s->speed = sqrtf(b->vel[0] * b->vel[0] + b->vel[1] * b->vel[1]);
    s->bounces = b->bounces;
    s->steps = b->steps;
}
"#;
    const WGSL_HANDLER: &'static str = r#"
fn silica_handle(b: ptr<function, Body>, t: Tick) -> Sample {
    (*b).vel[1] = (*b).vel[1] + (-9.81) * t.dt;
    (*b).pos[0] = (*b).pos[0] + (*b).vel[0] * t.dt;
    (*b).pos[1] = (*b).pos[1] + (*b).vel[1] * t.dt;
    if ((*b).pos[1] < 0.0) {
        (*b).pos[1] = -(*b).pos[1];
        (*b).vel[1] = -(*b).vel[1] * 0.8;
        (*b).bounces = (*b).bounces + 1u;
    }
    (*b).steps = (*b).steps + 1u;
    var s: Sample;
    s.height = (*b).pos[1];
    s.speed = sqrt((*b).vel[0] * (*b).vel[0] + (*b).vel[1] * (*b).vel[1]);
    s.bounces = (*b).bounces;
    s.steps = (*b).steps;
    return s;
}
"#;
    fn handle(b: &mut Body, t: &Tick) -> Sample {
        b.vel[1] += GRAVITY * t.dt;
        b.pos[0] += b.vel[0] * t.dt;
        b.pos[1] += b.vel[1] * t.dt;
        if b.pos[1] < 0.0 {
            b.pos[1] = -b.pos[1];
            b.vel[1] = -b.vel[1] * RESTITUTION;
            b.bounces += 1;
        }
        b.steps += 1;
        Sample {
            height: b.pos[1],
            speed: (b.vel[0] * b.vel[0] + b.vel[1] * b.vel[1]).sqrt(),
            bounces: b.bounces,
            steps: b.steps,
        }
    }
}

/// A particle's starting state, a pure function of its key, so the CPU implementation and the
/// GPU variant start alike.
fn spawn(id: &GrainId) -> Body {
    let n = match &id.key {
        GrainKey::Integer(n) => *n as u64,
        _ => 0,
    };
    let jitter = |k: u64| ((n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> k) % 1000) as f32 / 1000.0;
    Body {
        pos: [jitter(7) * 100.0, 5.0 + jitter(17) * 20.0],
        vel: [jitter(27) * 4.0 - 2.0, jitter(37) * 4.0],
        ..Body::default()
    }
}

/// The CPU implementation: the reference physics on a grain's own state.
struct ParticleCpu(Body);

impl Grain for ParticleCpu {
    type Interface = ParticleRef;
    fn create(ctx: &GrainContext) -> Self {
        ParticleCpu(spawn(ctx.id()))
    }
}

impl Particle for ParticleCpu {
    async fn step(&mut self, dt: f32) -> Sample {
        Physics::handle(&mut self.0, &Tick { dt })
    }
}

/// The GPU variant: one message to the particle's slot in the kernel's state table.
struct ParticleGpu(GpuActivation<Physics>);

impl GpuGrain for ParticleGpu {
    type Interface = ParticleRef;
    type Kernel = Physics;
    fn create(activation: GpuActivation<Physics>) -> Self {
        ParticleGpu(activation)
    }
}

impl Particle for ParticleGpu {
    async fn step(&mut self, dt: f32) -> Sample {
        self.0.call(Tick { dt }).await
    }
}

/// Gives GPU particles their starting state and counts the final states handed back.
#[derive(Default)]
struct Spawner {
    returned: AtomicU64,
    highest: Mutex<f32>,
}

impl GpuStateStore<Physics> for &'static Spawner {
    fn load(&self, grain: &GrainId) -> Body {
        spawn(grain)
    }
    fn save(&self, _: &GrainId, state: Result<Body, StateLost>, _: DeactivationReason) {
        if let Ok(body) = state {
            self.returned.fetch_add(1, Ordering::Relaxed);
            let mut highest = self.highest.lock().unwrap_or_else(|e| e.into_inner());
            *highest = highest.max(body.pos[1]);
        }
    }
}

/// What a swarm saw in one tick.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Mean height of its particles.
    pub mean_height: f32,
    /// The fastest particle's speed.
    pub max_speed: f32,
    /// Bounces of all its particles so far.
    pub bounces: u64,
}

/// A swarm: a CPU grain that steps its particles (grains `first..first + count`) each tick.
#[grain(idle_after_secs = 3600)]
pub trait Swarm {
    /// Steps every particle by `dt` at once and summarizes them.
    async fn tick(&mut self, first: i64, count: i64, dt: f32) -> Result<Summary, String>;
}

struct SwarmGrain {
    ctx: GrainContext,
}

impl Grain for SwarmGrain {
    type Interface = SwarmRef;
    fn create(ctx: &GrainContext) -> Self {
        SwarmGrain { ctx: ctx.clone() }
    }
}

impl Swarm for SwarmGrain {
    async fn tick(&mut self, first: i64, count: i64, dt: f32) -> Result<Summary, String> {
        let factory = self.ctx.grain_factory();
        let steps: Vec<_> = (first..first + count)
            .map(|i| factory.get::<ParticleRef>(i).step(dt))
            .collect();
        let mut summary = Summary::default();
        for sample in futures_util::future::join_all(steps).await {
            let sample = sample.map_err(|e| e.to_string())?;
            summary.mean_height += sample.height / count as f32;
            summary.max_speed = summary.max_speed.max(sample.speed);
            summary.bounces += u64::from(sample.bounces);
        }
        Ok(summary)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<i64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (swarms, per_swarm, ticks) = match args[..] {
        [s, p, t] => (s, p, t),
        _ => (16, 1024, 100),
    };
    let spawner: &'static Spawner = Box::leak(Box::default());
    let silo = Silo::builder()
        .register::<SwarmGrain>()
        .register_gpu_variant_with_store::<ParticleCpu, ParticleGpu>(spawner)
        .start()?;
    for status in silo.gpu_status() {
        println!("particles are served by {}", status.served_by());
    }
    let factory = silo.grain_factory();
    let dt = 1.0 / 60.0;
    let started = Instant::now();
    let mut last = Vec::new();
    for tick in 0..ticks {
        let summaries: Vec<_> = (0..swarms)
            .map(|s| {
                factory
                    .get::<SwarmRef>(s)
                    .tick(s * per_swarm, per_swarm, dt)
            })
            .collect();
        last = futures_util::future::join_all(summaries).await;
        if tick % 25 == 0 || tick == ticks - 1 {
            let first = last[0].clone()??;
            println!(
                "tick {tick:>4}: swarm 0 mean height {:6.2} m, max speed {:5.2} m/s, {} bounces",
                first.mean_height, first.max_speed, first.bounces
            );
        }
    }
    let elapsed = started.elapsed();
    let steps = swarms * per_swarm * ticks;
    let bounces: u64 = last
        .into_iter()
        .map(|s| s.map(|s| s.map_or(0, |s| s.bounces)).unwrap_or(0))
        .sum();
    println!(
        "{steps} particle steps in {elapsed:.2?} ({:.2} M steps/s), {bounces} bounces in all",
        steps as f64 / elapsed.as_secs_f64() / 1e6
    );
    let on_device: usize = silo.gpu_status().iter().map(|s| s.activations).sum();
    println!(
        "GPU activations: {on_device}; CPU activations: {}",
        silo.activation_count()
    );
    silo.shutdown().await;
    println!(
        "after shutdown: {} particle states handed back from the device, highest at {:.2} m",
        spawner.returned.load(Ordering::Relaxed),
        spawner.highest.lock().unwrap_or_else(|e| e.into_inner())
    );
    Ok(())
}
