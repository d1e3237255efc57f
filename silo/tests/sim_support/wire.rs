//! The sims' small message protocol between silos: probes, directory registrations and
//! hand-offs, postcard-encoded into one UDP datagram each (turmoil drops datagrams on a
//! partitioned link, so every request is retried until answered).

use serde::{Deserialize, Serialize};
use silica_grains::GrainId;
use silica_grains::placement::SiloAddress;
use silica_silo::cluster::{
    ActivationAddress, DirectoryError, Duplicate, HandOff, HandOffAck, Registration, TableVersion,
};

/// One datagram between two silos.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The sending incarnation.
    pub(crate) from: SiloAddress,
    /// The receiving incarnation the sender meant (a restarted silo drops its predecessor's
    /// mail).
    pub(crate) to: SiloAddress,
    /// What it carries.
    pub(crate) body: Body,
}

/// The messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Body {
    /// Are you alive?
    Probe { nonce: u64 },
    /// Yes.
    ProbeAck { nonce: u64 },
    /// Register `address` as `grain`'s activation, routed with view `version`.
    Register {
        id: u64,
        version: TableVersion,
        grain: GrainId,
        address: ActivationAddress,
    },
    /// The partition's answer to `Register` request `id`.
    RegisterReply { id: u64, answer: RegisterAnswer },
    /// Directory entries moving on a view change.
    HandOff(WireHandOff),
    /// The receiver took a hand-off.
    HandOffAck(WireHandOffAck),
}

/// A registration's outcome as it travels.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum RegisterAnswer {
    /// `Registration::Registered`.
    Registered(ActivationAddress),
    /// `Registration::Existing`.
    Existing(ActivationAddress),
    /// A `DirectoryError` (the caller refreshes its view and retries either way).
    Refused,
}

impl From<Result<Registration, DirectoryError>> for RegisterAnswer {
    fn from(result: Result<Registration, DirectoryError>) -> Self {
        match result {
            Ok(Registration::Registered(a)) => RegisterAnswer::Registered(a),
            Ok(Registration::Existing(a)) => RegisterAnswer::Existing(a),
            Err(_) => RegisterAnswer::Refused,
        }
    }
}

/// [`HandOff`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WireHandOff {
    from: SiloAddress,
    to: SiloAddress,
    version: TableVersion,
    entries: Vec<(GrainId, ActivationAddress)>,
    last: bool,
}

impl From<HandOff> for WireHandOff {
    fn from(h: HandOff) -> Self {
        Self {
            from: h.from,
            to: h.to,
            version: h.version,
            entries: h.entries,
            last: h.last,
        }
    }
}

impl From<WireHandOff> for HandOff {
    fn from(h: WireHandOff) -> Self {
        HandOff {
            from: h.from,
            to: h.to,
            version: h.version,
            entries: h.entries,
            last: h.last,
        }
    }
}

/// [`HandOffAck`] on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WireHandOffAck {
    from: SiloAddress,
    version: TableVersion,
    duplicates: Vec<(GrainId, ActivationAddress, ActivationAddress)>,
}

impl From<HandOffAck> for WireHandOffAck {
    fn from(a: HandOffAck) -> Self {
        Self {
            from: a.from,
            version: a.version,
            duplicates: a
                .duplicates
                .into_iter()
                .map(|d| (d.grain, d.loser, d.winner))
                .collect(),
        }
    }
}

impl From<WireHandOffAck> for HandOffAck {
    fn from(a: WireHandOffAck) -> Self {
        HandOffAck {
            from: a.from,
            version: a.version,
            duplicates: a
                .duplicates
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

/// Encodes an envelope into one datagram.
pub(crate) fn encode(envelope: &Envelope) -> Vec<u8> {
    postcard::to_allocvec(envelope).expect("sim messages always encode")
}

/// Decodes a datagram (the sim only ever sends well-formed ones).
pub(crate) fn decode(bytes: &[u8]) -> Envelope {
    postcard::from_bytes(bytes).expect("sim messages always decode")
}
