//! Record boundaries, as Python's `csv` module finds them.
//!
//! The reader cuts the file into chunks on record boundaries with [`cut`]; the encoder then
//! parses each record of a chunk. Both follow `csv.reader` in its lenient mode, fed one
//! physical line at a time (which is how the verifier, the source of truth, reads a file):
//! a quote opens a quoted field only at the start of a field, a doubled quote inside one is
//! data, and after an error (a bare CR outside quotes) the rest of that line is dropped, so
//! the record ends at the next newline whatever quotes follow.

#[derive(Clone, Copy)]
pub struct Dialect {
    pub delimiter: u8,
    pub quote: Option<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    StartField,
    InField,
    InQuoted,
    QuoteInQuoted,
    EatCrnl,
    SkipLine,
}

/// One chunk of whole records: where it ends, its rows (records that are not blank lines) and
/// the newlines it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub end: usize,
    pub rows: u64,
    pub newlines: u64,
}

/// The end of the record that starts at `pos` (just past its newline), or None when `buf`
/// ends first.
pub fn record_end(buf: &[u8], pos: usize, d: Dialect) -> Option<usize> {
    let quote = d.quote.map_or(-1, i32::from);
    let delim = i32::from(d.delimiter);
    let mut state = State::StartField;
    let mut i = pos;
    while i < buf.len() {
        let c = buf[i];
        if state == State::InQuoted {
            // Inside quotes only the quote byte matters: jump to it.
            match memchr::memchr(c_quote(d), &buf[i..]) {
                Some(k) => {
                    i += k + 1;
                    state = State::QuoteInQuoted;
                    continue;
                }
                None => return None,
            }
        }
        let ci = i32::from(c);
        state = match state {
            State::StartField => {
                if c == b'\n' {
                    return Some(i + 1);
                } else if c == b'\r' {
                    State::EatCrnl
                } else if ci == quote {
                    State::InQuoted
                } else if ci == delim {
                    State::StartField
                } else {
                    State::InField
                }
            }
            State::InField => {
                // Runs of plain bytes are the common case: skip to the next byte that matters.
                match memchr::memchr3(b'\n', b'\r', d.delimiter, &buf[i..]) {
                    None => return None,
                    Some(k) => {
                        i += k;
                        match buf[i] {
                            b'\n' => return Some(i + 1),
                            b'\r' => State::EatCrnl,
                            _ => State::StartField,
                        }
                    }
                }
            }
            State::QuoteInQuoted => {
                if ci == quote {
                    State::InQuoted
                } else if ci == delim {
                    State::StartField
                } else if c == b'\n' {
                    return Some(i + 1);
                } else if c == b'\r' {
                    State::EatCrnl
                } else {
                    State::InField
                }
            }
            State::EatCrnl => match c {
                b'\n' => return Some(i + 1),
                b'\r' => State::EatCrnl,
                _ => State::SkipLine,
            },
            State::SkipLine => match memchr::memchr(b'\n', &buf[i..]) {
                Some(k) => return Some(i + k + 1),
                None => return None,
            },
            State::InQuoted => unreachable!(),
        };
        i += 1;
    }
    None
}

fn c_quote(d: Dialect) -> u8 {
    d.quote.unwrap_or(0)
}

/// A blank line ("\n", "\r\n", any run of CR and LF): skipped, not a row.
pub fn is_blank(rec: &[u8]) -> bool {
    rec.iter().all(|&b| b == b'\n' || b == b'\r')
}

/// Cuts `buf` (which starts on a record boundary) into chunks of at most `max_rows` rows and
/// about `max_bytes` bytes (a longer record makes a chunk of its own). Bytes after the last
/// cut are an incomplete record, unless `eof`: then they are the final record.
pub fn cut(buf: &[u8], d: Dialect, eof: bool, max_rows: u64, max_bytes: usize) -> Vec<Cut> {
    let mut cuts = Vec::new();
    let (mut start, mut pos, mut rows) = (0usize, 0usize, 0u64);
    let close = |cuts: &mut Vec<Cut>, start: &mut usize, end: usize, rows: &mut u64| {
        let newlines = memchr::memchr_iter(b'\n', &buf[*start..end]).count() as u64;
        cuts.push(Cut { end, rows: *rows, newlines });
        *start = end;
        *rows = 0;
    };
    while pos < buf.len() {
        let end = match record_end(buf, pos, d) {
            Some(e) => e,
            None if eof => buf.len(),
            None => break,
        };
        if end - start > max_bytes && pos > start {
            close(&mut cuts, &mut start, pos, &mut rows);
        }
        if !is_blank(&buf[pos..end]) {
            rows += 1;
        }
        pos = end;
        if rows >= max_rows || pos - start >= max_bytes {
            close(&mut cuts, &mut start, pos, &mut rows);
        }
    }
    if pos > start {
        close(&mut cuts, &mut start, pos, &mut rows);
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Dialect = Dialect { delimiter: b',', quote: Some(b'"') };

    #[test]
    fn quoted_newlines_stay_in_the_record() {
        let buf = b"a,\"x\ny\",c\nd,e,f\n";
        assert_eq!(record_end(buf, 0, D), Some(10));
        assert_eq!(record_end(buf, 10, D), Some(buf.len()));
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_is_data() {
        let buf = b"a,b\"c\nd\n";
        assert_eq!(record_end(buf, 0, D), Some(6));
    }

    #[test]
    fn a_bare_cr_drops_the_rest_of_the_line() {
        let buf = b"a\rb,\"c\nd\n";
        assert_eq!(record_end(buf, 0, D), Some(7));
    }

    #[test]
    fn cuts_count_rows_not_blank_lines() {
        let buf = b"a\n\n\r\nb\nc";
        let cuts = cut(buf, D, true, 2, 1 << 20);
        assert_eq!(cuts, vec![Cut { end: 7, rows: 2, newlines: 4 }, Cut { end: 8, rows: 1, newlines: 0 }]);
        assert_eq!(cut(buf, D, false, 10, 1 << 20), vec![Cut { end: 7, rows: 2, newlines: 4 }]);
    }
}
