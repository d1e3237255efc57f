//! `Envelope` <-> `proto::Envelope`, with grain ids and HLC timestamps.
//!
//! A grain key travels as its postcard encoding (the same bytes `GrainId::stable_hash` hashes),
//! the grain type, interface and method as strings: methods are named, never numbered.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use silica_clocks::{HlcTimestamp, NodeId};
use silica_grains::{GrainId, GrainKey, GrainType, Interleave, Payload};

use super::WireError;
use super::proto;
use crate::{CallChain, ChainLink, Envelope};

/// The wire form of `envelope`, correlated by `call_id`.
pub fn encode_envelope(envelope: &Envelope, call_id: u64) -> proto::Envelope {
    proto::Envelope {
        call_id,
        target: Some(encode_grain_id(&envelope.target)),
        interface: envelope.interface.clone().into_owned(),
        method: envelope.method.clone().into_owned(),
        args: Bytes::copy_from_slice(&envelope.args),
        hlc: Some(hlc_to_wire(envelope.hlc)),
        chain: envelope
            .chain
            .links()
            .iter()
            .map(|link| proto::ChainLink {
                grain: Some(encode_grain_id(&link.grain)),
                turn: turn_to_wire(link.turn) as i32,
            })
            .collect(),
        timeout_nanos: u64::try_from(envelope.timeout.as_nanos()).unwrap_or(u64::MAX),
    }
}

/// The envelope (and its call id) a wire envelope stands for.
pub fn decode_envelope(envelope: proto::Envelope) -> Result<(u64, Envelope), WireError> {
    let target = decode_grain_id(envelope.target.ok_or(WireError::MissingField("target"))?)?;
    let hlc = hlc_from_wire(envelope.hlc.ok_or(WireError::MissingField("hlc"))?);
    let links = envelope
        .chain
        .into_iter()
        .map(|link| {
            let grain = decode_grain_id(link.grain.ok_or(WireError::MissingField("chain.grain"))?)?;
            Ok(ChainLink {
                grain,
                turn: turn_from_wire(link.turn)?,
            })
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    let chain = CallChain::from(links);
    let decoded = Envelope {
        target,
        interface: Cow::Owned(non_empty(envelope.interface, "interface")?),
        method: Cow::Owned(non_empty(envelope.method, "method")?),
        args: Payload::from_slice(&envelope.args),
        hlc,
        chain,
        timeout: Duration::from_nanos(envelope.timeout_nanos),
    };
    Ok((envelope.call_id, decoded))
}

/// The wire form of a grain id.
pub fn encode_grain_id(id: &GrainId) -> proto::GrainId {
    let key = postcard::to_allocvec(&id.key).expect("a GrainKey always encodes");
    proto::GrainId {
        grain_type: id.grain_type.as_str().to_owned(),
        key: key.into(),
    }
}

/// The grain id a wire grain id stands for; the key must decode with no bytes left over.
pub fn decode_grain_id(id: proto::GrainId) -> Result<GrainId, WireError> {
    let grain_type = non_empty(id.grain_type, "grain_type")?;
    let key = match postcard::take_from_bytes::<GrainKey>(&id.key) {
        Ok((key, [])) => key,
        Ok((_, rest)) => {
            return Err(WireError::InvalidField {
                field: "grain key",
                reason: format!("{} trailing bytes", rest.len()),
            });
        }
        Err(e) => {
            return Err(WireError::InvalidField {
                field: "grain key",
                reason: e.to_string(),
            });
        }
    };
    Ok(GrainId::new(GrainType::new(grain_type), key))
}

/// The wire form of an HLC timestamp.
pub fn hlc_to_wire(hlc: HlcTimestamp) -> proto::Hlc {
    proto::Hlc {
        hlc: hlc.hlc,
        node: hlc.node,
    }
}

/// The HLC timestamp a wire timestamp stands for (every value is one).
pub fn hlc_from_wire(hlc: proto::Hlc) -> HlcTimestamp {
    HlcTimestamp::from_hlc(hlc.hlc, NodeId(hlc.node))
}

fn non_empty(value: String, field: &'static str) -> Result<String, WireError> {
    if value.is_empty() {
        return Err(WireError::InvalidField {
            field,
            reason: "empty".into(),
        });
    }
    Ok(value)
}

fn turn_to_wire(turn: Interleave) -> proto::Turn {
    match turn {
        Interleave::Exclusive => proto::Turn::Exclusive,
        Interleave::Shared => proto::Turn::Shared,
        Interleave::ReadOnly => proto::Turn::ReadOnly,
        Interleave::Always => proto::Turn::Always,
    }
}

fn turn_from_wire(turn: i32) -> Result<Interleave, WireError> {
    Ok(match proto::Turn::try_from(turn) {
        Ok(proto::Turn::Exclusive) => Interleave::Exclusive,
        Ok(proto::Turn::Shared) => Interleave::Shared,
        Ok(proto::Turn::ReadOnly) => Interleave::ReadOnly,
        Ok(proto::Turn::Always) => Interleave::Always,
        Err(_) => {
            return Err(WireError::InvalidField {
                field: "chain.turn",
                reason: format!("unknown turn kind {turn}"),
            });
        }
    })
}
