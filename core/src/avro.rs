//! Avro's binary encoding of the values a row holds (the specification's "Binary Encoding").

/// A long (or an int): zig-zag, then a variable-length integer, 7 bits per byte.
pub fn long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Bytes or a string: the length, then the bytes.
pub fn bytes(out: &mut Vec<u8>, v: &[u8]) {
    long(out, v.len() as i64);
    out.extend_from_slice(v);
}

pub fn double(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// The `decimal` logical type on `bytes`: the unscaled value in big-endian two's complement,
/// in as few bytes as hold its sign.
pub fn decimal(out: &mut Vec<u8>, unscaled: i128) {
    let be = unscaled.to_be_bytes();
    let mut start = 0;
    while start < be.len() - 1 {
        let (b, next) = (be[start], be[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes(out, &be[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_from_the_specification() {
        for (v, want) in [(0i64, vec![0x00u8]), (-1, vec![0x01]), (1, vec![0x02]), (-64, vec![0x7f]), (64, vec![0x80, 0x01])] {
            let mut out = Vec::new();
            long(&mut out, v);
            assert_eq!(out, want, "{v}");
        }
        let mut out = Vec::new();
        bytes(&mut out, b"foo");
        assert_eq!(out, [0x06, b'f', b'o', b'o']);
        for (v, want) in [(0i128, vec![0x02u8, 0x00]), (127, vec![0x02, 0x7f]), (128, vec![0x04, 0x00, 0x80]), (-1, vec![0x02, 0xff]), (-129, vec![0x04, 0xff, 0x7f])] {
            let mut out = Vec::new();
            decimal(&mut out, v);
            assert_eq!(out, want, "{v}");
        }
    }
}
