//! Per-shard aggregation: parsed lines in (`ingest`), the context table, each context's value for
//! the open window (`values`), and at each close (`close`) one `ContextBatch` per owning shard
//! out (`batch`); what skips the windows waits in `pending`; `caps` refuses new contexts past
//! `--max-contexts`, `--max-contexts-per-metric` or the memory limit.
//!
//! Owns every context its shard has seen (its keys, type and liveness: its description went to
//! the sink's context table once, as news) and each context's aggregate for the open window.
//! Synchronous and clock-free: the caller passes the receive time and decides when a window
//! closes. Must not do I/O or know about other shards beyond `owner_of`, which says whose batch a
//! context's partial goes into.
//!
//! Hot path (`insert`): one hash over the name, type, tag list and origin fields as sent (the
//! alias key), one probe of the alias table, one aggregator update. Only when that misses (a new
//! context, or tags in a new order) are the tags hashed one by one and deduplicated into the
//! canonical key that every shard agrees on (`key`). Allocation happens only when a context is
//! created.

mod batch;
mod caps;
mod close;
mod ingest;
mod key;
mod pending;
mod reload;

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;
use hashbrown::HashSet;

pub use batch::{ContextBatch, Partial, owner_of};
#[cfg(test)]
pub(crate) use caps::OVERFLOW_TAG;
pub use ingest::{Packet, ingest};
pub use reload::Reload;

use caps::{Caps, OVERFLOW_FULL};
use close::Closing;
pub use close::{BUSIEST, ClosedWindow};
use key::{ContextTags, key_of, low, resolve_host};

use crate::flushed::ids::IdTable;
use crate::flushed::{FlushBatch, NewContexts, desc};
use crate::map::{NameConfig, NameOut, Stage};
use crate::memory::Pressure;
use crate::protocol::origin::{self, Precedence};
use crate::protocol::{Metric, MetricType};
use crate::values::{Agg, Limits, prefetch};

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
    /// An event or service check dropped near the memory limit.
    EventShed,
    ServiceCheckShed,
    /// A refused context's sample, when its shard's overflow contexts are at their reserve.
    OverflowFull,
}

/// Metrics resolved together by `insert_group`: enough to overlap a handful of cache misses.
pub const GROUP: usize = 16;

const NO_CONTEXT: u32 = u32::MAX;

/// Blocked alias keys remembered per shard before the set starts over.
pub(super) const MAX_BLOCKED_KEYS: usize = 1 << 16;

/// News of new contexts a shard holds before sending them to the sink; they also go at every
/// window close. Small enough to stay in the allocator's reused memory (a window's worth at
/// 500k new contexts/s was a 1.3 GB arena of fresh pages), large enough to cost one channel
/// message per ~1000 contexts.
pub const NEWS_CHUNK: usize = 256 << 10;

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
    /// Distinct set members kept exactly per context and window before switching to a
    /// HyperLogLog estimate (`--set-exact-members`).
    pub set_exact_members: usize,
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
    /// Contexts this shard holds at most: its share of `--max-contexts`. A new context past it
    /// goes to its metric's overflow context. `None`: no cap.
    pub max_contexts: Option<usize>,
    /// Contexts of one metric name this shard holds at most: its share of
    /// `--max-contexts-per-metric`. `None`: no cap.
    pub max_contexts_per_metric: Option<usize>,
    /// Count each context's samples per window, for the busiest contexts of `/contexts`
    /// (`--context-stats`): 4 bytes a context and one more store per sample.
    pub context_stats: bool,
    /// A signed gauge value adjusts the last value instead of replacing it (`--gauge-deltas`,
    /// statsd's semantics): 8 bytes a context for the last value of each gauge.
    pub gauge_deltas: bool,
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

/// The rest of a context, touched when it is created, swept or freed: 16 bytes. No strings: a
/// context's description went to the sink's context table once, when it was created.
struct Meta {
    /// Canonical key: identical on every shard for the same context, used for ownership.
    key: u64,
    /// Low half of the alias key of the tag order first seen (the high half is in its `Slot`):
    /// its entry in `by_alias`, for the fast path.
    alias_lo: u32,
    metric_type: MetricType,
    /// False once freed (the slot waits in `free`).
    live: bool,
    /// One of its metric's overflow contexts.
    overflow: bool,
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
    by_alias: IdTable,
    /// (low half of the canonical key, context slot), probed only when the alias key misses.
    by_key: IdTable,
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
    /// `--max-contexts`, `--max-contexts-per-metric`, the memory limit (`caps`).
    caps: Caps,
    /// What bypasses the windows and waits for the next flush, in arrival order: `|T` gauges and
    /// counters (with their own timestamps), events and service checks.
    pending: FlushBatch,
    /// Each context's samples in the window of its aggregate, by slot id, with `context_stats`
    /// (empty without): taken when the aggregate is (`extract`).
    samples: Vec<u32>,
    /// With `gauge_deltas`: each gauge's value as of its last closed window, by slot id, the
    /// base a delta adjusts when its window has no value yet.
    last_gauges: Vec<f64>,
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
            by_alias: IdTable::default(),
            by_key: IdTable::default(),
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
            caps: Caps::default(),
            pending: FlushBatch {
                arenas: vec![Vec::new()],
                ..FlushBatch::default()
            },
            samples: Vec::new(),
            last_gauges: Vec::new(),
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

    /// Context slots allocated, live or free for reuse.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
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
        // Every key first, then every lookup: with no hashing in between, the lookups' cache
        // misses (the alias table of 1M contexts is 16 MB) overlap instead of queueing.
        for (m, f) in ms.iter().zip(found.iter_mut()) {
            if m.timestamp.is_none() {
                f.0 = self.alias_key(m);
                self.by_alias.prefetch(low(f.0));
            }
        }
        for (m, f) in ms.iter().zip(found.iter_mut()) {
            if m.timestamp.is_some() {
                continue;
            }
            let id = self.by_alias.find(low(f.0), |_| true).unwrap_or(NO_CONTEXT);
            if id != NO_CONTEXT {
                prefetch(self.slots.as_ptr().wrapping_add(id as usize));
            }
            f.1 = id;
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
            if id == OVERFLOW_FULL {
                unsupported(Discard::OverflowFull);
                continue;
            }
            self.aggregate(id, m, at);
        }
    }

    /// Finds or creates the context of `m` the thorough way (or, past a cap, its overflow
    /// context); `NO_CONTEXT` if it is blocked, `OVERFLOW_FULL` if it can go nowhere.
    fn resolve_slow(&mut self, m: &Metric<'_>, alias: u64) -> u32 {
        let slots = &self.slots;
        // Exact alias match: a low-half collision, or a context created earlier in this group.
        let (lo, hi) = (low(alias), (alias >> 32) as u32);
        if let Some(id) = self
            .by_alias
            .find(lo, |id| slots[id as usize].alias_hi == hi)
        {
            return id;
        }
        if self.blocked_aliases.contains(&alias) {
            return NO_CONTEXT;
        }
        if let Some(id) = self.caps.overflow_of(alias) {
            return id;
        }
        let mut out = std::mem::take(&mut self.name_out);
        let id = if self.stage.metric_name(m.name, &mut out) {
            let extra = self.stage.extra_tags();
            let name = out.renamed.as_deref().unwrap_or(m.name);
            // `metric_tag_filterlist`, `--strip-host`: the context is what is kept.
            let filters = self.stage.tag_filters();
            let filtering = filters.for_name(name);
            let kept = filtering.and_then(|f| f.tags).map(|f| {
                let keeps = |t: &[u8]| f.keeps(t);
                key::filter_tags(m.tags, &out.mapped_tags, keeps)
            });
            let (sent, mapped) = match &kept {
                Some((sent, mapped)) => (&sent[..], &mapped[..]),
                None => (m.tags, &out.mapped_tags[..]),
            };
            let hashes = std::mem::take(&mut self.tag_hashes);
            let mut tags = ContextTags::split(&self.state, hashes, sent, mapped, &extra);
            if filtering.is_some_and(|f| f.strip_host) {
                tags.host = Some(b"");
            }
            let key = self.context_key(name, m, &tags);
            let id = match self.find_key(key) {
                // Same context, tags in another order (or another name as sent mapped to it):
                // served by this path each time rather than adding aliases that would have to
                // be tracked and freed. (After a reload, the first such name is the alias.)
                Some(id) => {
                    self.reattach(id, alias);
                    id
                }
                None => match self.refusal(name) {
                    None => {
                        let lists = (sent, mapped);
                        let id =
                            self.create_context(key, alias, name, m.metric_type, tags.host, lists);
                        if self.cfg.max_contexts_per_metric.is_some() {
                            self.caps.count(&self.state, id, name);
                        }
                        id
                    }
                    Some(_) => self.overflow(alias, name, m.metric_type, tags.host),
                },
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

    /// The context whose canonical key is `key`.
    fn find_key(&self, key: u64) -> Option<u32> {
        let (metas, lo) = (&self.metas, low(key));
        self.by_key.find(lo, |id| metas[id as usize].key == key)
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
        // Near the memory limit histograms keep no exact samples: a sketch is bounded.
        let exact = if self.caps.pressure >= Pressure::Shed {
            0
        } else {
            self.cfg.exact_samples
        };
        let ctx = &mut self.slots[id as usize];
        ctx.last_seen = window;
        if self.cfg.gauge_deltas && m.metric_type == MetricType::Gauge {
            let base = self.last_gauges.get(id as usize).copied().unwrap_or(0.0);
            ctx.agg
                .get_or_insert(Agg::Gauge { value: base, at: 0 })
                .adjust_gauge(m, at);
        } else {
            ctx.agg
                .get_or_insert_with(|| Agg::new(m.metric_type))
                .insert(
                    m,
                    at,
                    Limits {
                        histogram_samples: exact,
                        set_members: self.cfg.set_exact_members,
                    },
                );
        }
        if let Some(n) = self.samples.get_mut(id as usize) {
            *n = n.saturating_add(1);
        }
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
        let tags = (split.hashes.len(), split.sum);
        // The host as it will be written: `host:<default>` and no host tag are one context.
        let host = resolve_host(split.host, self.cfg.default_host.as_deref());
        key_of(
            &self.state,
            name,
            m.metric_type,
            host,
            &self.origin_buf,
            tags,
        )
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
            alias_lo: low(alias),
            metric_type,
            live: true,
            overflow: false,
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
        self.by_key.insert(low(key), id);
        self.by_alias.insert(low(alias), id);
        self.live += 1;
        if self.cfg.context_stats {
            zero_at(&mut self.samples, id);
        }
        if self.cfg.gauge_deltas {
            zero_at(&mut self.last_gauges, id);
        }
        id
    }
}

/// Sets a side array's entry for context `id` to its zero, growing the array to reach it.
fn zero_at<T: Copy + Default>(v: &mut Vec<T>, id: u32) {
    let at = id as usize;
    if at < v.len() {
        v[at] = T::default();
    } else {
        v.resize(at + 1, T::default());
    }
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
