//! The dead-letter record: one per bad row, whatever set it aside (the CSV, a conversion,
//! Kafka). Built here, from the batch the row belongs to, as the batch is produced; its fields
//! are documented, and its header names read by the verifier, in
//! `ingest_worker/kafka/deadletter.py` (which takes them from `HEADERS`).

use std::ffi::CStr;

use crate::badrows::{BadRows, SetAside};

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

/// Where a batch's dead letters go: the topic, the file they come from (the `source`
/// header), and the most of a row's bytes a record holds.
pub struct Target {
    pub topic: String,
    pub source: Vec<u8>,
    pub room: usize,
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

/// The dead letter of row `r` of `bad`, for `to`: its value (the row's bytes, cut to the
/// room) and, through `header`, the headers that say why, where, and which row (and that the
/// value was cut, when it was). Nothing is allocated: the caller's client copies the headers.
pub fn letter<'a>(bad: &'a BadRows, r: &SetAside, to: &Target, mut header: impl FnMut(&CStr, &[u8])) -> &'a [u8] {
    header(REASON, cut(bad.reason(r).as_bytes(), TEXT_MAX));
    header(SOURCE, cut(&to.source, TEXT_MAX));
    let mut n = itoa::Buffer::new();
    header(LINE, n.format(r.line).as_bytes());
    header(ROW, n.format(r.row).as_bytes());
    header(OFFSET, n.format(r.offset).as_bytes());
    if let Some(code) = r.kafka_error {
        header(KAFKA_ERROR, n.format(code).as_bytes());
    }
    let value = bad.raw(r);
    if value.len() > to.room {
        header(TRUNCATED, b"true");
        header(ORIGINAL_LENGTH, n.format(value.len()).as_bytes());
        return &value[..to.room];
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(bad: &BadRows, room: usize) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
        let to = Target { topic: "dlq".into(), source: b"s3://b/f.csv".to_vec(), room };
        let mut headers = Vec::new();
        let value = letter(bad, &bad.rows[0], &to, |k, v| headers.push((k.to_str().unwrap().to_string(), v.to_vec())));
        (value.to_vec(), headers)
    }

    fn names(headers: &[(String, Vec<u8>)]) -> Vec<&str> {
        headers.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn headers_say_why_where_and_which_row() {
        let mut bad = BadRows::default();
        bad.push_fields(7, 5, 120, b"a,b", 3, 2);
        let (value, headers) = build(&bad, 100);
        assert_eq!(value, b"a,b");
        assert_eq!(names(&headers), ["reason", "source", "line", "row", "offset"]);
        assert_eq!(headers[0].1, b"expected 3 fields, found 2");
        assert_eq!(headers[1].1, b"s3://b/f.csv");
        assert_eq!(headers[2].1, b"7");
        assert_eq!(headers[4].1, b"120");
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(3000); // 6000 bytes
        let mut bad = BadRows::default();
        bad.push(1, 1, 0, b"x", &reason, None, None);
        let (_, headers) = build(&bad, 100);
        assert_eq!(headers[0].1.len(), 4096);
        assert!(std::str::from_utf8(&headers[0].1).is_ok());
        assert_eq!(cut("aé".as_bytes(), 2), b"a");
        assert_eq!(cut(b"abc", 5), b"abc");
    }

    #[test]
    fn a_row_larger_than_the_room_is_cut_and_says_so() {
        let mut bad = BadRows::default();
        bad.push(1, 1, 0, &[b'x'; 50], "refused by Kafka: MSG_SIZE_TOO_LARGE", Some(10), None);
        let (value, headers) = build(&bad, 20);
        assert_eq!(value.len(), 20);
        assert_eq!(names(&headers), ["reason", "source", "line", "row", "offset", "kafka-error", "truncated", "original-length"]);
        assert_eq!(headers[5].1, b"10");
        assert_eq!(headers[7].1, b"50");
    }
}
