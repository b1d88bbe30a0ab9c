//! statsd_exporter's mapping file (`--mapping-config`, its `--statsd.mapping-config`): `mappings`
//! of `match`, `match_type: glob|regex`, `name`, `labels`, `action: map|drop`, and `defaults`,
//! turned into one mapper profile for every name, compiled into the same one-pass DFA as the
//! Agent's profiles.
//!
//! Matching as statsd_exporter matches: a glob's `*` matches one dot-free run (`$n` is the n-th),
//! the whole name; a regex matches anywhere in the name, as Go's `FindStringSubmatch` (its README's
//! `match: .` drop-all relies on that; `$0` is the match); every glob rule is tried before every
//! regex rule, each kind in file order, and the first match wins. Labels become tags.
//!
//! The keys that shape statsd_exporter's Prometheus exposition (`observer_type`/`timer_type`,
//! `histogram_options.buckets`/`buckets`, `summary_options.quantiles`/`quantiles`, `ttl`, `help`)
//! are read into an `Exposition` for `--downstream prometheus-scrape`: the `defaults`, and each
//! mapping's for the metric names it produces (its `name`, `$n` and `${n}` matching any run). Keys
//! corestatsd cannot honour (`match_metric_type`: the mapper runs on names alone; `scale`;
//! `honor_labels`; `glob_disable_ordering: true`; summary ages and native histograms) are named
//! at start-up, never silently dropped. Pure: reads text, returns rules and names.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_norway::Value;

use super::profiles::{CheckedProfile, CheckedRule, wildcard_regex};

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    mappings: Vec<Mapping>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Defaults {
    match_type: Option<String>,
    glob_disable_ordering: Option<bool>,
    #[serde(flatten)]
    observe: Observe,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// The exposition keys of `defaults` and of a mapping.
#[derive(Debug, Default, Deserialize)]
struct Observe {
    observer_type: Option<String>,
    timer_type: Option<String>,
    buckets: Option<Vec<f64>>,
    quantiles: Option<Vec<Quantile>>,
    histogram_options: Option<HistogramOptions>,
    summary_options: Option<SummaryOptions>,
    ttl: Option<Value>,
    help: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Quantile {
    quantile: f64,
}

#[derive(Debug, Default, Deserialize)]
struct HistogramOptions {
    buckets: Option<Vec<f64>>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct SummaryOptions {
    quantiles: Option<Vec<Quantile>>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// A timer's, histogram's or distribution's Prometheus form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observer {
    Summary,
    Histogram,
}

/// What a mapping file says of a family's exposition; `None`: not said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObserverOptions {
    pub observer: Option<Observer>,
    pub buckets: Option<Vec<f64>>,
    pub quantiles: Option<Vec<f64>>,
    /// 0: never expires.
    pub ttl_secs: Option<u64>,
    pub help: Option<String>,
}

impl ObserverOptions {
    /// `self`, with what it does not say taken from `under`.
    fn over(&self, under: &ObserverOptions) -> ObserverOptions {
        ObserverOptions {
            observer: self.observer.or(under.observer),
            buckets: self.buckets.clone().or_else(|| under.buckets.clone()),
            quantiles: self.quantiles.clone().or_else(|| under.quantiles.clone()),
            ttl_secs: self.ttl_secs.or(under.ttl_secs),
            help: self.help.clone().or_else(|| under.help.clone()),
        }
    }
}

/// A mapping's `name` as a pattern over Prometheus names: literal runs (as Prometheus spells
/// them) and captures, each matching one character or more.
#[derive(Debug, Clone, PartialEq)]
pub struct NamePattern(Vec<Option<String>>);

impl NamePattern {
    pub fn new(template: &str) -> NamePattern {
        let mut parts: Vec<Option<String>> = Vec::new();
        let mut lit = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            let capture = c == '$'
                && chars
                    .peek()
                    .is_some_and(|n| *n == '{' || n.is_ascii_alphanumeric() || *n == '_');
            if !capture {
                lit.push(if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    c
                } else {
                    '_'
                });
                continue;
            }
            if chars.peek() == Some(&'{') {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
            } else {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '_')
                {
                    chars.next();
                }
            }
            if !lit.is_empty() {
                parts.push(Some(std::mem::take(&mut lit)));
            }
            if parts.last() != Some(&None) {
                parts.push(None);
            }
        }
        if !lit.is_empty() {
            parts.push(Some(lit));
        }
        NamePattern(parts)
    }

    pub fn matches(&self, name: &str) -> bool {
        fn go(parts: &[Option<String>], s: &str) -> bool {
            match parts.split_first() {
                None => s.is_empty(),
                Some((Some(lit), rest)) => {
                    s.strip_prefix(lit.as_str()).is_some_and(|r| go(rest, r))
                }
                Some((None, rest)) => (1..=s.len())
                    .filter(|&i| s.is_char_boundary(i))
                    .any(|i| go(rest, &s[i..])),
            }
        }
        go(&self.0, name)
    }
}

/// The exposition settings of a mapping file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub defaults: ObserverOptions,
    /// In the mapper's order (globs, then regexes): the first whose pattern matches wins.
    pub by_name: Vec<(NamePattern, ObserverOptions)>,
}

impl Exposition {
    /// The options of the family `name` (a Prometheus name, before any `_total`).
    pub fn options_for(&self, name: &str) -> ObserverOptions {
        match self.by_name.iter().find(|(p, _)| p.matches(name)) {
            Some((_, o)) => o.over(&self.defaults),
            None => self.defaults.clone(),
        }
    }
}

/// A Go duration (`90s`, `10m`, `1h30m`, `500ms`) or a number of seconds, in whole seconds.
fn duration_secs(v: &Value) -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let text = v.as_str().ok_or("a duration like 10m or 90s")?;
    if text == "0" {
        return Ok(0);
    }
    let (mut total, mut rest) = (0f64, text);
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} has a number without a unit"))?;
        let n: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 10m or 90s"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            u => return Err(format!("{text:?}: unknown unit {u:?}")),
        };
        total += n * secs;
        rest = &rest[unit..];
    }
    Ok(total.ceil() as u64)
}

impl Observe {
    /// The options, naming at `at` (`defaults` or `mappings[N]`) what cannot be honoured.
    fn read(&self, at: &str, not_honoured: &mut Vec<String>) -> Result<ObserverOptions, String> {
        let observer = match self.observer_type.as_deref().or(self.timer_type.as_deref()) {
            None | Some("") | Some("default") => None,
            Some("summary") => Some(Observer::Summary),
            Some("histogram") => Some(Observer::Histogram),
            Some(other) => {
                return Err(format!(
                    "{at}: observer type {other:?} is neither summary nor histogram"
                ));
            }
        };
        let h = self.histogram_options.as_ref();
        let sm = self.summary_options.as_ref();
        for (group, other) in [
            ("histogram_options", h.map(|h| &h.other)),
            ("summary_options", sm.map(|s| &s.other)),
        ] {
            not_honoured.extend(
                other
                    .into_iter()
                    .flat_map(|o| o.keys())
                    .map(|k| format!("{at}.{group}.{k}")),
            );
        }
        let mut buckets = h
            .and_then(|h| h.buckets.clone())
            .or_else(|| self.buckets.clone());
        if let Some(b) = buckets.as_mut() {
            if b.iter().any(|x| !x.is_finite()) {
                return Err(format!("{at}: buckets must be finite numbers"));
            }
            b.sort_by(f64::total_cmp);
            b.dedup();
        }
        let quantiles = sm
            .and_then(|s| s.quantiles.as_ref())
            .or(self.quantiles.as_ref())
            .map(|q| q.iter().map(|q| q.quantile).collect::<Vec<f64>>());
        if let Some(bad) = quantiles
            .iter()
            .flatten()
            .find(|q| !(0.0..=1.0).contains(*q))
        {
            return Err(format!("{at}: quantile {bad} is not between 0 and 1"));
        }
        let ttl_secs = match &self.ttl {
            None => None,
            Some(v) => Some(duration_secs(v).map_err(|e| format!("{at}: ttl: {e}"))?),
        };
        Ok(ObserverOptions {
            observer,
            buckets,
            quantiles,
            ttl_secs,
            help: self.help.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
struct Mapping {
    #[serde(rename = "match")]
    pattern: Option<String>,
    match_type: Option<String>,
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    action: Option<String>,
    #[serde(flatten)]
    observe: Observe,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// A mapping file, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterMappings {
    /// One profile, prefix `*`: the globs, then the regexes.
    pub profile: CheckedProfile,
    /// For each of the profile's rules, its index in the file's `mappings`.
    pub origin: Vec<usize>,
    /// The keys read and not honoured, as `mappings[3].scale` or `defaults.glob_disable_ordering`.
    pub not_honoured: Vec<String>,
    /// What `--downstream prometheus-scrape` makes of the families.
    pub exposition: Exposition,
}

/// The first segment of a glob cannot start with a digit (statsd_exporter's `metricLineRE`).
fn glob_is_valid(pattern: &str) -> bool {
    pattern.split('.').enumerate().all(|(i, seg)| {
        seg == "*"
            || (!seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && (i > 0 || !seg.as_bytes()[0].is_ascii_digit())
                && seg.as_bytes()[0] != b'-')
    })
}

fn label_is_valid(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Reads a mapping file's text. Errors name the mapping (`mappings[N]`) and what is wrong.
pub fn compile(text: &str) -> Result<ExporterMappings, String> {
    let file: File = serde_norway::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut not_honoured: Vec<String> = file.other.keys().cloned().collect();
    not_honoured.extend(file.defaults.other.keys().map(|k| format!("defaults.{k}")));
    if file.defaults.glob_disable_ordering == Some(true) {
        not_honoured.push("defaults.glob_disable_ordering (rules stay in file order)".into());
    }
    let default_type = match file.defaults.match_type.as_deref() {
        None | Some("") | Some("glob") => "glob",
        Some("regex") => "regex",
        Some(other) => {
            return Err(format!(
                "defaults.match_type {other:?} is neither glob nor regex"
            ));
        }
    };
    let defaults = file.defaults.observe.read("defaults", &mut not_honoured)?;
    let (mut globs, mut regexes) = (Vec::new(), Vec::new());
    let (mut glob_options, mut regex_options) = (Vec::new(), Vec::new());
    for (i, m) in file.mappings.iter().enumerate() {
        let at = |what: String| format!("mappings[{i}]: {what}");
        let options = m
            .observe
            .read(&format!("mappings[{i}]"), &mut not_honoured)?;
        let pattern = match m.pattern.as_deref() {
            None | Some("") => return Err(at("missing match".into())),
            Some(p) => p,
        };
        let drop = match m.action.as_deref() {
            None | Some("") | Some("map") => false,
            Some("drop") => true,
            Some(other) => return Err(at(format!("action {other:?} is neither map nor drop"))),
        };
        let name = match m.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ if drop => String::new(),
            _ => return Err(at("missing name".into())),
        };
        if let Some(bad) = m.labels.keys().find(|k| !label_is_valid(k)) {
            return Err(at(format!("invalid label key {bad:?}")));
        }
        not_honoured.extend(m.other.keys().map(|k| format!("mappings[{i}].{k}")));
        let tags = m
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match m.match_type.as_deref().unwrap_or(default_type) {
            "glob" | "" => {
                if !glob_is_valid(pattern) {
                    return Err(at(format!("invalid glob match {pattern:?}")));
                }
                let regex = wildcard_regex(pattern).map_err(at)?;
                let rule = CheckedRule {
                    regex,
                    dfa: None,
                    name,
                    tags,
                    drop,
                };
                if !drop {
                    glob_options.push((NamePattern::new(&rule.name), options));
                }
                globs.push((i, rule));
            }
            "regex" => {
                let rule = CheckedRule {
                    regex: pattern.to_owned(),
                    dfa: Some(format!("(?s:.)*(?:{pattern})(?s:.)*")),
                    name,
                    tags,
                    drop,
                };
                if !drop {
                    regex_options.push((NamePattern::new(&rule.name), options));
                }
                regexes.push((i, rule));
            }
            other => {
                return Err(at(format!(
                    "match_type {other:?} is neither glob nor regex"
                )));
            }
        }
    }
    let (origin, rules) = globs.into_iter().chain(regexes).unzip();
    Ok(ExporterMappings {
        profile: CheckedProfile {
            name: "statsd_exporter".into(),
            prefix: None,
            rules,
        },
        origin,
        not_honoured,
        exposition: Exposition {
            defaults,
            by_name: glob_options.into_iter().chain(regex_options).collect(),
        },
    })
}

#[cfg(test)]
#[path = "exporter_tests.rs"]
mod tests;
