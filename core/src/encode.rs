//! A chunk of CSV records to Kafka messages: a JSON object per row, and its key.
//!
//! This is the strict subset of Python's `csv` that needs no judgement: well-formed quoted and
//! unquoted fields, valid UTF-8, the right field count, typed values that convert. A record
//! outside it (any doubt at all) is left to the exact path, Python's own csv module, which
//! either encodes it or names what is wrong with it; its slot keeps the row's place in order.

use crate::json;
use crate::records::{is_blank, record_end, Dialect};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Str,
    Int,
    Float,
    Bool,
    Timestamp,
}

impl ColType {
    pub fn parse(name: &str) -> Option<ColType> {
        Some(match name {
            "string" => ColType::Str,
            "int" => ColType::Int,
            "float" => ColType::Float,
            "bool" => ColType::Bool,
            "timestamp" => ColType::Timestamp,
            _ => return None,
        })
    }
}

pub struct Layout {
    pub dialect: Dialect,
    /// `{"name":` for the first column, `,"name":` for the others (names JSON-encoded by the
    /// caller, with orjson, so both paths write them the same).
    pub prefixes: Vec<Vec<u8>>,
    pub types: Vec<ColType>,
    pub key_columns: Vec<usize>,
    /// `,"_source":"…","_line":` when metadata is on.
    pub source: Option<Vec<u8>>,
    /// `,"_id":"<prefix>-` when event ids are on.
    pub id_prefix: Option<Vec<u8>>,
}

/// One message of a batch, by position in the batch's buffers.
#[derive(Clone, Copy, Debug)]
pub struct Msg {
    pub value: (usize, usize),
    /// (start, len); len 0 means no key (sent as null).
    pub key: (usize, usize),
    pub line: u64,
    /// Data row number within the chunk, from 1 (blank lines are not rows).
    pub row: u64,
    pub offset: u64,
    pub state: Slot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Ready,
    /// Waiting for the exact path.
    Pending,
    /// A bad row (the exact path said why): not sent.
    Rejected,
}

/// A record the exact path must look at: its slot and where it is in the chunk.
pub struct Exact {
    pub slot: usize,
    pub start: usize,
    pub end: usize,
    pub line: u64,
    pub row: u64,
}

#[derive(Default)]
pub struct BatchData {
    pub values: Vec<u8>,
    pub keys: Vec<u8>,
    pub msgs: Vec<Msg>,
}

impl BatchData {
    pub fn value(&self, m: &Msg) -> &[u8] {
        &self.values[m.value.0..m.value.0 + m.value.1]
    }
    pub fn key(&self, m: &Msg) -> Option<&[u8]> {
        (m.key.1 > 0).then(|| &self.keys[m.key.0..m.key.0 + m.key.1])
    }
}

#[derive(Clone, Copy)]
struct Field {
    start: usize,
    end: usize,
    /// A quoted field with doubled quotes inside: they collapse to one.
    doubled: bool,
}

const PY_STRIP: &[u8] = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f";

fn is_special(b: u8, d: Dialect) -> bool {
    b == d.delimiter || b == b'\r' || b == b'\n' || Some(b) == d.quote
}

/// The fields of one record body (no line terminator), or None when it is not plainly valid.
fn split(body: &[u8], d: Dialect, fields: &mut Vec<Field>) -> Option<()> {
    fields.clear();
    let mut i = 0;
    loop {
        if i == body.len() {
            fields.push(Field { start: i, end: i, doubled: false });
            return Some(());
        }
        if Some(body[i]) == d.quote {
            let q = body[i];
            let start = i + 1;
            let mut j = start;
            let mut doubled = false;
            let end = loop {
                let k = j + memchr::memchr(q, &body[j..])?;
                if body.get(k + 1) == Some(&q) {
                    doubled = true;
                    j = k + 2;
                } else {
                    break k;
                }
            };
            fields.push(Field { start, end, doubled });
            match body.get(end + 1) {
                None => return Some(()),
                Some(&c) if c == d.delimiter => i = end + 2,
                Some(_) => return None, // strict csv: "',' expected after '\"'"
            }
        } else {
            let mut j = i;
            while j < body.len() && !is_special(body[j], d) {
                j += 1;
            }
            fields.push(Field { start: i, end: j, doubled: false });
            if j == body.len() {
                return Some(());
            }
            if body[j] != d.delimiter {
                return None; // a literal quote, or a CR/LF outside quotes
            }
            i = j + 1;
        }
    }
}

fn strip_eol(rec: &[u8]) -> &[u8] {
    if rec.ends_with(b"\r\n") {
        &rec[..rec.len() - 2]
    } else if rec.ends_with(b"\n") {
        &rec[..rec.len() - 1]
    } else {
        rec
    }
}

fn unquote_into(out: &mut Vec<u8>, raw: &[u8], q: u8) {
    let mut prev_quote = false;
    for &b in raw {
        if b == q && prev_quote {
            prev_quote = false;
            continue;
        }
        prev_quote = b == q;
        out.push(b);
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|b| !PY_STRIP.contains(b)).unwrap_or(v.len());
    let e = v.iter().rposition(|b| !PY_STRIP.contains(b)).map_or(s, |p| p + 1);
    &v[s..e]
}

fn digits(v: &[u8]) -> usize {
    v.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// `^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`
fn is_float(v: &[u8]) -> bool {
    let mut i = usize::from(matches!(v.first(), Some(b'+' | b'-')));
    let int = digits(&v[i..]);
    i += int;
    if v.get(i) == Some(&b'.') {
        i += 1;
        let frac = digits(&v[i..]);
        if int == 0 && frac == 0 {
            return false;
        }
        i += frac;
    } else if int == 0 {
        return false;
    }
    if matches!(v.get(i), Some(b'e' | b'E')) {
        i += 1;
        i += usize::from(matches!(v.get(i), Some(b'+' | b'-')));
        let e = digits(&v[i..]);
        if e == 0 {
            return false;
        }
        i += e;
    }
    i == v.len()
}

/// `^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,9})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$`
fn is_timestamp(v: &[u8]) -> bool {
    fn n(v: &[u8], i: usize, k: usize) -> bool {
        v.len() >= i + k && v[i..i + k].iter().all(u8::is_ascii_digit)
    }
    if !(n(v, 0, 4) && v.get(4) == Some(&b'-') && n(v, 5, 2) && v.get(7) == Some(&b'-') && n(v, 8, 2)) {
        return false;
    }
    let mut i = 10;
    if matches!(v.get(i), Some(b'T' | b' ')) && n(v, i + 1, 2) && v.get(i + 3) == Some(&b':') && n(v, i + 4, 2) {
        i += 6;
        if v.get(i) == Some(&b':') && n(v, i + 1, 2) {
            i += 3;
            if matches!(v.get(i), Some(b'.' | b',')) {
                let f = digits(&v[i + 1..]);
                if (1..=9).contains(&f) {
                    i += 1 + f;
                }
            }
        }
    }
    match v.get(i) {
        None => true,
        Some(b'Z') => i + 1 == v.len(),
        Some(b'+' | b'-') => {
            if !n(v, i + 1, 2) {
                return false;
            }
            let mut j = i + 3;
            if v.get(j) == Some(&b':') && n(v, j + 1, 2) {
                j += 3;
            } else if n(v, j, 2) {
                j += 2;
            }
            j == v.len()
        }
        _ => false,
    }
}

/// Appends the JSON of a typed value, or returns None when it does not convert (the exact path
/// then names the problem).
fn typed_into(out: &mut Vec<u8>, raw: &[u8], t: ColType) -> Option<()> {
    if raw.iter().any(|&b| b >= 0x80) {
        return None; // Unicode whitespace would be trimmed by Python: let it decide
    }
    let v = trim(raw);
    if v.is_empty() {
        out.extend_from_slice(b"null");
        return Some(());
    }
    match t {
        ColType::Str => unreachable!(),
        ColType::Int => {
            let sign = usize::from(matches!(v[0], b'+' | b'-'));
            if v.len() == sign || digits(&v[sign..]) != v.len() - sign {
                return None;
            }
            let n: i64 = std::str::from_utf8(v).ok()?.parse().ok()?;
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        ColType::Float => {
            if !is_float(v) {
                return None;
            }
            let x: f64 = std::str::from_utf8(v).ok()?.parse().ok()?;
            json::float_into(out, x);
        }
        ColType::Bool => {
            let low = v.to_ascii_lowercase();
            match low.as_slice() {
                b"true" | b"t" | b"yes" | b"y" | b"1" => out.extend_from_slice(b"true"),
                b"false" | b"f" | b"no" | b"n" | b"0" => out.extend_from_slice(b"false"),
                _ => return None,
            }
        }
        ColType::Timestamp => {
            if !is_timestamp(v) {
                return None;
            }
            out.push(b'"');
            out.extend_from_slice(v);
            out.push(b'"');
        }
    }
    Some(())
}

/// What `encode` made of a chunk.
pub struct Encoded {
    pub data: BatchData,
    pub exact: Vec<Exact>,
    pub rows_read: u64,
}

impl Layout {
    /// Encodes the records of `chunk` (whole records, from the reader's cut). `offset` and
    /// `line` are the chunk's position in the file.
    pub fn encode(&self, chunk: &[u8], offset: u64, line: u64) -> Encoded {
        let d = self.dialect;
        let mut data = BatchData {
            values: Vec::with_capacity(chunk.len() * 3),
            keys: Vec::with_capacity(if self.key_columns.is_empty() { 0 } else { chunk.len() / 4 }),
            msgs: Vec::with_capacity(chunk.len() / 64 + 1),
        };
        let mut exact = Vec::new();
        let mut fields = Vec::with_capacity(self.types.len() + 1);
        let (mut pos, mut line_no, mut rows) = (0usize, line, 0u64);
        let mut scratch = Vec::new();
        while pos < chunk.len() {
            let end = record_end(chunk, pos, d).unwrap_or(chunk.len());
            let rec = &chunk[pos..end];
            let rec_line = line_no;
            line_no += memchr::memchr_iter(b'\n', rec).count() as u64;
            let rec_pos = pos;
            pos = end;
            if is_blank(rec) {
                continue;
            }
            rows += 1;
            let v0 = data.values.len();
            let k0 = data.keys.len();
            let ok = self.encode_record(strip_eol(rec), rec_line, offset + rec_pos as u64,
                                        &mut fields, &mut data, &mut scratch);
            let mut msg = Msg {
                value: (v0, data.values.len() - v0),
                key: (k0, data.keys.len() - k0),
                line: rec_line,
                row: rows,
                offset: offset + rec_pos as u64,
                state: Slot::Ready,
            };
            if ok.is_none() {
                data.values.truncate(v0);
                data.keys.truncate(k0);
                msg.value = (v0, 0);
                msg.key = (k0, 0);
                msg.state = Slot::Pending;
                exact.push(Exact { slot: data.msgs.len(), start: rec_pos, end, line: rec_line, row: rows });
            }
            data.msgs.push(msg);
        }
        Encoded { data, exact, rows_read: rows }
    }

    fn encode_record(
        &self, body: &[u8], line: u64, offset: u64, fields: &mut Vec<Field>, data: &mut BatchData,
        scratch: &mut Vec<u8>,
    ) -> Option<()> {
        let d = self.dialect;
        if memchr::memchr(0, body).is_some() || std::str::from_utf8(body).is_err() {
            return None;
        }
        split(body, d, fields)?;
        if fields.len() != self.types.len() {
            return None;
        }
        let out = &mut data.values;
        for (i, f) in fields.iter().enumerate() {
            out.extend_from_slice(&self.prefixes[i]);
            let raw = &body[f.start..f.end];
            let t = self.types[i];
            if t == ColType::Str {
                out.push(b'"');
                if f.doubled {
                    scratch.clear();
                    unquote_into(scratch, raw, d.quote.unwrap_or(b'"'));
                    json::escape_into(out, scratch);
                } else if json::is_plain(raw) {
                    out.extend_from_slice(raw);
                } else {
                    json::escape_into(out, raw);
                }
                out.push(b'"');
            } else {
                if f.doubled {
                    return None;
                }
                typed_into(out, raw, t)?;
            }
        }
        if let Some(src) = &self.source {
            out.extend_from_slice(src);
            out.extend_from_slice(itoa::Buffer::new().format(line).as_bytes());
        }
        if let Some(id) = &self.id_prefix {
            out.extend_from_slice(id);
            out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
        for (n, &k) in self.key_columns.iter().enumerate() {
            if n > 0 {
                data.keys.push(b'|');
            }
            let f = fields[k];
            if f.doubled {
                unquote_into(&mut data.keys, &body[f.start..f.end], d.quote.unwrap_or(b'"'));
            } else {
                data.keys.extend_from_slice(&body[f.start..f.end]);
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(types: &[ColType]) -> Layout {
        let prefixes = (0..types.len())
            .map(|i| format!("{}\"c{i}\":", if i == 0 { "{" } else { "," }).into_bytes())
            .collect();
        Layout {
            dialect: Dialect { delimiter: b',', quote: Some(b'"') },
            prefixes,
            types: types.to_vec(),
            key_columns: vec![0],
            source: None,
            id_prefix: Some(b",\"_id\":\"p-".to_vec()),
        }
    }

    #[test]
    fn encodes_rows_and_leaves_doubtful_ones() {
        let l = layout(&[ColType::Str, ColType::Int]);
        let chunk = b"a,1\n\"x,\"\"y\",2\r\n\nb\"c,3\nd,x\n";
        let e = l.encode(chunk, 100, 5);
        let vals: Vec<_> = e.data.msgs.iter().map(|m| String::from_utf8(e.data.value(m).to_vec()).unwrap()).collect();
        assert_eq!(vals[0], r#"{"c0":"a","c1":1,"_id":"p-100"}"#);
        assert_eq!(vals[1], r#"{"c0":"x,\"y","c1":2,"_id":"p-104"}"#);
        assert_eq!(e.data.key(&e.data.msgs[1]), Some(&b"x,\"y"[..]));
        assert_eq!(e.exact.iter().map(|x| x.slot).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(e.rows_read, 4);
        assert_eq!(e.exact[0].line, 8);
    }

    #[test]
    fn typed_rules() {
        assert!(is_float(b"1.") && is_float(b".5") && is_float(b"+1e-3") && !is_float(b".") && !is_float(b"1e"));
        assert!(is_timestamp(b"2024-01-02") && is_timestamp(b"2024-01-02T03:04:05.123Z"));
        assert!(is_timestamp(b"2024-01-02 03:04+0100") && !is_timestamp(b"2024-01-02T03"));
    }
}
