//! A batch's bad rows, kept in the batch from the moment they are found to the moment their
//! dead letters are acknowledged: no object per row, one buffer per batch for their bytes.
//!
//! A row the encoder sets aside is worded here, as `ingest_worker/csv/encode.py` words the ones
//! the exact path finds (the property tests hold the two to the same words): `expected N
//! fields, found M`, or `column NAME: WHY: VALUE` with NAME and VALUE as Python's `repr`
//! writes them. Each reason has a kind, what rows that fail the same way share (the log
//! counts by kind): the reason without what is particular to its row.

/// One bad row: where it is in the file, and its bytes and reason in the batch's buffer.
#[derive(Clone, Copy, Debug)]
pub struct SetAside {
    pub line: u64,
    /// Data row number in the file (header and blank lines excluded), from 1.
    pub row: u64,
    pub offset: u64,
    /// The record's bytes without its line terminator: (start, len) in `BadRows::bytes`.
    raw: (usize, usize),
    reason: (usize, usize),
    /// The reason's first `kind` bytes are its kind.
    kind: usize,
    /// Kafka's error code, when Kafka refused the row's message.
    pub kafka_error: Option<i64>,
}

#[derive(Default)]
pub struct BadRows {
    pub rows: Vec<SetAside>,
    bytes: Vec<u8>,
}

impl BadRows {
    pub fn raw(&self, r: &SetAside) -> &[u8] {
        &self.bytes[r.raw.0..r.raw.0 + r.raw.1]
    }

    pub fn reason(&self, r: &SetAside) -> &str {
        // Only ever appended from &str and ASCII: whole characters.
        std::str::from_utf8(&self.bytes[r.reason.0..r.reason.0 + r.reason.1]).expect("UTF-8")
    }

    pub fn kind(&self, r: &SetAside) -> &str {
        &self.reason(r)[..r.kind]
    }

    /// A row whose reason is already worded (the exact path's, or Kafka's refusal), with its
    /// kind when the caller knows it (a prefix of the reason), else as `reason_kind` reads it.
    #[allow(clippy::too_many_arguments)]
    pub fn push(&mut self, line: u64, row: u64, offset: u64, raw: &[u8], reason: &str, kafka_error: Option<i64>, kind: Option<&str>) {
        let kind = match kind {
            Some(k) if reason.starts_with(k) => k.len(),
            _ => reason_kind(reason),
        };
        self.push_with(line, row, offset, raw, kafka_error, |out| {
            out.extend_from_slice(reason.as_bytes());
            kind
        });
    }

    /// A record with `found` fields where the layout has `expected`.
    pub fn push_fields(&mut self, line: u64, row: u64, offset: u64, raw: &[u8], expected: usize, found: usize) {
        self.push_with(line, row, offset, raw, None, |out| {
            let start = out.len();
            out.extend_from_slice(b"expected ");
            out.extend_from_slice(itoa::Buffer::new().format(expected).as_bytes());
            out.extend_from_slice(b" fields, found ");
            out.extend_from_slice(itoa::Buffer::new().format(found).as_bytes());
            out.len() - start // no ": " in it: all of it is the kind
        });
    }

    /// A value (ASCII: see `repr_ascii`) of the column whose repr is `column` that does not
    /// convert, for `why`.
    #[allow(clippy::too_many_arguments)]
    pub fn push_value(&mut self, line: u64, row: u64, offset: u64, raw: &[u8], column: &str, why: &str, value: &[u8]) {
        self.push_with(line, row, offset, raw, None, |out| {
            let start = out.len();
            out.extend_from_slice(b"column ");
            out.extend_from_slice(column.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(why.as_bytes());
            let kind = out.len() - start;
            out.extend_from_slice(b": ");
            repr_ascii(out, value);
            kind
        });
    }

    fn push_with(&mut self, line: u64, row: u64, offset: u64, raw: &[u8], kafka_error: Option<i64>,
                 word: impl FnOnce(&mut Vec<u8>) -> usize) {
        let r0 = self.bytes.len();
        self.bytes.extend_from_slice(raw);
        let s0 = self.bytes.len();
        let kind = word(&mut self.bytes);
        self.rows.push(SetAside {
            line, row, offset, raw: (r0, raw.len()), reason: (s0, self.bytes.len() - s0), kind, kafka_error,
        });
    }

    /// In file order (rows pushed by the exact path or Kafka come after the encoder's).
    pub fn sort(&mut self) {
        if !self.rows.is_sorted_by_key(|r| r.offset) {
            self.rows.sort_by_key(|r| r.offset);
        }
    }
}

/// The length of `reason`'s kind: `column 'amount': not an int: 'x'` is `column 'amount': not
/// an int` (the value is last); `invalid utf-8 at byte 7 of the row` is `invalid utf-8`;
/// `refused by Kafka: MSG_SIZE_TOO_LARGE` is `refused by Kafka`; a reason with none of these
/// shapes is its own kind.
pub fn reason_kind(reason: &str) -> usize {
    let cut = if reason.starts_with("column ") {
        reason.rfind(": ")
    } else if reason.starts_with("invalid ") {
        reason.find(" at byte ")
    } else {
        reason.find(": ")
    };
    cut.unwrap_or(reason.len())
}

/// Python's `repr` of an ASCII string (what `{value!r}` writes), into `out`. Only ASCII:
/// Python's rules for the rest need its Unicode database, so the encoder leaves a value that is
/// not to the exact path.
fn repr_ascii(out: &mut Vec<u8>, text: &[u8]) {
    debug_assert!(text.is_ascii());
    let quote = if text.contains(&b'\'') && !text.contains(&b'"') { b'"' } else { b'\'' };
    out.push(quote);
    for &c in text {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            c if c == quote => out.extend_from_slice(&[b'\\', c]),
            c if c < b' ' || c == 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(text: &str) -> String {
        let mut out = Vec::new();
        repr_ascii(&mut out, text.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn repr_is_pythons() {
        // Each right-hand side is what Python 3 prints for repr() of the left.
        assert_eq!(repr("x4"), "'x4'");
        assert_eq!(repr(""), "''");
        assert_eq!(repr("it's"), "\"it's\"");
        assert_eq!(repr("'\""), "'\\'\"'");
        assert_eq!(repr("a\\b\tc\nd\re"), "'a\\\\b\\tc\\nd\\re'");
        assert_eq!(repr("\x01\x1f\x7f"), "'\\x01\\x1f\\x7f'");
    }

    #[test]
    fn kinds_drop_what_is_particular_to_the_row() {
        fn kind(r: &str) -> &str {
            &r[..reason_kind(r)]
        }
        assert_eq!(kind("column 'a': not an int: 'x'"), "column 'a': not an int");
        assert_eq!(kind("invalid utf-8 at byte 7 of the row"), "invalid utf-8");
        assert_eq!(kind("refused by Kafka: MSG_SIZE_TOO_LARGE"), "refused by Kafka");
        assert_eq!(kind("expected 3 fields, found 2"), "expected 3 fields, found 2");
        assert_eq!(kind("malformed CSV: one record expected, found 2"), "malformed CSV");
    }

    #[test]
    fn rows_keep_their_bytes_reason_and_kind_in_file_order() {
        let mut bad = BadRows::default();
        bad.push_value(9, 8, 200, b"8,x", "'amount'", "not an int", b"x");
        bad.push_fields(3, 2, 40, b"2", 2, 1);
        bad.push(5, 4, 90, b"\"4", "unterminated quoted field at end of file", None, None);
        bad.push(7, 6, 150, b"6,\"a: b\"\"\"", "column 'amount': not an int: 'a: b\"'", None, Some("column 'amount': not an int"));
        bad.sort();
        let got: Vec<(u64, &[u8], &str, &str)> = bad.rows.iter()
            .map(|r| (r.offset, bad.raw(r), bad.reason(r), bad.kind(r))).collect();
        assert_eq!(got, [
            (40, &b"2"[..], "expected 2 fields, found 1", "expected 2 fields, found 1"),
            (90, &b"\"4"[..], "unterminated quoted field at end of file", "unterminated quoted field at end of file"),
            (150, &b"6,\"a: b\"\"\""[..], "column 'amount': not an int: 'a: b\"'", "column 'amount': not an int"),
            (200, &b"8,x"[..], "column 'amount': not an int: 'x'", "column 'amount': not an int"),
        ]);
    }
}
