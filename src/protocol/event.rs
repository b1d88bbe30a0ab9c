//! Events: `_e{title_len,text_len}:title|text|d:|h:|k:|p:|s:|t:|#tags` with the Agent's rules.
//!
//! Lengths are byte counts of the wire text and drive the split, so a `|` inside the title is
//! allowed. A bad `d:`, `p:` or `t:` only marks the event (`warnings`); the event is kept with
//! the default (no timestamp, priority normal, alert type info). Title and text stay escaped here
//! (`\n` as two bytes); `unescape` turns them into text when the event leaves the shard.

use super::metric::{Fields, parse_i64};
use super::origin::OriginFields;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Normal,
    Low,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertType {
    Error,
    Warning,
    Info,
    Success,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl AlertType {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::Error => "error",
            AlertType::Warning => "warning",
            AlertType::Info => "info",
            AlertType::Success => "success",
        }
    }
}

crate::label::labels! {
    /// Why an event line was rejected.
    pub enum EventError: "reason" {
        /// The `_e{N,M}:` header is malformed.
        BadHeader => "bad_header",
        /// Title length 0.
        EmptyTitle => "empty_title",
        /// The line is shorter than the lengths announce.
        TooShort => "too_short",
    }
}

/// A field the Agent only warns about, kept as its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventWarning {
    /// `d:` is not an integer.
    Timestamp,
    /// `p:` is neither `normal` nor `low`.
    Priority,
    /// `t:` is not one of `error`, `warning`, `info`, `success`.
    AlertType,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event<'a> {
    /// Escaped wire bytes; see `unescape`.
    pub title: &'a [u8],
    pub text: &'a [u8],
    pub timestamp: Option<i64>,
    pub host: Option<&'a [u8]>,
    pub aggregation_key: Option<&'a [u8]>,
    pub priority: Priority,
    pub source_type: Option<&'a [u8]>,
    pub alert_type: AlertType,
    pub tags: &'a [u8],
    /// `|c:`, `|e:`, `|card:` as sent, and the socket's container (set by the receiver).
    pub origin: OriginFields<'a>,
    /// The last field-level warning, if any (the event is kept).
    pub warning: Option<EventWarning>,
}

/// Parses one `_e{...}` line.
pub fn parse_event(line: &[u8]) -> Result<Event<'_>, EventError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(EventError::BadHeader)?;
    let header = &line[..colon];
    if header.len() < 7 || !header.starts_with(b"_e{") || !header.ends_with(b"}") {
        return Err(EventError::BadHeader);
    }
    let lengths = &header[3..header.len() - 1];
    let comma = lengths
        .iter()
        .position(|&b| b == b',')
        .ok_or(EventError::BadHeader)?;
    let title_len = parse_len(&lengths[..comma])?;
    let text_len = parse_len(&lengths[comma + 1..])?;
    if title_len == 0 {
        return Err(EventError::EmptyTitle);
    }
    let raw = &line[colon + 1..];
    let body_end = title_len
        .checked_add(1)
        .and_then(|n| n.checked_add(text_len))
        .ok_or(EventError::TooShort)?;
    if raw.len() < body_end {
        return Err(EventError::TooShort);
    }
    let mut e = Event {
        title: &raw[..title_len],
        text: &raw[title_len + 1..body_end],
        timestamp: None,
        host: None,
        aggregation_key: None,
        priority: Priority::Normal,
        source_type: None,
        alert_type: AlertType::Info,
        tags: &[],
        origin: OriginFields::default(),
        warning: None,
    };
    let rest = &raw[body_end..];
    // Fields follow as `|field|field`; whatever precedes the first `|` is not a field.
    let Some(fields) = rest.strip_prefix(b"|") else {
        return Ok(e);
    };
    for field in Fields::new(fields) {
        if let Some(v) = field.strip_prefix(b"d:") {
            match parse_i64(v) {
                Some(ts) => e.timestamp = Some(ts),
                None => e.warning = Some(EventWarning::Timestamp),
            }
        } else if let Some(v) = field.strip_prefix(b"h:") {
            e.host = Some(v);
        } else if let Some(v) = field.strip_prefix(b"k:") {
            e.aggregation_key = Some(v);
        } else if let Some(v) = field.strip_prefix(b"p:") {
            match v {
                b"normal" => e.priority = Priority::Normal,
                b"low" => e.priority = Priority::Low,
                _ => e.warning = Some(EventWarning::Priority),
            }
        } else if let Some(v) = field.strip_prefix(b"s:") {
            e.source_type = Some(v);
        } else if let Some(v) = field.strip_prefix(b"t:") {
            e.alert_type = match v {
                b"error" => AlertType::Error,
                b"warning" => AlertType::Warning,
                b"info" => AlertType::Info,
                b"success" => AlertType::Success,
                _ => {
                    e.warning = Some(EventWarning::AlertType);
                    e.alert_type
                }
            };
        } else if let Some(v) = field.strip_prefix(b"#") {
            e.tags = v;
        } else if let Some(v) = field.strip_prefix(b"card:") {
            e.origin.cardinality = Some(v);
        } else if let Some(v) = field.strip_prefix(b"c:") {
            e.origin.local = Some(v);
        } else if let Some(v) = field.strip_prefix(b"e:") {
            e.origin.external = Some(v);
        }
    }
    Ok(e)
}

/// A non-negative decimal length, as Go's `Atoi` accepts it.
fn parse_len(raw: &[u8]) -> Result<usize, EventError> {
    match parse_i64(raw) {
        Some(n) if n >= 0 => usize::try_from(n).map_err(|_| EventError::BadHeader),
        _ => Err(EventError::BadHeader),
    }
}

/// Replaces each two-byte `\n` with a newline, as the Agent does; nothing else is unescaped.
pub fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field_of_the_python_client_event() {
        let line = b"_e{15,31}:Deploy finished|Build #42 went out\\nsecond line|d:1700000000|h:myhost|k:deploy|p:low|s:demo|t:success|#env:prod|c:ci-1|e:it-false|card:low";
        let e = parse_event(line).unwrap();
        assert_eq!(e.title, b"Deploy finished");
        assert_eq!(e.text, b"Build #42 went out\\nsecond line");
        assert_eq!(unescape(e.text), b"Build #42 went out\nsecond line");
        assert_eq!(e.timestamp, Some(1700000000));
        assert_eq!(e.host, Some(&b"myhost"[..]));
        assert_eq!(e.aggregation_key, Some(&b"deploy"[..]));
        assert_eq!(e.priority, Priority::Low);
        assert_eq!(e.source_type, Some(&b"demo"[..]));
        assert_eq!(e.alert_type, AlertType::Success);
        assert_eq!(e.tags, b"env:prod");
        assert_eq!(e.origin.local, Some(&b"ci-1"[..]));
        assert_eq!(e.origin.external, Some(&b"it-false"[..]));
        assert_eq!(e.origin.cardinality, Some(&b"low"[..]));
        assert_eq!(e.warning, None);
    }

    #[test]
    fn lengths_drive_the_split_so_a_pipe_may_sit_in_the_title() {
        let e = parse_event(b"_e{10,4}:test|title|text|#a").unwrap();
        assert_eq!(
            (e.title, e.text, e.tags),
            (&b"test|title"[..], &b"text"[..], &b"a"[..])
        );
        let e = parse_event(b"_e{5,0}:title|").unwrap();
        assert_eq!((e.title, e.text), (&b"title"[..], &b""[..]));
    }

    #[test]
    fn bad_optional_fields_keep_the_event_with_defaults() {
        for (line, warning) in [
            (&b"_e{1,1}:a|b|d:soon"[..], EventWarning::Timestamp),
            (b"_e{1,1}:a|b|p:urgent", EventWarning::Priority),
            (b"_e{1,1}:a|b|t:panic", EventWarning::AlertType),
        ] {
            let e = parse_event(line).unwrap();
            assert_eq!(e.warning, Some(warning));
            assert_eq!(
                (e.priority, e.alert_type, e.timestamp),
                (Priority::Normal, AlertType::Info, None)
            );
        }
        let e = parse_event(b"_e{1,1}:a|b|x:future|t:error|t:warning").unwrap();
        assert_eq!(
            e.alert_type,
            AlertType::Warning,
            "last copy wins, unknown ignored"
        );
    }

    #[test]
    fn malformed_events_are_rejected_by_reason() {
        for (line, err) in [
            (&b"_e{0,1}:|b"[..], EventError::EmptyTitle),
            (b"_e{5,5}:short|text", EventError::TooShort),
            (b"_e{a,1}:x|y", EventError::BadHeader),
            (b"_e{-1,1}:x|y", EventError::BadHeader),
            (b"_e{1}:x|y", EventError::BadHeader),
            (b"_e{1,1x:x|y", EventError::BadHeader),
            (b"_e{1,1}", EventError::BadHeader),
            (b"_e{,}:x|y", EventError::BadHeader),
            (b"_e{99999999999999999999,1}:x|y", EventError::BadHeader),
        ] {
            assert_eq!(
                parse_event(line),
                Err(err),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn only_backslash_n_is_unescaped() {
        assert_eq!(unescape(b"a\\nb\\tc\\"), b"a\nb\\tc\\");
    }
}
