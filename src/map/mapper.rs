//! The compiled mapper: every rule of every profile in one anchored, multi-pattern dense DFA
//! (`MatchKind::All`), so one pass over a name gives the set of rules that match it whole; the
//! first of those in the selected profile wins, and only that rule's own regex is run again for
//! its capture groups. Built once at start-up; each shard copies it and brings its own `Scratch`.
//!
//! Regexes are compiled byte-oriented with Unicode classes off: `\w`, `\d`, `\s` and `\b` are
//! ASCII, as in Go's RE2 (which the Agent uses), and names need not be UTF-8. One difference
//! remains: `.` matches one byte where Go matches one UTF-8 character.

use std::ops::Range;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::meta::{self, Regex};
use regex_automata::util::captures::Captures;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, PatternID};

use super::profiles::{CheckedProfile, MapperError, syntax_error};

/// The DFA may not grow past this; a rule set that needs more is refused at start-up.
const DFA_SIZE_LIMIT: usize = 256 << 20;

fn syntax_config() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
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
}

/// What a mapped name becomes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapped {
    pub name: Vec<u8>,
    /// `key:value`, in key order.
    pub tags: Vec<Vec<u8>>,
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
    dfa: dense::DFA<Vec<u32>>,
}

/// Per-shard mutable state for the rules' capture searches.
pub struct Scratch {
    /// One (cache, captures) per rule, made the first time the rule matches.
    per_rule: Vec<Option<(meta::Cache, Captures)>>,
}

impl Mapper {
    pub fn new(profiles: &[CheckedProfile]) -> Result<Mapper, MapperError> {
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
                });
                patterns.push(rule.regex.clone());
            }
            compiled.push(Profile {
                prefix: profile.prefix.as_ref().map(|p| p.as_bytes().into()),
                rules: start..rules.len(),
            });
        }
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                    .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
            )
            .syntax(syntax_config())
            .thompson(regex_automata::nfa::thompson::Config::new().utf8(false))
            .build_many(&patterns)
            .map_err(|e| MapperError {
                profile: 0,
                profile_name: None,
                rule: None,
                what: format!(
                    "the {} rules together do not compile into one DFA within {} MiB: {e}",
                    patterns.len(),
                    DFA_SIZE_LIMIT >> 20
                ),
            })?;
        Ok(Mapper {
            profiles: compiled,
            rules,
            dfa,
        })
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            per_rule: (0..self.rules.len()).map(|_| None).collect(),
        }
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Bytes the DFA's transition table takes.
    pub fn dfa_bytes(&self) -> usize {
        self.dfa.memory_usage()
    }

    /// The profile a name selects: the first whose prefix it starts with (or `*`).
    fn profile_of(&self, name: &[u8]) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.prefix.as_deref().is_none_or(|pre| name.starts_with(pre)))
    }

    /// The first rule of `rules` matching the whole name: one pass of the DFA, whatever the
    /// number of rules.
    fn first_match(&self, name: &[u8], rules: Range<usize>) -> Option<usize> {
        let dfa = &self.dfa;
        let input = Input::new(name).anchored(Anchored::Yes);
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

    pub fn map(&self, scratch: &mut Scratch, name: &[u8]) -> Outcome {
        let Some(profile) = self.profile_of(name) else {
            return Outcome::NoProfile;
        };
        let Some(r) = self.first_match(name, profile.rules.clone()) else {
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
    let mut out = Mapped::default();
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
mod tests {
    use super::super::profiles::{ProfileSpec, check};
    use super::*;

    fn mapper(yaml: &str) -> Mapper {
        let specs: Vec<ProfileSpec> = serde_norway::from_str(yaml).unwrap();
        Mapper::new(&check(&specs).unwrap()).unwrap()
    }

    fn map(m: &Mapper, name: &str) -> Option<(String, Vec<String>)> {
        match m.map(&mut m.scratch(), name.as_bytes()) {
            Outcome::Mapped(x) => Some((
                String::from_utf8(x.name).unwrap(),
                x.tags
                    .into_iter()
                    .map(|t| String::from_utf8(t).unwrap())
                    .collect(),
            )),
            _ => None,
        }
    }

    fn mapped(name: &str, tags: &[&str]) -> Option<(String, Vec<String>)> {
        Some((name.into(), tags.iter().map(|t| t.to_string()).collect()))
    }

    /// The Agent's own test cases (`mapper_test.go`), in its order.
    #[test]
    fn the_agents_documented_cases() {
        let m = mapper(
            r#"
- name: test
  prefix: test.
  mappings:
    - {match: "test.job.duration.*.*", name: "test.job.duration", tags: {job_type: "$1", job_name: "$2"}}
    - {match: "test.job.size.*.*", name: "test.job.size", tags: {foo: "$1", bar: "$2"}}
    - {match: "test.suffix.*.*", name: "test.suffix", tags: {job_type: "${1}_x", job_name: "${2}_y"}}
    - {match: "test.hello.*.*", name: "test.hello.$2.$1", tags: {job_type: "$1", job_name: "$2"}}
    - {match: "test.*_start", name: "test.start", tags: {job: "$1"}}
    - {match: "test.my-worker.stop.*", name: "test.worker.stop"}
    - {match: 'test\.regex\.duration\.(.*)', match_type: regex, name: "test.regex.duration", tags: {job_name: "$1"}}
    - {match: 'test\.job\.([a-z][0-9]-\w+)\.(.*)', match_type: regex, name: "test.job", tags: {job_type: "$1", job_name: "$2"}}
    - {match: "test.named.*", name: "test.named", tags: {x: "$1_x"}}
"#,
        );
        assert_eq!(
            map(&m, "test.job.duration.my_job_type.my_job_name"),
            mapped(
                "test.job.duration",
                &["job_name:my_job_name", "job_type:my_job_type"]
            )
        );
        assert_eq!(map(&m, "test.job.size.not_match"), None);
        assert_eq!(
            map(&m, "test.suffix.my_job_type.my_job_name"),
            mapped(
                "test.suffix",
                &["job_name:my_job_name_y", "job_type:my_job_type_x"]
            )
        );
        assert_eq!(
            map(&m, "test.hello.my_job_type.my_job_name"),
            mapped(
                "test.hello.my_job_name.my_job_type",
                &["job_name:my_job_name", "job_type:my_job_type"]
            )
        );
        assert_eq!(
            map(&m, "test.my_job_start"),
            mapped("test.start", &["job:my_job"])
        );
        assert_eq!(
            map(&m, "test.my-worker.stop.worker-name"),
            mapped("test.worker.stop", &[])
        );
        assert_eq!(
            map(&m, "test.regex.duration.my.funky.job$name-abc/123"),
            mapped(
                "test.regex.duration",
                &["job_name:my.funky.job$name-abc/123"]
            ),
            "a regex group may hold dots"
        );
        assert_eq!(
            map(&m, "test.job.a5-foo.bar"),
            mapped("test.job", &["job_name:bar", "job_type:a5-foo"])
        );
        assert_eq!(map(&m, "test.job.foo.bar-not-match"), None);
        assert_eq!(
            map(&m, "test.named.abc"),
            mapped("test.named", &["x:"]),
            "$1_x names a group 1_x, which does not exist"
        );
        assert_eq!(map(&m, "test.a.b.c.d"), None);
        assert_eq!(map(&m, "other.job.duration.a.b"), None);
    }

    #[test]
    fn only_the_first_profile_whose_prefix_matches_is_tried() {
        let m = mapper(
            r#"
- name: foo
  prefix: foo.
  mappings:
    - {match: "foo.duration.*", name: "foo.duration", tags: {n: "$1"}}
- name: bar
  prefix: bar.
  mappings:
    - {match: "foo.duration2.*", name: "foo.duration2"}
"#,
        );
        assert_eq!(map(&m, "foo.duration2.foo_name1"), None);
        let m = mapper(
            r#"
- name: a
  prefix: "*"
  mappings: [{match: "foo.duration.*", name: "foo.duration", tags: {name1: "$1"}}]
- name: b
  prefix: "*"
  mappings: [{match: "foo.duration.*", name: "foo.duration", tags: {name2: "$1"}}]
"#,
        );
        assert_eq!(
            map(&m, "foo.duration.foo_name"),
            mapped("foo.duration", &["name1:foo_name"])
        );
        let m = mapper(
            r#"
- name: foo
  prefix: foo.
  mappings: [{match: "foo.*.duration.*", name: "foo.$1.duration", tags: {foo: "$2"}}]
- name: foobar
  prefix: foo.bar.
  mappings: [{match: "foo.bar.duration.*", name: "foo.bar.duration", tags: {bar: "$1"}}]
"#,
        );
        assert_eq!(
            map(&m, "foo.bar.duration.foo_name"),
            mapped("foo.bar.duration", &["foo:foo_name"]),
            "the earlier, shorter prefix wins"
        );
    }

    #[test]
    fn templates_expand_like_go() {
        let re = Regex::new(r"^(?P<word>[a-z]+)\.(\d+)$").unwrap();
        let caps = {
            let mut c = re.create_captures();
            re.captures(Input::new("ab.42"), &mut c);
            c
        };
        let ex = |t: &str| {
            let mut out = Vec::new();
            Template::parse(t, &re).expand(b"ab.42", &caps, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(ex("$1-$2"), "ab-42");
        assert_eq!(ex("${1}_x"), "ab_x");
        assert_eq!(ex("$1_x"), "");
        assert_eq!(ex("$word/${word}"), "ab/ab");
        assert_eq!(ex("$$1 costs $"), "$1 costs $");
        assert_eq!(ex("${}x${1"), "${}x${1");
        assert_eq!(ex("$9."), ".");
        assert_eq!(ex("$0"), "ab.42");
    }

    #[test]
    fn a_bad_regex_names_its_rule() {
        let specs: Vec<ProfileSpec> = serde_norway::from_str(
            "- name: p\n  prefix: a\n  mappings:\n    - {match: 'a.b', name: x}\n    - {match: 'a(b', match_type: regex, name: x}\n",
        )
        .unwrap();
        let err = Mapper::new(&check(&specs).unwrap()).unwrap_err();
        assert_eq!((err.profile, err.rule), (0, Some(1)));
        assert!(
            err.what
                .ends_with("regex \"^a(b$\" does not compile: unclosed group at column 3"),
            "{err}"
        );
    }

    /// A small deterministic generator (xorshift), so the property test needs no crate and
    /// fails the same way every time.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    const WORDS: [&str; 8] = ["a", "b", "job", "x1", "dur-s", "q_q", "", "zz"];

    fn random_name(rng: &mut Rng) -> String {
        let n = 1 + rng.next() % 5;
        (0..n)
            .map(|_| rng.pick(&WORDS))
            .collect::<Vec<_>>()
            .join(".")
    }

    fn random_rule(rng: &mut Rng) -> String {
        let n = 1 + rng.next() % 4;
        let parts: Vec<String> = (0..n)
            .map(|_| match rng.next() % 4 {
                0 => "*".into(),
                1 => format!("{}*", rng.pick(&["a", "j", "x", "q"])),
                _ => rng.pick(&WORDS[..6]).into(),
            })
            .collect();
        if rng.next().is_multiple_of(5) {
            // A regex rule, groups that may span dots.
            format!(
                "{{match: '{}\\.(.*)', match_type: regex, name: 'r.$1', tags: {{t: '${{1}}'}}}}",
                rng.pick(&["a", "job", "b"])
            )
        } else {
            format!(
                "{{match: '{}', name: 'w.$1.$2', tags: {{t: '$1', u: '${{2}}_x'}}}}",
                parts.join(".")
            )
        }
    }

    #[test]
    fn the_dfa_chooses_what_the_rule_by_rule_reference_chooses() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut mapped, mut unmapped) = (0, 0);
        for round in 0..30 {
            let mut yaml = String::new();
            for p in 0..1 + rng.next() % 4 {
                let prefix = rng.pick(&["\"*\"", "a.", "job.", "a", "b."]);
                yaml.push_str(&format!("- name: p{p}\n  prefix: {prefix}\n  mappings:\n"));
                for _ in 0..rng.next() % 12 {
                    yaml.push_str(&format!("    - {}\n", random_rule(&mut rng)));
                }
            }
            let specs: Vec<ProfileSpec> = serde_norway::from_str(&yaml).unwrap();
            let checked = check(&specs).unwrap();
            let dfa = Mapper::new(&checked).unwrap();
            let reference = Reference::new(&checked).unwrap();
            let mut scratch = dfa.scratch();
            for _ in 0..300 {
                let name = random_name(&mut rng);
                let want = reference.map(name.as_bytes());
                match want {
                    Outcome::Mapped(_) => mapped += 1,
                    _ => unmapped += 1,
                }
                assert_eq!(
                    dfa.map(&mut scratch, name.as_bytes()),
                    want,
                    "round {round}, name {name:?}, rules:\n{yaml}"
                );
            }
        }
        // The generator is only useful if it makes both outcomes common.
        assert!(
            mapped > 500 && unmapped > 500,
            "{mapped} mapped, {unmapped} not"
        );
    }
}
