//! Context keys: the canonical key every shard computes alike for a context (its final name,
//! type, host, origin and deduplicated tags, order-free), the tag splitting that feeds it, and
//! the low-half entries the context tables store.
//!
//! Pure functions over bytes; owns no state. Must not allocate per metric on the fast path
//! (the alias key, in `Aggregator::alias_key`, needs none of this).

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;

use crate::protocol::origin::{InternalTags, MagicTag, magic_tag};
use crate::protocol::{MetricType, TagIter};

pub(super) use crate::flushed::ids::low;

/// The canonical key from a context's parts (`tags`: count and sum of the deduplicated tags'
/// mixed hashes).
pub(super) fn key_of(
    state: &FixedState,
    name: &[u8],
    metric_type: MetricType,
    host_tag: Option<&[u8]>,
    origin: &[u8],
    (count, sum): (usize, u64),
) -> u64 {
    let mut h = state.build_hasher();
    h.write(name);
    h.write_u8(metric_type.index());
    match host_tag {
        Some(b"") => h.write_u8(0),
        Some(host) => {
            h.write_u8(1);
            h.write(host);
        }
        None => h.write_u8(2),
    }
    h.write(origin);
    // Deduplicated, and summed: the same for every order a sender uses.
    h.write_usize(count);
    h.write_u64(sum);
    h.finish()
}

/// A tag list as sent split into its magic tags and the tags a context (or event, or check) keeps,
/// sorted and deduplicated.
pub(super) struct SplitTags<'a> {
    /// The last `host:` value.
    pub(super) host: Option<&'a [u8]>,
    pub(super) internal: InternalTags<'a>,
    pub(super) tags: Vec<&'a [u8]>,
}

/// What a new context's key needs of its tags: the client's and the mapper's without the magic
/// tags (whose values it keeps), plus the extra ones, deduplicated, each reduced to its hash. The
/// canonical key sums them (`sum`), which is order-free without sorting: sorting them, by bytes
/// or even by hash, was a quarter of the new-context path (`cargo bench --bench new_contexts`:
/// 805k -> 1.02M contexts/s without it). The strings themselves go to the sink's context table
/// as the lists they came in (`desc::encode_new`); it sorts them once, when it learns the context.
#[derive(Default)]
pub(super) struct ContextTags<'a> {
    /// The last `host:` value.
    pub(super) host: Option<&'a [u8]>,
    pub(super) internal: InternalTags<'a>,
    /// The tags' hashes, deduplicated (the vector is reused from context to context).
    pub(super) hashes: Vec<u64>,
    /// The wrapping sum of `mix(hash)` over them.
    pub(super) sum: u64,
}

/// A tag's hash, remixed before the sum so that sums of related hashes do not cancel.
pub(super) fn mix(h: u64) -> u64 {
    let h = (h ^ (h >> 31)).wrapping_mul(0x7fb5_d329_728e_a185);
    h ^ (h >> 27)
}

impl<'a> ContextTags<'a> {
    pub(super) fn split(
        state: &FixedState,
        mut hashes: Vec<u64>,
        sent: &'a [u8],
        mapped: &'a [Vec<u8>],
        extra: &'a [Box<[u8]>],
    ) -> Self {
        hashes.clear();
        let (mut host, mut internal, mut sum) = (None, InternalTags::default(), 0u64);
        // Bit `hash % 128` of each tag seen: a duplicate is looked for only when its bit is set.
        let mut seen = 0u128;
        let mut add = |tag: &[u8]| {
            let hash = state.hash_one(tag);
            let bit = 1u128 << (hash & 127);
            if seen & bit != 0 && hashes.contains(&hash) {
                return;
            }
            seen |= bit;
            sum = sum.wrapping_add(mix(hash));
            hashes.push(hash);
        };
        take_magic(sent, mapped, &mut host, &mut internal, &mut add);
        for t in extra {
            add(t);
        }
        ContextTags {
            host,
            internal,
            hashes,
            sum,
        }
    }
}

/// Walks the client's tags, then the mapper's: each magic tag's value goes to `host` or
/// `internal` (the last one wins), every other tag to `plain`.
#[inline]
fn take_magic<'a>(
    sent: &'a [u8],
    mapped: &'a [Vec<u8>],
    host: &mut Option<&'a [u8]>,
    internal: &mut InternalTags<'a>,
    mut plain: impl FnMut(&'a [u8]),
) {
    for tag in TagIter::new(sent).chain(mapped.iter().map(Vec::as_slice)) {
        match magic_tag(tag) {
            Some(MagicTag::Host(h)) => *host = Some(h),
            Some(MagicTag::EntityId(id)) => internal.entity_id = Some(id),
            Some(MagicTag::Card(c)) => internal.card = Some(c),
            None => plain(tag),
        }
    }
}

/// The client's tags (as sent, `,`-separated) and the mapper's that `keeps` keeps: for a new
/// context of a filtered name only.
pub(super) fn filter_tags(
    sent: &[u8],
    mapped: &[Vec<u8>],
    keeps: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut out = Vec::with_capacity(sent.len());
    for t in sent
        .split(|&b| b == b',')
        .filter(|t| !t.is_empty() && keeps(t))
    {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(t);
    }
    let mapped = mapped.iter().filter(|t| keeps(t)).cloned().collect();
    (out, mapped)
}

/// Splits the client's tags and the mapper's (both may hold magic tags), plus extra tags, which
/// are always plain: for the pending items (`|T` points, events, checks), whose tags are sorted
/// here.
pub(super) fn split_tags_with<'a>(
    sent: &'a [u8],
    mapped: &'a [Vec<u8>],
    extra: &'a [Box<[u8]>],
) -> SplitTags<'a> {
    let mut out = SplitTags {
        host: None,
        internal: InternalTags::default(),
        tags: Vec::new(),
    };
    let tags = &mut out.tags;
    take_magic(sent, mapped, &mut out.host, &mut out.internal, |t| {
        tags.push(t)
    });
    out.tags.extend(extra.iter().map(|t| &t[..]));
    out.tags.sort_unstable();
    out.tags.dedup();
    out
}

/// The host a message resolves to: its `host:` (empty means none), else the default.
pub(super) fn resolve_host<'a>(
    host_tag: Option<&'a [u8]>,
    default: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    match host_tag {
        Some(b"") => None,
        Some(h) => Some(h),
        None => default,
    }
}
