//! The metric line: `name:value[:value...]|type[|@rate][|#tags][|T<unix>][|c:..][|e:..][|card:..]`.
//!
//! Validation is complete here, so later stages can trust every field: a `Metric` that comes out
//! has a non-empty name, a known type, finite values, a rate in [`MIN_SAMPLE_RATE`, 1] and a
//! positive timestamp.

use super::origin::OriginFields;

/// `memchr`, with an 8-bytes-at-a-time (SWAR) scan for short haystacks, where memchr's vector
/// set-up costs more than it saves and a byte loop mispredicts (`cargo bench --bench ingest`,
/// packed counters: the byte loop was 16 % of the time).
#[inline]
fn find(needle: u8, haystack: &[u8]) -> Option<usize> {
    if haystack.len() >= 64 {
        return memchr::memchr(needle, haystack);
    }
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut chunks = haystack.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // A zero byte in `x` is a match; the lowest flagged byte is exact (no false positive
        // below the first true zero byte).
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| offset + i)
}

/// The six DogStatsD metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MetricType {
    #[default]
    Counter,
    Gauge,
    Histogram,
    Timer,
    Set,
    Distribution,
}

impl MetricType {
    /// Its name, as `/contexts` gives it.
    pub fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Timer => "timer",
            MetricType::Set => "set",
            MetricType::Distribution => "distribution",
        }
    }

    fn from_wire(t: &[u8]) -> Option<Self> {
        Some(match t {
            // `m`, a meter (cadence sends it): a counter, as statsd servers that take meters
            // count them.
            b"c" | b"m" => MetricType::Counter,
            b"g" => MetricType::Gauge,
            b"h" => MetricType::Histogram,
            b"ms" => MetricType::Timer,
            b"s" => MetricType::Set,
            b"d" => MetricType::Distribution,
            _ => return None,
        })
    }

    /// Stable index, used in context keys and telemetry tables.
    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn wire(self) -> &'static str {
        match self {
            MetricType::Counter => "c",
            MetricType::Gauge => "g",
            MetricType::Histogram => "h",
            MetricType::Timer => "ms",
            MetricType::Set => "s",
            MetricType::Distribution => "d",
        }
    }
}

crate::label::labels! {
    /// Why a metric line was rejected. Cheap to return and to count.
    pub enum ParseError: "reason" {
        NoPipe => "no_pipe",
        NoColon => "no_colon",
        EmptyName => "empty_name",
        EmptyValue => "empty_value",
        UnknownType => "unknown_type",
        BadValue => "bad_value",
        NonFinite => "non_finite",
        BadSampleRate => "bad_sample_rate",
        BadTimestamp => "bad_timestamp",
    }
}

/// The smallest sample rate accepted, so one sample weighs at most `MAX_SAMPLE_WEIGHT`.
///
/// A sample's weight is `1/rate`, and every later stage's cost can grow with weight: the Datadog
/// sketch encoder writes a bin in pieces of at most 2^32 - 1, the relay writes a heavy bin as
/// several lines. `@1e-18` once made a single distribution line cost 3.3 GiB there. With this
/// floor a sample is at most one piece, and a point's encoding is linear in the samples received
/// (docs/DOWNSTREAMS.md). The Agent accepts any rate in (0, 1] (and has the same memory blow-up
/// in its own sketch, datadog-agent PR #57762); ADP clamps rates to 3.845e-9. One in a million is
/// far below what clients sample at, so a smaller rate is rejected and counted (`bad_sample_rate`)
/// rather than silently clamped.
pub const MIN_SAMPLE_RATE: f64 = 1e-6;

/// The heaviest a single sample can be: `1 / MIN_SAMPLE_RATE`.
pub const MAX_SAMPLE_WEIGHT: f64 = 1e6;

/// Packed values kept parsed in the `Metric`; longer lists are parsed again when walked.
const INLINE_VALUES: usize = 4;

/// One parsed metric line, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Metric<'a> {
    pub name: &'a [u8],
    /// The value field as sent: a set member, or one or more `:`-separated numbers.
    pub value_text: &'a [u8],
    /// The first `INLINE_VALUES` numbers, parsed once; unused for sets.
    inline: [f64; INLINE_VALUES],
    /// How many numbers the line holds (0 for sets).
    value_count: u32,
    pub metric_type: MetricType,
    /// Sample rate in [`MIN_SAMPLE_RATE`, 1]; 1 when absent.
    pub sample_rate: f64,
    /// The raw tag list after `#`, comma separated; empty when absent.
    pub tags: &'a [u8],
    pub timestamp: Option<u64>,
    /// `|c:`, `|e:`, `|card:` as sent, and the socket's container (set by the receiver).
    pub origin: OriginFields<'a>,
}

impl<'a> Metric<'a> {
    /// Every numeric value of the line, validated by `parse_metric`.
    pub fn values(&self) -> impl Iterator<Item = f64> + 'a {
        let inline = self.inline;
        let n = self.value_count as usize;
        let mut spilled = (n > INLINE_VALUES).then(|| {
            self.value_text
                .split(|&b| b == b':')
                .filter(|v| !v.is_empty())
                .filter_map(parse_f64)
        });
        let mut i = 0;
        std::iter::from_fn(move || {
            if let Some(all) = spilled.as_mut() {
                return all.next();
            }
            let v = (i < n).then(|| inline[i]);
            i += 1;
            v
        })
    }

    /// The first value (the only one for most lines); 0 for sets.
    pub fn first_value(&self) -> f64 {
        self.inline[0]
    }

    /// How many values the line packs.
    pub fn value_count(&self) -> usize {
        self.value_count as usize
    }

    pub fn tag_iter(&self) -> TagIter<'a> {
        TagIter::new(self.tags)
    }
}

/// Splits a raw tag list on `,`, skipping empty items. One `memchr_iter` over the whole list:
/// a fresh `memchr` per tag paid its set-up ten times for a 10-tag metric (22 % of
/// `cargo bench --bench ingest`, tagged case).
#[derive(Clone)]
pub struct TagIter<'a> {
    raw: &'a [u8],
    start: usize,
    commas: memchr::Memchr<'a>,
}

impl<'a> TagIter<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        TagIter {
            raw,
            start: 0,
            commas: memchr::memchr_iter(b',', raw),
        }
    }
}

impl<'a> Iterator for TagIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while self.start <= self.raw.len() {
            let end = self.commas.next().unwrap_or(self.raw.len());
            let tag = &self.raw[self.start..end];
            self.start = end + 1;
            if !tag.is_empty() {
                return Some(tag);
            }
        }
        None
    }
}

/// `|`-separated fields, found with memchr: a 200-byte tag field is skipped in a few vector
/// compares instead of a byte loop.
pub(super) struct Fields<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(rest: &'a [u8]) -> Self {
        Fields { rest: Some(rest) }
    }
}

/// A decimal integer as Go's `ParseInt(s, 10, 64)` takes it (optional sign, digits only).
pub(super) fn parse_i64(raw: &[u8]) -> Option<i64> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match find(b'|', rest) {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Parses one metric line (no `\n`, `\r` already stripped).
pub fn parse_metric(line: &[u8]) -> Result<Metric<'_>, ParseError> {
    let mut m = Metric::default();
    parse_metric_into(line, &mut m)?;
    Ok(m)
}

/// `parse_metric` writing into a caller's `Metric`: the hot path reuses one per datagram, as
/// returning a 170-byte struct through a `Result` costs two `memcpy` calls per line
/// (`cargo bench --bench ingest`, packed counters: 20 % of the time).
#[inline]
pub fn parse_metric_into<'a>(line: &'a [u8], metric: &mut Metric<'a>) -> Result<(), ParseError> {
    let pipe = find(b'|', line).ok_or(ParseError::NoPipe)?;
    let head = &line[..pipe];
    let colon = find(b':', head).ok_or(ParseError::NoColon)?;
    let name = &head[..colon];
    let value_text = &head[colon + 1..];
    if name.is_empty() {
        return Err(ParseError::EmptyName);
    }
    if value_text.is_empty() {
        return Err(ParseError::EmptyValue);
    }

    let mut fields = Fields {
        rest: Some(&line[pipe + 1..]),
    };
    // `Fields` always yields at least one item.
    let type_field = fields.next().unwrap_or_default();
    let metric_type = MetricType::from_wire(type_field).ok_or(ParseError::UnknownType)?;

    metric.name = name;
    metric.value_text = value_text;
    metric.value_count = 0;
    metric.metric_type = metric_type;
    metric.sample_rate = 1.0;
    metric.tags = &[];
    metric.timestamp = None;
    metric.origin = OriginFields::default();
    for field in fields {
        match field.first() {
            Some(b'@') => metric.sample_rate = parse_sample_rate(&field[1..])?,
            Some(b'#') => metric.tags = &field[1..],
            Some(b'T') => metric.timestamp = Some(parse_timestamp(&field[1..])?),
            _ => {
                if let Some(v) = field.strip_prefix(b"card:") {
                    metric.origin.cardinality = Some(v);
                } else if let Some(v) = field.strip_prefix(b"c:") {
                    metric.origin.local = Some(v);
                } else if let Some(v) = field.strip_prefix(b"e:") {
                    metric.origin.external = Some(v);
                }
                // Anything else is a field from a newer protocol version: ignored.
            }
        }
    }

    if metric_type != MetricType::Set {
        metric.value_count = parse_values(value_text, &mut metric.inline)?;
    }
    Ok(())
}

/// Validates every packed item, keeps the first `INLINE_VALUES` in `inline`, returns the count.
fn parse_values(raw: &[u8], inline: &mut [f64; INLINE_VALUES]) -> Result<u32, ParseError> {
    if find(b':', raw).is_none() {
        inline[0] = parse_number(raw)?;
        return Ok(1);
    }
    let mut n = 0;
    for item in raw.split(|&b| b == b':').filter(|v| !v.is_empty()) {
        let v = parse_number(item)?;
        if let Some(slot) = inline.get_mut(n) {
            *slot = v;
        }
        n += 1;
    }
    if n == 0 {
        return Err(ParseError::BadValue);
    }
    Ok(n as u32)
}

fn parse_number(item: &[u8]) -> Result<f64, ParseError> {
    let v = parse_f64(item).ok_or(ParseError::BadValue)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ParseError::NonFinite)
    }
}

fn parse_sample_rate(raw: &[u8]) -> Result<f64, ParseError> {
    match parse_f64(raw) {
        Some(r) if (MIN_SAMPLE_RATE..=1.0).contains(&r) => Ok(r),
        _ => Err(ParseError::BadSampleRate),
    }
}

fn parse_timestamp(raw: &[u8]) -> Result<u64, ParseError> {
    let digits = raw.strip_prefix(b"+").unwrap_or(raw);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadTimestamp);
    }
    let ts = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    if ts == 0 {
        return Err(ParseError::BadTimestamp);
    }
    Ok(ts)
}

/// Parses a decimal float. Plain `[-+]digits[.digits]` with at most 15 significant digits takes an
/// exact fast path (both operands are exact doubles, so one division rounds correctly); anything
/// else (exponents, long mantissas, `inf`, `nan`) goes to the standard library.
pub fn parse_f64(raw: &[u8]) -> Option<f64> {
    if let Some(v) = parse_simple_decimal(raw) {
        return Some(v);
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

fn parse_simple_decimal(raw: &[u8]) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, digits) = match raw.first()? {
        b'-' => (true, &raw[1..]),
        b'+' => (false, &raw[1..]),
        _ => (false, raw),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut seen_digit = false;
    let mut fraction_digits: Option<usize> = None;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                seen_digit = true;
                if let Some(f) = fraction_digits.as_mut() {
                    *f += 1;
                }
            }
            b'.' if fraction_digits.is_none() => fraction_digits = Some(0),
            _ => return None,
        }
    }
    if !seen_digit || mantissa >= 1 << 53 {
        return None;
    }
    let v = mantissa as f64 / POW10[fraction_digits.unwrap_or(0)];
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Metric<'_> {
        parse_metric(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?} rejected: {e:?}"))
    }

    fn err(line: &str) -> ParseError {
        match parse_metric(line.as_bytes()) {
            Ok(m) => panic!("{line:?} accepted as {m:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_every_type() {
        for (line, t) in [
            ("a:1|c", MetricType::Counter),
            ("a:1|g", MetricType::Gauge),
            ("a:1|h", MetricType::Histogram),
            ("a:1|ms", MetricType::Timer),
            ("a:1|s", MetricType::Set),
            ("a:1|d", MetricType::Distribution),
        ] {
            assert_eq!(ok(line).metric_type, t, "{line}");
        }
    }

    #[test]
    fn fields_in_any_order_last_copy_wins_unknown_ignored() {
        let m =
            ok("page.views:2|c|#a:1|@0.5|f:future|#b,c|@0.25|T17|c:ci-abc|e:it-false|card:low|T18");
        assert_eq!(m.name, b"page.views");
        assert_eq!(m.first_value(), 2.0);
        assert_eq!(m.sample_rate, 0.25);
        assert_eq!(m.tags, b"b,c");
        assert_eq!(m.timestamp, Some(18));
        assert_eq!(m.origin.local, Some(&b"ci-abc"[..]));
        assert_eq!(m.origin.external, Some(&b"it-false"[..]));
        assert_eq!(m.origin.cardinality, Some(&b"low"[..]));
    }

    #[test]
    fn packed_values_skip_empty_items() {
        let m = ok("daemon:666::123::::|g");
        assert_eq!(m.value_count(), 2);
        assert_eq!(m.values().collect::<Vec<_>>(), vec![666.0, 123.0]);
        let single = ok("daemon:1.5|h");
        assert_eq!(single.value_count(), 1);
        assert_eq!(single.values().collect::<Vec<_>>(), vec![1.5]);
        let long = ok("d:1:2:3:4:5:6|d");
        assert_eq!(
            long.values().collect::<Vec<_>>(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        let four = ok("d:1:2:3:4|d");
        assert_eq!(four.values().collect::<Vec<_>>(), vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn set_member_is_the_whole_value_text() {
        let m = ok("users:abc:def|s");
        assert_eq!(m.value_text, b"abc:def");
        let m = ok("users:not-a-number|s");
        assert_eq!(m.value_text, b"not-a-number");
    }

    #[test]
    fn numbers_accept_go_float_forms() {
        for (raw, v) in [
            ("+1", 1.0),
            ("-2.5", -2.5),
            ("1e3", 1000.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("0.1", 0.1),
            ("123456789012.345", 123456789012.345),
            ("12345678901234567890", 12345678901234567890.0),
        ] {
            assert_eq!(ok(&format!("a:{raw}|g")).first_value(), v, "{raw}");
        }
    }

    #[test]
    fn rejections_are_counted_by_reason() {
        for (line, e) in [
            ("a:1", ParseError::NoPipe),
            ("a|c", ParseError::NoColon),
            (":1|c", ParseError::EmptyName),
            ("a:|c", ParseError::EmptyValue),
            ("a:1|x", ParseError::UnknownType),
            ("a:1|q", ParseError::UnknownType),
            ("a:1|", ParseError::UnknownType),
            ("a:1|C", ParseError::UnknownType),
            ("a:abc|c", ParseError::BadValue),
            ("daemon3: :1:|g", ParseError::BadValue),
            ("a::::|g", ParseError::BadValue),
            ("a:0x1p-2|g", ParseError::BadValue),
            ("a:NaN|g", ParseError::NonFinite),
            ("a:inf|c", ParseError::NonFinite),
            ("a:1e400|c", ParseError::NonFinite),
            ("a:1:nan|d", ParseError::NonFinite),
            ("a:1|c|@0", ParseError::BadSampleRate),
            ("a:1|c|@-0.5", ParseError::BadSampleRate),
            ("a:1|c|@1.5", ParseError::BadSampleRate),
            ("a:1|c|@x", ParseError::BadSampleRate),
            ("a:1|c|@nan", ParseError::BadSampleRate),
            ("weight.d:1|d|@1e-18", ParseError::BadSampleRate),
            ("a:1|d|@1e-300", ParseError::BadSampleRate),
            ("a:1|c|@9.99e-7", ParseError::BadSampleRate),
            ("a:1|g|T", ParseError::BadTimestamp),
            ("a:1|g|TABCD", ParseError::BadTimestamp),
            ("a:1|g|T-1", ParseError::BadTimestamp),
            ("a:1|g|T0", ParseError::BadTimestamp),
            ("a:1|g|T99999999999999999999", ParseError::BadTimestamp),
        ] {
            assert_eq!(err(line), e, "{line}");
        }
    }

    #[test]
    fn sample_rate_one_is_the_default_and_accepted() {
        assert_eq!(ok("a:1|c").sample_rate, 1.0);
        assert_eq!(ok("a:1|c|@1").sample_rate, 1.0);
        assert_eq!(ok("a:1|c|@1e-3").sample_rate, 0.001);
        assert_eq!(ok("a:1|d|@1e-6").sample_rate, MIN_SAMPLE_RATE);
        assert_eq!(1.0 / MIN_SAMPLE_RATE, MAX_SAMPLE_WEIGHT);
    }

    #[test]
    fn tags_split_on_comma_skipping_empty_items() {
        let m = ok("a:1|c|#env:prod,,bare,host:x,");
        let tags: Vec<&[u8]> = m.tag_iter().collect();
        assert_eq!(tags, vec![&b"env:prod"[..], b"bare", b"host:x"]);
    }

    #[test]
    fn name_may_hold_any_byte_but_colon_pipe() {
        let m = ok("héllo wörld.ünïcode:1|c");
        assert_eq!(m.name, "héllo wörld.ünïcode".as_bytes());
    }

    #[test]
    fn find_agrees_with_a_plain_scan_at_every_length_and_position() {
        for len in 0..80 {
            for at in 0..=len {
                let mut hay: Vec<u8> = (0..len).map(|i| b'a' + (i % 20) as u8).collect();
                if at < len {
                    hay[at] = b'|';
                    if at + 3 < len {
                        hay[at + 3] = b'|';
                    }
                }
                // 0x7c ^ 0xfc style neighbours must not match.
                hay.iter_mut()
                    .filter(|b| **b == b'b')
                    .for_each(|b| *b = 0xfc);
                assert_eq!(
                    find(b'|', &hay),
                    hay.iter().position(|&b| b == b'|'),
                    "{len} {at}"
                );
            }
        }
    }

    #[test]
    fn fast_decimal_path_agrees_with_std() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 15 + 1) as usize;
            let s = format!("{:0width$}", x % 10u64.pow(digits as u32), width = digits);
            let point = (x >> 40) as usize % (digits + 1);
            let s = format!("{}.{}", &s[..point], &s[point..]);
            let want: f64 = s.parse().unwrap();
            assert_eq!(parse_f64(s.as_bytes()), Some(want), "{s}");
        }
    }
}
