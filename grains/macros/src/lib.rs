//! Procedural macros for Silica: `#[grain]` on interface traits and `#[derive(GpuType)]` on GPU
//! message structs. Use them through `silica` (or `silica-grains`), which re-export them.
//!
//! # Layout
//! - `paths`: how generated code names the `silica-grains` crate.
//! - `gpu_type`: `#[derive(GpuType)]`.

mod gpu_type;
mod paths;

use proc_macro::TokenStream;

/// Derives `GpuType` for a `#[repr(C)]` plain-old-data struct: its CUDA C and WGSL declarations
/// and compile-time layout checks. See `silica_grains::gpu`.
#[proc_macro_derive(GpuType, attributes(gpu))]
pub fn derive_gpu_type(input: TokenStream) -> TokenStream {
    gpu_type::derive(input.into()).into()
}
