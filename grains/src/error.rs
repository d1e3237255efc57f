//! `CallError`: how every grain call that does not return a value ends.
//!
//! Calls never hang: each one resolves with the method's value or one of these. A grain's own
//! error type is not here: methods that can fail return `Result<T, E>`, which arrives inside the
//! `Ok` of the call.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::GrainId;

/// Why a grain call did not produce the method's return value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CallError {
    /// No response arrived before the call's deadline.
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
    /// The silo that hosts (or would host) the grain cannot be reached or is gone.
    #[error("silo unavailable: {0}")]
    SiloUnavailable(String),
    /// The silo is shutting down and takes no new calls.
    #[error("silo is shutting down")]
    ShuttingDown,
    /// The handler panicked; that activation was dropped and the next call starts a fresh one.
    #[error("grain {grain} panicked: {message}")]
    GrainPanicked {
        /// The grain whose handler panicked.
        grain: GrainId,
        /// The panic message.
        message: String,
    },
    /// The call would wait on a grain that is itself waiting on this call (e.g. A -> B -> A on a
    /// non-reentrant A), so it failed at once instead of at the timeout.
    #[error("call cycle detected: {}", format_chain(.chain))]
    CycleDetected {
        /// The grains on the call chain, first caller first, ending with the repeated grain.
        chain: Vec<GrainId>,
    },
    /// The device serving a GPU grain failed while the call was in flight (kernel fault, device
    /// lost, heartbeat stall): the activation's device state is lost, and the next call starts a
    /// fresh activation (on another device, or on the CPU implementation when none is left).
    #[error("GPU grain {grain} failed: {message}")]
    GpuFault {
        /// The grain whose device failed.
        grain: GrainId,
        /// What the device reported.
        message: String,
    },
    /// The call was refused before it reached a handler.
    #[error("rejected ({code:?}): {message}")]
    Rejected {
        /// Machine-readable reason.
        code: RejectCode,
        /// Human-readable detail.
        message: String,
    },
}

impl CallError {
    /// A `Rejected` error with the given code and message.
    pub fn rejected(code: RejectCode, message: impl Into<String>) -> Self {
        CallError::Rejected {
            code,
            message: message.into(),
        }
    }

    /// The reject code, if this is a rejection.
    pub fn reject_code(&self) -> Option<RejectCode> {
        match self {
            CallError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn format_chain(chain: &[GrainId]) -> String {
    chain
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// Why a call was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectCode {
    /// No grain type of that name is registered.
    UnknownGrainType,
    /// The grain type does not implement the interface the reference was typed with.
    WrongInterface,
    /// The interface has no method of that name.
    UnknownMethod,
    /// The arguments (or the result) could not be decoded as the method's types.
    BadArguments,
    /// The message is larger than the configured maximum.
    TooLarge,
    /// The target is overloaded and sheds load.
    Overloaded,
    /// The caller's HLC timestamp is too far ahead of the receiver's physical clock.
    ClockSkew,
    /// Caller and receiver speak incompatible protocol or interface versions.
    VersionMismatch,
    /// The grain failed to activate (its `on_activate` returned an error).
    ActivationFailed,
}

/// An error a grain's lifecycle hook returns; its message reaches the caller as a rejection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrainError(pub String);

impl GrainError {
    /// A lifecycle error with the given message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
