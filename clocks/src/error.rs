//! The one error type of this crate.

use thiserror::Error;

/// Why a clock operation or a clock decode failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClockError {
    /// A received timestamp was further ahead of local physical time than the configured
    /// maximum; it was not adopted, so one bad peer cannot drag every clock into the future.
    #[error(
        "received timestamp is {}ms ahead of local time (received {received_ms}ms, local {local_ms}ms, max offset {max_offset_ms}ms)",
        received_ms.saturating_sub(*local_ms)
    )]
    TooFarAhead {
        /// Physical milliseconds carried by the received timestamp.
        received_ms: u64,
        /// Local wall-clock milliseconds at the time of the receive.
        local_ms: u64,
        /// The configured `max_forward_offset_ms`.
        max_offset_ms: u64,
    },
    /// Bytes or serialized entries did not form a valid vector clock: truncated, trailing
    /// bytes, an overlong or non-canonical varint, unsorted or duplicate nodes, or a zero counter.
    #[error("malformed vector clock at byte {offset}: {reason}")]
    MalformedVectorClock {
        /// Byte offset of the problem in the input (entry index for non-byte input).
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
}
