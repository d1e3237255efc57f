//! The Silica silo: the runtime that hosts grains.
//!
//! A silo registers grain implementations, activates a grain on its first call, runs one turn at a
//! time per activation (with opt-in interleaving), collects idle activations, and shuts down
//! gracefully. Embed it in your service with [`Silo::builder`]; call grains through the typed
//! references its [`GrainFactory`](silica_grains::GrainFactory) gives.
//!
//! # Layout
//! - [`silo`] — `Silo` and `SiloBuilder`.
//! - [`config`] — `SiloConfig`.
//! - [`error`] — `SiloError`.
//! - `runtime`: the shared core and the path of a call (HLC merge, checks, cycle detection,
//!   routing, timeout).
//! - `catalog`: grain id -> activation(s).
//! - [`cluster`] — membership and the grain directory as state machines (no I/O).
//! - [`cluster_node`] — the running cluster: `ClusterConfig`, the membership task, directory
//!   service, routing and placement of grains across silos.
//! - [`link`] — the silo's network: silo link endpoint, gateway, links to other silos
//!   (the wire machinery is `silica_client::link`).
//! - [`gpu`] — GPU variants: grain interfaces served by ring kernels on this silo's devices.
//! - `collector`: idle collection.
//! - `deadline`: call timeouts: waiting calls register in a per-thread shard of a deadline wheel
//!   whose sweeper times them out; no Tokio timer per call.
//! - `activation`: the activation task, its mailbox, turns and timers.
//! - `registry`: grain types by name.
//! - `caller`: the task-local turn scope that carries call chains.
//!
//! # Features
//! - `cuda`: GPU variants on CUDA devices (libcuda and NVRTC are loaded at run time, so the
//!   build needs no CUDA; a machine without them serves from the CPU implementations).
//! - `wgpu`: GPU variants on wgpu adapters (Vulkan or GL; Mesa lavapipe works).
//! - `etcd`: the etcd membership table (`cluster::EtcdMembershipTable`); its build needs
//!   `protoc` and the well-known protos (Debian `protobuf-compiler libprotobuf-dev`).
//!
//! With neither, GPU variants are served by their CPU implementations.
//!
//! # Example
//! ```
//! use silica_grains::{grain, Grain, GrainContext};
//! use silica_silo::Silo;
//!
//! #[grain]
//! pub trait Greeter {
//!     async fn greet(&mut self, name: String) -> String;
//! }
//!
//! struct Hello;
//! impl Grain for Hello {
//!     type Interface = GreeterRef;
//!     fn create(_: &GrainContext) -> Self { Hello }
//! }
//! impl Greeter for Hello {
//!     async fn greet(&mut self, name: String) -> String { format!("hello, {name}") }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let silo = Silo::builder().register::<Hello>().start().unwrap();
//! let greeter: GreeterRef = silo.grain_factory().get("en");
//! assert_eq!(greeter.greet("ada".into()).await.unwrap(), "hello, ada");
//! silo.shutdown().await;
//! # }
//! ```
#![forbid(unsafe_code)]

mod activation;
mod caller;
mod catalog;
pub mod cluster;
pub mod cluster_node;
mod collector;
pub mod config;
mod deadline;
pub mod error;
pub mod gpu;
pub mod link;
mod registry;
mod remembered;
mod runtime;
pub mod silo;

pub use cluster_node::{ClusterConfig, ClusterTable};
pub use config::SiloConfig;
pub use error::SiloError;
pub use link::{NetworkOptions, SiloNetwork};
pub use silo::{Silo, SiloBuilder};
