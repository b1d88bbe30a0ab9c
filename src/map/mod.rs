//! What a metric's name (and tags) become before aggregation, in the Agent's order: tags inside
//! the name when `--name-tag-formats` asks (`name_tags.rs`, statsd_exporter's formats), the mapper
//! (profiles of wildcard and regex rules, `mapper.rs`; statsd_exporter's mapping file becomes one
//! more profile, `exporter.rs`), then the `--namespace` prefix (with its
//! exemption list), then the block list; extra tags (`--tag`) are appended to every metric,
//! event and service check.
//!
//! Pure and per-core: the mapper is compiled once at start-up and each shard's `Stage` copies its
//! DFA (rule regexes stay shared, read-only) and owns its capture scratch and result cache. It runs only when a context is created
//! (and for `|T` points), never per sample: a context's name and mapped tags are a function of
//! its raw name. The `host:` tag is extracted by `aggregate`, from client and mapped tags alike,
//! between mapping and namespacing as the Agent does (the two touch different things).

pub mod exporter;
pub mod mapper;
pub mod name_tags;
pub mod profiles;
pub mod tag_filter;

use std::rc::Rc;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

pub use mapper::{Mapped, Mapper, Outcome, Reference};
pub use profiles::{ProfileSpec, check};

/// The Agent's `StandardStatsdPrefixes`: names starting with one of these are not namespaced.
pub const DEFAULT_NAMESPACE_EXEMPT: [&str; 21] = [
    "datadog.agent",
    "datadog.dogstatsd",
    "datadog.process",
    "datadog.trace_agent",
    "datadog.tracer",
    "activemq",
    "activemq_58",
    "airflow",
    "cassandra",
    "confluent",
    "hazelcast",
    "hive",
    "ignite",
    "jboss",
    "jvm",
    "kafka",
    "presto",
    "sidekiq",
    "solr",
    "tomcat",
    "runtime",
];

/// Validated settings of the stage, cloned to every shard (the mapper behind an `Arc`).
#[derive(Debug, Clone, Default)]
pub struct NameConfig {
    pub mapper: Option<Arc<Mapper>>,
    /// Names (hits and misses) each shard remembers; 0 disables the cache.
    pub cache_size: usize,
    /// With its trailing `.`.
    pub namespace: Option<String>,
    pub namespace_exempt: Vec<String>,
    pub block_exact: Vec<String>,
    pub block_prefix: Vec<String>,
    /// `key:value`, sorted and deduplicated.
    pub extra_tags: Vec<String>,
    /// `--name-tag-formats`: tags inside names, read before the mapper.
    pub name_tags: name_tags::NameTagFormats,
    /// Keys of `--mapping-config` read and not honoured (named at start-up).
    pub mapping_not_honoured: Vec<String>,
    /// What `--mapping-config` says of the Prometheus exposition (`prometheus-scrape`).
    pub exposition: exporter::Exposition,
    /// `metric_tag_filterlist` and `--strip-host`: what new contexts keep of their tags.
    pub tag_filters: tag_filter::TagFilters,
}

/// A name after the stage.
#[derive(Debug, Default)]
pub struct NameOut {
    /// The final name, when it differs from the raw one.
    pub renamed: Option<Vec<u8>>,
    /// Tags the mapper added (`key:value`).
    pub mapped_tags: Vec<Vec<u8>>,
}

/// Two generations of results: lookups hit the young one or promote from the old; when the
/// young one fills it becomes the old one. LRU-like, O(1), no per-entry bookkeeping.
struct Cache {
    young: HashMap<Box<[u8]>, Option<Rc<Mapped>>>,
    old: HashMap<Box<[u8]>, Option<Rc<Mapped>>>,
    half: usize,
}

impl Cache {
    fn get(&mut self, name: &[u8]) -> Option<Option<Rc<Mapped>>> {
        if let Some(v) = self.young.get(name) {
            return Some(v.clone());
        }
        let v = self.old.remove(name)?;
        self.insert(name, v.clone());
        Some(v)
    }

    fn insert(&mut self, name: &[u8], v: Option<Rc<Mapped>>) {
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(name.into(), v);
    }
}

/// Counts since the last `take_stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub mapped: u64,
    /// Tags in names dropped as malformed, by reason.
    pub(crate) name_tag_errors: crate::label::by!(name_tags::NameTagError),
}

pub struct Stage {
    /// This shard's own copy of the DFA (copied on the shard's thread, so its pages are local
    /// to that core), with the shard's capture scratch.
    mapper: Option<(Mapper, mapper::Scratch)>,
    cache: Option<Cache>,
    namespace: Option<Box<[u8]>>,
    exempt: Vec<Box<[u8]>>,
    block_exact: HashSet<Box<[u8]>>,
    block_prefix: Vec<Box<[u8]>>,
    extra_tags: Rc<[Box<[u8]>]>,
    name_tags: name_tags::NameTagFormats,
    tag_filters: Rc<tag_filter::TagFilters>,
    stats: StageStats,
}

impl Stage {
    pub fn new(cfg: &NameConfig) -> Stage {
        let bytes =
            |v: &[String]| -> Vec<Box<[u8]>> { v.iter().map(|s| s.as_bytes().into()).collect() };
        Stage {
            mapper: cfg.mapper.as_ref().map(|m| (Mapper::clone(m), m.scratch())),
            cache: (cfg.cache_size > 0 && cfg.mapper.is_some()).then(|| Cache {
                young: HashMap::new(),
                old: HashMap::new(),
                half: cfg.cache_size.div_ceil(2),
            }),
            namespace: cfg.namespace.as_ref().map(|n| n.as_bytes().into()),
            exempt: bytes(&cfg.namespace_exempt),
            block_exact: bytes(&cfg.block_exact).into_iter().collect(),
            block_prefix: bytes(&cfg.block_prefix),
            extra_tags: bytes(&cfg.extra_tags).into(),
            name_tags: cfg.name_tags,
            tag_filters: Rc::new(cfg.tag_filters.clone()),
            stats: StageStats::default(),
        }
    }

    /// Becomes the stage of `cfg` (a reload): a new mapper copy and an empty result cache; the
    /// counts since the last `take_stats` carry over.
    pub fn reload(&mut self, cfg: &NameConfig) {
        let stats = self.stats;
        *self = Stage::new(cfg);
        self.stats = stats;
    }

    /// Extra tags for every metric, event and service check.
    pub fn extra_tags(&self) -> Rc<[Box<[u8]>]> {
        self.extra_tags.clone()
    }

    /// What new contexts keep of their tags, by final name.
    pub fn tag_filters(&self) -> Rc<tag_filter::TagFilters> {
        self.tag_filters.clone()
    }

    pub fn take_stats(&mut self) -> StageStats {
        std::mem::take(&mut self.stats)
    }

    /// Maps, namespaces and checks one metric name. Returns false when the final name is
    /// blocked; `out` then holds nothing useful.
    pub fn metric_name(&mut self, raw: &[u8], out: &mut NameOut) -> bool {
        out.renamed = None;
        out.mapped_tags.clear();
        // Tags inside the name first (statsd_exporter's order): the mapper sees the bare name.
        let bare = if self.name_tags.any() {
            name_tags::split(
                self.name_tags,
                raw,
                &mut out.mapped_tags,
                &mut self.stats.name_tag_errors,
            )
        } else {
            None
        };
        let raw = bare.as_deref().unwrap_or(raw);
        if let Some(m) = self.map(raw) {
            if m.drop {
                return false;
            }
            out.renamed = Some(m.name.clone());
            out.mapped_tags.extend(m.tags.iter().cloned());
        } else if let Some(b) = &bare {
            out.renamed = Some(b.clone());
        }
        if let Some(ns) = &self.namespace {
            let name = out.renamed.as_deref().unwrap_or(raw);
            if !self.exempt.iter().any(|e| name.starts_with(e)) {
                let mut full = Vec::with_capacity(ns.len() + name.len());
                full.extend_from_slice(ns);
                full.extend_from_slice(name);
                out.renamed = Some(full);
            }
        }
        let name = out.renamed.as_deref().unwrap_or(raw);
        !(self.block_exact.contains(name) || self.block_prefix.iter().any(|p| name.starts_with(p)))
    }

    fn map(&mut self, raw: &[u8]) -> Option<Rc<Mapped>> {
        let (mapper, scratch) = self.mapper.as_mut()?;
        if let Some(hit) = self.cache.as_mut().and_then(|c| c.get(raw)) {
            self.stats.cache_hits += 1;
            self.stats.mapped += u64::from(hit.is_some());
            return hit;
        }
        let result = match mapper.map(scratch, raw) {
            // As the Agent: names that reach no profile are cheap to decide and not cached.
            Outcome::NoProfile => return None,
            Outcome::NoMatch => None,
            Outcome::Mapped(m) => Some(Rc::new(m)),
        };
        self.stats.mapped += u64::from(result.is_some());
        if let Some(c) = self.cache.as_mut() {
            self.stats.cache_misses += 1;
            c.insert(raw, result.clone());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> NameConfig {
        let specs: Vec<ProfileSpec> = serde_norway::from_str(yaml).unwrap();
        NameConfig {
            mapper: Some(Arc::new(Mapper::new(&check(&specs).unwrap()).unwrap())),
            cache_size: 4,
            ..NameConfig::default()
        }
    }

    fn run(stage: &mut Stage, raw: &str) -> Option<(String, Vec<String>)> {
        let mut out = NameOut::default();
        stage.metric_name(raw.as_bytes(), &mut out).then(|| {
            (
                String::from_utf8(out.renamed.unwrap_or(raw.as_bytes().to_vec())).unwrap(),
                out.mapped_tags
                    .into_iter()
                    .map(|t| String::from_utf8(t).unwrap())
                    .collect(),
            )
        })
    }

    #[test]
    fn tags_in_the_name_come_off_before_the_mapper_sees_it() {
        let mut c = cfg(
            "- name: p\n  prefix: app.\n  mappings:\n    - {match: 'app.*.hits', name: 'hits', tags: {page: '$1'}}\n",
        );
        c.name_tags = name_tags::NameTagFormats {
            influxdb: true,
            ..Default::default()
        };
        let mut s = Stage::new(&c);
        assert_eq!(
            run(&mut s, "app.home.hits,env=prod"),
            Some(("hits".into(), vec!["env:prod".into(), "page:home".into()]))
        );
        // No rule matches the bare name: it is still the name.
        assert_eq!(
            run(&mut s, "other,env=prod,bad"),
            Some(("other".into(), vec!["env:prod".into()]))
        );
        let errors = s.take_stats().name_tag_errors;
        assert_eq!(errors[name_tags::NameTagError::NoEquals], 1);
    }

    #[test]
    fn map_then_namespace_then_block() {
        let mut c = cfg(
            "- name: p\n  prefix: app.\n  mappings:\n    - {match: 'app.*.hits', name: 'hits', tags: {page: '$1'}}\n    - {match: 'app.*.blocked', name: 'secret.$1'}\n",
        );
        c.namespace = Some("ns.".into());
        c.namespace_exempt = vec!["jvm".into()];
        c.block_exact = vec!["ns.noisy".into()];
        c.block_prefix = vec!["ns.secret.".into()];
        let mut s = Stage::new(&c);
        assert_eq!(
            run(&mut s, "app.home.hits"),
            Some(("ns.hits".into(), vec!["page:home".into()]))
        );
        assert_eq!(run(&mut s, "jvm.heap"), Some(("jvm.heap".into(), vec![])));
        assert_eq!(
            run(&mut s, "noisy"),
            None,
            "the block list sees the namespaced name"
        );
        assert_eq!(run(&mut s, "app.x.blocked"), None);
        assert_eq!(run(&mut s, "other"), Some(("ns.other".into(), vec![])));
    }

    #[test]
    fn the_cache_keeps_hits_and_misses_and_stays_bounded() {
        let mut s = Stage::new(&cfg(
            "- name: p\n  prefix: a.\n  mappings:\n    - {match: 'a.*', name: 'b', tags: {x: '$1'}}\n",
        ));
        for _ in 0..3 {
            assert_eq!(run(&mut s, "a.1"), Some(("b".into(), vec!["x:1".into()])));
            assert_eq!(run(&mut s, "a.1.2"), Some(("a.1.2".into(), vec![])));
            assert_eq!(run(&mut s, "zzz"), Some(("zzz".into(), vec![])));
        }
        let st = s.take_stats();
        assert_eq!((st.cache_misses, st.cache_hits, st.mapped), (2, 4, 3));
        for i in 0..100 {
            run(&mut s, &format!("a.{i}"));
        }
        let c = s.cache.as_ref().unwrap();
        assert!(c.young.len() + c.old.len() <= 4);
    }
}
