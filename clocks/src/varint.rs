//! LEB128 varints, canonical only, for the vector-clock encoding.

use crate::ClockError;

/// Appends `value` as an unsigned LEB128 varint.
pub(crate) fn write(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Bytes [`write`] uses for `value`.
pub(crate) fn len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads varints from a byte slice, reporting errors with their offset.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Reads one canonical varint. Padding bytes are rejected so that every clock has
    /// exactly one encoding, which lets callers compare or hash encoded clocks.
    pub(crate) fn read(&mut self) -> Result<u64, ClockError> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(malformed(start, "truncated varint"));
            };
            self.pos += 1;
            let bits = u64::from(byte & 0x7F);
            // The 10th byte holds bit 63 only.
            if i == 9 && bits > 1 {
                return Err(malformed(start, "varint overflows u64"));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(malformed(start, "non-canonical varint"));
                }
                return Ok(value);
            }
        }
        Err(malformed(start, "varint longer than 10 bytes"))
    }
}

pub(crate) fn malformed(offset: usize, reason: &'static str) -> ClockError {
    ClockError::MalformedVectorClock { offset, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        // Pins LEB128 round trip and `len` at every byte-length boundary.
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            write(&mut buf, v);
            assert_eq!(buf.len(), len(v), "{v}");
            let mut r = Reader::new(&buf);
            assert_eq!(r.read().unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn rejects_bad_varints() {
        // Pins typed errors for truncated, padded, and overflowing varints.
        let cases: [&[u8]; 5] = [
            &[],
            &[0x80],
            &[0x80, 0x00],
            &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02],
            &[0xFF; 11],
        ];
        for bytes in cases {
            assert!(matches!(
                Reader::new(bytes).read(),
                Err(ClockError::MalformedVectorClock { offset: 0, .. })
            ));
        }
    }
}
