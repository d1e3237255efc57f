//! Encoding of grain arguments and results: postcard, with typed errors.
//!
//! Arguments travel as one tuple in declaration order; results as the method's return type.
//! In-process calls are encoded too, so a grain never shares memory with its caller and a call
//! behaves the same whether the grain is local or remote.

use serde::Serialize;
use serde::de::DeserializeOwned;
use smallvec::SmallVec;

use crate::{CallError, RejectCode};

/// Encoded arguments or an encoded result. Up to 32 bytes, the common case, live inline: most
/// calls allocate nothing for them.
pub type Payload = SmallVec<[u8; 32]>;

/// Encodes arguments or a result.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Payload, CallError> {
    postcard::serialize_with_flavor(value, PayloadFlavor(Payload::new()))
        .map_err(|e| CallError::rejected(RejectCode::BadArguments, format!("encode failed: {e}")))
}

/// Postcard's output into a [`Payload`] with plain pushes and slice copies (its generic
/// `Extend` output went through `SmallVec::extend`'s reserve-and-iterate once per byte).
struct PayloadFlavor(Payload);

impl postcard::ser_flavors::Flavor for PayloadFlavor {
    type Output = Payload;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Postcard writes varints as slices of up to 10 bytes: pushed, not copied with a call.
        if data.len() <= 16 {
            data.iter().for_each(|&b| self.0.push(b));
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Payload> {
        Ok(self.0)
    }
}

/// Decodes arguments or a result; trailing bytes are an error, not ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CallError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(CallError::rejected(
            RejectCode::BadArguments,
            format!("{} trailing bytes after the encoded value", rest.len()),
        )),
        Err(e) => Err(CallError::rejected(
            RejectCode::BadArguments,
            format!("decode failed: {e}"),
        )),
    }
}
