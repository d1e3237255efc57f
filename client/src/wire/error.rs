//! `WireError` and `LinkError`.

use super::proto::StatusCode;
use silica_grains::placement::SiloAddress;

/// A frame or a field that cannot be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame is larger than the maximum frame size.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a protobuf frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A required field is absent.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A field holds a value that means nothing.
    #[error("invalid field {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl WireError {
    /// The status code a peer is closed with for this error.
    pub fn code(&self) -> StatusCode {
        match self {
            WireError::FrameTooLarge { .. } => StatusCode::FrameTooLarge,
            _ => StatusCode::MalformedFrame,
        }
    }
}

/// Why a link could not be set up, or why it ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The peer belongs to another cluster.
    #[error("wrong cluster: expected {expected:?}, the peer says {got:?}")]
    WrongCluster {
        /// This side's cluster id.
        expected: String,
        /// The peer's.
        got: String,
    },
    /// The peer speaks another protocol version.
    #[error("wrong protocol version: expected {expected}, the peer speaks {got}")]
    WrongProtocolVersion {
        /// This side's version.
        expected: u32,
        /// The peer's.
        got: u32,
    },
    /// A frame could not be decoded, or was too large.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A frame that is legal on the wire but not at this point of the conversation (a second
    /// hello, a batch before the handshake).
    #[error("unexpected frame: {0}")]
    UnexpectedFrame(&'static str),
    /// This endpoint does not take this kind of peer (a silo at a gateway, a client at a silo
    /// link endpoint).
    #[error("not accepted here: {0}")]
    NotAccepted(String),
    /// The peer ended the link with this status.
    #[error("refused by the peer ({code:?}): {message}")]
    Refused {
        /// The peer's reason.
        code: StatusCode,
        /// The peer's detail.
        message: String,
    },
    /// Another incarnation of the silo (same endpoint, another generation) answered: the silo
    /// this link was for is gone.
    #[error("{got} answers at the endpoint of {expected}")]
    WrongSilo {
        /// The silo the link was made for.
        expected: SiloAddress,
        /// The silo that answered.
        got: SiloAddress,
    },
    /// Connecting failed or the connection broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The link was closed on this side.
    #[error("link closed")]
    Closed,
}

impl LinkError {
    /// The status code on the wire for this error (`Refused`: the peer's code). Transport
    /// failures and local closes have no code of their own and read as `SiloUnavailable`.
    pub fn code(&self) -> StatusCode {
        match self {
            LinkError::WrongCluster { .. } => StatusCode::WrongCluster,
            LinkError::WrongProtocolVersion { .. } => StatusCode::WrongProtocolVersion,
            LinkError::Wire(error) => error.code(),
            LinkError::UnexpectedFrame(_) => StatusCode::UnexpectedFrame,
            LinkError::NotAccepted(_) => StatusCode::NotAccepted,
            LinkError::Refused { code, .. } => *code,
            LinkError::WrongSilo { .. } | LinkError::Transport(_) | LinkError::Closed => {
                StatusCode::SiloUnavailable
            }
        }
    }

    /// The tonic status that ends a stream for this error: the wire status in its details, so
    /// the peer gets the code back exactly (see [`LinkError::from_tonic`]).
    pub fn to_tonic(&self) -> tonic::Status {
        use prost::Message;
        let status = super::proto::Status {
            code: self.code() as i32,
            message: self.to_string(),
            ..Default::default()
        };
        let grpc = match self.code() {
            StatusCode::FrameTooLarge => tonic::Code::OutOfRange,
            StatusCode::SiloUnavailable => tonic::Code::Unavailable,
            _ => tonic::Code::FailedPrecondition,
        };
        tonic::Status::with_details(grpc, self.to_string(), status.encode_to_vec().into())
    }

    /// The error a tonic status stands for: the wire status in its details if it has one (the
    /// peer refused us), else what tonic itself saw (a frame it could not decode or that was too
    /// large, or a broken transport).
    pub fn from_tonic(status: &tonic::Status) -> LinkError {
        use prost::Message;
        if let Ok(wire) = super::proto::Status::decode(status.details())
            && let Ok(code) = StatusCode::try_from(wire.code)
            && code != StatusCode::StatusUnspecified
        {
            return LinkError::Refused {
                code,
                message: wire.message,
            };
        }
        match status.code() {
            // tonic's own decoder: the length prefix over `max_decoding_message_size`...
            tonic::Code::OutOfRange => LinkError::Wire(WireError::FrameTooLarge {
                len: number_after(status.message(), "found ").unwrap_or(0),
                max: number_after(status.message(), "limit is: ").unwrap_or(0),
            }),
            // ...or bytes that are not a frame.
            tonic::Code::Internal if status.message().contains("decode") => {
                LinkError::Wire(WireError::Malformed(status.message().to_owned()))
            }
            _ => LinkError::Transport(status.to_string()),
        }
    }
}

/// tonic reports an oversized frame as text only; the numbers are recovered for the typed error
/// when they are there and read as 0 otherwise.
fn number_after(text: &str, marker: &str) -> Option<usize> {
    let start = text.find(marker)? + marker.len();
    let digits: String = text[start..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}
