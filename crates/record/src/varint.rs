//! Kafka's zig-zag variable-length integers (protobuf style), as used inside records.

/// Reads a zig-zag varint of at most `max_bytes` bytes from the front of `buf`.
/// Returns the value and the number of bytes consumed, or `None` if the encoding is truncated
/// or longer than allowed.
fn read_zigzag(buf: &[u8], max_bytes: usize) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, &byte) in buf.iter().take(max_bytes).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((value, i + 1));
        }
    }
    None
}

/// A 32-bit zig-zag varint (at most 5 bytes).
pub(crate) fn read_varint(buf: &[u8]) -> Option<(i32, usize)> {
    let (value, used) = read_zigzag(buf, 5)?;
    i32::try_from(value).ok().map(|v| (v, used))
}

/// A 64-bit zig-zag varint (at most 10 bytes).
pub(crate) fn read_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    read_zigzag(buf, 10)
}

/// Appends `value` as a zig-zag varint.
pub(crate) fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

/// Number of bytes `write_varlong` uses for `value`.
pub(crate) fn varlong_len(value: i64) -> usize {
    let raw = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - raw.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: [(i64, &[u8]); 5] =
            [(0, &[0]), (-1, &[1]), (1, &[2]), (63, &[126]), (-65, &[0x81, 0x01])];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            assert_eq!(out, bytes, "encoding of {value}");
            assert_eq!(read_varlong(bytes), Some((value, bytes.len())));
        }
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        assert_eq!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), None);
        assert_eq!(read_varint(&[0x80]), None);
        assert_eq!(read_varlong(&[]), None);
    }

    proptest! {
        #[test]
        fn varlong_roundtrip(value: i64) {
            let mut out = Vec::new();
            write_varlong(&mut out, value);
            prop_assert_eq!(out.len(), varlong_len(value));
            prop_assert_eq!(read_varlong(&out), Some((value, out.len())));
        }

        #[test]
        fn varint_roundtrip(value: i32) {
            let mut out = Vec::new();
            write_varlong(&mut out, i64::from(value));
            prop_assert_eq!(read_varint(&out), Some((value, out.len())));
        }
    }
}
