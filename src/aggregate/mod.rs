//! Per-shard aggregation: parsed lines in (`ingest`), the context table, each context's value for
//! the open window (`values`), and at each close one `ContextBatch` per owning shard out
//! (`batch`); what skips the windows waits in `pending`.
//!
//! Owns every context its shard has seen (interned name, host, origin and sorted tags) and
//! each context's aggregate for the open window. Synchronous and clock-free: the caller passes the
//! receive time and decides when a window closes. Must not do I/O or know about other shards
//! beyond `owner_of`, which says whose batch a context's partial goes into.
//!
//! Hot path (`insert`): one hash over the name, type, tag list and origin fields as sent (the
//! alias key), one probe of the alias table, one aggregator update. Only when that misses (a new
//! context, or tags in a new order) are the tags hashed one by one, sorted and deduplicated into
//! the canonical key that every shard agrees on. Sorting, interning and allocation happen only
//! when a context is created.

mod batch;
mod ingest;
mod pending;

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;
use hashbrown::{HashSet, HashTable};

pub use batch::{ContextBatch, Partial, owner_of};
pub use ingest::{Packet, ingest};

use crate::flushed::{FlushBatch, NewContexts, desc};
use crate::map::{NameConfig, NameOut, Stage};
use crate::protocol::origin::{self, InternalTags, MagicTag, Precedence, magic_tag};
use crate::protocol::{Metric, MetricType, TagIter};
use crate::values::{Agg, prefetch};

/// Why the aggregator did not take a well-formed message (counted by `ingest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// `|T` on a histogram, timer, set or distribution: only gauges and counters may carry one.
    TimestampedType,
    /// An event beyond `--max-pending-events` in one window.
    EventOverflow,
    /// A service check beyond `--max-pending-events` in one window.
    ServiceCheckOverflow,
    /// A metric whose final name is on the block list.
    Blocked,
}

/// Metrics resolved together by `insert_group`: enough to overlap a handful of cache misses.
pub const GROUP: usize = 16;

const NO_CONTEXT: u32 = u32::MAX;

/// Blocked alias keys remembered per shard before the set starts over.
const MAX_BLOCKED_KEYS: usize = 1 << 16;

/// What `by_alias` and `by_key` store of a key, beside the context's slot: its low half. The
/// table's own hash is derived from it (`table_hash`), so growing a table reads only its entries:
/// hashing through the context arrays instead made every rehash a cache miss per entry (8 % of
/// the new-context path, `cargo bench --bench new_contexts`).
fn low(key: u64) -> u32 {
    key as u32
}

/// A table hash from a key's low half: spread so hashbrown's tag byte (the top bits) and bucket
/// (the low bits) both vary.
fn table_hash(low: u32) -> u64 {
    u64::from(low).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(low)
}

/// News of new contexts a shard holds before sending them to the sink; they also go at every
/// window close. Small enough to stay in the allocator's reused memory (a window's worth at
/// 500k new contexts/s was a 1.3 GB arena of fresh pages), large enough to cost one channel
/// message per ~1000 contexts.
pub const NEWS_CHUNK: usize = 256 << 10;

/// A tag list as sent split into its magic tags and the tags a context (or event, or check) keeps,
/// sorted and deduplicated.
struct SplitTags<'a> {
    /// The last `host:` value.
    host: Option<&'a [u8]>,
    internal: InternalTags<'a>,
    tags: Vec<&'a [u8]>,
}

/// What a new context's key needs of its tags: the client's and the mapper's without the magic
/// tags (whose values it keeps), plus the extra ones, deduplicated, each reduced to its hash. The
/// canonical key sums them (`sum`), which is order-free without sorting: sorting them, by bytes
/// or even by hash, was a quarter of the new-context path (`cargo bench --bench new_contexts`:
/// 805k -> 1.02M contexts/s without it). The strings themselves go to the sink's context table
/// as the lists they came in (`desc::encode_new`); it sorts them once, when it learns the context.
#[derive(Default)]
struct ContextTags<'a> {
    /// The last `host:` value.
    host: Option<&'a [u8]>,
    internal: InternalTags<'a>,
    /// The tags' hashes, deduplicated (the vector is reused from context to context).
    hashes: Vec<u64>,
    /// The wrapping sum of `mix(hash)` over them.
    sum: u64,
}

/// A tag's hash, remixed before the sum so that sums of related hashes do not cancel.
fn mix(h: u64) -> u64 {
    let h = (h ^ (h >> 31)).wrapping_mul(0x7fb5_d329_728e_a185);
    h ^ (h >> 27)
}

impl<'a> ContextTags<'a> {
    fn split(
        state: &FixedState,
        mut hashes: Vec<u64>,
        sent: &'a [u8],
        mapped: &'a [Vec<u8>],
        extra: &'a [Box<[u8]>],
    ) -> Self {
        hashes.clear();
        let mut out = ContextTags {
            hashes,
            ..ContextTags::default()
        };
        // Bit `hash % 128` of each tag seen: a duplicate is looked for only when its bit is set.
        let mut seen = 0u128;
        let mut add = |out: &mut ContextTags<'a>, tag: &[u8]| {
            let hash = state.hash_one(tag);
            let bit = 1u128 << (hash & 127);
            if seen & bit != 0 && out.hashes.contains(&hash) {
                return;
            }
            seen |= bit;
            out.sum = out.sum.wrapping_add(mix(hash));
            out.hashes.push(hash);
        };
        let all = TagIter::new(sent).chain(mapped.iter().map(Vec::as_slice));
        for tag in all {
            match magic_tag(tag) {
                Some(MagicTag::Host(h)) => out.host = Some(h),
                Some(MagicTag::EntityId(id)) => out.internal.entity_id = Some(id),
                Some(MagicTag::Card(c)) => out.internal.card = Some(c),
                None => add(&mut out, tag),
            }
        }
        for t in extra {
            add(&mut out, t);
        }
        out
    }
}

/// Splits the client's tags and the mapper's (both may hold magic tags), plus extra tags, which
/// are always plain: for the pending items (`|T` points, events, checks), whose tags are sorted
/// here.
fn split_tags_with<'a>(
    sent: &'a [u8],
    mapped: &'a [Vec<u8>],
    extra: &'a [Box<[u8]>],
) -> SplitTags<'a> {
    let mut out = SplitTags {
        host: None,
        internal: InternalTags::default(),
        tags: Vec::new(),
    };
    let all = TagIter::new(sent).chain(mapped.iter().map(Vec::as_slice));
    for tag in all {
        match magic_tag(tag) {
            Some(MagicTag::Host(h)) => out.host = Some(h),
            Some(MagicTag::EntityId(id)) => out.internal.entity_id = Some(id),
            Some(MagicTag::Card(c)) => out.internal.card = Some(c),
            None => out.tags.push(tag),
        }
    }
    out.tags.extend(extra.iter().map(|t| &t[..]));
    out.tags.sort_unstable();
    out.tags.dedup();
    out
}

/// The host a message resolves to: its `host:` (empty means none), else the default.
fn resolve_host<'a>(host_tag: Option<&'a [u8]>, default: Option<&'a [u8]>) -> Option<&'a [u8]> {
    match host_tag {
        Some(b"") => None,
        Some(h) => Some(h),
        None => default,
    }
}

/// Seed shared by every shard so a context hashes to the same owner everywhere.
const KEY_SEED: u64 = 0x636f_7265_7374_6174;
/// Seed of the per-shard alias key (never crosses cores).
const ALIAS_SEED: u64 = 0x7261_775f_6f72_6465;

/// Settings of the aggregation stage.
#[derive(Debug, Clone)]
pub struct AggregateConfig {
    pub bucket_secs: u32,
    /// Histogram samples kept exactly per context and window before switching to a sketch.
    pub exact_samples: usize,
    /// How long an idle counter keeps emitting 0; 0 disables.
    pub counter_zero_fill_secs: u64,
    /// How long any other idle context is kept.
    pub context_expiry_secs: u64,
    /// Host of metrics without a `host:` tag; `None` for no host.
    pub default_host: Option<Vec<u8>>,
    /// Number of shards, each owning the contexts that hash to it.
    pub owners: usize,
    /// Events, and separately service checks, a shard holds for one flush; more are dropped
    /// and counted.
    pub max_pending_events: usize,
    /// Whose container id wins when a message has both `|c:` and socket credentials.
    pub origin_precedence: Precedence,
    /// Mapper, namespace, block list and extra tags, applied when a context is created.
    pub names: NameConfig,
}

/// The per-sample half of a context: 32 bytes, aligned, so one prefetch brings it in whole.
/// (One 80-byte entry always spanned two cache lines. Measured alone the split was within this
/// machine's run-to-run noise at 100k contexts and 3 % faster at 1k; it also keeps the sweep's
/// reads of names and tags off the lines the receive path writes.)
#[repr(align(32))]
struct Slot {
    /// High half of the alias key; the low half is in `by_alias`.
    alias_hi: u32,
    /// Window index of the last sample; `agg` (when set) belongs to that window.
    last_seen: u32,
    agg: Option<Agg>,
}

/// The rest of a context, touched when it is created, swept or freed. No strings: a context's
/// description went to the sink's context table once, when it was created (`ContextNews`).
struct Meta {
    /// Canonical key: identical on every shard for the same context, used for ownership.
    key: u64,
    /// Alias key of the tag order first seen: its entry in `by_alias`, for the fast path.
    alias: u64,
    metric_type: MetricType,
    /// False once freed (the slot waits in `free`).
    live: bool,
}

/// A closed window ready to leave the shard.
pub struct ClosedWindow {
    pub window: u64,
    /// One batch per owner shard, indexed by owner.
    pub batches: Vec<ContextBatch>,
    pub live_contexts: u64,
}

struct Closing {
    window: u32,
    batches: Vec<ContextBatch>,
    cursor: usize,
}

pub struct Aggregator {
    cfg: AggregateConfig,
    state: FixedState,
    alias_state: FixedState,
    /// Contexts by slot id, in two parallel halves.
    slots: Vec<Slot>,
    metas: Vec<Meta>,
    free: Vec<u32>,
    /// (low half of the alias key, context slot): the table the fast path probes. Probing
    /// compares the low half only, so it touches no context; the high half is checked when the
    /// context is loaded to be aggregated anyway.
    by_alias: HashTable<(u32, u32)>,
    /// (low half of the canonical key, context slot), probed only when the alias key misses.
    by_key: HashTable<(u32, u32)>,
    live: usize,
    /// Index of the open window (`start / bucket_secs`).
    window: u32,
    closing: Option<Closing>,
    /// Scratch for the canonical origin of the context being resolved.
    origin_buf: Vec<u8>,
    /// Names and tags before aggregation (`map`), run when a context is created.
    stage: Stage,
    name_out: NameOut,
    /// Alias keys of blocked metrics: a blocked metric costs two probes, not a trip through the
    /// stage. Cleared when it reaches `MAX_BLOCKED_KEYS`.
    blocked_aliases: HashSet<u64>,
    /// Partials in the last closed window's batches per owner, so the next close allocates once
    /// instead of growing (and copying) mid-sweep.
    last_batch_sizes: Vec<usize>,
    /// Descriptions of the contexts created since the news was last taken (`take_news`).
    news: NewContexts,
    /// Contexts freed since the last close, per owner: sent with the next close's batches.
    freed: Vec<Vec<u64>>,
    /// The tag hashes of the context being resolved (`ContextTags`), kept for the allocation.
    tag_hashes: Vec<u64>,
    /// The mapper's tags of the context being created, comma-joined as the news carries them.
    mapped_list: Vec<u8>,
    /// `--tag`, comma-joined once.
    extra_list: Box<[u8]>,
    /// What bypasses the windows and waits for the next flush, in arrival order: `|T` gauges and
    /// counters (with their own timestamps), events and service checks.
    pending: FlushBatch,
}

impl Aggregator {
    /// `now_secs` (unix) picks the first open window.
    pub fn new(cfg: AggregateConfig, now_secs: u64) -> Self {
        let stage = Stage::new(&cfg.names);
        let extra_list = stage.extra_tags().join(&b","[..]).into_boxed_slice();
        let window = (now_secs / u64::from(cfg.bucket_secs)) as u32;
        let owners = cfg.owners;
        Aggregator {
            cfg,
            state: FixedState::with_seed(KEY_SEED),
            alias_state: FixedState::with_seed(ALIAS_SEED),
            slots: Vec::new(),
            metas: Vec::new(),
            free: Vec::new(),
            by_alias: HashTable::new(),
            by_key: HashTable::new(),
            live: 0,
            window,
            closing: None,
            origin_buf: Vec::new(),
            stage,
            name_out: NameOut::default(),
            blocked_aliases: HashSet::new(),
            last_batch_sizes: Vec::new(),
            news: NewContexts::default(),
            freed: vec![Vec::new(); owners],
            tag_hashes: Vec::new(),
            mapped_list: Vec::new(),
            extra_list,
            pending: FlushBatch {
                arenas: vec![Vec::new()],
                ..FlushBatch::default()
            },
        }
    }

    /// Start (unix seconds) of the open window.
    pub fn window_start(&self) -> u64 {
        u64::from(self.window) * u64::from(self.cfg.bucket_secs)
    }

    pub fn window_end(&self) -> u64 {
        self.window_start() + u64::from(self.cfg.bucket_secs)
    }

    pub fn live_contexts(&self) -> usize {
        self.live
    }

    /// The descriptions of contexts created since the last call, once they hold at least
    /// `min_bytes` (0: any). The shard sends them to the sink thread: in chunks as they grow,
    /// and at every window close before its batches leave.
    pub fn take_news(&mut self, min_bytes: usize) -> Option<NewContexts> {
        if self.news.is_empty() || self.news.arena.len() < min_bytes {
            return None;
        }
        let capacity = self
            .news
            .arena
            .capacity()
            .min(NEWS_CHUNK + (NEWS_CHUNK >> 2));
        let contexts = self.news.contexts.capacity().min(NEWS_CHUNK / 64);
        Some(std::mem::replace(
            &mut self.news,
            NewContexts {
                arena: Vec::with_capacity(capacity),
                contexts: Vec::with_capacity(contexts),
            },
        ))
    }

    /// The map stage's counts (mapper cache hits and misses, names mapped) since the last call.
    pub fn take_name_stats(&mut self) -> crate::map::StageStats {
        self.stage.take_stats()
    }

    /// Adds one parsed metric. `at` is the monotonic receive time in ns, ordering gauges.
    pub fn insert(&mut self, m: &Metric<'_>, at: u64) -> Result<(), Discard> {
        let mut result = Ok(());
        self.insert_group(std::slice::from_ref(m), at, |u| result = Err(u));
        result
    }

    /// Adds up to `GROUP` metrics in three passes so their cache misses overlap instead of
    /// following one another: find each context in the alias table (4-byte fingerprints, no
    /// context touched) and prefetch its entry; prefetch each boxed aggregate; then check each
    /// context's full alias key and aggregate.
    ///
    /// The alias key hashes the name, type, tag list and origin fields as sent, so a client that
    /// repeats its tag order (nearly all do) never pays for per-tag hashing and sorting. A miss
    /// (new context, tags in a new order, fingerprint collision) takes `resolve_slow`.
    pub fn insert_group(
        &mut self,
        ms: &[Metric<'_>],
        at: u64,
        mut unsupported: impl FnMut(Discard),
    ) {
        debug_assert!(ms.len() <= GROUP);
        let mut found = [(0u64, NO_CONTEXT); GROUP];
        for (m, f) in ms.iter().zip(found.iter_mut()) {
            if m.timestamp.is_some() {
                continue;
            }
            let alias = self.alias_key(m);
            let lo = low(alias);
            let id = self
                .by_alias
                .find(table_hash(lo), |&(l, _)| l == lo)
                .map_or(NO_CONTEXT, |&(_, id)| id);
            if id != NO_CONTEXT {
                prefetch(self.slots.as_ptr().wrapping_add(id as usize));
            }
            *f = (alias, id);
        }
        for &(_, id) in &found[..ms.len()] {
            if let Some(agg) = self.slots.get(id as usize).and_then(|c| c.agg.as_ref()) {
                agg.prefetch();
            }
        }
        for (m, &(alias, id)) in ms.iter().zip(found.iter()) {
            if let Some(ts) = m.timestamp {
                if let Err(u) = self.insert_timestamped(m, ts) {
                    unsupported(u);
                }
                continue;
            }
            let id = match self.slots.get(id as usize) {
                Some(c) if c.alias_hi == (alias >> 32) as u32 => id,
                _ => self.resolve_slow(m, alias),
            };
            if id == NO_CONTEXT {
                unsupported(Discard::Blocked);
                continue;
            }
            self.aggregate(id, m, at);
        }
    }

    /// Finds or creates the context of `m` the thorough way; `NO_CONTEXT` if it is blocked.
    fn resolve_slow(&mut self, m: &Metric<'_>, alias: u64) -> u32 {
        let metas = &self.metas;
        // Exact alias match: a low-half collision, or a context created earlier in this group.
        let lo = low(alias);
        if let Some(&(_, id)) = self.by_alias.find(table_hash(lo), |&(l, id)| {
            l == lo && metas[id as usize].alias == alias
        }) {
            return id;
        }
        if self.blocked_aliases.contains(&alias) {
            return NO_CONTEXT;
        }
        let mut out = std::mem::take(&mut self.name_out);
        let id = if self.stage.metric_name(m.name, &mut out) {
            let extra = self.stage.extra_tags();
            let name = out.renamed.as_deref().unwrap_or(m.name);
            let hashes = std::mem::take(&mut self.tag_hashes);
            let tags = ContextTags::split(&self.state, hashes, m.tags, &out.mapped_tags, &extra);
            let key = self.context_key(name, m, &tags);
            let metas = &self.metas;
            let lo = low(key);
            let found = self.by_key.find(table_hash(lo), |&(l, id)| {
                l == lo && metas[id as usize].key == key
            });
            let id = match found {
                // Same context, tags in another order (or another name as sent mapped to it):
                // served by this path each time rather than adding aliases that would have to
                // be tracked and freed.
                Some(&(_, id)) => id,
                None => {
                    let lists = (m.tags, &out.mapped_tags[..]);
                    self.create_context(key, alias, name, m.metric_type, tags.host, lists)
                }
            };
            self.tag_hashes = tags.hashes;
            id
        } else {
            if self.blocked_aliases.len() >= MAX_BLOCKED_KEYS {
                self.blocked_aliases.clear();
            }
            self.blocked_aliases.insert(alias);
            NO_CONTEXT
        };
        self.name_out = out;
        id
    }

    fn alias_key(&self, m: &Metric<'_>) -> u64 {
        let mut h = self.alias_state.build_hasher();
        h.write(m.name);
        h.write(m.tags);
        let o = &m.origin;
        if o.is_empty() {
            h.write_u8(m.metric_type.index());
        } else {
            // Presence bits first, so (c: "ab", e: none) and (c: none, e: "ab") differ.
            let fields = [o.local, o.external, o.cardinality, o.socket_container];
            let mut present = 0u64;
            for (i, f) in fields.iter().enumerate() {
                present |= u64::from(f.is_some()) << i;
            }
            h.write_u64(u64::from(m.metric_type.index()) | present << 8);
            for f in fields.into_iter().flatten() {
                h.write(f);
            }
        }
        h.finish()
    }

    fn aggregate(&mut self, id: u32, m: &Metric<'_>, at: u64) {
        let window = self.window;
        let ctx = &mut self.slots[id as usize];
        if ctx.agg.is_some() && ctx.last_seen != window {
            // A sample of the new window reached a context the close has not swept yet.
            let agg = ctx.agg.take();
            let seen = ctx.last_seen;
            self.extract(id, agg, seen);
        }
        let ctx = &mut self.slots[id as usize];
        ctx.last_seen = window;
        ctx.agg
            .get_or_insert_with(|| Agg::new(m.metric_type))
            .insert(m, at, self.cfg.exact_samples);
    }

    /// The canonical key of a context: final name, type, host, origin and tags, with a seed
    /// every shard shares. Leaves the canonical origin in `origin_buf` (empty for none).
    fn context_key(&mut self, name: &[u8], m: &Metric<'_>, split: &ContextTags<'_>) -> u64 {
        origin::encode(
            &mut self.origin_buf,
            &m.origin,
            split.internal,
            self.cfg.origin_precedence,
        );
        let mut h = self.state.build_hasher();
        h.write(name);
        h.write_u8(m.metric_type.index());
        match split.host {
            Some(b"") => h.write_u8(0),
            Some(host) => {
                h.write_u8(1);
                h.write(host);
            }
            None => h.write_u8(2),
        }
        h.write(&self.origin_buf);
        // Deduplicated, and summed: the same for every order a sender uses.
        h.write_usize(split.hashes.len());
        h.write_u64(split.sum);
        h.finish()
    }

    /// Adds a context, and its description to the news for the sink's context table: `name`,
    /// the host, the origin left in `origin_buf`, and the tag lists (the client's, the mapper's;
    /// the extra ones are the shard's).
    fn create_context(
        &mut self,
        key: u64,
        alias: u64,
        name: &[u8],
        metric_type: MetricType,
        host_tag: Option<&[u8]>,
        (sent, mapped): (&[u8], &[Vec<u8>]),
    ) -> u32 {
        self.mapped_list.clear();
        for (i, t) in mapped.iter().enumerate() {
            if i > 0 {
                self.mapped_list.push(b',');
            }
            self.mapped_list.extend_from_slice(t);
        }
        let news = &mut self.news;
        let offset = desc::encode_new(
            &mut news.arena,
            metric_type,
            name,
            resolve_host(host_tag, self.cfg.default_host.as_deref()),
            (!self.origin_buf.is_empty()).then_some(&self.origin_buf[..]),
            [sent, &self.mapped_list, &self.extra_list],
        );
        news.contexts.push((key, offset));
        let meta = Meta {
            key,
            alias,
            metric_type,
            live: true,
        };
        let slot = Slot {
            alias_hi: (alias >> 32) as u32,
            last_seen: self.window,
            agg: None,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.metas[id as usize] = meta;
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.metas.push(meta);
                self.slots.push(slot);
                (self.metas.len() - 1) as u32
            }
        };
        let hash = |&(l, _): &(u32, u32)| table_hash(l);
        self.by_key
            .insert_unique(table_hash(low(key)), (low(key), id), hash);
        self.by_alias
            .insert_unique(table_hash(low(alias)), (low(alias), id), hash);
        self.live += 1;
        id
    }

    /// Closes the open window and opens the next one. The closed window's contexts are then
    /// swept by `close_step`; samples for the new window go on being accepted meanwhile.
    pub fn begin_close(&mut self) {
        if self.closing.is_some() {
            // The previous sweep never finished (its caller stopped calling `close_step`):
            // finish it so no window is mixed with the next.
            while self.close_step(usize::MAX).is_none() {}
        }
        let window_start = self.window_start();
        self.closing = Some(Closing {
            window: self.window,
            batches: (0..self.cfg.owners)
                .map(|owner| {
                    let partials = self.last_batch_sizes.get(owner).copied().unwrap_or(0);
                    ContextBatch {
                        window: window_start,
                        partials: Vec::with_capacity(partials + partials / 8),
                        freed: Vec::new(),
                    }
                })
                .collect(),
            cursor: 0,
        });
        self.window += 1;
    }

    /// Sweeps up to `budget` context slots of the closing window: hands their aggregates to the
    /// owners' batches, zero-fills idle counters, frees expired contexts. Returns the closed window
    /// once the sweep is complete.
    pub fn close_step(&mut self, budget: usize) -> Option<ClosedWindow> {
        let closing = self.closing.as_ref()?;
        let closed = closing.window;
        let start = closing.cursor;
        let end = start.saturating_add(budget).min(self.slots.len());
        let bucket = u64::from(self.cfg.bucket_secs);
        let zero_fill = self.cfg.counter_zero_fill_secs.div_ceil(bucket) as u32;
        let expiry = self.cfg.context_expiry_secs.div_ceil(bucket).max(1) as u32;
        for id in start as u32..end as u32 {
            if !self.metas[id as usize].live {
                continue;
            }
            let slot = &mut self.slots[id as usize];
            if slot.agg.is_some() && slot.last_seen == closed {
                let agg = slot.agg.take();
                self.extract(id, agg, closed);
                continue;
            }
            if slot.last_seen > closed {
                continue;
            }
            let idle = closed - slot.last_seen;
            let is_counter = self.metas[id as usize].metric_type == MetricType::Counter;
            if is_counter && idle <= zero_fill {
                self.extract(id, Some(Agg::Counter(0.0)), closed);
            }
            let keep_for = if is_counter && zero_fill > 0 {
                zero_fill
            } else {
                expiry
            };
            if idle >= keep_for {
                self.free_context(id);
            }
        }
        let closing = self.closing.as_mut()?;
        closing.cursor = end;
        if end < self.slots.len() {
            return None;
        }
        let mut closing = self.closing.take()?;
        self.last_batch_sizes = closing.batches.iter().map(|b| b.partials.len()).collect();
        // Every context freed so far, the sweep's frees included: they reach the sink through
        // each context's owner, after that owner's points of the window.
        for (batch, freed) in closing.batches.iter_mut().zip(self.freed.iter_mut()) {
            batch.freed = std::mem::take(freed);
        }
        Some(ClosedWindow {
            window: u64::from(closing.window) * bucket,
            batches: closing.batches,
            live_contexts: self.live as u64,
        })
    }

    /// Writes a context's aggregate into its owner's batch of the closing window.
    fn extract(&mut self, id: u32, agg: Option<Agg>, window: u32) {
        let Some(agg) = agg else { return };
        let Some(closing) = self.closing.as_mut().filter(|c| c.window == window) else {
            // Only reachable if a window was skipped without `begin_close`: a bug, not input.
            debug_assert!(false, "aggregate of window {window} outside a close");
            return;
        };
        let key = self.metas[id as usize].key;
        closing.batches[owner_of(key, self.cfg.owners)]
            .partials
            .push(Partial { key, agg });
    }

    fn free_context(&mut self, id: u32) {
        let ctx = &mut self.metas[id as usize];
        let (key, alias) = (ctx.key, ctx.alias);
        ctx.live = false;
        self.slots[id as usize].agg = None;
        if let Ok(e) = self
            .by_key
            .find_entry(table_hash(low(key)), |&(_, c)| c == id)
        {
            e.remove();
        }
        if let Ok(e) = self
            .by_alias
            .find_entry(table_hash(low(alias)), |&(_, c)| c == id)
        {
            e.remove();
        }
        self.freed[owner_of(key, self.cfg.owners)].push(key);
        self.live -= 1;
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_sample_half_of_a_context_fills_exactly_one_half_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::align_of::<Slot>(), 32);
    }
}
