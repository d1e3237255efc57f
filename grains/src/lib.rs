//! placeholder: being written (programming model)
#![forbid(unsafe_code)]

pub mod gpu;
pub mod placement;
