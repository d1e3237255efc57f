//! GPU message layout: the [`GpuType`] trait that `#[derive(GpuType)]` implements.
//!
//! A GPU grain's state, request and response types cross three worlds: Rust, CUDA C and WGSL.
//! `#[derive(GpuType)]` on a `#[repr(C)]` struct emits the CUDA C and WGSL declarations of the
//! type and compile-time checks that its size, alignment and every field offset agree across all
//! three (WGSL's layout rules are computed and compared; implicit padding is rejected, so padding
//! is always an explicit field). `silica-gpu` concatenates the declarations in front of a kernel's
//! handlers.
//!
//! Supported field types: `u32`, `i32`, `f32`, `u64` and `i64` (WGSL has no 64-bit integers in
//! storage buffers, so they appear there as `vec2<u32>` / `vec2<i32>`, low word first), nested
//! `GpuType` structs and fixed-size arrays of any of these.
//!
//! ```ignore
//! // (runs as a test in silica-gpu: doctests here cannot name this crate from the derive)
//! use silica_grains::gpu::{GpuType, TypeDecls};
//!
//! #[derive(Clone, Copy, Debug, Default, PartialEq, silica_grains::GpuType)]
//! #[repr(C)]
//! struct Particle {
//!     pos: [f32; 2],
//!     vel: [f32; 2],
//!     ticks: u64,
//! }
//!
//! let mut decls = TypeDecls::new();
//! Particle::declare(&mut decls);
//! assert!(decls.cuda().contains("float pos[2];"));
//! assert!(decls.wgsl().contains("pos: array<f32, 2>,"));
//! assert_eq!(Particle::WGSL_SIZE, std::mem::size_of::<Particle>());
//! ```

/// A plain-old-data type with the same layout in Rust, CUDA C and WGSL.
///
/// Implement it with `#[derive(GpuType)]`: the derive verifies at compile time that the type is
/// `#[repr(C)]`, has no implicit padding and only fields that are themselves `GpuType`, which is
/// what lets `silica-gpu` copy values as raw bytes. Implementing it by hand is not supported.
pub trait GpuType: Copy + Send + Sync + 'static {
    /// The type's name in CUDA C.
    const CUDA_NAME: &'static str;
    /// The type's name in WGSL.
    const WGSL_NAME: &'static str;
    /// Alignment under WGSL's storage-buffer rules (equal to the Rust alignment, checked).
    const WGSL_ALIGN: usize;
    /// Size under WGSL's storage-buffer rules (equal to the Rust size, checked).
    const WGSL_SIZE: usize;

    /// Adds the CUDA C and WGSL declarations of this type, dependencies first, to `decls`.
    fn declare(decls: &mut TypeDecls);
}

/// CUDA C and WGSL declarations of a set of [`GpuType`]s, in dependency order, each once.
#[derive(Debug, Default, Clone)]
pub struct TypeDecls {
    names: Vec<&'static str>,
    cuda: String,
    wgsl: String,
}

impl TypeDecls {
    /// An empty set of declarations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `name` still needs declaring; marks it declared. Call before [`TypeDecls::push`].
    pub fn begin(&mut self, name: &'static str) -> bool {
        if self.names.contains(&name) {
            return false;
        }
        self.names.push(name);
        true
    }

    /// Appends one type's CUDA C and WGSL declaration text.
    pub fn push(&mut self, cuda: &str, wgsl: &str) {
        self.cuda.push_str(cuda);
        self.wgsl.push_str(wgsl);
    }

    /// The CUDA C declarations so far.
    pub fn cuda(&self) -> &str {
        &self.cuda
    }

    /// The WGSL declarations so far.
    pub fn wgsl(&self) -> &str {
        &self.wgsl
    }
}

macro_rules! scalar {
    ($t:ty, $cuda:literal, $wgsl:literal) => {
        impl GpuType for $t {
            const CUDA_NAME: &'static str = $cuda;
            const WGSL_NAME: &'static str = $wgsl;
            const WGSL_ALIGN: usize = core::mem::align_of::<$t>();
            const WGSL_SIZE: usize = core::mem::size_of::<$t>();
            fn declare(_: &mut TypeDecls) {}
        }
    };
}

scalar!(u32, "unsigned int", "u32");
scalar!(i32, "int", "i32");
scalar!(f32, "float", "f32");
scalar!(u64, "unsigned long long", "vec2<u32>");
scalar!(i64, "long long", "vec2<i32>");

/// Rounds `value` up to a multiple of `align` (a power of two); used by derived layout checks.
#[doc(hidden)]
pub const fn round_up(value: usize, align: usize) -> usize {
    value.div_ceil(align) * align
}

/// Largest of two sizes, usable in constants; used by derived layout checks.
#[doc(hidden)]
pub const fn max_usize(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins that WGSL's 64-bit stand-ins keep Rust's size and alignment.
    #[test]
    fn scalars_match_rust_layout() {
        assert_eq!(<u64 as GpuType>::WGSL_ALIGN, 8);
        assert_eq!(<i64 as GpuType>::WGSL_SIZE, 8);
        assert_eq!(<f32 as GpuType>::WGSL_SIZE, 4);
    }

    // Pins that a type is declared once, however often it is reached.
    #[test]
    fn decls_deduplicate() {
        let mut d = TypeDecls::new();
        assert!(d.begin("A"));
        d.push("struct A {};\n", "struct A {}\n");
        assert!(!d.begin("A"));
        assert_eq!(d.cuda(), "struct A {};\n");
    }
}
