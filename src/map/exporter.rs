//! statsd_exporter's mapping file (`--mapping-config`, its `--statsd.mapping-config`): `mappings`
//! of `match`, `match_type: glob|regex`, `name`, `labels`, `action: map|drop`, and `defaults`,
//! turned into one mapper profile for every name, compiled into the same one-pass DFA as the
//! Agent's profiles.
//!
//! Matching as statsd_exporter matches: a glob's `*` matches one dot-free run (`$n` is the n-th),
//! the whole name; a regex matches anywhere in the name, as Go's `FindStringSubmatch` (its README's
//! `match: .` drop-all relies on that; `$0` is the match); every glob rule is tried before every
//! regex rule, each kind in file order, and the first match wins. Labels become tags. Keys that
//! only shape statsd_exporter's own Prometheus exposition (`timer_type`, `observer_type`,
//! `quantiles`, `buckets`, `summary_options`, `histogram_options`, `ttl`, `help`, `scale`), and
//! those corestatsd cannot honour (`match_metric_type`: the mapper runs on names alone;
//! `honor_labels`; `glob_disable_ordering: true`), are named at start-up, never silently dropped.
//! Pure: reads text, returns rules and names.

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
    other: BTreeMap<String, Value>,
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
    other: BTreeMap<String, Value>,
}

/// A mapping file, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterMappings {
    /// One profile, prefix `*`: the globs, then the regexes.
    pub profile: CheckedProfile,
    /// For each of the profile's rules, its index in the file's `mappings`.
    pub origin: Vec<usize>,
    /// The keys read and not honoured, as `mappings[3].ttl` or `defaults.quantiles`.
    pub not_honoured: Vec<String>,
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
    let (mut globs, mut regexes) = (Vec::new(), Vec::new());
    for (i, m) in file.mappings.iter().enumerate() {
        let at = |what: String| format!("mappings[{i}]: {what}");
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
    })
}

#[cfg(test)]
#[path = "exporter_tests.rs"]
mod tests;
