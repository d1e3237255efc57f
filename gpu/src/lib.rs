//! Silica's GPU ring kernels: GPU grain activations as state slots on a device, served by a
//! ring kernel, behind one backend trait.
//!
//! A [`Kernel`] is a state type, a request type and a response type (all `GpuType`s) and one
//! handler per backend: CUDA C, WGSL and a Rust function that is the reference. A [`Ring`] runs
//! one kernel on one device: [`Ring::activate`] puts an initial state in a slot,
//! [`Ring::submit`] sends a message to a slot from any thread and resolves with the response and
//! its HLC stamp, [`Ring::deactivate`] reads the final state back. Messages to one slot run one
//! at a time, in submission order. See `docs/gpu.md` for the ring protocol and faults.
//!
//! # Layout
//! - `kernel`: the [`Kernel`] trait.
//! - `ring`: [`Ring`], its config, health and futures.
//! - `backend`: the [`RingBackend`] trait every backend implements.
//! - `queue`: the lock-free H2K/K2H ring in host memory; `wire`: its entry encoding.
//! - `reply`: reply cells, spin-then-wake.
//! - `stage`: coalesced submission ([`Ring::stage`]): one run of entries per thread's burst.
//! - `slots`: the state-slot table.
//! - `dispatch`: the batch driver of the batch backends.
//! - `cpu`: the CPU reference backend (always on).
//! - `cuda` (feature `cuda`): NVRTC compilation, the persistent ring kernel, launch-per-batch.
//! - `wgpu_backend` (feature `wgpu`): batched compute dispatch.
//! - `devices`: enumeration of CUDA devices and wgpu adapters.
//! - `clock`: HLC stamps.
//! - `samples`: the kernels the tests and benchmarks use.
//! - `error`: one error enum per failure domain.
//!
//! # Features
//! - `cuda`: CUDA backends through cudarc, loading libcuda and NVRTC at run time (builds with no
//!   CUDA installed; a machine without them gets [`DeviceError::NoDriver`]).
//! - `wgpu`: the wgpu backend (Vulkan, GL; Mesa lavapipe works).
//!
//! # Example
//! ```
//! use silica_gpu::samples::{Accumulator, Add, Totals};
//! use silica_gpu::{HlcStamp, Ring, RingConfig};
//!
//! let ring = Ring::<Accumulator>::start(RingConfig::default())?; // CPU reference backend
//! let slot = ring.activate(&Totals::default())?;
//! let reply = pollster_lite(ring.submit(slot, Add { amount: 5 }, HlcStamp::default()))?;
//! assert_eq!(reply.response.total, 5);
//! # fn pollster_lite<F: std::future::Future>(f: F) -> F::Output {
//! #     let waker = std::task::Waker::noop();
//! #     let mut cx = std::task::Context::from_waker(&waker);
//! #     let mut f = std::pin::pin!(f);
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! # Ok::<(), silica_gpu::RingError>(())
//! ```

mod backend;
mod clock;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod devices;
mod dispatch;
mod error;
mod kernel;
mod queue;
mod reply;
mod ring;
pub mod samples;
mod slots;
mod stage;
#[cfg(feature = "wgpu")]
mod wgpu_backend;
mod wire;

pub use backend::{FaultInjection, RingBackend};
pub use clock::HlcStamp;
pub use error::{CompileError, DeviceError, FaultKind, RingError, RingFault};
pub use kernel::Kernel;
pub use reply::{Outcome, Reply};
pub use ring::{
    BackendChoice, BackendKind, BatchFuture, ReplyFuture, Ring, RingConfig, RingHealth,
};
pub use slots::{SlotId, SlotStatus};
pub use stage::{StageMark, StagedReply};
