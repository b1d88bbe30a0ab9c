//! DogStatsD lines from the flushed form, packed into datagrams: what the relay sends (see the
//! module above for what each type becomes). Pure formatting: no sockets, no state across
//! batches.

use crate::flushed::desc::Desc;
use crate::flushed::{
    DescRef, FlushedEvent, FlushedMetric, FlushedServiceCheck, OutKind, View, full_name,
};
use crate::protocol::event::{AlertType, Priority};
use crate::protocol::origin::Origin;
use crate::protocol::{MAX_SAMPLE_WEIGHT, MetricType};
use crate::values::Agg;
use crate::values::histogram::Histogram;
use crate::values::sketch::{self, Sketch};

/// Packs lines into datagrams and hands full ones to `send`.
pub struct Packer {
    max: usize,
    packet: Vec<u8>,
    lines: u64,
}

impl Packer {
    pub fn new(max: usize) -> Self {
        Packer {
            max,
            packet: Vec::with_capacity(max),
            lines: 0,
        }
    }

    fn line(&mut self, line: &[u8], send: &mut impl FnMut(&[u8], u64)) {
        if !self.packet.is_empty() && self.packet.len() + 1 + line.len() > self.max {
            self.flush(send);
        }
        if !self.packet.is_empty() {
            self.packet.push(b'\n');
        }
        self.packet.extend_from_slice(line);
        self.lines += 1;
    }

    fn flush(&mut self, send: &mut impl FnMut(&[u8], u64)) {
        if !self.packet.is_empty() {
            send(&self.packet, self.lines);
            self.packet.clear();
            self.lines = 0;
        }
    }
}

/// Indices into a batch's points, events and service checks.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub metrics: Vec<usize>,
    pub events: Vec<usize>,
    pub service_checks: Vec<usize>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.events.is_empty() && self.service_checks.is_empty()
    }

    pub fn clear(&mut self) {
        self.metrics.clear();
        self.events.clear();
        self.service_checks.clear();
    }
}

/// Formats one flushed batch as DogStatsD lines.
pub struct Encoder {
    pub max_packet_bytes: usize,
    /// Every counter and gauge without `|T`, a client's timestamp too: the receiver aggregates
    /// them all into its open window (a take-over).
    pub untimestamped: bool,
    suffix: Vec<u8>,
    line: Vec<u8>,
    /// The current point's name with its suffix.
    name: Vec<u8>,
}

impl Encoder {
    pub fn new(max_packet_bytes: usize) -> Self {
        Encoder {
            untimestamped: false,
            max_packet_bytes,
            suffix: Vec::new(),
            line: Vec::new(),
            name: Vec::new(),
        }
    }

    /// Every line of `batch`, packed, through `send(packet, lines)`.
    pub fn encode(&mut self, batch: View<'_>, send: &mut impl FnMut(&[u8], u64)) {
        let all = Selection {
            metrics: (0..batch.metrics.len()).collect(),
            events: (0..batch.events.len()).collect(),
            service_checks: (0..batch.service_checks.len()).collect(),
        };
        self.encode_selected(batch, &all, send);
    }

    /// The lines of the points, events and checks of `batch` that `which` lists, packed.
    pub fn encode_selected(
        &mut self,
        batch: View<'_>,
        which: &Selection,
        send: &mut impl FnMut(&[u8], u64),
    ) {
        let mut p = Packer::new(self.max_packet_bytes);
        for &i in &which.metrics {
            self.metric(batch, &batch.metrics[i], &mut p, send);
        }
        for &i in &which.events {
            self.event(&batch.events[i], &mut p, send);
        }
        for &i in &which.service_checks {
            self.service_check(&batch.service_checks[i], &mut p, send);
        }
        p.flush(send);
    }

    fn metric(
        &mut self,
        batch: View<'_>,
        m: &FlushedMetric,
        p: &mut Packer,
        send: &mut impl FnMut(&[u8], u64),
    ) {
        let d = batch.desc(m);
        // Taken out of `self` while the line methods borrow it; put back below.
        let mut name_buf = std::mem::take(&mut self.name);
        full_name(&mut name_buf, d.name, m.suffix);
        let name = &name_buf[..];
        match (&m.whole, &m.sketch) {
            (Some(raw), _) => match &**raw {
                Agg::Set(members) => {
                    self.tail(&d, b"s", None, None);
                    // An estimate goes as its register chunks (relay-only members, `values::set`).
                    let (line, suffix) = (&mut self.line, &self.suffix);
                    members.relay_members(|member| {
                        line.clear();
                        line.extend_from_slice(name);
                        line.push(b':');
                        line.extend_from_slice(member);
                        line.extend_from_slice(suffix);
                        p.line(line, send);
                    });
                }
                Agg::Histogram(h) => {
                    let kind: &[u8] = if d.metric_type == MetricType::Timer {
                        b"ms"
                    } else {
                        b"h"
                    };
                    let samples = match &**h {
                        Histogram::Exact(s) => s.clone(),
                        Histogram::Sketch(sk) => sketch_samples(sk),
                    };
                    self.weighted(&d, name, kind, samples, p, send);
                }
                _ => {}
            },
            (None, Some(sk)) if m.kind == OutKind::Distribution => {
                self.weighted(&d, name, b"d", sketch_samples(sk), p, send);
            }
            _ => {
                let kind: &[u8] = if m.kind == OutKind::Count { b"c" } else { b"g" };
                // A context's window sum (or last value) goes without `|T`: the receiving tier
                // aggregates it into its open window, so edges sending the same series make one
                // point there (a `|T` point is passed through, never aggregated). A point that
                // came with a client's timestamp keeps it.
                let client_stamped = matches!(m.desc, DescRef::Arena { .. });
                let ts = (!self.untimestamped && client_stamped).then_some(m.ts);
                self.tail(&d, kind, None, ts);
                self.line.clear();
                self.line.extend_from_slice(name);
                self.line.push(b':');
                push_f64(&mut self.line, m.value);
                self.line.extend_from_slice(&self.suffix);
                p.line(&self.line, send);
            }
        }
        self.name = name_buf;
    }

    /// Lines of packed values, one rate per line, within the packet size.
    fn weighted(
        &mut self,
        d: &Desc<'_>,
        name: &[u8],
        kind: &[u8],
        mut samples: Vec<(f64, f64)>,
        p: &mut Packer,
        send: &mut impl FnMut(&[u8], u64),
    ) {
        samples.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)));
        let mut value = Vec::new();
        for group in samples.chunk_by(|a, b| a.1.to_bits() == b.1.to_bits()) {
            let weight = group[0].1;
            self.tail(d, kind, Some(weight), None);
            self.line.clear();
            for &(v, _) in group {
                value.clear();
                push_f64(&mut value, v);
                let full =
                    self.line.len() + 1 + value.len() + self.suffix.len() > self.max_packet_bytes;
                if !self.line.is_empty() && full {
                    self.line.extend_from_slice(&self.suffix);
                    p.line(&self.line, send);
                    self.line.clear();
                }
                if self.line.is_empty() {
                    self.line.extend_from_slice(name);
                }
                self.line.push(b':');
                self.line.extend_from_slice(&value);
            }
            self.line.extend_from_slice(&self.suffix);
            p.line(&self.line, send);
        }
    }

    /// Everything after the value: `|type[|@rate]|#tags,host:h[|Tts][|c:..][|e:..][|card:..]`.
    fn tail(&mut self, d: &Desc<'_>, kind: &[u8], weight: Option<f64>, ts: Option<u64>) {
        let s = &mut self.suffix;
        s.clear();
        s.push(b'|');
        s.extend_from_slice(kind);
        if let Some(w) = weight.filter(|&w| w != 1.0) {
            s.extend_from_slice(b"|@");
            push_f64(s, 1.0 / w);
        }
        s.extend_from_slice(b"|#");
        for tag in d.tags() {
            s.extend_from_slice(tag);
            s.push(b',');
        }
        s.extend_from_slice(b"host:");
        s.extend_from_slice(d.host.unwrap_or_default());
        if let Some(t) = entity_tag(d.origin) {
            s.push(b',');
            s.extend_from_slice(&t);
        }
        if let Some(ts) = ts {
            s.extend_from_slice(format!("|T{ts}").as_bytes());
        }
        push_origin(s, d.origin);
    }

    fn event(&mut self, e: &FlushedEvent, p: &mut Packer, send: &mut impl FnMut(&[u8], u64)) {
        let title = escape(&e.title);
        let text = escape(&e.text);
        let l = &mut self.line;
        l.clear();
        l.extend_from_slice(format!("_e{{{},{}}}:", title.len(), text.len()).as_bytes());
        l.extend_from_slice(&title);
        l.push(b'|');
        l.extend_from_slice(&text);
        if let Some(ts) = e.ts {
            l.extend_from_slice(format!("|d:{ts}").as_bytes());
        }
        l.extend_from_slice(b"|h:");
        l.extend_from_slice(e.host.as_deref().unwrap_or_default());
        if let Some(k) = &e.aggregation_key {
            l.extend_from_slice(b"|k:");
            l.extend_from_slice(k);
        }
        if e.priority == Priority::Low {
            l.extend_from_slice(b"|p:low");
        }
        if let Some(s) = &e.source_type {
            l.extend_from_slice(b"|s:");
            l.extend_from_slice(s);
        }
        l.extend_from_slice(match e.alert_type {
            AlertType::Info => b"|t:info".as_slice(),
            AlertType::Warning => b"|t:warning",
            AlertType::Error => b"|t:error",
            AlertType::Success => b"|t:success",
        });
        push_tags(l, &e.tags, e.origin.as_deref());
        push_origin(l, e.origin.as_deref());
        p.line(&self.line, send);
    }

    fn service_check(
        &mut self,
        sc: &FlushedServiceCheck,
        p: &mut Packer,
        send: &mut impl FnMut(&[u8], u64),
    ) {
        let l = &mut self.line;
        l.clear();
        l.extend_from_slice(b"_sc|");
        l.extend_from_slice(&sc.name);
        l.extend_from_slice(format!("|{}", sc.status).as_bytes());
        if let Some(ts) = sc.ts {
            l.extend_from_slice(format!("|d:{ts}").as_bytes());
        }
        l.extend_from_slice(b"|h:");
        l.extend_from_slice(sc.host.as_deref().unwrap_or_default());
        push_tags(l, &sc.tags, sc.origin.as_deref());
        push_origin(l, sc.origin.as_deref());
        if let Some(m) = &sc.message {
            l.extend_from_slice(b"|m:");
            l.extend_from_slice(&escape(m));
        }
        p.line(&self.line, send);
    }
}

/// A sketch as weighted values: its exact min and max (weight 1 each, taken from the lowest and
/// highest bins) and each bin's value (clamped to [min, max]) with what remains of its weight.
///
/// Every weight is one the next tier accepts as `@1/weight`: at least 1 (a rate above 1 is
/// rejected) and at most `MAX_SAMPLE_WEIGHT` (the rate floor), so a heavy bin goes out as
/// several values (`split_weight`). A bin's weight is the sum of its samples' weights, each at
/// most `MAX_SAMPLE_WEIGHT`, so the values sent are never more than the samples received plus
/// two per bin.
pub fn sketch_samples(sk: &Sketch) -> Vec<(f64, f64)> {
    let bins: Vec<(i32, f64)> = sk.bins().filter(|&(_, n)| n > 0.0).collect();
    let mut out = Vec::with_capacity(bins.len() + 2);
    let last = bins.len().saturating_sub(1);
    // The extremes take weight 1 from their bin unless what would be left weighs under 1:
    // then they take the whole bin.
    let extreme = |n: &mut f64| {
        let take = if *n >= 2.0 { 1.0 } else { *n };
        *n -= take;
        take
    };
    for (i, &(k, mut n)) in bins.iter().enumerate() {
        if i == 0 {
            out.push((sk.min, extreme(&mut n)));
        }
        if i == last && n > 0.0 {
            out.push((sk.max, extreme(&mut n)));
        }
        if n > 0.0 {
            // A bin's value may lie past the extreme sample it holds; the extreme is in the same
            // bin, so clamping keeps the key and keeps the downstream's min and max exact.
            let v = sketch::value(k).clamp(sk.min, sk.max);
            out.extend(split_weight(n).map(|w| (v, w)));
        }
    }
    out
}

/// `n` (at least 1) as weights in [1, `MAX_SAMPLE_WEIGHT`] that sum to it: as many whole
/// `MAX_SAMPLE_WEIGHT`s as fit and the rest, the rest shared with one of them when it is under 1.
/// Whole weights stay whole, so counts come back exact.
fn split_weight(n: f64) -> impl Iterator<Item = f64> {
    let full = (n / MAX_SAMPLE_WEIGHT).floor();
    let rest = n - full * MAX_SAMPLE_WEIGHT;
    let (full, tail) = if rest == 0.0 {
        (full, [None, None])
    } else if rest >= 1.0 || full == 0.0 {
        (full, [Some(rest), None])
    } else {
        let half = (MAX_SAMPLE_WEIGHT + rest) / 2.0;
        (full - 1.0, [Some(half), Some(half)])
    };
    std::iter::repeat_n(MAX_SAMPLE_WEIGHT, full as usize).chain(tail.into_iter().flatten())
}

fn push_tags(l: &mut Vec<u8>, tags: &[Vec<u8>], origin: Option<&[u8]>) {
    let entity = entity_tag(origin);
    if tags.is_empty() && entity.is_none() {
        return;
    }
    l.extend_from_slice(b"|#");
    for (i, t) in tags.iter().chain(&entity).enumerate() {
        if i > 0 {
            l.push(b',');
        }
        l.extend_from_slice(t);
    }
}

/// The origin as the wire's `c:`, `e:` and `card:` fields (and the entity-id tag's pod uid).
fn push_origin(l: &mut Vec<u8>, blob: Option<&[u8]>) {
    let Some(blob) = blob else { return };
    let o = Origin::decode(blob);
    let mut local = Vec::new();
    if let Some(id) = o.container_id {
        local.extend_from_slice(b"ci-");
        local.extend_from_slice(id);
    }
    if let Some(inode) = o.cgroup_inode {
        if !local.is_empty() {
            local.push(b',');
        }
        local.extend_from_slice(format!("in-{inode}").as_bytes());
    }
    if !local.is_empty() {
        l.extend_from_slice(b"|c:");
        l.extend_from_slice(&local);
    }
    let e = o.external;
    if !e.is_empty() {
        let mut items: Vec<Vec<u8>> = Vec::new();
        if let Some(init) = e.init {
            items.push(format!("it-{init}").into_bytes());
        }
        if let Some(cn) = e.container_name {
            items.push([b"cn-", cn].concat());
        }
        if let Some(pu) = e.pod_uid {
            items.push([b"pu-", pu].concat());
        }
        l.extend_from_slice(b"|e:");
        l.extend_from_slice(&items.join(&b","[..]));
    }
    if let Some(c) = o.cardinality {
        l.extend_from_slice(b"|card:");
        l.extend_from_slice(c.as_str().as_bytes());
    }
}

/// The `dd.internal.entity_id` tag a sender's origin came with, to append to the tags.
fn entity_tag(blob: Option<&[u8]>) -> Option<Vec<u8>> {
    let uid = Origin::decode(blob?).pod_uid?;
    Some([b"dd.internal.entity_id:", uid].concat())
}

/// Newlines as the two characters `\n`, as events and service-check messages carry them.
fn escape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for &c in b {
        if c == b'\n' {
            out.extend_from_slice(b"\\n");
        } else {
            out.push(c);
        }
    }
    out
}

/// Shortest decimal that reads back as the same `f64` (Rust's `Display` never uses exponents).
fn push_f64(out: &mut Vec<u8>, v: f64) {
    use std::io::Write;
    let _ = write!(out, "{v}");
}

#[cfg(test)]
#[path = "lines_tests.rs"]
mod tests;
