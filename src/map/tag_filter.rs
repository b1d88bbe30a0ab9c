//! Tag filtering when a context is made: the Agent's `metric_tag_filterlist` (entries of
//! `metric_name`, `action: include|exclude`, `tags`: tag keys), for every metric type, and
//! `--strip-host PATTERN` (a glob over final names, `*` matching any run). The aggregator asks
//! once per new context (never per sample) and keys the context by what is kept, so contexts
//! that become equal are one context and aggregate together.
//!
//! Pure: owns the rules and answers for a name; the host and the magic tags (`dd.internal.*`)
//! are never a key filter's to drop (the host goes only by `--strip-host`).

use std::collections::HashMap;

/// One `metric_tag_filterlist` entry's effect.
#[derive(Debug, Clone, PartialEq)]
pub struct TagFilter {
    /// `include`: only these keys stay; `exclude`: these keys go.
    pub include: bool,
    pub keys: Vec<Vec<u8>>,
}

impl TagFilter {
    /// Whether a context keeps `tag` (`key:value` or a bare `key`).
    pub fn keeps(&self, tag: &[u8]) -> bool {
        if tag.starts_with(b"host:") || tag.starts_with(b"dd.internal.") {
            return true;
        }
        let key = tag.split(|&b| b == b':').next().unwrap_or(tag);
        self.include == self.keys.iter().any(|k| k == key)
    }
}

/// What applies to one name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Filtering<'a> {
    pub tags: Option<&'a TagFilter>,
    pub strip_host: bool,
}

/// Every rule, by final metric name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagFilters {
    by_name: HashMap<Vec<u8>, TagFilter>,
    strip_host: Vec<Vec<u8>>,
}

impl TagFilters {
    /// `entries`: (metric name, include, keys), in file order; a name given twice keeps its
    /// first entry (the Agent's).
    pub fn new(entries: Vec<(String, bool, Vec<String>)>, strip_host: &[String]) -> TagFilters {
        let mut by_name = HashMap::new();
        for (name, include, keys) in entries {
            by_name.entry(name.into_bytes()).or_insert(TagFilter {
                include,
                keys: keys.into_iter().map(String::into_bytes).collect(),
            });
        }
        TagFilters {
            by_name,
            strip_host: strip_host.iter().map(|p| p.as_bytes().to_vec()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.strip_host.is_empty()
    }

    /// What a new context of `name` keeps; `None` when nothing applies.
    pub fn for_name(&self, name: &[u8]) -> Option<Filtering<'_>> {
        let tags = self.by_name.get(name);
        let strip_host = self.strip_host.iter().any(|p| glob(p, name));
        (tags.is_some() || strip_host).then_some(Filtering { tags, strip_host })
    }
}

/// `*` matches any run (none included); everything else itself.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.iter().position(|&b| b == b'*') {
        None => pattern == name,
        Some(star) => {
            let (head, rest) = (&pattern[..star], &pattern[star + 1..]);
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_keeps_only_its_keys_and_exclude_drops_its_keys_never_the_host() {
        let f = TagFilters::new(
            vec![
                ("a".into(), true, vec!["env".into()]),
                ("b".into(), false, vec!["pod".into(), "flag".into()]),
                ("a".into(), false, vec!["env".into()]),
            ],
            &["edge.*".into(), "*.global".into()],
        );
        let a = f.for_name(b"a").unwrap().tags.unwrap();
        assert!(a.keeps(b"env:prod") && !a.keeps(b"pod:x") && a.keeps(b"host:h"));
        let b = f.for_name(b"b").unwrap().tags.unwrap();
        assert!(!b.keeps(b"pod:x") && !b.keeps(b"flag") && b.keeps(b"env:prod"));
        assert!(b.keeps(b"dd.internal.entity_id:x"));
        assert_eq!(f.for_name(b"c"), None);
        let s = f.for_name(b"edge.requests").unwrap();
        assert!(s.strip_host && s.tags.is_none());
        assert!(f.for_name(b"x.global").unwrap().strip_host);
        assert!(f.for_name(b"edge.").unwrap().strip_host);
        assert_eq!(f.for_name(b"edgeless"), None);
    }
}
