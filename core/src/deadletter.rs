//! The dead-letter record: one per bad row, whatever set it aside (the CSV, a conversion,
//! Kafka). Built here, in one call per chunk, for every producer of dead letters; its fields
//! are documented, and its header names read by the verifier, in
//! `ingest_worker/kafka/deadletter.py` (which takes them from `HEADERS`).

use std::ffi::CStr;

pub const REASON: &CStr = c"reason";
pub const SOURCE: &CStr = c"source";
pub const LINE: &CStr = c"line";
pub const ROW: &CStr = c"row";
pub const OFFSET: &CStr = c"offset";
pub const KAFKA_ERROR: &CStr = c"kafka-error";
pub const TRUNCATED: &CStr = c"truncated";
pub const ORIGINAL_LENGTH: &CStr = c"original-length";

/// Every header name, in the order Python unpacks them.
pub const HEADERS: [&CStr; 8] = [REASON, SOURCE, LINE, ROW, OFFSET, KAFKA_ERROR, TRUNCATED, ORIGINAL_LENGTH];

/// A header's text is cut to this (a reason carries a value of the row; a URL is long).
const TEXT_MAX: usize = 4096;

/// A bad row, as the caller knows it.
pub struct BadRow<'a> {
    pub line: u64,
    pub row: u64,
    pub offset: u64,
    pub reason: &'a [u8],
    pub raw: &'a [u8],
    pub kafka_error: Option<i64>,
}

/// A dead-letter record ready to produce (its topic is the producer's).
pub struct DeadLetter {
    pub value: Vec<u8>,
    pub headers: Vec<(&'static CStr, Vec<u8>)>,
}

/// `text` (UTF-8) cut to at most `max` bytes, on a character boundary.
fn cut(text: &[u8], max: usize) -> &[u8] {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while end > 0 && text[end] & 0xC0 == 0x80 {
        end -= 1; // a continuation byte: step back to the character's start
    }
    &text[..end]
}

fn number(n: impl itoa::Integer) -> Vec<u8> {
    itoa::Buffer::new().format(n).as_bytes().to_vec()
}

/// The record of `bad`, from the file `source`: the row's bytes (cut to `room`, saying so)
/// and the headers that say why, where, and which row.
pub fn dead_letter(bad: &BadRow<'_>, source: &[u8], room: usize) -> DeadLetter {
    let mut headers = Vec::with_capacity(8);
    headers.push((REASON, cut(bad.reason, TEXT_MAX).to_vec()));
    headers.push((SOURCE, cut(source, TEXT_MAX).to_vec()));
    headers.push((LINE, number(bad.line)));
    headers.push((ROW, number(bad.row)));
    headers.push((OFFSET, number(bad.offset)));
    if let Some(code) = bad.kafka_error {
        headers.push((KAFKA_ERROR, number(code)));
    }
    let mut value = bad.raw;
    if value.len() > room {
        headers.push((TRUNCATED, b"true".to_vec()));
        headers.push((ORIGINAL_LENGTH, number(value.len())));
        value = &value[..room];
    }
    DeadLetter { value: value.to_vec(), headers }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dl: &DeadLetter) -> Vec<&str> {
        dl.headers.iter().map(|(k, _)| k.to_str().unwrap()).collect()
    }

    #[test]
    fn headers_say_why_where_and_which_row() {
        let bad = BadRow { line: 7, row: 5, offset: 120, reason: b"expected 3 fields, found 2", raw: b"a,b", kafka_error: None };
        let dl = dead_letter(&bad, b"s3://b/f.csv", 100);
        assert_eq!(dl.value, b"a,b");
        assert_eq!(names(&dl), ["reason", "source", "line", "row", "offset"]);
        assert_eq!(dl.headers[2].1, b"7");
        assert_eq!(dl.headers[4].1, b"120");
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(3000); // 6000 bytes
        let bad = BadRow { line: 1, row: 1, offset: 0, reason: reason.as_bytes(), raw: b"x", kafka_error: None };
        let dl = dead_letter(&bad, b"f", 100);
        assert_eq!(dl.headers[0].1.len(), 4096);
        assert!(std::str::from_utf8(&dl.headers[0].1).is_ok());
        assert_eq!(cut("aé".as_bytes(), 2), b"a");
        assert_eq!(cut(b"abc", 5), b"abc");
    }

    #[test]
    fn a_row_larger_than_the_room_is_cut_and_says_so() {
        let bad = BadRow { line: 1, row: 1, offset: 0, reason: b"refused by Kafka", raw: &[b'x'; 50], kafka_error: Some(10) };
        let dl = dead_letter(&bad, b"f", 20);
        assert_eq!(dl.value.len(), 20);
        assert_eq!(names(&dl), ["reason", "source", "line", "row", "offset", "kafka-error", "truncated", "original-length"]);
        assert_eq!(dl.headers[7].1, b"50");
    }
}
