//! GPU grain hosting: GPU variants of grain interfaces, served by ring kernels on this silo's
//! devices (DESIGN §2 "GPU variants", §3).
//!
//! A GPU variant ([`GpuGrain`]) implements a grain interface by sending messages to a
//! `silica_gpu` kernel whose state table holds one slot per activation. It is registered beside
//! the CPU implementation of the same interface (`SiloBuilder::register_gpu_variant`); callers
//! use the same typed reference either way. When the silo starts, each variant gets one ring
//! per device ([`GpuConfig::devices`]); if none starts (no driver, no device, the kernel does
//! not compile), or every ring later fails for good, the CPU implementation serves the type.
//!
//! Calls to GPU activations do not go through mailboxes or activation tasks: the caller runs
//! the method itself, and the ring keeps each activation's messages in order, one at a time.
//! See docs/gpu-grains.md for the semantics, faults and figures.
//!
//! # Layout
//! - `grain`: what users write: [`GpuGrain`], [`GpuStateStore`], [`GpuActivation`], [`GpuCall`].
//! - `config`: [`GpuConfig`], [`GpuDevices`]: which devices, ring sizes, reply spinning.
//! - `rings`: one variant's rings on the silo's devices, their load and placement among them.
//! - `activation`: one GPU activation (a slot) as the silo tracks it.
//! - `host`: one variant on the silo: activations, idle collection, shutdown, faults.
//! - `recent`: each thread's cache of the activations its calls went to, so a call skips the
//!   catalog's shard lock.
//! - `memo`: a reference's memo of its grain's activation, so its calls skip even that cache.
//! - `turn`: one call running on a GPU variant.
//! - `status`: [`GpuTypeStatus`], what `Silo::gpu_status` reports.

mod activation;
mod config;
mod grain;
mod host;
pub(crate) mod memo;
mod recent;
mod rings;
mod status;
mod turn;

pub use config::{GpuConfig, GpuDevices};
pub use grain::{DefaultState, GpuActivation, GpuCall, GpuGrain, GpuStateStore, StateLost};
pub(crate) use host::{GpuCallParts, GpuHost, GpuRoute, HostStart};
pub use status::{GpuDeviceStatus, GpuTypeStatus};
