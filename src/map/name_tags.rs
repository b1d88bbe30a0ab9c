//! Tags inside the metric name, as statsd_exporter parses them (`--name-tag-formats`):
//! InfluxDB/Telegraf `name,k=v,k2=v2`, Librato `name#k=v,k2=v2` (whichever of `,` and `#` comes
//! first, of the formats enabled), and SignalFx `name[k=v,k2=v2]rest` (checked first). The bare
//! name goes on to the mapper; each `k=v` becomes the tag `k:v`, beside the line's `|#` tags.
//!
//! A tag without `=` or with an empty value is dropped and counted by reason, as is a `[`
//! without its `]` (the name is then kept whole). Runs when a context is created, never per
//! sample. Owns no state.

use crate::label::{by, labels};

labels! {
    /// Why a tag in a name was dropped.
    pub enum NameTagError: "reason" {
        /// `k` with no `=`.
        NoEquals => "no_equals",
        /// `k=`.
        EmptyValue => "empty_value",
        /// SignalFx: a `[` without a `]`, or the other way round.
        UnclosedBracket => "unclosed_bracket",
    }
}

/// Which formats are read (`--name-tag-formats`); none by default, as the Agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameTagFormats {
    pub influxdb: bool,
    pub librato: bool,
    pub signalfx: bool,
}

impl NameTagFormats {
    pub fn any(&self) -> bool {
        self.influxdb || self.librato || self.signalfx
    }
}

/// The bare name of `raw` when it held tags (`None`: unchanged), its tags pushed to `tags`
/// as `k:v`.
pub fn split(
    f: NameTagFormats,
    raw: &[u8],
    tags: &mut Vec<Vec<u8>>,
    errors: &mut by!(NameTagError),
) -> Option<Vec<u8>> {
    if f.signalfx {
        let open = memchr::memchr(b'[', raw);
        let close = memchr::memchr(b']', raw);
        match (open, close) {
            (Some(o), Some(c)) if o < c => {
                parse_tags(&raw[o + 1..c], tags, errors);
                let mut name = raw[..o].to_vec();
                name.extend_from_slice(&raw[c + 1..]);
                return Some(name);
            }
            (None, None) => {}
            _ => errors[NameTagError::UnclosedBracket] += 1,
        }
    }
    let at = raw
        .iter()
        .position(|&c| (c == b',' && f.influxdb) || (c == b'#' && f.librato))?;
    parse_tags(&raw[at + 1..], tags, errors);
    Some(raw[..at].to_vec())
}

fn parse_tags(list: &[u8], tags: &mut Vec<Vec<u8>>, errors: &mut by!(NameTagError)) {
    for tag in list.split(|&c| c == b',').filter(|t| !t.is_empty()) {
        let Some(eq) = memchr::memchr(b'=', tag) else {
            errors[NameTagError::NoEquals] += 1;
            continue;
        };
        if eq + 1 == tag.len() {
            errors[NameTagError::EmptyValue] += 1;
            continue;
        }
        let mut t = Vec::with_capacity(tag.len());
        t.extend_from_slice(&tag[..eq]);
        t.push(b':');
        t.extend_from_slice(&tag[eq + 1..]);
        tags.push(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: NameTagFormats = NameTagFormats {
        influxdb: true,
        librato: true,
        signalfx: true,
    };

    fn run(f: NameTagFormats, raw: &str) -> (Option<String>, Vec<String>, Vec<u64>) {
        let mut tags = Vec::new();
        let mut errors: by!(NameTagError) = Default::default();
        let name = split(f, raw.as_bytes(), &mut tags, &mut errors);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (
            name.as_deref().map(text),
            tags.iter().map(|t| text(t)).collect(),
            errors.iter().map(|(_, n)| *n).collect(),
        )
    }

    #[test]
    fn each_format_gives_the_bare_name_and_its_tags() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            run(ALL, "req,env=prod,az=a"),
            (
                some("req"),
                vec!["env:prod".into(), "az:a".into()],
                vec![0, 0, 0]
            )
        );
        assert_eq!(
            run(ALL, "req#env=prod"),
            (some("req"), vec!["env:prod".into()], vec![0, 0, 0])
        );
        assert_eq!(
            run(ALL, "api.[env=prod,az=a]hits"),
            (
                some("api.hits"),
                vec!["env:prod".into(), "az:a".into()],
                vec![0, 0, 0]
            )
        );
        // Only the formats enabled.
        let influx = NameTagFormats {
            influxdb: true,
            ..NameTagFormats::default()
        };
        assert_eq!(run(influx, "a#b=c"), (None, vec![], vec![0, 0, 0]));
        assert_eq!(run(NameTagFormats::default(), "a,b=c").0, None);
        assert_eq!(run(ALL, "plain.name"), (None, vec![], vec![0, 0, 0]));
    }

    #[test]
    fn malformed_tags_are_dropped_and_counted_by_reason() {
        assert_eq!(
            run(ALL, "req,env,az=,ok=1"),
            (Some("req".into()), vec!["ok:1".into()], vec![1, 1, 0])
        );
        assert_eq!(run(ALL, "api.[env=prod"), (None, vec![], vec![0, 0, 1]));
    }
}
