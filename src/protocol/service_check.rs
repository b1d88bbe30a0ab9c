//! Service checks: `_sc|name|status|d:|h:|#tags|m:` with the Agent's rules: status exactly `0`-`3`,
//! `m:` accepted anywhere (dogstatsd-rs sends it before the tags), a bad `d:` only marks the check,
//! last copy wins, unknown fields ignored.

use super::metric::{Fields, parse_i64};
use super::origin::OriginFields;

crate::label::labels! {
    /// Why a service check line was rejected.
    pub enum ServiceCheckError: "reason" {
        /// Fewer than `_sc|name|status`.
        TooShort => "too_short",
        EmptyName => "empty_name",
        /// Not exactly one of `0`, `1`, `2`, `3`.
        BadStatus => "bad_status",
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceCheck<'a> {
    pub name: &'a [u8],
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub status: u8,
    pub timestamp: Option<i64>,
    pub host: Option<&'a [u8]>,
    pub message: Option<&'a [u8]>,
    pub tags: &'a [u8],
    /// `|c:`, `|e:`, `|card:` as sent, and the socket's container (set by the receiver).
    pub origin: OriginFields<'a>,
    /// A `d:` that was not an integer (the check is kept without a timestamp).
    pub bad_timestamp: bool,
}

/// Parses one `_sc|...` line.
pub fn parse_service_check(line: &[u8]) -> Result<ServiceCheck<'_>, ServiceCheckError> {
    // The Agent drops the first four bytes unchecked; `message_kind` already saw `_sc`.
    let rest = line.get(4..).ok_or(ServiceCheckError::TooShort)?;
    if line.get(3) != Some(&b'|') {
        return Err(ServiceCheckError::TooShort);
    }
    let mut fields = Fields::new(rest);
    let name = fields.next().unwrap_or_default();
    let status = fields.next().ok_or(ServiceCheckError::TooShort)?;
    if name.is_empty() {
        return Err(ServiceCheckError::EmptyName);
    }
    let status = match status {
        [d @ b'0'..=b'3'] => d - b'0',
        _ => return Err(ServiceCheckError::BadStatus),
    };
    let mut sc = ServiceCheck {
        name,
        status,
        timestamp: None,
        host: None,
        message: None,
        tags: &[],
        origin: OriginFields::default(),
        bad_timestamp: false,
    };
    for field in fields {
        if let Some(v) = field.strip_prefix(b"d:") {
            match parse_i64(v) {
                Some(ts) => sc.timestamp = Some(ts),
                None => sc.bad_timestamp = true,
            }
        } else if let Some(v) = field.strip_prefix(b"h:") {
            sc.host = Some(v);
        } else if let Some(v) = field.strip_prefix(b"m:") {
            sc.message = Some(v);
        } else if let Some(v) = field.strip_prefix(b"#") {
            sc.tags = v;
        } else if let Some(v) = field.strip_prefix(b"card:") {
            sc.origin.cardinality = Some(v);
        } else if let Some(v) = field.strip_prefix(b"c:") {
            sc.origin.local = Some(v);
        } else if let Some(v) = field.strip_prefix(b"e:") {
            sc.origin.external = Some(v);
        }
    }
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_python_client_check_and_m_anywhere() {
        let sc =
            parse_service_check(b"_sc|app.can_connect|0|h:myhost|#env:prod|m:all good").unwrap();
        assert_eq!((sc.name, sc.status), (&b"app.can_connect"[..], 0));
        assert_eq!(sc.host, Some(&b"myhost"[..]));
        assert_eq!(sc.tags, b"env:prod");
        assert_eq!(sc.message, Some(&b"all good"[..]));
        let sc = parse_service_check(b"_sc|x|3|h:myhost|m:all good|#env:prod|d:17|z:new").unwrap();
        assert_eq!(
            (sc.status, sc.timestamp, sc.tags),
            (3, Some(17), &b"env:prod"[..])
        );
        assert_eq!(sc.message, Some(&b"all good"[..]));
    }

    #[test]
    fn a_bad_timestamp_keeps_the_check() {
        let sc = parse_service_check(b"_sc|x|1|d:later").unwrap();
        assert!(sc.bad_timestamp);
        assert_eq!(sc.timestamp, None);
    }

    #[test]
    fn malformed_checks_are_rejected_by_reason() {
        for (line, err) in [
            (&b"_sc|x"[..], ServiceCheckError::TooShort),
            (b"_sc", ServiceCheckError::TooShort),
            (b"_scx|y|0", ServiceCheckError::TooShort),
            (b"_sc||0", ServiceCheckError::EmptyName),
            (b"_sc|x|OK", ServiceCheckError::BadStatus),
            (b"_sc|x|21", ServiceCheckError::BadStatus),
            (b"_sc|x|4", ServiceCheckError::BadStatus),
            (b"_sc|x|", ServiceCheckError::BadStatus),
        ] {
            assert_eq!(
                parse_service_check(line),
                Err(err),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
