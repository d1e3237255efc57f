//! The silo-to-silo directory protocol: requests to a partition, hand-offs and load reports,
//! carried as ordinary calls to a system target over the silo links (so they share the links'
//! batching, HLC stamping, timeouts and typed errors), postcard-encoded.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use silica_client::{CallChain, Envelope};
use silica_clocks::HlcTimestamp;
use silica_grains::placement::SiloAddress;
use silica_grains::{CallError, GrainId, GrainType, Payload, RejectCode};
use silica_placement::SiloLoadReport;

use crate::cluster::{
    ActivationAddress, DirectoryError, Duplicate, HandOff, HandOffAck, Registration, TableVersion,
};

/// The grain type of the system target; no user type may use it (names are checked at start).
pub(crate) const SYSTEM_GRAIN_TYPE: &str = "silica.sys.Directory";
const SYSTEM_INTERFACE: &str = "silica.sys.Directory";
const SYSTEM_METHOD: &str = "handle";

/// A request to another silo's cluster service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum SystemRequest {
    Register {
        version: TableVersion,
        grain: GrainId,
        address: ActivationAddress,
    },
    Lookup {
        version: TableVersion,
        grain: GrainId,
    },
    Unregister {
        version: TableVersion,
        grain: GrainId,
        address: ActivationAddress,
    },
    HandOff {
        from: SiloAddress,
        to: SiloAddress,
        version: TableVersion,
        entries: Vec<(GrainId, ActivationAddress)>,
        last: bool,
    },
    Load(SiloLoadReport),
    /// The activation lost a merge of directory entries: deactivate it.
    Deactivate {
        grain: GrainId,
        address: ActivationAddress,
    },
}

/// The answer of a silo's cluster service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum SystemResponse {
    Registered(ActivationAddress),
    Existing(ActivationAddress),
    Found(Option<ActivationAddress>),
    Unregistered(bool),
    HandOffAck {
        from: SiloAddress,
        version: TableVersion,
        duplicates: Vec<(GrainId, ActivationAddress, ActivationAddress)>,
    },
    Done,
    Refused(WireDirectoryError),
}

/// [`DirectoryError`] as it travels.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum WireDirectoryError {
    StaleView(TableVersion, TableVersion),
    PartitionBehind(TableVersion, TableVersion),
    NotOwner(Option<SiloAddress>, TableVersion),
    HandOffPending(TableVersion),
    SiloNotActive(SiloAddress),
    NotServing,
}

impl From<DirectoryError> for WireDirectoryError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::StaleView { request, partition } => Self::StaleView(request, partition),
            DirectoryError::PartitionBehind { request, partition } => {
                Self::PartitionBehind(request, partition)
            }
            DirectoryError::NotOwner { owner, version } => Self::NotOwner(owner, version),
            DirectoryError::HandOffPending { version } => Self::HandOffPending(version),
            DirectoryError::SiloNotActive(silo) => Self::SiloNotActive(silo),
            _ => Self::NotServing,
        }
    }
}

impl From<WireDirectoryError> for DirectoryError {
    fn from(e: WireDirectoryError) -> Self {
        match e {
            WireDirectoryError::StaleView(request, partition) => {
                Self::StaleView { request, partition }
            }
            WireDirectoryError::PartitionBehind(request, partition) => {
                Self::PartitionBehind { request, partition }
            }
            WireDirectoryError::NotOwner(owner, version) => Self::NotOwner { owner, version },
            WireDirectoryError::HandOffPending(version) => Self::HandOffPending { version },
            WireDirectoryError::SiloNotActive(silo) => Self::SiloNotActive(silo),
            WireDirectoryError::NotServing => Self::NotServing,
        }
    }
}

impl From<Result<Registration, DirectoryError>> for SystemResponse {
    fn from(r: Result<Registration, DirectoryError>) -> Self {
        match r {
            Ok(Registration::Registered(a)) => Self::Registered(a),
            Ok(Registration::Existing(a)) => Self::Existing(a),
            Err(e) => Self::Refused(e.into()),
        }
    }
}

impl SystemRequest {
    pub(crate) fn handoff(h: HandOff) -> Self {
        Self::HandOff {
            from: h.from,
            to: h.to,
            version: h.version,
            entries: h.entries,
            last: h.last,
        }
    }
}

impl SystemResponse {
    pub(crate) fn ack(ack: HandOffAck) -> Self {
        Self::HandOffAck {
            from: ack.from,
            version: ack.version,
            duplicates: ack
                .duplicates
                .into_iter()
                .map(|d| (d.grain, d.loser, d.winner))
                .collect(),
        }
    }

    pub(crate) fn into_ack(
        from: SiloAddress,
        version: TableVersion,
        duplicates: Vec<(GrainId, ActivationAddress, ActivationAddress)>,
    ) -> HandOffAck {
        HandOffAck {
            from,
            version,
            duplicates: duplicates
                .into_iter()
                .map(|(grain, loser, winner)| Duplicate {
                    grain,
                    loser,
                    winner,
                })
                .collect(),
        }
    }
}

/// Whether `target` is the system target.
pub(crate) fn is_system(target: &GrainId) -> bool {
    target.grain_type.as_str() == SYSTEM_GRAIN_TYPE
}

/// The envelope carrying `request` to a silo's cluster service.
pub(crate) fn envelope(request: &SystemRequest, timeout: Duration) -> Result<Envelope, CallError> {
    let args = postcard::to_allocvec(request)
        .map_err(|e| CallError::rejected(RejectCode::BadArguments, e.to_string()))?;
    Ok(Envelope {
        target: GrainId::new(GrainType::new(SYSTEM_GRAIN_TYPE), 0i64),
        interface: Cow::Borrowed(SYSTEM_INTERFACE),
        method: Cow::Borrowed(SYSTEM_METHOD),
        args: Payload::from_vec(args),
        // Stamped with a tick by the link as it leaves.
        hlc: HlcTimestamp::ZERO,
        chain: CallChain::EMPTY,
        timeout,
    })
}

/// Decodes a request that arrived at the system target.
pub(crate) fn decode_request(envelope: &Envelope) -> Result<SystemRequest, CallError> {
    if envelope.interface != SYSTEM_INTERFACE || envelope.method != SYSTEM_METHOD {
        return Err(CallError::rejected(
            RejectCode::UnknownMethod,
            format!(
                "the system target has no {}::{}",
                envelope.interface, envelope.method
            ),
        ));
    }
    postcard::from_bytes(&envelope.args)
        .map_err(|e| CallError::rejected(RejectCode::BadArguments, e.to_string()))
}

/// Encodes an answer of the cluster service.
pub(crate) fn encode_response(response: &SystemResponse) -> Result<Payload, CallError> {
    postcard::to_allocvec(response)
        .map(Payload::from_vec)
        .map_err(|e| CallError::rejected(RejectCode::BadArguments, e.to_string()))
}

/// Decodes an answer of another silo's cluster service.
pub(crate) fn decode_response(payload: &[u8]) -> Result<SystemResponse, CallError> {
    postcard::from_bytes(payload)
        .map_err(|e| CallError::rejected(RejectCode::BadArguments, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ActivationId, HANDOFF_PART_BYTES};
    use prost::Message;
    use silica_client::wire::{DEFAULT_MAX_FRAME_BYTES, encode_envelope};

    // Pins that a hand-off too large for one frame (here 20 MB of entries) goes in parts that
    // each fit one, in order, with only the final one marked last, and nothing lost.
    #[test]
    fn a_large_handoff_goes_in_parts_that_fit_a_frame() {
        let silo = SiloAddress::new(([127, 0, 0, 1], 7).into(), 3);
        let to = SiloAddress::new(([127, 0, 0, 1], 8).into(), 3);
        let key = "k".repeat(200);
        let entries: Vec<_> = (0..100_000u64)
            .map(|i| {
                let grain = GrainId::new(GrainType::new("Account"), format!("{key}{i}"));
                (grain, ActivationAddress::new(silo, ActivationId(i)))
            })
            .collect();
        let handoff = HandOff {
            from: silo,
            to,
            version: TableVersion(5),
            entries: entries.clone(),
            last: true,
        };
        let frame_bytes = |h: HandOff| {
            let env = envelope(&SystemRequest::handoff(h), Duration::from_secs(1)).unwrap();
            encode_envelope(&env, 1).encoded_len()
        };
        assert!(
            frame_bytes(handoff.clone()) > DEFAULT_MAX_FRAME_BYTES,
            "the case needs parts"
        );
        let parts = handoff.into_parts(HANDOFF_PART_BYTES);
        assert!(parts.len() > 1);
        let lasts: Vec<bool> = parts.iter().map(|p| p.last).collect();
        assert_eq!(lasts.iter().filter(|l| **l).count(), 1);
        assert_eq!(lasts.last(), Some(&true));
        let rejoined: Vec<_> = parts.iter().flat_map(|p| p.entries.clone()).collect();
        assert_eq!(rejoined, entries, "every entry once, in order");
        for part in parts {
            let bytes = frame_bytes(part);
            assert!(
                bytes < DEFAULT_MAX_FRAME_BYTES / 2,
                "a part of {bytes} bytes"
            );
        }
    }

    // Pins that a directory request survives its trip through an envelope, and a refusal its
    // encoding as a response.
    #[test]
    fn requests_and_responses_round_trip() {
        let silo = SiloAddress::new(([127, 0, 0, 1], 7).into(), 3);
        let grain = GrainId::new(GrainType::new("G"), "k");
        let address = ActivationAddress::new(silo, crate::cluster::ActivationId(9));
        let request = SystemRequest::Register {
            version: TableVersion(4),
            grain: grain.clone(),
            address,
        };
        let env = envelope(&request, Duration::from_secs(1)).unwrap();
        assert!(is_system(&env.target));
        match decode_request(&env).unwrap() {
            SystemRequest::Register {
                version,
                grain: g,
                address: a,
            } => {
                assert_eq!((version, g, a), (TableVersion(4), grain, address));
            }
            other => panic!("decoded {other:?}"),
        }
        let refused = SystemResponse::Refused(WireDirectoryError::HandOffPending(TableVersion(2)));
        let back = decode_response(&encode_response(&refused).unwrap()).unwrap();
        assert!(matches!(
            back,
            SystemResponse::Refused(WireDirectoryError::HandOffPending(TableVersion(2)))
        ));
    }
}
