//! Procedural macros for Silica: `#[grain]` on interface traits and `#[derive(GpuType)]` on GPU
//! message structs. Use them through `silica` (or `silica-grains`), which re-export them.
//!
//! # Layout
//! - `paths`: how generated code names the `silica-grains` crate.
//! - `grain`: `#[grain]` (parse -> ir -> codegen).
//! - `gpu_type`: `#[derive(GpuType)]`.

mod gpu_type;
mod grain;
mod paths;

use proc_macro::TokenStream;

/// Derives `GpuType` for a `#[repr(C)]` plain-old-data struct: its CUDA C and WGSL declarations
/// and compile-time layout checks. See `silica_grains::gpu`.
#[proc_macro_derive(GpuType, attributes(gpu))]
pub fn derive_gpu_type(input: TokenStream) -> TokenStream {
    gpu_type::derive(input.into()).into()
}

/// Turns a trait of async methods into a grain interface.
///
/// For `#[grain] pub trait Counter { async fn add(&mut self, n: u64) -> u64; }` it emits:
/// - the trait, with each `async fn` rewritten to `fn ... -> impl Future<Output = _> + Send`
///   (implementations still write `async fn`);
/// - `CounterRef`, the typed reference: `counter.add(5).await` returns
///   `Result<u64, CallError>`;
/// - the dispatcher, `impl<G: Counter> InterfaceDispatch<G> for CounterRef`, that finds methods by
///   name, decodes the argument tuple with postcard, runs the method and encodes its result.
///
/// Interface options: `#[grain(reentrant, stateless_worker = 4, placement = HashBased,
/// idle_after_secs = 600, name = "shop.Counter")]`. The interface's name on the wire (and its
/// default grain type name) is the trait's name unless `name` sets one: give interfaces of the
/// same name in different modules distinct names. Method options: `#[grain(read_only)]`,
/// `#[grain(always_interleave)]` (both need `&self`).
///
/// Methods must be `async`, take `&self` or `&mut self`, have no generics, and take and return
/// owned serde types; anything else is a compile error at the offending tokens.
#[proc_macro_attribute]
pub fn grain(args: TokenStream, item: TokenStream) -> TokenStream {
    grain::expand(args.into(), item.into()).into()
}
