//! `CallError` <-> `proto::Status`: the one status-with-code type on the wire.
//!
//! Every `CallError` variant and every `RejectCode` has its own code, and the fields a variant
//! carries (timeout, grains, message) have their own fields, so the mapping is lossless both ways.
//! A code this build does not know (a newer peer) arrives as `Rejected(VersionMismatch)` rather
//! than closing the link; a link-level code inside a call's response is a protocol violation.

use std::time::Duration;

use silica_grains::{CallError, RejectCode};

use super::WireError;
use super::envelope::{decode_grain_id, encode_grain_id};
use super::proto::{self, StatusCode};

/// The wire form of a call's error.
pub fn status_from_error(error: &CallError) -> proto::Status {
    let mut status = proto::Status::default();
    let code = match error {
        CallError::Timeout(timeout) => {
            status.timeout_nanos = duration_to_nanos(*timeout);
            StatusCode::Timeout
        }
        CallError::SiloUnavailable(message) => {
            status.message = message.clone();
            StatusCode::SiloUnavailable
        }
        CallError::ShuttingDown => StatusCode::ShuttingDown,
        CallError::GrainPanicked { grain, message } => {
            status.grains.push(encode_grain_id(grain));
            status.message = message.clone();
            StatusCode::GrainPanicked
        }
        CallError::GpuFault { grain, message } => {
            status.grains.push(encode_grain_id(grain));
            status.message = message.clone();
            StatusCode::GpuFault
        }
        CallError::CycleDetected { chain } => {
            status.grains = chain.iter().map(encode_grain_id).collect();
            StatusCode::CycleDetected
        }
        CallError::Rejected { code, message } => {
            status.message = message.clone();
            reject_code_to_wire(*code)
        }
        other => {
            // A variant newer than this mapping: the peer still gets its text.
            status.message = other.to_string();
            StatusCode::StatusUnspecified
        }
    };
    status.code = code as i32;
    status
}

/// The call error a wire status stands for.
pub fn error_from_status(status: proto::Status) -> Result<CallError, WireError> {
    let Ok(code) = StatusCode::try_from(status.code) else {
        return Ok(unknown(status.code, status.message));
    };
    let mut grains = status.grains.into_iter();
    let mut one_grain = || -> Result<_, WireError> {
        decode_grain_id(
            grains
                .next()
                .ok_or(WireError::MissingField("status.grains"))?,
        )
    };
    let error = match code {
        StatusCode::Timeout => CallError::Timeout(Duration::from_nanos(status.timeout_nanos)),
        StatusCode::SiloUnavailable => CallError::SiloUnavailable(status.message),
        StatusCode::ShuttingDown => CallError::ShuttingDown,
        StatusCode::GrainPanicked => CallError::GrainPanicked {
            grain: one_grain()?,
            message: status.message,
        },
        StatusCode::GpuFault => CallError::GpuFault {
            grain: one_grain()?,
            message: status.message,
        },
        StatusCode::CycleDetected => CallError::CycleDetected {
            chain: grains.map(decode_grain_id).collect::<Result<_, _>>()?,
        },
        StatusCode::StatusUnspecified => unknown(status.code, status.message),
        code => match reject_code_from_wire(code) {
            Some(reject) => CallError::rejected(reject, status.message),
            None => {
                return Err(WireError::InvalidField {
                    field: "status.code",
                    reason: format!("{code:?} ends a link, not a call"),
                });
            }
        },
    };
    Ok(error)
}

fn unknown(code: i32, message: String) -> CallError {
    CallError::rejected(
        RejectCode::VersionMismatch,
        format!("the peer answered with a status this build does not know ({code}): {message}"),
    )
}

fn duration_to_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn reject_code_to_wire(code: RejectCode) -> StatusCode {
    match code {
        RejectCode::UnknownGrainType => StatusCode::RejectedUnknownGrainType,
        RejectCode::WrongInterface => StatusCode::RejectedWrongInterface,
        RejectCode::UnknownMethod => StatusCode::RejectedUnknownMethod,
        RejectCode::BadArguments => StatusCode::RejectedBadArguments,
        RejectCode::TooLarge => StatusCode::RejectedTooLarge,
        RejectCode::Overloaded => StatusCode::RejectedOverloaded,
        RejectCode::ClockSkew => StatusCode::RejectedClockSkew,
        RejectCode::VersionMismatch => StatusCode::RejectedVersionMismatch,
        RejectCode::ActivationFailed => StatusCode::RejectedActivationFailed,
        _ => StatusCode::RejectedVersionMismatch,
    }
}

fn reject_code_from_wire(code: StatusCode) -> Option<RejectCode> {
    Some(match code {
        StatusCode::RejectedUnknownGrainType => RejectCode::UnknownGrainType,
        StatusCode::RejectedWrongInterface => RejectCode::WrongInterface,
        StatusCode::RejectedUnknownMethod => RejectCode::UnknownMethod,
        StatusCode::RejectedBadArguments => RejectCode::BadArguments,
        StatusCode::RejectedTooLarge => RejectCode::TooLarge,
        StatusCode::RejectedOverloaded => RejectCode::Overloaded,
        StatusCode::RejectedClockSkew => RejectCode::ClockSkew,
        StatusCode::RejectedVersionMismatch => RejectCode::VersionMismatch,
        StatusCode::RejectedActivationFailed => RejectCode::ActivationFailed,
        _ => return None,
    })
}
