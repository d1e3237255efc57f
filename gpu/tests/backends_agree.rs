//! Every backend computes what the CPU reference computes, on fresh random inputs, for the
//! three sample kernels (vector add, stateful accumulator, f32 particle step).

mod common;
use common::{Rng, block_on, config};
use silica_gpu::samples::*;
use silica_gpu::{BackendKind, HlcStamp, Kernel, Ring, SlotId};

/// Runs `msgs` (slot index, request) on `kind` and returns responses and final states.
fn run<K: Kernel>(
    kind: BackendKind,
    init: &[K::State],
    msgs: &[(usize, K::Request)],
) -> (Vec<K::Response>, Vec<K::State>) {
    let ring = Ring::<K>::start(config(kind)).expect("start ring");
    let slots: Vec<SlotId> = init.iter().map(|s| ring.activate(s).unwrap()).collect();
    let mut out = Vec::new();
    for chunk in msgs.chunks(200) {
        let items = chunk.iter().map(|(s, r)| (slots[*s], *r)).collect();
        out.extend(
            block_on(ring.submit_batch(items, HlcStamp::default()))
                .unwrap()
                .into_iter()
                .map(|r| r.unwrap().response),
        );
    }
    let states = slots
        .iter()
        .map(|s| block_on(ring.deactivate(*s)).unwrap())
        .collect();
    (out, states)
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0)
}

fn vector_add(kind: BackendKind) {
    let mut rng = Rng::fresh("vector_add");
    let msgs: Vec<_> = (0..1000)
        .map(|_| {
            (
                0,
                VecPair {
                    a: std::array::from_fn(|_| rng.f32()),
                    b: std::array::from_fn(|_| rng.f32()),
                },
            )
        })
        .collect();
    let (got, _) = run::<VectorAdd>(kind, &[Empty::default()], &msgs);
    let (want, _) = run::<VectorAdd>(BackendKind::Cpu, &[Empty::default()], &msgs);
    assert_eq!(got, want);
}

fn accumulator(kind: BackendKind) {
    let mut rng = Rng::fresh("accumulator");
    let init: Vec<_> = (0..32)
        .map(|_| Totals {
            total: rng.next() >> 8,
            count: rng.below(100),
            pad: 0,
        })
        .collect();
    let msgs: Vec<_> = (0..3000)
        .map(|_| {
            (
                rng.below(32) as usize,
                Add {
                    amount: rng.next() as u32,
                },
            )
        })
        .collect();
    let got = run::<Accumulator>(kind, &init, &msgs);
    let want = run::<Accumulator>(BackendKind::Cpu, &init, &msgs);
    assert_eq!(got, want);
}

fn particles(kind: BackendKind) {
    let mut rng = Rng::fresh("particles");
    let init: Vec<_> = (0..64)
        .map(|_| Body {
            pos: [rng.f32(), rng.f32()],
            vel: [rng.f32(), rng.f32()],
        })
        .collect();
    let msgs: Vec<_> = (0..2000)
        .map(|_| {
            (
                rng.below(64) as usize,
                Step {
                    dt: 0.01 + rng.f32().abs() * 0.01,
                    gravity: [rng.f32(), -9.8],
                    drag: rng.f32().abs(),
                },
            )
        })
        .collect();
    let (got, got_states) = run::<ParticleStep>(kind, &init, &msgs);
    let (want, want_states) = run::<ParticleStep>(BackendKind::Cpu, &init, &msgs);
    for (g, w) in got.iter().zip(&want) {
        assert!(
            close(g.pos[0], w.pos[0]) && close(g.pos[1], w.pos[1]) && close(g.speed, w.speed),
            "{g:?} vs {w:?}"
        );
    }
    for (g, w) in got_states.iter().zip(&want_states) {
        assert!(
            close(g.pos[0], w.pos[0]) && close(g.vel[1], w.vel[1]),
            "{g:?} vs {w:?}"
        );
    }
}

macro_rules! agree {
    ($modname:ident, $kind:expr $(, $ignore:meta)?) => {
        mod $modname {
            use super::*;
            // Pins: vector add matches the CPU reference exactly.
            #[test] $(#[$ignore])? fn vector_add_matches_cpu() { if common::skip($kind) { return; } vector_add($kind) }
            // Pins: the stateful accumulator (64-bit totals, per-slot order) matches exactly.
            #[test] $(#[$ignore])? fn accumulator_matches_cpu() { if common::skip($kind) { return; } accumulator($kind) }
            // Pins: the f32 particle step matches within 1e-5 relative.
            #[test] $(#[$ignore])? fn particles_match_cpu() { if common::skip($kind) { return; } particles($kind) }
        }
    };
}

agree!(cpu, BackendKind::Cpu);
#[cfg(feature = "wgpu")]
agree!(wgpu, BackendKind::Wgpu);
#[cfg(feature = "cuda")]
agree!(
    cuda_persistent,
    BackendKind::CudaPersistent,
    ignore = "needs a CUDA GPU"
);
#[cfg(feature = "cuda")]
agree!(
    cuda_batch,
    BackendKind::CudaBatch,
    ignore = "needs a CUDA GPU"
);

/// A kernel whose WGSL handler does not type-check.
#[cfg(feature = "wgpu")]
struct BadWgsl;

#[cfg(feature = "wgpu")]
impl Kernel for BadWgsl {
    type State = Totals;
    type Request = Add;
    type Response = Totals;
    const NAME: &'static str = "bad_wgsl";
    const CUDA_HANDLER: &'static str = "";
    const WGSL_HANDLER: &'static str = "fn silica_handle(state: ptr<function, Totals>, req: Add) -> Totals {\n    let x: f32 = req.amount;\n    return *state;\n}\n";
    fn handle(state: &mut Totals, _: &Add) -> Totals {
        *state
    }
}

// Pins: invalid WGSL is a typed compile error carrying naga's message and the numbered
// generated source (on any machine: validation runs before an adapter is needed).
#[cfg(feature = "wgpu")]
#[test]
fn wgsl_error_is_typed() {
    let err = Ring::<BadWgsl>::start(config(BackendKind::Wgpu))
        .err()
        .expect("invalid WGSL must not start");
    match err {
        silica_gpu::RingError::Compile(silica_gpu::CompileError::Wgsl {
            kernel,
            message,
            numbered_source,
        }) => {
            assert_eq!(kernel, "bad_wgsl");
            assert!(message.contains("f32"), "{message}");
            assert!(
                numbered_source.contains("| fn silica_handle"),
                "{numbered_source}"
            );
        }
        other => panic!("expected a WGSL compile error, got {other}"),
    }
}
