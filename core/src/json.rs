//! JSON text exactly as `orjson.dumps` writes it, for the values a row can hold.
//!
//! The exact path (Python's csv + orjson) is the reference: both paths must give the same bytes,
//! so the escapes and the float format follow orjson, not serde_json.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string body (no surrounding quotes): `"`, `\` and control characters
/// escaped, everything else (non-ASCII, DEL, U+2028) as is.
pub fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&s[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

/// Whether `s` needs no escaping (the common case: one pass, then one copy).
pub fn is_plain(s: &[u8]) -> bool {
    s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// A float as orjson writes it: the shortest digits that round-trip (Python's `repr`'s), in
/// fixed notation for exponents from -5 to 15 (one more than `repr`: orjson writes `0.00001`
/// where `repr` writes `1e-05`), else with the exponent unpadded (`1e-6`, `1e+16`); infinities
/// and NaN as null.
pub fn float_into(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if v == 0.0 {
        out.extend_from_slice(if v.is_sign_negative() { b"-0.0" } else { b"0.0" });
        return;
    }
    // ryu gives the same shortest digits as Python's repr; only the layout differs.
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v).as_bytes();
    let (neg, text) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exp) = match text.iter().position(|&b| b == b'e') {
        Some(p) => {
            let e: i32 = std::str::from_utf8(&text[p + 1..]).unwrap().parse().unwrap();
            (&text[..p], e)
        }
        None => (text, 0),
    };
    // Digits without the point, and the decimal exponent of the first digit.
    let mut digits: Vec<u8> = Vec::with_capacity(24);
    let point = mantissa.iter().position(|&b| b == b'.').unwrap_or(mantissa.len());
    digits.extend(mantissa.iter().filter(|&&b| b != b'.'));
    let mut exp10 = exp + point as i32 - 1;
    // Leading zeros (0.00123) move the exponent.
    let lead = digits.iter().take_while(|&&b| b == b'0').count();
    digits.drain(..lead);
    exp10 -= lead as i32;
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    if neg {
        out.push(b'-');
    }
    if (-5..16).contains(&exp10) {
        if exp10 < 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat(b'0').take((-exp10 - 1) as usize));
            out.extend_from_slice(&digits);
        } else {
            let int_len = exp10 as usize + 1;
            if digits.len() <= int_len {
                out.extend_from_slice(&digits);
                out.extend(std::iter::repeat(b'0').take(int_len - digits.len()));
                out.extend_from_slice(b".0");
            } else {
                out.extend_from_slice(&digits[..int_len]);
                out.push(b'.');
                out.extend_from_slice(&digits[int_len..]);
            }
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp10 < 0 { b'-' } else { b'+' });
        out.extend_from_slice(itoa::Buffer::new().format(exp10.unsigned_abs()).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> String {
        let mut out = Vec::new();
        float_into(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_as_orjson_writes_them() {
        for (v, want) in [
            (1e16, "1e+16"), (1e15, "1000000000000000.0"), (123456789012345.6, "123456789012345.6"),
            (1e-7, "1e-7"), (1.5e-7, "1.5e-7"), (0.0001, "0.0001"), (0.001, "0.001"),
            (123456789012345680.0, "1.2345678901234568e+17"), (0.1, "0.1"), (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"), (100.0, "100.0"),
            (-0.0, "-0.0"), (12.5, "12.5"), (1234567.0, "1234567.0"), (f64::INFINITY, "null"),
            (9999000000000000.0, "9999000000000000.0"), (-2.5e-5, "-0.000025"),
            (1e-5, "0.00001"), (1.2345678901234568e-5, "0.000012345678901234568"),
            (9.99e-6, "9.99e-6"), (9.999999999999999e-6, "9.999999999999999e-6"), (1e-6, "1e-6"),
        ] {
            assert_eq!(f(v), want, "{v:e}");
        }
    }

    #[test]
    fn escapes_as_orjson() {
        let mut out = Vec::new();
        escape_into(&mut out, "a\"\\\n\r\t\x08\x0c\x0b\x1b\x00\x7f\u{2028}é".as_bytes());
        assert_eq!(String::from_utf8(out).unwrap(), "a\\\"\\\\\\n\\r\\t\\b\\f\\u000b\\u001b\\u0000\x7f\u{2028}é");
    }
}
