//! `#[derive(GpuType)]`: owned by the GPU ring-kernel work (issue 3).
