//! A chunk of CSV records to Kafka messages: a JSON object per row, and its key.
//!
//! This is the strict subset of Python's `csv` that needs no judgement: well-formed quoted and
//! unquoted fields, valid UTF-8, no NUL. A record outside it (any doubt at all) is left to the
//! exact path, Python's own csv module, which either encodes it or names what is wrong with it;
//! its slot keeps the row's place in order.
//!
//! A record split without doubt whose field count is wrong, or whose typed value (not quoted
//! with doubled quotes, ASCII) does not convert, is a bad row here: Python's csv would split it
//! into the same fields and `convert` would refuse the same bytes, so the exact path could only
//! say the same. Its slot is rejected at once and the row, worded, joins the batch's bad rows
//! (`crate::badrows`).

use crate::avro;
use crate::badrows::BadRows;
use crate::json;
use crate::records::{is_blank, record_end, Dialect};
use crate::types::{convert, trim, ColType, Column, Val};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Avro,
}

pub struct Layout {
    pub dialect: Dialect,
    pub format: Format,
    /// Written before every value: Confluent's framing (magic byte 0, the schema id), or nothing.
    pub frame: Vec<u8>,
    /// JSON: `{"name":` for the first column, `,"name":` for the others (names JSON-encoded by
    /// the caller, with orjson).
    pub prefixes: Vec<Vec<u8>>,
    pub columns: Vec<Column>,
    /// The column written at each position of the value (the schema's field order).
    pub order: Vec<usize>,
    pub key_columns: Vec<usize>,
    /// Avro keys: the key schema's framing; each key is then a record of the key columns.
    pub key_frame: Option<Vec<u8>>,
    /// JSON: `,"_source":"…","_line":`; Avro: the URL. When metadata is on.
    pub source: Option<Vec<u8>>,
    /// JSON: `,"_id":"<prefix>-`; Avro: `<prefix>-`. When event ids are on.
    pub id_prefix: Option<Vec<u8>>,
    /// Each column's name as Python's `repr` writes it: a bad row's reason quotes it.
    pub names: Vec<String>,
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
    /// A bad row (set aside here, by the exact path, or withheld): not sent.
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
    /// The chunk's bad rows: their dead letters go with the batch.
    pub bad: BadRows,
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

/// A typed value as JSON: decimals as strings of exactly `scale` digits after the point (no
/// float rounding), dates and timestamps as the file's text (validated), trimmed.
fn json_value(out: &mut Vec<u8>, v: Val, text: &[u8], scale: u32) {
    match v {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        Val::Float(x) => json::float_into(out, x),
        Val::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Val::Decimal(n) => {
            out.push(b'"');
            if n < 0 {
                out.push(b'-');
            }
            let mut buf = itoa::Buffer::new();
            let digits = buf.format(n.unsigned_abs()).as_bytes();
            let scale = scale as usize;
            // Exactly `scale` digits after the point, and at least one before it.
            let int_len = digits.len().saturating_sub(scale);
            if int_len == 0 {
                out.push(b'0');
            } else {
                out.extend_from_slice(&digits[..int_len]);
            }
            if scale > 0 {
                out.push(b'.');
                out.extend(std::iter::repeat_n(b'0', scale - (digits.len() - int_len)));
                out.extend_from_slice(&digits[int_len..]);
            }
            out.push(b'"');
        }
        Val::Date(_) | Val::Timestamp(_) => {
            out.push(b'"');
            out.extend_from_slice(trim(text));
            out.push(b'"');
        }
    }
}

fn avro_value(out: &mut Vec<u8>, v: Val) {
    match v {
        Val::Null => unreachable!("written as the union's branch"),
        Val::Int(n) | Val::Timestamp(n) => avro::long(out, n),
        Val::Date(d) => avro::long(out, i64::from(d)),
        Val::Float(x) => avro::double(out, x),
        Val::Bool(b) => out.push(u8::from(b)),
        Val::Decimal(n) => avro::decimal(out, n),
    }
}

/// A row that cannot be encoded: the column (by index) and why.
pub type Refused = (usize, String);

/// What `encode_record` made of one record.
enum Outcome {
    Encoded,
    Doubt,
    /// The fields it has (the layout has another count).
    Fields(usize),
    /// A value that does not convert: its column, why, and where it is in the record.
    Value { column: usize, why: String, start: usize, end: usize },
}

/// What `encode` made of a chunk.
pub struct Encoded {
    pub data: BatchData,
    pub exact: Vec<Exact>,
    pub rows_read: u64,
}

impl Layout {
    /// Encodes the records of `chunk` (whole records, from the reader's cut). `offset`, `line`
    /// and `row` are the chunk's position in the file (`row`: the data rows before it).
    pub fn encode(&self, chunk: &[u8], offset: u64, line: u64, row: u64) -> Encoded {
        let d = self.dialect;
        let mut data = BatchData {
            values: Vec::with_capacity(chunk.len() * 3),
            keys: Vec::with_capacity(if self.key_columns.is_empty() { 0 } else { chunk.len() / 4 }),
            msgs: Vec::with_capacity(chunk.len() / 64 + 1),
            bad: BadRows::default(),
        };
        let mut exact = Vec::new();
        let mut fields = Vec::with_capacity(self.columns.len() + 1);
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
            let body = strip_eol(rec);
            let outcome = self.encode_record(body, rec_line, offset + rec_pos as u64,
                                             &mut fields, &mut data, &mut scratch);
            let mut msg = Msg {
                value: (v0, data.values.len() - v0),
                key: (k0, data.keys.len() - k0),
                line: rec_line,
                row: rows,
                offset: offset + rec_pos as u64,
                state: Slot::Ready,
            };
            if !matches!(outcome, Outcome::Encoded) {
                data.values.truncate(v0);
                data.keys.truncate(k0);
                msg.value = (v0, 0);
                msg.key = (k0, 0);
                msg.state = Slot::Rejected;
            }
            let at = (rec_line, row + rows, msg.offset);
            match outcome {
                Outcome::Encoded => {}
                Outcome::Doubt => {
                    msg.state = Slot::Pending;
                    exact.push(Exact { slot: data.msgs.len(), start: rec_pos, end, line: rec_line, row: rows });
                }
                Outcome::Fields(found) => data.bad.push_fields(at.0, at.1, at.2, body, self.columns.len(), found),
                Outcome::Value { column, why, start, end } => {
                    data.bad.push_value(at.0, at.1, at.2, body, &self.names[column], &why, &body[start..end]);
                }
            }
            data.msgs.push(msg);
        }
        Encoded { data, exact, rows_read: rows }
    }

    fn encode_record(
        &self, body: &[u8], line: u64, offset: u64, fields: &mut Vec<Field>, data: &mut BatchData,
        scratch: &mut Vec<u8>,
    ) -> Outcome {
        if memchr::memchr(0, body).is_some() || std::str::from_utf8(body).is_err()
            || split(body, self.dialect, fields).is_none() {
            return Outcome::Doubt;
        }
        if fields.len() != self.columns.len() {
            return Outcome::Fields(fields.len());
        }
        match self.write_row(body, fields, line, offset, data, scratch) {
            Ok(()) => Outcome::Encoded,
            // A typed value with doubled quotes: Python unquotes it before converting. One
            // that is not ASCII: Python's repr of it needs Python's Unicode database.
            Err((i, _)) if fields[i].doubled || !body[fields[i].start..fields[i].end].is_ascii() => Outcome::Doubt,
            Err((column, why)) => {
                let f = fields[column];
                Outcome::Value { column, why, start: f.start, end: f.end }
            }
        }
    }

    /// One record split by Python's csv (the exact path): its value and key, or why not.
    /// Typed fields come stripped of Python's whitespace.
    pub fn encode_fields(&self, values: &[&str], line: u64, offset: u64) -> Result<(Vec<u8>, Vec<u8>), Refused> {
        let mut body = Vec::with_capacity(values.iter().map(|v| v.len()).sum());
        let mut fields = Vec::with_capacity(values.len());
        for v in values {
            let start = body.len();
            body.extend_from_slice(v.as_bytes());
            fields.push(Field { start, end: body.len(), doubled: false });
        }
        let mut data = BatchData::default();
        self.write_row(&body, &fields, line, offset, &mut data, &mut Vec::new())?;
        Ok((data.values, data.keys))
    }

    /// Appends a row's value and key to `data`; on failure, what was appended is garbage (the
    /// caller truncates it).
    fn write_row(
        &self, body: &[u8], fields: &[Field], line: u64, offset: u64, data: &mut BatchData,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Refused> {
        let out = &mut data.values;
        out.extend_from_slice(&self.frame);
        let avro = self.format == Format::Avro;
        for (pos, &i) in self.order.iter().enumerate() {
            let (f, col) = (fields[i], &self.columns[i]);
            let raw = &body[f.start..f.end];
            if avro {
                self.avro_field(out, col, raw, f.doubled, scratch).map_err(|r| (i, r))?;
            } else {
                out.extend_from_slice(&self.prefixes[pos]);
                self.json_field(out, col, raw, f.doubled, scratch).map_err(|r| (i, r))?;
            }
        }
        if let Some(src) = &self.source {
            if avro {
                avro::bytes(out, src);
                avro::long(out, line as i64);
            } else {
                out.extend_from_slice(src);
                out.extend_from_slice(itoa::Buffer::new().format(line).as_bytes());
            }
        }
        if let Some(id) = &self.id_prefix {
            let mut num = itoa::Buffer::new();
            let num = num.format(offset).as_bytes();
            if avro {
                avro::long(out, (id.len() + num.len()) as i64);
                out.extend_from_slice(id);
                out.extend_from_slice(num);
            } else {
                out.extend_from_slice(id);
                out.extend_from_slice(num);
                out.push(b'"');
            }
        }
        if !avro {
            out.push(b'}');
        }
        let keys = &mut data.keys;
        if let Some(frame) = &self.key_frame {
            keys.extend_from_slice(frame);
            for &k in &self.key_columns {
                let f = fields[k];
                self.avro_field(keys, &self.columns[k], &body[f.start..f.end], f.doubled, scratch)
                    .map_err(|r| (k, r))?;
            }
            return Ok(());
        }
        for (n, &k) in self.key_columns.iter().enumerate() {
            if n > 0 {
                keys.push(b'|');
            }
            let f = fields[k];
            if f.doubled {
                unquote_into(keys, &body[f.start..f.end], self.quote());
            } else {
                keys.extend_from_slice(&body[f.start..f.end]);
            }
        }
        Ok(())
    }

    fn quote(&self) -> u8 {
        self.dialect.quote.unwrap_or(b'"')
    }

    /// A string field's text: unquoted into `scratch` when it has doubled quotes.
    fn text<'a>(&self, raw: &'a [u8], doubled: bool, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        if !doubled {
            return raw;
        }
        scratch.clear();
        unquote_into(scratch, raw, self.quote());
        scratch
    }

    fn json_field(&self, out: &mut Vec<u8>, col: &Column, raw: &[u8], doubled: bool, scratch: &mut Vec<u8>) -> Result<(), String> {
        if col.ty == ColType::Str {
            let text = self.text(raw, doubled, scratch);
            if col.nullable && text.is_empty() {
                out.extend_from_slice(b"null");
            } else {
                out.push(b'"');
                if json::is_plain(text) {
                    out.extend_from_slice(text);
                } else {
                    json::escape_into(out, text);
                }
                out.push(b'"');
            }
            return Ok(());
        }
        if doubled {
            return Err(String::from("quoted with doubled quotes"));
        }
        json_value(out, convert(raw, col, false)?, raw, col.scale);
        Ok(())
    }

    /// A field in Avro: a nullable column is the union ["null", T] (branch 0 or 1 first).
    fn avro_field(&self, out: &mut Vec<u8>, col: &Column, raw: &[u8], doubled: bool, scratch: &mut Vec<u8>) -> Result<(), String> {
        if col.ty == ColType::Str {
            let text = self.text(raw, doubled, scratch);
            if col.nullable {
                out.push(if text.is_empty() { 0 } else { 2 });
            }
            if !(col.nullable && text.is_empty()) {
                avro::bytes(out, text);
            }
            return Ok(());
        }
        if doubled {
            return Err(String::from("quoted with doubled quotes"));
        }
        let v = convert(raw, col, true)?;
        if col.nullable {
            out.push(if v == Val::Null { 0 } else { 2 });
        }
        if v != Val::Null {
            avro_value(out, v);
        }
        Ok(())
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
            format: Format::Json,
            frame: Vec::new(),
            prefixes,
            columns: types.iter().map(|&t| Column::plain(t)).collect(),
            order: (0..types.len()).collect(),
            key_columns: vec![0],
            key_frame: None,
            source: None,
            id_prefix: Some(b",\"_id\":\"p-".to_vec()),
            names: (0..types.len()).map(|i| format!("'c{i}'")).collect(),
        }
    }

    fn bad(e: &Encoded) -> Vec<(u64, u64, u64, String, String)> {
        let b = &e.data.bad;
        b.rows.iter().map(|r| (r.line, r.row, r.offset, String::from_utf8(b.raw(r).to_vec()).unwrap(), b.reason(r).to_string())).collect()
    }

    #[test]
    fn encodes_rows_and_leaves_doubtful_ones() {
        let l = layout(&[ColType::Str, ColType::Int]);
        let chunk = b"a,1\n\"x,\"\"y\",2\r\n\nb\"c,3\nd,x\n";
        let e = l.encode(chunk, 100, 5, 10);
        let vals: Vec<_> = e.data.msgs.iter().map(|m| String::from_utf8(e.data.value(m).to_vec()).unwrap()).collect();
        assert_eq!(vals[0], r#"{"c0":"a","c1":1,"_id":"p-100"}"#);
        assert_eq!(vals[1], r#"{"c0":"x,\"y","c1":2,"_id":"p-104"}"#);
        assert_eq!(e.data.key(&e.data.msgs[1]), Some(&b"x,\"y"[..]));
        // A literal quote in an unquoted field: Python's csv says what is wrong with it.
        assert_eq!(e.exact.iter().map(|x| x.slot).collect::<Vec<_>>(), vec![2]);
        assert_eq!(e.rows_read, 4);
        assert_eq!(e.exact[0].line, 8);
        // "x" is plainly not an int: a bad row without the exact path, worded here.
        assert_eq!(bad(&e), [(9, 14, 122, "d,x".into(), "column 'c1': not an int: 'x'".into())]);
        assert_eq!(e.data.msgs[3].state, Slot::Rejected);
        assert_eq!(e.data.bad.kind(&e.data.bad.rows[0]), "column 'c1': not an int");
    }

    #[test]
    fn a_value_not_ascii_is_left_to_the_exact_path() {
        let l = layout(&[ColType::Str, ColType::Int]);
        let e = l.encode("a,é\n".as_bytes(), 0, 1, 0);
        assert!(e.data.bad.rows.is_empty());
        assert_eq!(e.exact.len(), 1);
    }

    #[test]
    fn a_wrong_field_count_is_bad_and_a_doubled_typed_value_is_doubt() {
        let l = layout(&[ColType::Str, ColType::Int]);
        let e = l.encode(b"a\n\"b\",1,2\nc,\"1\"\"\"\n", 0, 1, 0);
        let reasons: Vec<_> = bad(&e).into_iter().map(|b| (b.1, b.4)).collect();
        assert_eq!(reasons, [(1, "expected 2 fields, found 1".into()), (2, "expected 2 fields, found 3".into())]);
        assert_eq!(e.exact.iter().map(|x| x.row).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn avro_rows() {
        let mut l = layout(&[ColType::Str, ColType::Int, ColType::Decimal]);
        l.format = Format::Avro;
        l.frame = vec![0, 0, 0, 0, 7];
        l.columns[2].scale = 2;
        l.id_prefix = Some(b"p-".to_vec());
        let e = l.encode(b"ab,-1,1.5\n,,\n", 10, 1, 0);
        let v: Vec<_> = e.data.msgs.iter().map(|m| e.data.value(m).to_vec()).collect();
        // "ab"; union branch 1, long -1; branch 1, bytes [0, 150] (150 is negative in one byte); "p-10"
        assert_eq!(v[0], [&[0, 0, 0, 0, 7, 4, b'a', b'b', 2, 1, 2, 4, 0, 150][..], b"\x08p-10"].concat());
        assert_eq!(v[1], [&[0, 0, 0, 0, 7, 0, 0, 0][..], b"\x08p-20"].concat());
        let refused = l.encode_fields(&["x", "1", "0.001"], 1, 0).unwrap_err();
        assert_eq!(refused, (2, String::from("more than 2 digits after the point")));
    }

    #[test]
    fn json_decimals_keep_their_scale() {
        let mut l = layout(&[ColType::Str, ColType::Decimal]);
        l.columns[1].scale = 3;
        l.id_prefix = None;
        let (v, k) = l.encode_fields(&["a", "-0.5"], 1, 0).unwrap();
        assert_eq!(String::from_utf8(v).unwrap(), r#"{"c0":"a","c1":"-0.500"}"#);
        assert_eq!(k, b"a");
        for (text, want) in [("12.5", "12.500"), ("0", "0.000"), ("-7", "-7.000"), (".001", "0.001")] {
            let (v, _) = l.encode_fields(&["a", text], 1, 0).unwrap();
            assert_eq!(String::from_utf8(v).unwrap(), format!(r#"{{"c0":"a","c1":"{want}"}}"#));
        }
        l.columns[1].scale = 0;
        let (v, _) = l.encode_fields(&["a", "42"], 1, 0).unwrap();
        assert_eq!(String::from_utf8(v).unwrap(), r#"{"c0":"a","c1":"42"}"#);
    }
}
