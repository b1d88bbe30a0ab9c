//! Mapper throughput: names mapped per second with 10, 100 and 1000 rules, by the DFA mapper
//! uncached, through the per-shard cache, and by the rule-by-rule reference; and the cost of a
//! miss (a name the selected profile has no rule for), which must not grow with the rules.
//!
//! `taskset -c 1 cargo bench --bench mapper`

use std::hint::black_box;
use std::sync::Arc;

use corestatsd::bench_api::{Mapper, NameConfig, NameOut, ProfileSpec, Reference, Stage, check};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// `rules` rules over 4 profiles: mostly wildcards of 3-5 segments, every 10th a regex.
fn profiles(rules: usize) -> Vec<ProfileSpec> {
    let mut yaml = String::new();
    let per_profile = rules.div_ceil(4);
    for p in 0..4 {
        yaml.push_str(&format!(
            "- name: p{p}\n  prefix: \"svc{p}.\"\n  mappings:\n"
        ));
        for r in 0..per_profile.min(rules - p * per_profile) {
            if r % 10 == 9 {
                yaml.push_str(&format!(
                    "    - {{match: 'svc{p}\\.queue{r}\\.(\\w+)\\.(.*)', match_type: regex, name: 'svc.queue', tags: {{queue: '$1', rest: '$2'}}}}\n"
                ));
            } else {
                yaml.push_str(&format!(
                    "    - {{match: 'svc{p}.api{r}.*.requests.*', name: 'svc.requests', tags: {{route: '$1', code: '$2'}}}}\n"
                ));
            }
        }
    }
    serde_norway::from_str(&yaml).expect("generated YAML parses")
}

/// 1000 names: half match a rule (spread over all of them), half reach a profile and miss.
fn names(rules: usize) -> Vec<Vec<u8>> {
    let per_profile = rules.div_ceil(4);
    (0..1000)
        .map(|i| {
            let p = i % 4;
            let r = (i / 4) % per_profile.min(rules - p * per_profile);
            let name = if i % 2 == 1 {
                format!("svc{p}.nothing.here{i}")
            } else if r % 10 == 9 {
                format!("svc{p}.queue{r}.jobs.a.b{i}")
            } else {
                format!("svc{p}.api{r}.checkout{i}.requests.200")
            };
            name.into_bytes()
        })
        .collect()
}

fn mapper_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("mapper");
    g.sample_size(20);
    for rules in [10, 100, 1000] {
        let checked = check(&profiles(rules)).expect("valid rules");
        let mapper = Arc::new(Mapper::new(&checked).expect("compiles"));
        let reference = Reference::new(&checked).expect("compiles");
        let names = names(rules);
        let misses: Vec<&Vec<u8>> = names.iter().skip(1).step_by(2).collect();
        g.throughput(Throughput::Elements(names.len() as u64));
        let mut scratch = mapper.scratch();
        g.bench_function(format!("dfa_uncached/{rules}_rules"), |b| {
            b.iter(|| {
                for n in &names {
                    black_box(mapper.map(&mut scratch, n));
                }
            })
        });
        let mut stage = Stage::new(&NameConfig {
            mapper: Some(mapper.clone()),
            cache_size: 4096,
            ..NameConfig::default()
        });
        let mut out = NameOut::default();
        g.bench_function(format!("dfa_cached/{rules}_rules"), |b| {
            b.iter(|| {
                for n in &names {
                    black_box(stage.metric_name(n, &mut out));
                }
            })
        });
        g.bench_function(format!("reference/{rules}_rules"), |b| {
            b.iter(|| {
                for n in &names {
                    black_box(reference.map(n));
                }
            })
        });
        g.throughput(Throughput::Elements(misses.len() as u64));
        g.bench_function(format!("dfa_miss_only/{rules}_rules"), |b| {
            b.iter(|| {
                for n in &misses {
                    black_box(mapper.map(&mut scratch, n));
                }
            })
        });
        eprintln!("{rules} rules: DFA {} KiB", mapper.dfa_bytes() >> 10);
    }
    g.finish();
}

criterion_group!(benches, mapper_benches);
criterion_main!(benches);
