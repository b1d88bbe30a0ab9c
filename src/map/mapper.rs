//! The compiled mapper: every rule of every profile in one anchored, multi-pattern dense DFA
//! (`MatchKind::All`), so one pass over a name gives the set of rules that match it whole; the
//! first of those in the selected profile wins, and only that rule's own regex is run again for
//! its capture groups. Built once at start-up; each shard copies it and brings its own `Scratch`.
//!
//! A rule set whose dense DFA would pass `DENSE_LIMIT` (a rule such as `(a|b)*a(a|b){25}` grows
//! exponentially when determinized) is not refused: the same patterns run in regex-automata's lazy
//! DFA, which determinizes only the states names reach, in a per-shard cache of `LAZY_CACHE_BYTES`
//! that is cleared and refilled when full. Compile time and memory stay bounded either way.
//!
//! Regexes are compiled byte-oriented with Unicode classes off: `\w`, `\d`, `\s` and `\b` are
//! ASCII, as in Go's RE2 (which the Agent uses), and names need not be UTF-8. One difference
//! remains: `.` matches one byte where Go matches one UTF-8 character.

use std::ops::Range;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::hybrid;
use regex_automata::meta::{self, Regex};
use regex_automata::util::captures::Captures;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, PatternID};

use super::profiles::{CheckedProfile, MapperError, syntax_error};

/// The dense DFA may not grow past this (the 1000-rule benchmark set takes 3 MiB); a rule set
/// that needs more runs in the lazy DFA instead. Determinizing up to this limit takes well under
/// a second.
pub const DENSE_LIMIT: usize = 16 << 20;

/// Each shard's lazy DFA cache, when the rules need one.
const LAZY_CACHE_BYTES: usize = 8 << 20;

fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

fn thompson_config() -> regex_automata::nfa::thompson::Config {
    regex_automata::nfa::thompson::Config::new().utf8(false)
}

#[derive(Debug, Clone)]
struct Profile {
    /// `None`: prefix `*`.
    prefix: Option<Box<[u8]>>,
    rules: Range<usize>,
}

/// A `name` or tag value with its `$n`, `${n}`, `$name` references resolved to group indices.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(Vec<u8>),
    Group(usize),
}

#[derive(Debug, Clone, PartialEq)]
struct Template(Vec<Piece>);

impl Template {
    /// Parses like Go's `Regexp.Expand`: `$$` is `$`; `$name` takes the longest run of letters,
    /// digits and `_`; `${name}` is braced; a name of digits only is a group number, any other a
    /// group name; a reference to no group expands to nothing; a `$` starting no valid
    /// reference is kept as text.
    fn parse(t: &str, re: &Regex) -> Template {
        let b = t.as_bytes();
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' {
                lit.push(b[i]);
                i += 1;
                continue;
            }
            if b.get(i + 1) == Some(&b'$') {
                lit.push(b'$');
                i += 2;
                continue;
            }
            let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                match b[i + 2..].iter().position(|&c| c == b'}') {
                    Some(len) if len > 0 && b[i + 2..i + 2 + len].iter().all(|&c| is_name(c)) => {
                        (&b[i + 2..i + 2 + len], i + 3 + len)
                    }
                    _ => (&b[..0], i + 1),
                }
            } else {
                let len = b[i + 1..].iter().take_while(|&&c| is_name(c)).count();
                (&b[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.is_empty() {
                lit.push(b'$');
                i += 1;
                continue;
            }
            if !lit.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut lit)));
            }
            let name = std::str::from_utf8(name).unwrap_or_default();
            let group = if name.bytes().all(|c| c.is_ascii_digit()) {
                name.parse::<usize>()
                    .ok()
                    .filter(|&g| g < re.group_info().group_len(PatternID::ZERO))
            } else {
                re.group_info().to_index(PatternID::ZERO, name)
            };
            if let Some(g) = group {
                pieces.push(Piece::Group(g));
            }
            i = next;
        }
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        Template(pieces)
    }

    fn expand(&self, haystack: &[u8], caps: &Captures, out: &mut Vec<u8>) {
        for p in &self.0 {
            match p {
                Piece::Literal(l) => out.extend_from_slice(l),
                Piece::Group(g) => {
                    if let Some(span) = caps.get_group(*g) {
                        out.extend_from_slice(&haystack[span.range()]);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    re: Regex,
    name: Template,
    /// `key:` and the value's template.
    tags: Vec<(Vec<u8>, Template)>,
    drop: bool,
}

/// What a mapped name becomes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapped {
    pub name: Vec<u8>,
    /// `key:value`, in key order.
    pub tags: Vec<Vec<u8>>,
    /// The rule says drop (statsd_exporter's `action: drop`): the name is blocked.
    pub drop: bool,
}

/// The outcome of mapping one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No profile's prefix matches (the Agent does not cache these).
    NoProfile,
    /// A profile was selected and none of its rules matched: the name is unchanged.
    NoMatch,
    Mapped(Mapped),
}

#[derive(Debug, Clone)]
pub struct Mapper {
    profiles: Vec<Profile>,
    rules: Vec<Rule>,
    engine: Engine,
}

/// What finds the rules matching a whole name in one pass.
#[derive(Debug, Clone)]
enum Engine {
    Dense(dense::DFA<Vec<u32>>),
    /// The rules' dense DFA would pass `DENSE_LIMIT`.
    Lazy {
        dfa: hybrid::dfa::DFA,
        cache_bytes: usize,
    },
}

/// Per-shard mutable state for the rules' capture searches.
pub struct Scratch {
    /// One (cache, captures) per rule, made the first time the rule matches.
    per_rule: Vec<Option<(meta::Cache, Captures)>>,
    /// The lazy DFA's states, made on the first name when the mapper runs one.
    lazy: Option<hybrid::dfa::Cache>,
}

impl Mapper {
    pub fn new(profiles: &[CheckedProfile]) -> Result<Mapper, MapperError> {
        Mapper::build(profiles, DENSE_LIMIT, LAZY_CACHE_BYTES)
    }

    /// `new` with the engines' limits given (tests exercise the lazy DFA with small ones).
    fn build(
        profiles: &[CheckedProfile],
        dense_limit: usize,
        lazy_cache_bytes: usize,
    ) -> Result<Mapper, MapperError> {
        let mut patterns = Vec::new();
        let mut compiled = Vec::new();
        let mut rules = Vec::new();
        for (p, profile) in profiles.iter().enumerate() {
            let start = rules.len();
            for (r, rule) in profile.rules.iter().enumerate() {
                let err = |what: String| MapperError {
                    profile: p,
                    profile_name: Some(profile.name.clone()),
                    rule: Some(r),
                    what,
                };
                let re = Regex::builder()
                    .syntax(syntax_config())
                    .build(&rule.regex)
                    .map_err(|e| {
                        err(format!(
                            "regex {:?} does not compile: {}",
                            rule.regex,
                            syntax_error(&e)
                        ))
                    })?;
                let tags = rule
                    .tags
                    .iter()
                    .map(|(k, v)| (format!("{k}:").into_bytes(), Template::parse(v, &re)))
                    .collect();
                rules.push(Rule {
                    name: Template::parse(&rule.name, &re),
                    tags,
                    re,
                    drop: rule.drop,
                });
                patterns.push(rule.dfa.clone().unwrap_or_else(|| rule.regex.clone()));
            }
            compiled.push(Profile {
                prefix: profile.prefix.as_ref().map(|p| p.as_bytes().into()),
                rules: start..rules.len(),
            });
        }
        let engine = match dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(dense_limit))
                    .determinize_size_limit(Some(dense_limit)),
            )
            .syntax(syntax_config())
            .thompson(thompson_config())
            .build_many(&patterns)
        {
            Ok(dfa) => Engine::Dense(dfa),
            Err(_) => Engine::Lazy {
                dfa: hybrid::dfa::Builder::new()
                    .configure(
                        hybrid::dfa::Config::new()
                            .match_kind(MatchKind::All)
                            .cache_capacity(lazy_cache_bytes)
                            .skip_cache_capacity_check(true)
                            // Never give up on a name: a cleared cache is refilled.
                            .minimum_cache_clear_count(None),
                    )
                    .syntax(syntax_config())
                    .thompson(thompson_config())
                    .build_many(&patterns)
                    .map_err(|e| MapperError {
                        profile: 0,
                        profile_name: None,
                        rule: None,
                        what: format!(
                            "the {} rules together do not compile, even into a lazy DFA: {e}",
                            patterns.len()
                        ),
                    })?,
                cache_bytes: lazy_cache_bytes,
            },
        };
        Ok(Mapper {
            profiles: compiled,
            rules,
            engine,
        })
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            per_rule: (0..self.rules.len()).map(|_| None).collect(),
            lazy: None,
        }
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Bytes the dense DFA's transition table takes, or each shard's lazy DFA cache may take.
    pub fn dfa_bytes(&self) -> usize {
        match &self.engine {
            Engine::Dense(dfa) => dfa.memory_usage(),
            Engine::Lazy { cache_bytes, .. } => *cache_bytes,
        }
    }

    /// `"dense"` or `"lazy"`: which DFA the rules run in.
    pub fn engine_name(&self) -> &'static str {
        match &self.engine {
            Engine::Dense(_) => "dense",
            Engine::Lazy { .. } => "lazy",
        }
    }

    /// The profile a name selects: the first whose prefix it starts with (or `*`).
    fn profile_of(&self, name: &[u8]) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.prefix.as_deref().is_none_or(|pre| name.starts_with(pre)))
    }

    /// The first rule of `rules` matching the whole name: one pass of the DFA, whatever the
    /// number of rules.
    fn first_match(
        &self,
        lazy: &mut Option<hybrid::dfa::Cache>,
        name: &[u8],
        rules: Range<usize>,
    ) -> Option<usize> {
        let input = Input::new(name).anchored(Anchored::Yes);
        match (&self.engine, lazy) {
            (Engine::Dense(dfa), _) => {
                // Only a quit byte or an unsupported anchor mode fails here; neither is configured.
                let mut sid = dfa.start_state_forward(&input).ok()?;
                for &b in name {
                    sid = dfa.next_state(sid, b);
                    if dfa.is_dead_state(sid) {
                        return None;
                    }
                }
                sid = dfa.next_eoi_state(sid);
                if !dfa.is_match_state(sid) {
                    return None;
                }
                (0..dfa.match_len(sid))
                    .map(|i| dfa.match_pattern(sid, i).as_usize())
                    .filter(|r| rules.contains(r))
                    .min()
            }
            (Engine::Lazy { dfa, .. }, lazy) => {
                let cache = lazy.get_or_insert_with(|| dfa.create_cache());
                // With no minimum clear count the cache never gives up; it is cleared and
                // refilled instead.
                let mut sid = dfa.start_state_forward(cache, &input).ok()?;
                for &b in name {
                    sid = dfa.next_state(cache, sid, b).ok()?;
                    if sid.is_dead() {
                        return None;
                    }
                }
                sid = dfa.next_eoi_state(cache, sid).ok()?;
                if !sid.is_match() {
                    return None;
                }
                (0..dfa.match_len(cache, sid))
                    .map(|i| dfa.match_pattern(cache, sid, i).as_usize())
                    .filter(|r| rules.contains(r))
                    .min()
            }
        }
    }

    pub fn map(&self, scratch: &mut Scratch, name: &[u8]) -> Outcome {
        let Some(profile) = self.profile_of(name) else {
            return Outcome::NoProfile;
        };
        let Some(r) = self.first_match(&mut scratch.lazy, name, profile.rules.clone()) else {
            return Outcome::NoMatch;
        };
        let rule = &self.rules[r];
        let (cache, caps) = scratch.per_rule[r]
            .get_or_insert_with(|| (rule.re.create_cache(), rule.re.create_captures()));
        rule.re.search_captures_with(cache, &Input::new(name), caps);
        Outcome::Mapped(expand(rule, name, caps))
    }
}

fn expand(rule: &Rule, name: &[u8], caps: &Captures) -> Mapped {
    let mut out = Mapped {
        drop: rule.drop,
        ..Mapped::default()
    };
    rule.name.expand(name, caps, &mut out.name);
    for (key, value) in &rule.tags {
        let mut tag = key.clone();
        value.expand(name, caps, &mut tag);
        out.tags.push(tag);
    }
    out
}

/// The straightforward mapper: every rule's regex tried in order. The DFA mapper must agree
/// with it on every name (tests), and benchmarks compare the two.
pub struct Reference {
    mapper: Mapper,
}

impl Reference {
    pub fn new(profiles: &[CheckedProfile]) -> Result<Reference, MapperError> {
        Ok(Reference {
            mapper: Mapper::new(profiles)?,
        })
    }

    pub fn map(&self, name: &[u8]) -> Outcome {
        let Some(profile) = self.mapper.profile_of(name) else {
            return Outcome::NoProfile;
        };
        for r in profile.rules.clone() {
            let rule = &self.mapper.rules[r];
            if rule.re.is_match(name) {
                let mut caps = rule.re.create_captures();
                rule.re.captures(Input::new(name), &mut caps);
                return Outcome::Mapped(expand(rule, name, &caps));
            }
        }
        Outcome::NoMatch
    }
}

#[cfg(test)]
#[path = "mapper_tests.rs"]
mod tests;
