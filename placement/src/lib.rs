//! Placement *directors* for Silica: where a grain's activation goes, decided from load reports.
//!
//! A grain type names a [`PlacementStrategy`] (plain data, in `silica-grains`); the director for
//! that strategy (behaviour, here) turns a [`PlacementTarget`] and the cluster's load into a
//! [`PlacementDecision`]: a silo and, for a GPU variant, a device. This crate does no I/O: load
//! reports come in through [`ClusterLoad::handle_report`], decisions go out, and time and
//! randomness are arguments, so every decision replays from a seed.
//!
//! The directors are the Orleans set ([`RandomPlacementDirector`],
//! [`PreferLocalPlacementDirector`], [`HashBasedPlacementDirector`],
//! [`ActivationCountPlacementDirector`]) and [`QueueDepthPlacementDirector`], which places GPU
//! variants by expected wait. `docs/placement.md` describes the model and the experiment that
//! backs the queue-depth director.
//!
//! # Layout
//!
//! - [`load`]: the report types silos exchange ([`SiloLoadReport`], [`DeviceLoad`]) and the
//!   busy-time service-rate estimate [`ServiceRateEwma`].
//! - [`cluster_load`]: [`ClusterLoad`], the latest fresh report per silo, with optimistic updates.
//! - [`target`]: [`PlacementTarget`] and [`PlacementDecision`].
//! - [`director`]: the [`PlacementDirector`] trait, the directors, and [`PlacementDirectors`].
//! - [`error`]: the error type, [`PlacementError`].
//! - [`ring`]: [`SiloRing`], the consistent-hash ring over silos (shared with the directory).
//! - [`sim`]: an in-memory multi-silo harness with simulated devices, and the placement
//!   experiment.
//!
//! # Example
//!
//! ```
//! use rand::{SeedableRng, rngs::SmallRng};
//! use silica_grains::placement::{PlacementStrategy, SiloAddress};
//! use silica_placement::{ClusterLoad, DeviceId, DeviceLoad, PlacementDirectors, PlacementTarget, SiloLoadReport};
//!
//! let silo = |port| SiloAddress::new(([127, 0, 0, 1], port).into(), 1);
//! let mut load = ClusterLoad::new(1_000);
//! for (port, depth) in [(11_111, 40), (11_112, 2)] {
//!     let mut report = SiloLoadReport::new(silo(port), 0);
//!     let mut device = DeviceLoad::idle(DeviceId(0), 1_000.0, 1024, 1 << 30);
//!     device.queue_depth = depth;
//!     report.devices.push(device);
//!     load.handle_report(report, 0);
//! }
//!
//! let target = PlacementTarget::new("Embedding", 42, silo(11_111)).with_gpu(4096);
//! let mut directors = PlacementDirectors::default();
//! let mut rng = SmallRng::seed_from_u64(7);
//! let decision = directors.place(PlacementStrategy::QueueDepth, &target, &mut load, 10, &mut rng).unwrap();
//! // The local device is 38 messages (38 ms) deeper, far beyond the locality margin.
//! assert_eq!((decision.silo, decision.device), (silo(11_112), Some(DeviceId(0))));
//! // The choice is already counted in the local view.
//! assert_eq!(load.report(&silo(11_112)).unwrap().devices[0].queue_depth, 3);
//! ```
#![forbid(unsafe_code)]

pub mod cluster_load;
pub mod director;
pub mod error;
pub mod load;
pub mod ring;
pub mod sim;
pub mod target;

pub use cluster_load::ClusterLoad;
pub use director::{
    ActivationCountPlacementDirector, DEFAULT_VIRTUAL_NODES, HashBasedPlacementDirector,
    PlacementDirector, PlacementDirectors, PreferLocalPlacementDirector, QueueDepthConfig,
    QueueDepthPlacementDirector, RandomPlacementDirector,
};
pub use error::PlacementError;
pub use load::{DeviceId, DeviceLoad, ServiceRateEwma, SiloLoadReport};
pub use ring::SiloRing;
pub use silica_grains::placement::{PlacementStrategy, SiloAddress};
pub use target::{GpuRequirements, PlacementDecision, PlacementTarget};
