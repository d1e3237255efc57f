//! Sample kernels: the ones the tests compare across backends and the benchmarks run.

use crate::kernel::Kernel;
use silica_grains_macros::GpuType;

/// No state.
#[derive(Clone, Copy, Debug, Default, PartialEq, GpuType)]
#[repr(C)]
pub struct Empty {
    /// Unused.
    pub unused: u32,
}

/// Two six-float vectors (with the 16-byte header, a 64-byte ring entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, GpuType)]
#[repr(C)]
pub struct VecPair {
    /// Left operand.
    pub a: [f32; 6],
    /// Right operand.
    pub b: [f32; 6],
}

/// A six-float vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, GpuType)]
#[repr(C)]
pub struct Vec6 {
    /// Components.
    pub v: [f32; 6],
}

/// Stateless vector addition.
pub struct VectorAdd;

impl Kernel for VectorAdd {
    type State = Empty;
    type Request = VecPair;
    type Response = Vec6;
    const NAME: &'static str = "vector_add";
    const CUDA_HANDLER: &'static str = r#"
__device__ void silica_handle(Empty* state, const VecPair* req, Vec6* resp) {
    for (int i = 0; i < 6; ++i) resp->v[i] = req->a[i] + req->b[i];
}
"#;
    const WGSL_HANDLER: &'static str = r#"
fn silica_handle(state: ptr<function, Empty>, req: VecPair) -> Vec6 {
    var out: Vec6;
    for (var i = 0; i < 6; i++) { out.v[i] = req.a[i] + req.b[i]; }
    return out;
}
"#;
    fn handle(_: &mut Empty, req: &VecPair) -> Vec6 {
        Vec6 {
            v: std::array::from_fn(|i| req.a[i] + req.b[i]),
        }
    }
}

/// An accumulator's state: a 64-bit total and a count.
#[derive(Clone, Copy, Debug, Default, PartialEq, GpuType)]
#[repr(C)]
pub struct Totals {
    /// Sum of everything added.
    pub total: u64,
    /// Messages handled.
    pub count: u32,
    /// Explicit padding.
    pub pad: u32,
}

/// An amount to add.
#[derive(Clone, Copy, Debug, Default, PartialEq, GpuType)]
#[repr(C)]
pub struct Add {
    /// The amount.
    pub amount: u32,
}

/// Stateful accumulator: adds to a 64-bit total, answers the new totals.
pub struct Accumulator;

impl Kernel for Accumulator {
    type State = Totals;
    type Request = Add;
    type Response = Totals;
    const NAME: &'static str = "accumulator";
    const CUDA_HANDLER: &'static str = r#"
__device__ void silica_handle(Totals* state, const Add* req, Totals* resp) {
    state->total += req->amount;
    state->count += 1;
    *resp = *state;
}
"#;
    const WGSL_HANDLER: &'static str = r#"
fn silica_handle(state: ptr<function, Totals>, req: Add) -> Totals {
    let lo = (*state).total.x + req.amount;
    let carry = select(0u, 1u, lo < req.amount);
    (*state).total = vec2<u32>(lo, (*state).total.y + carry);
    (*state).count = (*state).count + 1u;
    return *state;
}
"#;
    fn handle(state: &mut Totals, req: &Add) -> Totals {
        state.total = state.total.wrapping_add(u64::from(req.amount));
        state.count = state.count.wrapping_add(1);
        *state
    }
}

/// A particle's position and velocity.
#[derive(Clone, Copy, Debug, Default, PartialEq, GpuType)]
#[repr(C)]
pub struct Body {
    /// Position.
    pub pos: [f32; 2],
    /// Velocity.
    pub vel: [f32; 2],
}

/// One integration step's parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, GpuType)]
#[repr(C)]
pub struct Step {
    /// Time step.
    pub dt: f32,
    /// Gravity.
    pub gravity: [f32; 2],
    /// Drag per unit time.
    pub drag: f32,
}

/// The particle after a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, GpuType)]
#[repr(C)]
pub struct StepResult {
    /// New position.
    pub pos: [f32; 2],
    /// New speed.
    pub speed: f32,
    /// Explicit padding.
    pub pad: f32,
}

/// Particle step with f32 math (semi-implicit Euler with drag).
pub struct ParticleStep;

impl Kernel for ParticleStep {
    type State = Body;
    type Request = Step;
    type Response = StepResult;
    const NAME: &'static str = "particle_step";
    const CUDA_HANDLER: &'static str = r#"
__device__ void silica_handle(Body* b, const Step* s, StepResult* r) {
    float k = 1.0f - s->drag * s->dt;
    for (int i = 0; i < 2; ++i) {
        b->vel[i] = __fmul_rn(__fadd_rn(b->vel[i], __fmul_rn(s->gravity[i], s->dt)), k);
        b->pos[i] = __fadd_rn(b->pos[i], __fmul_rn(b->vel[i], s->dt));
        r->pos[i] = b->pos[i];
    }
    r->speed = sqrtf(__fadd_rn(__fmul_rn(b->vel[0], b->vel[0]), __fmul_rn(b->vel[1], b->vel[1])));
}
"#;
    const WGSL_HANDLER: &'static str = r#"
fn silica_handle(b: ptr<function, Body>, s: Step) -> StepResult {
    var r: StepResult;
    let k = 1.0 - s.drag * s.dt;
    for (var i = 0; i < 2; i++) {
        (*b).vel[i] = ((*b).vel[i] + s.gravity[i] * s.dt) * k;
        (*b).pos[i] = (*b).pos[i] + (*b).vel[i] * s.dt;
        r.pos[i] = (*b).pos[i];
    }
    r.speed = sqrt((*b).vel[0] * (*b).vel[0] + (*b).vel[1] * (*b).vel[1]);
    return r;
}
"#;
    fn handle(b: &mut Body, s: &Step) -> StepResult {
        let k = 1.0 - s.drag * s.dt;
        let mut r = StepResult::default();
        for i in 0..2 {
            b.vel[i] = (b.vel[i] + s.gravity[i] * s.dt) * k;
            b.pos[i] += b.vel[i] * s.dt;
            r.pos[i] = b.pos[i];
        }
        r.speed = (b.vel[0] * b.vel[0] + b.vel[1] * b.vel[1]).sqrt();
        r
    }
}

/// A test command: `op` 0 echoes `arg`, 1 spins `arg` milliseconds on the device (a stall),
/// 2 writes out of bounds on the device (a CUDA fault). CPU and WGSL only echo.
#[derive(Clone, Copy, Debug, Default, PartialEq, GpuType)]
#[repr(C)]
pub struct Command {
    /// What to do.
    pub op: u32,
    /// Its argument.
    pub arg: u32,
}

/// A kernel that misbehaves on command, for fault tests.
pub struct Faulty;

impl Kernel for Faulty {
    type State = Add;
    type Request = Command;
    type Response = Add;
    const NAME: &'static str = "faulty";
    const CUDA_HANDLER: &'static str = r#"
__device__ void silica_handle(Add* state, const Command* c, Add* r) {
    if (c->op == 1) {
        unsigned long long t0 = silica_globaltimer();
        while (silica_globaltimer() - t0 < (unsigned long long)c->arg * 1000000ull) { __nanosleep(1000); }
    } else if (c->op == 2) {
        // The top page of the 64-bit space: outside any GPU virtual address range, so the
        // write faults wherever the driver placed this process's allocations (2^44, used
        // before, was mapped on one H200 machine and the write went through).
        volatile unsigned int* wild = (volatile unsigned int*)0xfffffffffffff000ull;
        wild[c->arg] = 1u;
    }
    state->amount += 1;
    r->amount = c->arg;
}
"#;
    const WGSL_HANDLER: &'static str = r#"
fn silica_handle(state: ptr<function, Add>, c: Command) -> Add {
    (*state).amount = (*state).amount + 1u;
    return Add(c.arg);
}
"#;
    fn handle(state: &mut Add, c: &Command) -> Add {
        state.amount += 1;
        Add { amount: c.arg }
    }
}
