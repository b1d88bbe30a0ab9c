//! `dogstatsd_mapper_profiles` as the Agent's `datadog.yaml` (or its JSON environment variable)
//! writes them, and their validation. Fields the Agent requires are `Option` here so a missing
//! one becomes an error that names its profile and rule instead of a serde message.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ProfileSpec {
    pub name: Option<String>,
    pub prefix: Option<String>,
    #[serde(default)]
    pub mappings: Vec<MappingSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MappingSpec {
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    pub match_type: Option<String>,
    pub name: Option<String>,
    /// Tag key → value template. Ordered by key: the Agent's order is a Go map's (random).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A rule that cannot be compiled, located as `profiles[P] (name) mappings[R]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MapperError {
    pub profile: usize,
    pub profile_name: Option<String>,
    pub rule: Option<usize>,
    pub what: String,
}

impl fmt::Display for MapperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dogstatsd_mapper_profiles[{}]", self.profile)?;
        if let Some(n) = &self.profile_name {
            write!(f, " ({n:?})")?;
        }
        if let Some(r) = self.rule {
            write!(f, " mappings[{r}]")?;
        }
        write!(f, ": {}", self.what)
    }
}

impl std::error::Error for MapperError {}

/// Whether a rule's `match` is a wildcard or a regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    Wildcard,
    Regex,
}

/// A rule checked and translated: its anchored regex, as the Agent builds it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRule {
    /// Searched in the name for the capture groups the templates use.
    pub regex: String,
    /// What the one-pass DFA matches against the whole name, when not `regex` itself (a
    /// statsd_exporter regex matches anywhere in the name: `(?s:.)*(?:R)(?s:.)*`).
    pub dfa: Option<String>,
    pub name: String,
    pub tags: Vec<(String, String)>,
    /// statsd_exporter's `action: drop`: a name this rule matches is blocked.
    pub drop: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckedProfile {
    pub name: String,
    /// `None` for prefix `*` (every name).
    pub prefix: Option<String>,
    pub rules: Vec<CheckedRule>,
}

/// Checks every profile and rule, translating wildcards: `.` → `\.`, `*` → `([^.]*)`, the whole
/// anchored `^…$`; a regex is anchored the same way, by plain concatenation (as the Agent does,
/// so a top-level `a|b` is anchored only at its outer ends).
pub fn check(profiles: &[ProfileSpec]) -> Result<Vec<CheckedProfile>, MapperError> {
    profiles
        .iter()
        .enumerate()
        .map(|(p, spec)| {
            let err = |rule: Option<usize>, what: String| MapperError {
                profile: p,
                profile_name: spec.name.clone(),
                rule,
                what,
            };
            if spec.name.as_deref().is_none_or(str::is_empty) {
                return Err(err(None, "missing name".into()));
            }
            let prefix = match spec.prefix.as_deref() {
                None | Some("") => return Err(err(None, "missing prefix".into())),
                Some("*") => None,
                Some(p) => Some(p.to_owned()),
            };
            let rules = spec
                .mappings
                .iter()
                .enumerate()
                .map(|(r, m)| check_rule(m).map_err(|what| err(Some(r), what)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(CheckedProfile {
                name: spec.name.clone().unwrap_or_default(),
                prefix,
                rules,
            })
        })
        .collect()
}

fn check_rule(m: &MappingSpec) -> Result<CheckedRule, String> {
    let pattern = match m.pattern.as_deref() {
        None | Some("") => return Err("missing match".into()),
        Some(p) => p,
    };
    let name = match m.name.as_deref() {
        None | Some("") => return Err("missing name".into()),
        Some(n) => n.to_owned(),
    };
    let match_type = match m.match_type.as_deref() {
        None | Some("") | Some("wildcard") => MatchType::Wildcard,
        Some("regex") => MatchType::Regex,
        Some(other) => {
            return Err(format!(
                "match_type {other:?} is neither wildcard nor regex"
            ));
        }
    };
    let regex = match match_type {
        MatchType::Wildcard => wildcard_regex(pattern)?,
        MatchType::Regex => format!("^{pattern}$"),
    };
    Ok(CheckedRule {
        regex,
        dfa: None,
        name,
        tags: m.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        drop: false,
    })
}

pub(super) fn wildcard_regex(pattern: &str) -> Result<String, String> {
    if let Some(bad) = pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.')))
    {
        return Err(format!(
            "wildcard {pattern:?} holds {bad:?}: only letters, digits, '-', '_', '*' and '.' are allowed \
             (use match_type: regex for more)"
        ));
    }
    if pattern.contains("**") {
        return Err(format!(
            "wildcard {pattern:?} holds \"**\", which is not allowed"
        ));
    }
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '.' => re.push_str("\\."),
            '*' => re.push_str("([^.]*)"),
            c => re.push(c),
        }
    }
    re.push('$');
    Ok(re)
}

/// The regex parser's own message and the column it points at (the builder's own text is only
/// "error parsing pattern 0").
pub(super) fn syntax_error(e: &regex_automata::meta::BuildError) -> String {
    use regex_syntax::Error;
    match e.syntax_error() {
        Some(Error::Parse(p)) => format!("{} at column {}", p.kind(), p.span().start.column),
        Some(Error::Translate(t)) => format!("{} at column {}", t.kind(), t.span().start.column),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Vec<ProfileSpec> {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn the_agents_example_parses_and_translates() {
        let p = check(&spec(
            r#"
- name: airflow
  prefix: "airflow."
  mappings:
    - match: "airflow.job.duration_sec.*.*"
      name: "airflow.job.duration"
      tags: { job_type: "$1", job_name: "$2" }
    - match: 'airflow\.pool\.(.*)\.open_slots'
      match_type: regex
      name: "airflow.pool.open_slots"
      tags: { pool: "$1" }
- name: any
  prefix: "*"
  mappings: []
"#,
        ))
        .unwrap();
        assert_eq!(p[0].prefix.as_deref(), Some("airflow."));
        assert_eq!(
            p[0].rules[0].regex,
            r"^airflow\.job\.duration_sec\.([^.]*)\.([^.]*)$"
        );
        assert_eq!(
            p[0].rules[0].tags,
            vec![
                ("job_name".into(), "$2".into()),
                ("job_type".into(), "$1".into())
            ]
        );
        assert_eq!(p[0].rules[1].regex, r"^airflow\.pool\.(.*)\.open_slots$");
        assert_eq!(p[1].prefix, None);
    }

    #[test]
    fn every_error_names_its_profile_and_rule() {
        let cases = [
            (
                "- prefix: a.\n",
                "dogstatsd_mapper_profiles[0]: missing name",
            ),
            (
                "- name: p\n",
                "dogstatsd_mapper_profiles[0] (\"p\"): missing prefix",
            ),
            (
                "- name: p\n  prefix: a.\n  mappings:\n    - name: x\n",
                "dogstatsd_mapper_profiles[0] (\"p\") mappings[0]: missing match",
            ),
            (
                "- name: p\n  prefix: a.\n  mappings:\n    - match: a.b\n",
                "dogstatsd_mapper_profiles[0] (\"p\") mappings[0]: missing name",
            ),
            (
                "- name: p\n  prefix: a.\n  mappings:\n    - {match: a.b, name: x}\n    - {match: a.b, name: x, match_type: glob}\n",
                "dogstatsd_mapper_profiles[0] (\"p\") mappings[1]: match_type \"glob\" is neither wildcard nor regex",
            ),
            (
                "- name: p\n  prefix: a.\n  mappings:\n    - {match: 'a.**', name: x}\n",
                "dogstatsd_mapper_profiles[0] (\"p\") mappings[0]: wildcard \"a.**\" holds \"**\", which is not allowed",
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(check(&spec(yaml)).unwrap_err().to_string(), want, "{yaml}");
        }
        let bad_char = check(&spec(
            "- name: p\n  prefix: a.\n  mappings:\n    - {match: 'a.(b)', name: x}\n",
        ))
        .unwrap_err();
        assert!(bad_char.what.contains("'('"), "{bad_char}");
    }
}
