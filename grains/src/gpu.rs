//! GPU message layout: the `GpuType` trait that `#[derive(GpuType)]` implements.
//!
//! Owned by the GPU ring-kernel work (issue 3); see `silica-gpu`.
