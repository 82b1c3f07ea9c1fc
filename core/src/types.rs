//! A field's text to a typed value, by the column's declared (or inferred) type.
//!
//! The one implementation of the conversion rules: the vectorised path and the exact path
//! (fields split by Python's csv) both call `convert`, so a value converts the same whatever
//! path its record took. Python documents the rules (README, "Types"); the verifier checks them
//! independently.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ColType {
    Str,
    Int,
    Float,
    Bool,
    Decimal,
    Date,
    Timestamp,
}

impl ColType {
    pub fn parse(name: &str) -> Option<ColType> {
        Some(match name {
            "string" => ColType::Str,
            "int" => ColType::Int,
            "float" => ColType::Float,
            "bool" => ColType::Bool,
            "decimal" => ColType::Decimal,
            "date" => ColType::Date,
            "timestamp" => ColType::Timestamp,
            _ => return None,
        })
    }
}

/// One piece of a date or timestamp pattern (strftime's directives, the subset files use).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Piece {
    Lit(u8),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Fraction,
    Zone,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TimeFormat {
    Iso,
    Pattern(Vec<Piece>),
    /// Seconds, milliseconds or microseconds since the epoch: the unit in microseconds.
    Epoch(i64),
}

impl TimeFormat {
    pub fn parse(text: Option<&str>) -> Result<TimeFormat, String> {
        let Some(text) = text else { return Ok(TimeFormat::Iso) };
        Ok(match text {
            "iso8601" => TimeFormat::Iso,
            "epochSeconds" => TimeFormat::Epoch(1_000_000),
            "epochMillis" => TimeFormat::Epoch(1_000),
            "epochMicros" => TimeFormat::Epoch(1),
            _ => {
                let mut pieces = Vec::new();
                let mut it = text.bytes();
                while let Some(b) = it.next() {
                    if b != b'%' {
                        pieces.push(Piece::Lit(b));
                        continue;
                    }
                    pieces.push(match it.next() {
                        Some(b'Y') => Piece::Year,
                        Some(b'm') => Piece::Month,
                        Some(b'd') => Piece::Day,
                        Some(b'H') => Piece::Hour,
                        Some(b'M') => Piece::Minute,
                        Some(b'S') => Piece::Second,
                        Some(b'f') => Piece::Fraction,
                        Some(b'z') => Piece::Zone,
                        Some(b'%') => Piece::Lit(b'%'),
                        other => {
                            let d = other.map_or(String::from("end of the format"), |c| format!("%{}", c as char));
                            return Err(format!("unsupported directive {d} in {text:?} (supported: %Y %m %d %H %M %S %f %z %%)"));
                        }
                    });
                }
                if !pieces.contains(&Piece::Year) {
                    return Err(format!("the format {text:?} has no %Y"));
                }
                TimeFormat::Pattern(pieces)
            }
        })
    }
}

/// How a column's fields convert.
#[derive(Clone, Debug)]
pub struct Column {
    pub ty: ColType,
    /// An empty field is null; otherwise an empty string (strings) or a bad row.
    pub nullable: bool,
    pub precision: u32,
    pub scale: u32,
    pub format: TimeFormat,
    /// The zone of a timestamp written without one, in seconds east of UTC.
    pub offset_s: i32,
}

#[cfg(test)]
impl Column {
    pub fn plain(ty: ColType) -> Column {
        Column { ty, nullable: ty != ColType::Str, precision: 38, scale: 0, format: TimeFormat::Iso, offset_s: 0 }
    }
}

/// A typed value; strings stay in the record (the encoder writes them, unquoting as it goes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    /// The unscaled value (value × 10^scale).
    Decimal(i128),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
}

const PY_STRIP: &[u8] = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f";

/// The field without the whitespace Python's `str.strip()` removes (Unicode's, and the ASCII
/// separators \x1c-\x1f).
pub fn trim(v: &[u8]) -> &[u8] {
    if v.is_ascii() {
        let s = v.iter().position(|b| !PY_STRIP.contains(b)).unwrap_or(v.len());
        let e = v.iter().rposition(|b| !PY_STRIP.contains(b)).map_or(s, |p| p + 1);
        return &v[s..e];
    }
    match std::str::from_utf8(v) {
        Ok(text) => text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)).as_bytes(),
        Err(_) => v,
    }
}

fn digits(v: &[u8]) -> usize {
    v.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// `^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`
pub fn is_float(v: &[u8]) -> bool {
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

fn int(v: &[u8]) -> Option<i64> {
    let sign = usize::from(matches!(v.first(), Some(b'+' | b'-')));
    if v.len() == sign || digits(&v[sign..]) != v.len() - sign {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm), or None when the date
/// does not exist.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d == 0 || d > mdays[(m - 1) as usize] {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The parts of a date or timestamp text.
#[derive(Default)]
struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micros: u32,
    /// Digits finer than microseconds that are not zero: Avro's timestamp-micros cannot hold them.
    sub_micro: bool,
    zone_s: Option<i32>,
}

fn num(v: &[u8], i: &mut usize, n: usize) -> Option<u32> {
    let s = v.get(*i..*i + n)?;
    if !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    *i += n;
    Some(s.iter().fold(0, |a, &b| a * 10 + u32::from(b - b'0')))
}

fn fraction(v: &[u8], i: &mut usize, p: &mut Parts) -> Option<()> {
    let n = digits(&v[*i..]);
    if !(1..=9).contains(&n) {
        return None;
    }
    let f = &v[*i..*i + n];
    let mut micros = 0;
    for k in 0..6 {
        micros = micros * 10 + f.get(k).map_or(0, |&b| u32::from(b - b'0'));
    }
    p.micros = micros;
    p.sub_micro = f.iter().skip(6).any(|&b| b != b'0');
    *i += n;
    Some(())
}

/// `Z`, `±HH`, `±HHMM` or `±HH:MM`.
fn zone(v: &[u8], i: &mut usize, p: &mut Parts) -> Option<()> {
    match v.get(*i) {
        Some(b'Z') => {
            *i += 1;
            p.zone_s = Some(0);
        }
        Some(&s @ (b'+' | b'-')) => {
            *i += 1;
            let h = num(v, i, 2)?;
            let m = if v.get(*i) == Some(&b':') {
                *i += 1;
                num(v, i, 2)?
            } else {
                num(v, i, 2).unwrap_or(0)
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i32;
            p.zone_s = Some(if s == b'-' { -secs } else { secs });
        }
        _ => return None,
    }
    Some(())
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[(.|,)f{1,9}]]][zone]`
fn iso(v: &[u8]) -> Option<Parts> {
    let mut p = Parts::default();
    let mut i = 0;
    p.year = i64::from(num(v, &mut i, 4)?);
    (v.get(i) == Some(&b'-')).then_some(())?;
    i += 1;
    p.month = num(v, &mut i, 2)?;
    (v.get(i) == Some(&b'-')).then_some(())?;
    i += 1;
    p.day = num(v, &mut i, 2)?;
    if matches!(v.get(i), Some(b'T' | b' ')) {
        i += 1;
        p.hour = num(v, &mut i, 2)?;
        (v.get(i) == Some(&b':')).then_some(())?;
        i += 1;
        p.minute = num(v, &mut i, 2)?;
        if v.get(i) == Some(&b':') {
            i += 1;
            p.second = num(v, &mut i, 2)?;
            if matches!(v.get(i), Some(b'.' | b',')) {
                i += 1;
                fraction(v, &mut i, &mut p)?;
            }
        }
    }
    if i < v.len() {
        zone(v, &mut i, &mut p)?;
    }
    (i == v.len()).then_some(p)
}

fn pattern(v: &[u8], pieces: &[Piece]) -> Option<Parts> {
    let mut p = Parts { month: 1, day: 1, ..Parts::default() };
    let mut i = 0;
    for piece in pieces {
        match *piece {
            Piece::Lit(b) => {
                (v.get(i) == Some(&b)).then_some(())?;
                i += 1;
            }
            Piece::Year => p.year = i64::from(num(v, &mut i, 4)?),
            Piece::Month => p.month = num(v, &mut i, 2)?,
            Piece::Day => p.day = num(v, &mut i, 2)?,
            Piece::Hour => p.hour = num(v, &mut i, 2)?,
            Piece::Minute => p.minute = num(v, &mut i, 2)?,
            Piece::Second => p.second = num(v, &mut i, 2)?,
            Piece::Fraction => fraction(v, &mut i, &mut p)?,
            Piece::Zone => zone(v, &mut i, &mut p)?,
        }
    }
    (i == v.len()).then_some(p)
}

fn parts(v: &[u8], format: &TimeFormat) -> Option<Parts> {
    let p = match format {
        TimeFormat::Iso => iso(v)?,
        TimeFormat::Pattern(pieces) => pattern(v, pieces)?,
        TimeFormat::Epoch(_) => return None,
    };
    (p.hour < 24 && p.minute < 60 && p.second < 60).then_some(p)
}

fn micros_of(p: &Parts, offset_s: i32) -> Option<i64> {
    let days = days_from_civil(p.year, p.month, p.day)?;
    let secs = days * 86_400 + i64::from(p.hour * 3600 + p.minute * 60 + p.second)
        - i64::from(p.zone_s.unwrap_or(offset_s));
    Some(secs * 1_000_000 + i64::from(p.micros))
}

fn date_reason(format: &TimeFormat) -> &'static str {
    match format {
        TimeFormat::Iso => "not a date (YYYY-MM-DD)",
        _ => "not a date in the column's format",
    }
}

fn timestamp_reason(format: &TimeFormat) -> &'static str {
    match format {
        TimeFormat::Iso => "not an ISO 8601 timestamp",
        TimeFormat::Epoch(_) => "not a number of the column's epoch unit",
        TimeFormat::Pattern(_) => "not a timestamp in the column's format",
    }
}

/// The decimal `v` as an unscaled integer of `scale` digits after the point.
fn decimal(v: &[u8], precision: u32, scale: u32) -> Result<i128, String> {
    let neg = v.first() == Some(&b'-');
    let body = &v[usize::from(matches!(v.first(), Some(b'+' | b'-')))..];
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(p) => (&body[..p], &body[p + 1..]),
        None => (body, &b""[..]),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.iter().chain(frac).all(u8::is_ascii_digit)
    {
        return Err(String::from("not a decimal"));
    }
    let frac_used = frac.iter().rposition(|&b| b != b'0').map_or(0, |p| p + 1);
    if frac_used > scale as usize {
        return Err(format!("more than {scale} digits after the point"));
    }
    let int = &int[int.iter().position(|&b| b != b'0').unwrap_or(int.len())..];
    if int.len() + scale as usize > precision as usize {
        return Err(format!("more than {precision} digits (precision {precision}, scale {scale})"));
    }
    let mut n: i128 = 0;
    for &b in int {
        n = n * 10 + i128::from(b - b'0');
    }
    for k in 0..scale as usize {
        n = n * 10 + frac.get(k).map_or(0, |&b| i128::from(b - b'0'));
    }
    Ok(if neg { -n } else { n })
}

/// Converts a non-string field (the field's text, unquoted). `Err` holds the reason a person
/// reads (the caller names the column and the value). `micros` asks for a timestamp that Avro's
/// timestamp-micros can hold exactly.
pub fn convert(raw: &[u8], col: &Column, micros: bool) -> Result<Val, String> {
    let v = trim(raw);
    if v.is_empty() {
        return if col.nullable { Ok(Val::Null) } else { Err(String::from("empty value in a non-nullable column")) };
    }
    let bad = |what: &str| Err(String::from(what));
    match col.ty {
        ColType::Str => unreachable!("strings are written by the encoder"),
        ColType::Int => int(v).map(Val::Int).map_or_else(|| bad("not an int"), Ok),
        ColType::Float => {
            if !is_float(v) {
                return bad("not a float");
            }
            std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).map(Val::Float).map_or_else(|| bad("not a float"), Ok)
        }
        ColType::Bool => match v.to_ascii_lowercase().as_slice() {
            b"true" | b"t" | b"yes" | b"y" | b"1" => Ok(Val::Bool(true)),
            b"false" | b"f" | b"no" | b"n" | b"0" => Ok(Val::Bool(false)),
            _ => bad("not a bool"),
        },
        ColType::Decimal => decimal(v, col.precision, col.scale).map(Val::Decimal),
        ColType::Date => {
            let p = parts(v, &col.format).filter(|p| p.hour == 0 && p.minute == 0 && p.second == 0 && p.micros == 0);
            match p.and_then(|p| days_from_civil(p.year, p.month, p.day)) {
                Some(d) => Ok(Val::Date(d as i32)),
                None => bad(date_reason(&col.format)),
            }
        }
        ColType::Timestamp => {
            if let TimeFormat::Epoch(unit) = col.format {
                return int(v).and_then(|n| n.checked_mul(unit)).map(Val::Timestamp).map_or_else(|| bad(timestamp_reason(&col.format)), Ok);
            }
            let Some(p) = parts(v, &col.format) else { return bad(timestamp_reason(&col.format)) };
            if micros && p.sub_micro {
                return bad("finer than microseconds (Avro's timestamp-micros)");
            }
            micros_of(&p, col.offset_s).map(Val::Timestamp).map_or_else(|| bad(timestamp_reason(&col.format)), Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColType) -> Column {
        Column::plain(ty)
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(days_from_civil(1969, 12, 31), Some(-1));
        assert_eq!(days_from_civil(2023, 2, 29), None);
        let ts = col(ColType::Timestamp);
        assert_eq!(convert(b"1970-01-01T00:00:01.5Z", &ts, true), Ok(Val::Timestamp(1_500_000)));
        assert_eq!(convert(b"1970-01-01 01:00+01:00", &ts, true), Ok(Val::Timestamp(0)));
        assert_eq!(convert(b"1970-01-02", &ts, true), Ok(Val::Timestamp(86_400_000_000)));
        assert!(convert(b"2024-13-01", &ts, true).is_err());
        assert!(convert(b"2024-01-01T00:00:00.0000001Z", &ts, true).is_err());
        assert!(convert(b"2024-01-01T00:00:00.0000001Z", &ts, false).is_ok());
        let local = Column { offset_s: 3600, ..col(ColType::Timestamp) };
        assert_eq!(convert(b"1970-01-01T01:00:00", &local, true), Ok(Val::Timestamp(0)));
        let pat = Column { format: TimeFormat::parse(Some("%d/%m/%Y %H:%M")).unwrap(), ..col(ColType::Timestamp) };
        assert_eq!(convert(b"02/01/1970 00:00", &pat, true), Ok(Val::Timestamp(86_400_000_000)));
        let ms = Column { format: TimeFormat::parse(Some("epochMillis")).unwrap(), ..col(ColType::Timestamp) };
        assert_eq!(convert(b"-1500", &ms, true), Ok(Val::Timestamp(-1_500_000)));
        assert_eq!(convert(b"1970-01-03", &col(ColType::Date), true), Ok(Val::Date(2)));
        assert!(TimeFormat::parse(Some("%d/%m")).is_err());
    }

    #[test]
    fn decimals() {
        let d = Column { precision: 5, scale: 2, ..col(ColType::Decimal) };
        assert_eq!(convert(b"-12.5", &d, true), Ok(Val::Decimal(-1250)));
        assert_eq!(convert(b"012.500", &d, true), Ok(Val::Decimal(1250)));
        assert_eq!(convert(b".5", &d, true), Ok(Val::Decimal(50)));
        assert!(convert(b"1.234", &d, true).is_err());
        assert!(convert(b"1234", &d, true).is_err());
        assert!(convert(b"1e3", &d, true).is_err());
        assert!(convert(b".", &d, true).is_err());
    }

    #[test]
    fn nulls() {
        assert_eq!(convert(b"  ", &col(ColType::Int), true), Ok(Val::Null));
        let strict = Column { nullable: false, ..col(ColType::Int) };
        assert!(convert(b"", &strict, true).is_err());
        assert!(is_float(b"1.") && is_float(b".5") && is_float(b"+1e-3") && !is_float(b".") && !is_float(b"1e"));
    }
}
