//! Seeded DogStatsD workloads, built into packets before any is sent, so generating costs
//! nothing while sending. Every packet knows how many metric lines and samples of each type it
//! holds, so what was sent is known exactly.

/// Wire types in the order of `--weights` keys and of the per-type counts.
pub const TYPES: [&str; 6] = ["c", "g", "d", "s", "h", "ms"];

#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub contexts: usize,
    pub names_len: usize,
    /// Tags per metric, drawn uniformly from this range (inclusive).
    pub tags_per_metric: (usize, usize),
    pub tag_len: usize,
    /// Relative weights of `TYPES`.
    pub weights: [u32; 6],
    /// Probability that a line packs several values (2 to 8).
    pub multivalue_prob: f64,
    /// Probability that a line carries `|@0.5`.
    pub sample_rate_prob: f64,
    /// Lines are packed into packets up to this many bytes; 0 for one line per packet.
    pub packet_bytes: usize,
    /// Lines made while sending instead of a prebuilt set (`new-contexts`, `churn`).
    pub stream: Option<Stream>,
}

/// Datadog's reported production mix: c 208, g 66, d 72, s 9, h 1.
pub const DOGSTATSD_MIX: [u32; 6] = [208, 66, 72, 9, 1, 0];

impl Shape {
    /// The shape without a preset: 1000 contexts, 2 tags, Datadog's production type mix.
    pub fn custom(packet_bytes: usize) -> Shape {
        Shape {
            weights: DOGSTATSD_MIX,
            ..Shape::preset("counters-1k", packet_bytes).unwrap_or_else(|| unreachable!())
        }
    }

    /// A named preset, or `None`.
    pub fn preset(name: &str, packet_bytes: usize) -> Option<Shape> {
        let base = Shape {
            contexts: 1000,
            names_len: 24,
            tags_per_metric: (2, 2),
            tag_len: 12,
            weights: [90, 10, 0, 0, 0, 0],
            multivalue_prob: 0.0,
            sample_rate_prob: 0.0,
            packet_bytes,
            stream: None,
        };
        let stream_base = Shape {
            names_len: 30,
            tags_per_metric: (10, 10),
            weights: [1, 0, 0, 0, 0, 0],
            ..base.clone()
        };
        Some(match name {
            "counters-1k" => base,
            "mixed-100k" => Shape {
                contexts: 100_000,
                names_len: 30,
                tags_per_metric: (5, 15),
                weights: DOGSTATSD_MIX,
                sample_rate_prob: 0.05,
                multivalue_prob: 0.05,
                ..base
            },
            "mixed-1m" => Shape {
                contexts: 1_000_000,
                ..Shape::preset("mixed-100k", packet_bytes)?
            },
            "distributions" => Shape {
                contexts: 1000,
                weights: [10, 10, 80, 0, 0, 0],
                multivalue_prob: 0.5,
                ..base
            },
            "one-per-datagram" => Shape {
                packet_bytes: 0,
                ..base
            },
            // The shape of `Stream::line`: 10 tags, 30-byte names, counters of 1.
            "new-contexts" => Shape {
                stream: Some(Stream::NewContexts),
                ..stream_base
            },
            "churn" => Shape {
                contexts: 1_000_000,
                stream: Some(Stream::Churn {
                    share: 0.1,
                    window_secs: 10.0,
                }),
                ..stream_base
            },
            _ => return None,
        })
    }
}

pub const PRESETS: [&str; 7] = [
    "counters-1k",
    "mixed-100k",
    "mixed-1m",
    "distributions",
    "one-per-datagram",
    "new-contexts",
    "churn",
];

/// A workload made line by line while sending, for context sets too large to prebuild. Every
/// line is a counter of 1 (received == flushed is checkable) with 10 tags, one of them unique
/// to its context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stream {
    /// Every line a context not sent before in this run.
    NewContexts,
    /// `Shape::contexts` live at a time; every `window_secs` the oldest `share` of them are
    /// replaced by new ones (the window `w` sends contexts `w * replaced .. w * replaced + live`).
    Churn { share: f64, window_secs: f64 },
}

/// Fixed-width fields keep every line the same length, so packets hold a fixed count.
const NAMES: u64 = 1000;

/// The line of `Stream::line` with its two numbers zeroed: 25 + 5 bytes of name, then ten tags,
/// the unique one last.
const LINE: &[u8] = b"checkout.request.latency.00000:1|c|#env:production,region:eu-west-1,\
az:eu-west-1a,service:checkout-api,version:1.24.3-build.512,pod:checkout-api-7d9f8b6c5-xk2lp,\
team:payments,tier:backend,cluster:prod-eu-1,request:000000000000";
/// Where the name's 5 digits start.
const NAME_DIGITS: usize = 25;

impl Stream {
    /// Appends the line of context `ctx`: the template with its digits written in place (a
    /// formatted line cost the one generator core a third of its sending rate).
    pub fn line(ctx: u64, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(LINE);
        let line = &mut out[at..];
        put_digits(&mut line[NAME_DIGITS..NAME_DIGITS + 5], ctx % NAMES);
        let end = line.len();
        put_digits(&mut line[end - 12..], ctx);
    }
}

/// Writes `n` in decimal into `out`, right-aligned and zero-padded (its high digits cut if it
/// does not fit).
fn put_digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Makes the packets of a `Stream` for one of `threads` sender threads.
pub struct Generator {
    stream: Stream,
    live: u64,
    lines_per_packet: u64,
    thread: u64,
    threads: u64,
    /// Lines this thread made so far.
    seq: u64,
}

impl Generator {
    pub fn new(shape: &Shape, stream: Stream, thread: usize, threads: usize) -> Generator {
        let mut one = Vec::new();
        Stream::line(0, &mut one);
        let lines_per_packet = (shape.packet_bytes + 1) / (one.len() + 1);
        Generator {
            stream,
            live: shape.contexts.max(1) as u64,
            lines_per_packet: lines_per_packet.max(1) as u64,
            thread: thread as u64,
            threads: threads.max(1) as u64,
            seq: 0,
        }
    }

    /// Contexts replaced per window (churn), else 0.
    pub fn replaced_per_window(&self) -> u64 {
        match self.stream {
            Stream::Churn { share, .. } => (self.live as f64 * share).ceil() as u64,
            Stream::NewContexts => 0,
        }
    }

    /// Refills `p` with the next packet, `elapsed_secs` into the run.
    pub fn fill(&mut self, elapsed_secs: f64, p: &mut Packet) {
        p.bytes.clear();
        p.counts = Counts::default();
        for _ in 0..self.lines_per_packet {
            let n = self.seq * self.threads + self.thread;
            let ctx = match self.stream {
                Stream::NewContexts => n,
                Stream::Churn { window_secs, .. } => {
                    let window = (elapsed_secs / window_secs.max(1e-3)) as u64;
                    // 7919 is prime: the walk visits every live context in turn.
                    window * self.replaced_per_window() + n.wrapping_mul(7919) % self.live
                }
            };
            self.seq += 1;
            if !p.bytes.is_empty() {
                p.bytes.push(b'\n');
            }
            Stream::line(ctx, &mut p.bytes);
            p.counts.metrics += 1;
            p.counts.samples[0] += 1;
        }
        p.counts.packets = 1;
        p.counts.bytes = p.bytes.len() as u64;
    }
}

/// Totals of a set of packets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
    /// Metric lines.
    pub metrics: u64,
    /// Values, per type (`TYPES` order).
    pub samples: [u64; 6],
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.metrics += o.metrics;
        for (a, b) in self.samples.iter_mut().zip(o.samples) {
            *a += b;
        }
    }

    pub fn total_samples(&self) -> u64 {
        self.samples.iter().sum()
    }
}

/// One prebuilt packet and what it holds.
#[derive(Debug)]
pub struct Packet {
    pub bytes: Vec<u8>,
    pub counts: Counts,
}

/// A small fast generator (xorshift64*), seeded so runs repeat.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// One context: its name, tags and type, fixed for the run.
struct Context {
    name: String,
    tags: String,
    kind: usize,
}

fn word(rng: &mut Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn context(shape: &Shape, i: usize, rng: &mut Rng) -> Context {
    let total: u32 = shape.weights.iter().sum();
    let mut pick = rng.below(u64::from(total.max(1))) as u32;
    let kind = shape
        .weights
        .iter()
        .position(|&w| {
            if pick < w {
                true
            } else {
                pick -= w;
                false
            }
        })
        .unwrap_or(0);
    // `bench.` + a distinct index, padded with a random tail to the requested length.
    let head = format!("bench.m{i}.");
    let name = format!(
        "{head}{}",
        word(rng, shape.names_len.saturating_sub(head.len()).max(1))
    );
    let (lo, hi) = shape.tags_per_metric;
    let n = lo + rng.below((hi - lo + 1) as u64) as usize;
    // Tag values repeat as real ones do (env, region, service, version, pod): key `k{t}` draws
    // from 10, 100, 1000 or 10000 values, in turn; a context is made unique by its name.
    let tags: Vec<String> = (0..n)
        .map(|t| {
            let pool = 10u64.pow(1 + (t % 4) as u32);
            let v = format!("k{t}:v{}", rng.below(pool));
            let pad = shape.tag_len.saturating_sub(v.len());
            format!("{v}{}", "x".repeat(pad))
        })
        .collect();
    Context {
        name,
        tags: tags.join(","),
        kind,
    }
}

/// Appends one line for `ctx` to `out` (no newline) and returns its samples.
fn line(ctx: &Context, shape: &Shape, rng: &mut Rng, out: &mut String) -> u64 {
    use std::fmt::Write;
    let t = TYPES[ctx.kind];
    let values = if t != "s" && rng.chance(shape.multivalue_prob) {
        2 + rng.below(7)
    } else {
        1
    };
    out.push_str(&ctx.name);
    for _ in 0..values {
        match t {
            "c" => out.push_str(":1"),
            "s" => {
                let _ = write!(out, ":user{}", rng.below(1000));
            }
            _ => {
                let _ = write!(out, ":{}", rng.below(100_000) as f64 / 100.0);
            }
        }
    }
    out.push('|');
    out.push_str(t);
    if rng.chance(shape.sample_rate_prob) {
        out.push_str("|@0.5");
    }
    if !ctx.tags.is_empty() {
        out.push_str("|#");
        out.push_str(&ctx.tags);
    }
    values
}

/// Builds packets covering every context at least once, in a seeded random order, until about
/// `max_bytes` are built (at least one pass over the contexts). `thread` varies the seed.
pub fn build(shape: &Shape, seed: u64, thread: usize, max_bytes: usize) -> Vec<Packet> {
    let mut rng = Rng::new(seed);
    // Contexts are the same for every thread (same seed), lines and order differ.
    let contexts: Vec<Context> = (0..shape.contexts)
        .map(|i| context(shape, i, &mut rng))
        .collect();
    let mut rng = Rng::new(seed ^ (thread as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut packets = Vec::new();
    let mut built = 0usize;
    let mut current = String::new();
    let mut counts = Counts::default();
    let mut i = rng.below(shape.contexts as u64) as usize;
    let mut lines = 0usize;
    let flush = |current: &mut String, counts: &mut Counts, packets: &mut Vec<Packet>| {
        if current.is_empty() {
            return 0;
        }
        counts.packets = 1;
        counts.bytes = current.len() as u64;
        let n = current.len();
        packets.push(Packet {
            bytes: std::mem::take(current).into_bytes(),
            counts: std::mem::take(counts),
        });
        n
    };
    while lines < shape.contexts || built < max_bytes {
        // 7919 is prime: the walk visits every context unless their count is a multiple of it.
        i = (i + 7919) % shape.contexts;
        let ctx = &contexts[i];
        let mut one = String::new();
        let samples = line(ctx, shape, &mut rng, &mut one);
        let fits = current.len() + 1 + one.len() <= shape.packet_bytes;
        if !current.is_empty() && !fits {
            built += flush(&mut current, &mut counts, &mut packets);
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&one);
        counts.metrics += 1;
        counts.samples[ctx.kind] += samples;
        lines += 1;
        if shape.packet_bytes == 0 {
            built += flush(&mut current, &mut counts, &mut packets);
        }
    }
    flush(&mut current, &mut counts, &mut packets);
    packets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_hold_what_their_counts_say() {
        let shape = Shape::preset("mixed-100k", 1432).unwrap();
        let shape = Shape {
            contexts: 500,
            ..shape
        };
        let packets = build(&shape, 7, 0, 0);
        let mut total = Counts::default();
        for p in &packets {
            assert!(p.bytes.len() <= 1432);
            let text = std::str::from_utf8(&p.bytes).unwrap();
            let lines: Vec<&str> = text.split('\n').collect();
            assert_eq!(lines.len() as u64, p.counts.metrics);
            let values: u64 = lines
                .iter()
                .map(|l| l.split('|').next().unwrap().split(':').count() as u64 - 1)
                .sum();
            assert_eq!(values, p.counts.total_samples(), "{text}");
            total.add(&p.counts);
        }
        assert!(total.metrics >= 500);
        assert_eq!(total.packets, packets.len() as u64);
    }

    #[test]
    fn every_context_is_used_and_runs_repeat() {
        let shape = Shape {
            contexts: 1000,
            ..Shape::preset("counters-1k", 1432).unwrap()
        };
        let packets = build(&shape, 1, 0, 0);
        let names: std::collections::HashSet<&str> = packets
            .iter()
            .flat_map(|p| std::str::from_utf8(&p.bytes).unwrap().split('\n'))
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert_eq!(names.len(), 1000);
        let again = build(&shape, 1, 0, 0);
        assert_eq!(again[0].bytes, packets[0].bytes);
        let one = build(&Shape::preset("one-per-datagram", 1432).unwrap(), 1, 0, 0);
        assert!(one.iter().all(|p| p.counts.metrics == 1));
    }

    fn contexts_of(p: &Packet) -> Vec<String> {
        let text = std::str::from_utf8(&p.bytes).unwrap();
        assert_eq!(text.split('\n').count() as u64, p.counts.metrics);
        text.split('\n')
            .map(|l| {
                assert_eq!(l.matches(',').count(), 9, "ten tags: {l}");
                l.rsplit_once("request:").unwrap().1.to_owned()
            })
            .collect()
    }

    #[test]
    fn a_stream_line_is_its_template_with_its_numbers() {
        let mut out = b"x\n".to_vec();
        Stream::line(1_234_567, &mut out);
        let line = std::str::from_utf8(&out[2..]).unwrap();
        assert!(line.starts_with("checkout.request.latency.00567:1|c|#env:production,"));
        assert!(
            line.ends_with(",cluster:prod-eu-1,request:000001234567"),
            "{line}"
        );
    }

    #[test]
    fn new_contexts_never_repeat_across_threads() {
        let shape = Shape::preset("new-contexts", 1432).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut p = Packet {
            bytes: Vec::new(),
            counts: Counts::default(),
        };
        for t in 0..2 {
            let mut g = Generator::new(&shape, Stream::NewContexts, t, 2);
            for _ in 0..100 {
                g.fill(0.0, &mut p);
                assert!(p.bytes.len() <= 1432 && p.counts.metrics >= 5);
                for c in contexts_of(&p) {
                    assert!(seen.insert(c), "a context sent twice");
                }
            }
        }
    }

    #[test]
    fn churn_replaces_its_share_of_the_live_contexts_each_window() {
        let shape = Shape {
            contexts: 1000,
            ..Shape::preset("churn", 1432).unwrap()
        };
        let stream = shape.stream.unwrap();
        let mut g = Generator::new(&shape, stream, 0, 1);
        assert_eq!(g.replaced_per_window(), 100);
        let mut p = Packet {
            bytes: Vec::new(),
            counts: Counts::default(),
        };
        let mut window = |g: &mut Generator, at: f64| {
            let mut set = std::collections::BTreeSet::new();
            while set.len() < 1000 {
                g.fill(at, &mut p);
                set.extend(
                    contexts_of(&p)
                        .into_iter()
                        .map(|c| c.parse::<u64>().unwrap()),
                );
            }
            set
        };
        let first = window(&mut g, 0.0);
        let third = window(&mut g, 25.0);
        assert_eq!(first, (0..1000).collect());
        assert_eq!(third, (200..1200).collect());
    }
}
