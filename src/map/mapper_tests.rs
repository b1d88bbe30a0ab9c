//! The mapper against the Agent's documented cases, Go's template rules and the rule-by-rule
//! reference, on both engines.

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
        let dense = Mapper::new(&checked).unwrap();
        // A dense limit of 0 sends every rule set to the lazy DFA.
        let lazy = Mapper::build(&checked, 0, LAZY_CACHE_BYTES).unwrap();
        assert_eq!((dense.engine_name(), lazy.engine_name()), ("dense", "lazy"));
        let reference = Reference::new(&checked).unwrap();
        let (mut dense_scratch, mut lazy_scratch) = (dense.scratch(), lazy.scratch());
        for _ in 0..300 {
            let name = random_name(&mut rng);
            let want = reference.map(name.as_bytes());
            match want {
                Outcome::Mapped(_) => mapped += 1,
                _ => unmapped += 1,
            }
            let why = format!("round {round}, name {name:?}, rules:\n{yaml}");
            assert_eq!(
                dense.map(&mut dense_scratch, name.as_bytes()),
                want,
                "{why}"
            );
            assert_eq!(lazy.map(&mut lazy_scratch, name.as_bytes()), want, "{why}");
        }
    }
    // The generator is only useful if it makes both outcomes common.
    assert!(
        mapped > 500 && unmapped > 500,
        "{mapped} mapped, {unmapped} not"
    );
}

#[test]
fn a_rule_that_explodes_when_determinized_runs_in_the_lazy_dfa() {
    // The dense DFA of this rule has about 2^26 states.
    let m = mapper(
        r#"
- name: p
  prefix: "x."
  mappings:
    - match: 'x\.(a|b)*a(a|b){25}'
      match_type: regex
      name: "exploded"
    - match: "x.*"
      name: "x.other"
      tags: {rest: "$1"}
"#,
    );
    assert_eq!(m.engine_name(), "lazy");
    let hit = format!("x.bb{}", "ab".repeat(13));
    assert_eq!(hit.len() - 2, 28);
    assert_eq!(map(&m, &hit), mapped("exploded", &[]));
    // Position 26 from the end is a `b`: the first rule fails, the second takes it.
    let miss = format!("x.{}", "b".repeat(26));
    assert_eq!(
        map(&m, &miss),
        mapped("x.other", &[&format!("rest:{}", &miss[2..])])
    );
    assert_eq!(map(&m, "y.a"), None);
}

#[test]
fn a_full_lazy_cache_is_cleared_and_refilled_without_giving_up() {
    let specs: Vec<ProfileSpec> = serde_norway::from_str(
        r#"
- name: p
  prefix: "*"
  mappings:
    - match: '(a|b)*a(a|b){20}\.end'
      match_type: regex
      name: "hit"
"#,
    )
    .unwrap();
    // A cache that fills within a few names of this shape.
    let m = Mapper::build(&check(&specs).unwrap(), 0, 1 << 16).unwrap();
    let mut scratch = m.scratch();
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let body: String = (0..40)
            .map(|_| {
                if rng.next().is_multiple_of(2) {
                    'a'
                } else {
                    'b'
                }
            })
            .collect();
        let want = body.as_bytes()[body.len() - 21] == b'a';
        let got = matches!(
            m.map(&mut scratch, format!("{body}.end").as_bytes()),
            Outcome::Mapped(_)
        );
        assert_eq!(got, want, "{body}");
    }
    let clears = scratch.lazy.as_ref().map_or(0, |c| c.clear_count());
    assert!(clears > 10, "the cache was cleared {clears} times");
}
