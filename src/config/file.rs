//! `--config FILE`: the YAML keys corestatsd reads, under the Datadog Agent's names so a
//! `datadog.yaml` can be pointed at (or a section of it pasted in) unchanged. Each key is read
//! on its own, so an error names the key; keys corestatsd has no use for are listed, not fatal.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

use crate::map::ProfileSpec;

/// What the file says; `None`/empty for keys it does not set.
#[derive(Debug, Default)]
pub struct FileConfig {
    pub mapper_profiles: Vec<ProfileSpec>,
    pub mapper_cache_size: Option<usize>,
    pub namespace: Option<String>,
    pub namespace_exempt: Option<Vec<String>>,
    pub block_list: Vec<String>,
    /// Entries of `block_list` are prefixes (`metric_filterlist_match_prefix: true`).
    pub block_match_prefix: bool,
    /// The Agent's `metric_tag_filterlist`: (metric name, include, tag keys).
    pub tag_filters: Vec<(String, bool, Vec<String>)>,
    /// corestatsd's `strip_host` (as `--strip-host`).
    pub strip_host: Vec<String>,
    /// The Agent's `additional_endpoints`: more Datadog intakes, each URL with its API keys.
    pub additional_endpoints: Vec<(String, Vec<String>)>,
    /// corestatsd's `downstream` (as `--downstream`, repeated), checked by `downstream`.
    pub downstream: Vec<String>,
    pub tags: Vec<String>,
    /// corestatsd's own keys (the Agent has no such caps).
    pub max_contexts: Option<usize>,
    pub max_contexts_per_metric: Option<usize>,
    pub memory_limit_bytes: Option<u64>,
    pub sink_queue_max_points: Option<u64>,
    /// The Agent's `dogstatsd_stats_enable`.
    pub context_stats: Option<bool>,
    /// The Agent's `dogstatsd_capture_path`.
    pub capture_dir: Option<std::path::PathBuf>,
    /// The Agent's listener, host and intake keys present (`agent::KEYS`), read by `agent`.
    pub agent: Vec<(String, Value)>,
    /// Top-level keys present but not used.
    pub ignored: Vec<String>,
}

pub fn load(path: &Path) -> Result<FileConfig, String> {
    let at = |what: String| format!("--config {}: {what}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(format!("cannot read it: {e}")))?;
    parse(&text).map_err(at)
}

fn parse(text: &str) -> Result<FileConfig, String> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut map = match doc {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => return Err("the top level must be a mapping of keys".into()),
    };
    let mut out = FileConfig {
        mapper_profiles: take(&mut map, "dogstatsd_mapper_profiles")?.unwrap_or_default(),
        mapper_cache_size: take(&mut map, "dogstatsd_mapper_cache_size")?,
        namespace: take(&mut map, "statsd_metric_namespace")?,
        namespace_exempt: take(&mut map, "statsd_metric_namespace_blacklist")?,
        tags: take(&mut map, "dogstatsd_tags")?.unwrap_or_default(),
        max_contexts: take(&mut map, "max_contexts")?,
        max_contexts_per_metric: take(&mut map, "max_contexts_per_metric")?,
        memory_limit_bytes: take(&mut map, "memory_limit_bytes")?,
        sink_queue_max_points: take(&mut map, "sink_queue_max_points")?,
        context_stats: take(&mut map, "dogstatsd_stats_enable")?,
        capture_dir: take(&mut map, "dogstatsd_capture_path")?,
        ..FileConfig::default()
    };
    if out.namespace_exempt.is_none() {
        out.namespace_exempt = take(&mut map, "statsd_metric_namespace_blocklist")?;
    }
    // The current keys, then the legacy ones the Agent still reads.
    for (list, prefix) in [
        ("metric_filterlist", "metric_filterlist_match_prefix"),
        (
            "statsd_metric_blocklist",
            "statsd_metric_blocklist_match_prefix",
        ),
    ] {
        let names: Option<Vec<String>> = take(&mut map, list)?;
        let is_prefix: Option<bool> = take(&mut map, prefix)?;
        if out.block_list.is_empty()
            && let Some(names) = names
        {
            out.block_list = names;
            out.block_match_prefix = is_prefix.unwrap_or(false);
        }
    }
    let entries: Vec<FilterEntry> = take(&mut map, "metric_tag_filterlist")?.unwrap_or_default();
    for (i, e) in entries.into_iter().enumerate() {
        let include = match e.action.as_deref() {
            Some("include") => true,
            Some("exclude") => false,
            other => {
                return Err(format!(
                    "metric_tag_filterlist[{i}] ({}): action {:?} is neither include nor exclude",
                    e.metric_name,
                    other.unwrap_or("")
                ));
            }
        };
        out.tag_filters.push((e.metric_name, include, e.tags));
    }
    out.strip_host = take(&mut map, "strip_host")?.unwrap_or_default();
    let extra: Option<std::collections::BTreeMap<String, Vec<String>>> =
        take(&mut map, "additional_endpoints")?;
    out.additional_endpoints = extra.unwrap_or_default().into_iter().collect();
    out.downstream = match take::<OneOrMany>(&mut map, "downstream")? {
        None => Vec::new(),
        Some(OneOrMany::One(d)) => vec![d],
        Some(OneOrMany::Many(d)) => d,
    };
    for key in super::agent::KEYS {
        if let Some(v) = map.remove(key).filter(|v| !v.is_null()) {
            out.agent.push((key.to_owned(), v));
        }
    }
    out.ignored = map
        .keys()
        .map(|k| match k {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    Ok(out)
}

/// A key that takes one value or a list of them.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// One `metric_tag_filterlist` entry.
#[derive(serde::Deserialize)]
struct FilterEntry {
    metric_name: String,
    action: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// Removes `key` and reads it as `T`; a null value counts as absent.
fn take<T: DeserializeOwned>(map: &mut Mapping, key: &str) -> Result<Option<T>, String> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_norway::from_value(v)
            .map(Some)
            .map_err(|e| format!("{key}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_keys_are_read_and_others_listed() {
        let c = parse(
            r#"
api_key: xxx
dogstatsd_mapper_cache_size: 50
statsd_metric_namespace: app
metric_filterlist: [a.b, c.]
metric_filterlist_match_prefix: true
dogstatsd_tags: ["env:prod"]
max_contexts: 5000
memory_limit_bytes: 1073741824
dogstatsd_mapper_profiles:
  - name: p
    prefix: "x."
    mappings:
      - match: "x.*"
        name: "y"
"#,
        )
        .unwrap();
        assert_eq!(c.mapper_cache_size, Some(50));
        assert_eq!(c.namespace.as_deref(), Some("app"));
        assert_eq!(c.block_list, vec!["a.b", "c."]);
        assert!(c.block_match_prefix);
        assert_eq!(c.tags, vec!["env:prod"]);
        assert_eq!(c.mapper_profiles.len(), 1);
        assert_eq!(c.ignored, Vec::<String>::new());
        assert_eq!(c.agent, vec![("api_key".to_string(), Value::from("xxx"))]);
        assert_eq!(c.namespace_exempt, None);
        assert_eq!(c.max_contexts, Some(5000));
        assert_eq!(c.max_contexts_per_metric, None);
        assert_eq!(c.memory_limit_bytes, Some(1 << 30));
    }

    #[test]
    fn tag_filter_entries_are_read_and_a_bad_action_is_named() {
        let c = parse(
            "metric_tag_filterlist:\n  - {metric_name: a, action: include, tags: [env]}\n  \
             - {metric_name: b, action: exclude, tags: [pod, id]}\nstrip_host: ['svc.*']\n",
        )
        .unwrap();
        assert_eq!(
            c.tag_filters,
            vec![
                ("a".to_string(), true, vec!["env".to_string()]),
                (
                    "b".to_string(),
                    false,
                    vec!["pod".to_string(), "id".to_string()]
                ),
            ]
        );
        assert_eq!(c.strip_host, vec!["svc.*"]);
        let e = parse("metric_tag_filterlist:\n  - {metric_name: a, action: keep}\n").unwrap_err();
        assert!(
            e.contains("metric_tag_filterlist[0] (a): action \"keep\" is neither"),
            "{e}"
        );
    }

    #[test]
    fn legacy_block_list_and_errors_name_the_key() {
        let c = parse("statsd_metric_blocklist: [z]\n").unwrap();
        assert_eq!(
            (c.block_list, c.block_match_prefix),
            (vec!["z".into()], false)
        );
        let err = parse("dogstatsd_mapper_cache_size: lots\n").unwrap_err();
        assert!(err.starts_with("dogstatsd_mapper_cache_size:"), "{err}");
        let err = parse("dogstatsd_mapper_profiles: {name: x}\n").unwrap_err();
        assert!(err.starts_with("dogstatsd_mapper_profiles:"), "{err}");
        assert!(parse("- a\n").is_err());
        assert!(parse("").unwrap().ignored.is_empty());
    }
}
