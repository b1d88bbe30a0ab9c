//! DogStatsD datagram parsing: bytes in, borrowed messages out.
//!
//! Owns the wire grammar and nothing else: no I/O, no glommio, and no allocation on the metric
//! path. Every parsed value borrows the receive buffer it came from; the one allocation here is
//! `event::unescape`, which makes an event's owned title and text when it is queued for the
//! next flush (events are not aggregated, and leave the shard). Errors are a small `Copy` kind that the caller counts;
//! a bad line never stops the rest of its datagram.

pub mod event;
mod metric;
pub mod origin;
pub mod service_check;

pub use event::{Event, EventError, parse_event};
pub use metric::{
    MAX_SAMPLE_WEIGHT, Metric, MetricType, ParseError, TagIter, parse_metric, parse_metric_into,
};
pub use service_check::{ServiceCheck, ServiceCheckError, parse_service_check};

/// What a single line of a datagram holds, chosen by its prefix as the Agent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Metric,
    Event,
    ServiceCheck,
}

/// Classifies a line by prefix: `_e{` is an event, `_sc` a service check, anything else a metric.
pub fn message_kind(line: &[u8]) -> MessageKind {
    if line.starts_with(b"_e{") {
        MessageKind::Event
    } else if line.starts_with(b"_sc") {
        MessageKind::ServiceCheck
    } else {
        MessageKind::Metric
    }
}

/// Iterates the lines of a datagram: split on `\n`, one trailing `\r` removed, empty lines skipped.
/// (Whether the last line was terminated, for `--eol-required`, is the receiver's check.)
pub struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    pub fn new(packet: &'a [u8]) -> Self {
        Lines { rest: packet }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (line, rest) = match memchr::memchr(b'\n', self.rest) {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &self.rest[self.rest.len()..]),
            };
            self.rest = rest;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                return Some(line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_on_newline_drop_one_cr_and_skip_empty() {
        let lines: Vec<&[u8]> = Lines::new(b"foo\nbar\r\n\n\r\nbaz\r\r\nquz").collect();
        assert_eq!(lines, vec![&b"foo"[..], b"bar", b"baz\r", b"quz"]);
    }

    #[test]
    fn message_kind_follows_prefix() {
        assert_eq!(message_kind(b"_e{1,1}:a|b"), MessageKind::Event);
        assert_eq!(message_kind(b"_sc|x|0"), MessageKind::ServiceCheck);
        assert_eq!(message_kind(b"_scale:1|c"), MessageKind::ServiceCheck);
        assert_eq!(message_kind(b"page.views:1|c"), MessageKind::Metric);
    }
}
