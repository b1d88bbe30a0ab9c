//! What every fuzz target checks, shared with `tests/fuzz_corpus.rs` (which replays the
//! committed corpus on stable): not only "no panic", but the invariants each stage owes its
//! input. Uses `corestatsd::bench_api`, the config entry points (`parse_args`,
//! `Config::from_flags`) and the load generator's capture reader (`blast/src/replay.rs`).

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use corestatsd::bench_api::{
    AggregateConfig, Aggregator, Contexts, Counters, FrameError, Framer, Framing, HistogramOutput,
    JsonlSink, Limits, Mapper, Merger, ProfileSpec, Sink, Suffix, View, check, ingest,
};

#[path = "../blast/src/replay.rs"]
mod replay;
#[path = "../blast/src/workload.rs"]
mod workload;

const T0: u64 = 1_700_000_000;

fn aggregator(owners: usize) -> Aggregator {
    Aggregator::new(
        AggregateConfig {
            bucket_secs: 10,
            exact_samples: 16,
            set_exact_members: 64,
            counter_zero_fill_secs: 30,
            context_expiry_secs: 20,
            default_host: Some(b"fuzz".to_vec()),
            owners,
            max_pending_events: 64,
            origin_precedence: Default::default(),
            names: Default::default(),
            max_contexts: Some(4096),
            max_contexts_per_metric: Some(256),
            context_stats: true,
            gauge_deltas: owners > 1,
        },
        T0,
    )
}

/// The non-empty lines of a packet, counted independently of the parser's own splitter.
fn lines_of(data: &[u8]) -> u64 {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .count() as u64
}

thread_local! {
    /// One aggregator for many inputs (making one per input was most of an execution), with
    /// the inputs it has seen; a fresh one every `REUSE` inputs bounds what it holds.
    static REUSED: std::cell::RefCell<(Aggregator, u32)> = std::cell::RefCell::new((aggregator(1), 0));
}
const REUSE: u32 = 10_000;

/// The datagram parser (metrics, events, service checks) through `ingest`: every line is
/// counted as accepted or rejected, exactly once.
pub fn datagram(data: &[u8]) {
    REUSED.with_borrow_mut(|(agg, seen)| {
        *seen += 1;
        if *seen == REUSE {
            *agg = aggregator(1);
            *seen = 0;
        }
        let mut c = Counters::default();
        ingest(agg, &mut c, [data], 0);
        assert_eq!(
            c.accounted_lines(),
            lines_of(data),
            "every line accounted for once"
        );
        // Events and checks wait for a flush: take them, as a flush would.
        let _ = agg.take_pending();
    });
}

/// The stream framers, fed in chunks whose size the first byte picks: what they cut is the
/// input itself (length frames: each frame's bytes; lines: contiguous slices, in order), no
/// packet passes the limit, and an error ends the stream.
pub fn framer(data: &[u8]) {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let framing = if knobs & 1 == 0 {
        Framing::Length
    } else {
        Framing::Newline
    };
    let chunk = usize::from(knobs >> 1).max(1);
    let max = 64;
    let mut f = Framer::new(framing, max);
    let mut fed = 0;
    let mut got: Vec<u8> = Vec::new();
    let mut ranges = Vec::new();
    let mut error = None;
    while fed < input.len() && error.is_none() {
        let spare = f.spare();
        assert!(!spare.is_empty(), "the framer always has room");
        let n = spare.len().min(chunk).min(input.len() - fed);
        spare[..n].copy_from_slice(&input[fed..fed + n]);
        f.filled(n);
        fed += n;
        ranges.clear();
        let r = f.packets(&mut ranges);
        for range in &ranges {
            let p = f.get(range.clone());
            if framing == Framing::Length {
                assert!(p.len() <= max, "a frame over the limit was cut");
                got.extend_from_slice(&(p.len() as u32).to_le_bytes());
            }
            got.extend_from_slice(p);
        }
        error = r.err();
    }
    if error.is_none() && fed == input.len() {
        match f.finish() {
            Ok(Some(rest)) => got.extend_from_slice(f.get(rest)),
            Ok(None) => {}
            Err(e) => error = Some(e),
        }
    }
    assert!(
        input.starts_with(&got),
        "what was cut is the input, in order"
    );
    if error.is_none() {
        assert_eq!(got.len(), input.len(), "a clean stream is cut whole");
    } else if framing == Framing::Newline {
        assert_ne!(error, Some(FrameError::PartialFrame));
    }
}

struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Two shards, their owners' mergers and the sink's context table, kept across inputs like the
/// datagram target's aggregator (a fresh set every `REUSE` inputs).
struct Path {
    aggs: [Aggregator; 2],
    mergers: [Merger; 2],
    table: Contexts,
    seen: u32,
}

impl Path {
    fn new() -> Path {
        let output = HistogramOutput {
            aggregates: vec![Suffix::Max, Suffix::Median, Suffix::Count],
            percentiles: vec![(95, 0.95)],
        };
        Path {
            aggs: [aggregator(2), aggregator(2)],
            mergers: [
                Merger::new(2, 10, Limits::histogram(16), output.clone()),
                Merger::new(2, 10, Limits::histogram(16), output),
            ],
            table: Contexts::default(),
            seen: 0,
        }
    }
}

thread_local! {
    static PATH: std::cell::RefCell<Path> = std::cell::RefCell::new(Path::new());
}

/// Bytes through the whole path: two shards ingest the packet's halves, each window closes,
/// the owners merge, and the jsonl encoder writes every point, event and check: each line it
/// writes decodes back as one JSON object whose numbers are finite.
pub fn pipeline(data: &[u8]) {
    let half = data.len() / 2;
    let cut = data[half..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(data.len(), |i| half + i);
    let parts = [&data[..cut], &data[cut..]];
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut sink = JsonlSink::new(Box::new(Shared(out.clone())));
    PATH.with_borrow_mut(|p| {
        p.seen += 1;
        if p.seen == REUSE {
            *p = Path::new();
        }
        let mut c = Counters::default();
        for (agg, part) in p.aggs.iter_mut().zip(parts) {
            ingest(agg, &mut c, [part], 0);
            if let Some(news) = agg.take_news(0) {
                p.table.learn(&news);
            }
        }
        for agg in p.aggs.iter_mut() {
            agg.begin_close();
            let closed = loop {
                if let Some(w) = agg.close_step(7) {
                    break w;
                }
            };
            for (owner, batch) in closed.batches.into_iter().enumerate() {
                if let Some(mut merged) = p.mergers[owner].add(batch) {
                    p.table.resolve(&mut merged);
                    sink.write(View::new(&merged, &p.table)).unwrap();
                    p.table.forget(&merged.freed);
                }
            }
            let pending = agg.take_pending();
            sink.write(View::new(&pending, &p.table)).unwrap();
        }
    });
    sink.flush().unwrap();
    let text = out.lock().unwrap().clone();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
        assert!(v.is_object());
        if let Some(x) = v.get("value") {
            assert!(x.as_f64().is_some_and(f64::is_finite), "{v}");
        }
    }
}

/// The mapper compiler on a YAML profile list: a profile set is refused or compiled, within
/// the DFA's size limit, and a compiled one maps any name without panicking.
pub fn mapper(data: &[u8]) {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (yaml, name) = (&data[..split], &data[split + 1..]);
    let Ok(specs) = serde_norway::from_slice::<Vec<ProfileSpec>>(yaml) else {
        return;
    };
    let Ok(checked) = check(&specs) else { return };
    if let Ok(m) = Mapper::new(&checked) {
        let mut scratch = m.scratch();
        let _ = m.map(&mut scratch, name);
    }
}

thread_local! {
    /// The two files the config target writes each input into (in memory where the machine
    /// has /dev/shm).
    static CONFIG_FILES: (std::path::PathBuf, std::path::PathBuf) = {
        let root = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = root.join(format!("corestatsd-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        (dir.join("datadog.yaml"), dir.join("mapping.yaml"))
    };
}

/// The config compiler, as start-up runs it: a `--config` file (the Agent's keys, mapper
/// profiles) and a `--mapping-config` file (statsd_exporter's rules), split by a NUL, then a
/// line to send through what they compiled. Either start-up refuses them with a message that
/// names the flag or file at fault, or the compiled name stage accounts for the line like any
/// other. True when start-up compiled them.
pub fn config(data: &[u8]) -> bool {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(agent), Some(mapping)) = (parts.next(), parts.next()) else {
        return false;
    };
    let line = parts.next().unwrap_or(b"a.b.c:1|c");
    let (agent_path, mapping_path) = CONFIG_FILES.with(|f| f.clone());
    std::fs::write(&agent_path, agent).unwrap();
    std::fs::write(&mapping_path, mapping).unwrap();
    let args: Vec<std::ffi::OsString> = [
        "corestatsd",
        "--cores",
        "0",
        "--hostname",
        "fuzz",
        "--no-http",
        "--config",
        agent_path.to_str().unwrap(),
        "--mapping-config",
        mapping_path.to_str().unwrap(),
    ]
    .iter()
    .map(Into::into)
    .collect();
    let config = match corestatsd::parse_args(args) {
        Ok(flags) => corestatsd::Config::from_flags(flags),
        Err(corestatsd::FlagsError::Setting(e)) => Err(e),
        Err(corestatsd::FlagsError::Clap(e)) => Err(e.to_string()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            assert!(
                e.contains("--config") || e.contains("--mapping-config") || e.contains("DD_"),
                "an error that names no flag or file: {e}"
            );
            return false;
        }
    };
    let mut cfg = config.aggregate;
    cfg.owners = 1;
    let mut agg = Aggregator::new(cfg, T0);
    let mut c = Counters::default();
    ingest(&mut agg, &mut c, [line], 0);
    assert_eq!(
        c.accounted_lines(),
        lines_of(line),
        "every line accounted for once"
    );
    let _ = agg.take_pending();
    true
}

/// The capture-file reader of `corestatsd-blast --replay`: a file is refused with the offset
/// (or the zstd failure) at fault, or read; what it read, written again as a version 3 file,
/// reads back the same. True when it was read.
pub fn capture(data: &[u8]) -> bool {
    let records = match replay::parse(data) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                e.starts_with("offset ") || e.contains("zstd") || e.starts_with("decompresses"),
                "{e}"
            );
            return false;
        }
    };
    let mut file = corestatsd::bench_api::CAPTURE_HEADER.to_vec();
    for r in &records {
        let mut m = Vec::new();
        let ns = r.at_ns.min(i64::MAX as u64);
        for (key, v) in [(0x08u8, ns), (0x10, r.packet.bytes.len() as u64)] {
            m.push(key);
            varint(&mut m, v);
        }
        m.push(0x1A);
        varint(&mut m, r.packet.bytes.len() as u64);
        m.extend_from_slice(&r.packet.bytes);
        file.extend((m.len() as u32).to_le_bytes());
        file.extend(m);
    }
    file.extend([0; 8]);
    let again = replay::parse(&file).unwrap_or_else(|e| panic!("written back, refused: {e}"));
    assert_eq!(again.len(), records.len());
    for (a, b) in records.iter().zip(&again) {
        assert_eq!(a.packet.bytes, b.packet.bytes);
        assert_eq!(a.at_ns.min(i64::MAX as u64), b.at_ns);
        assert!(a.packet.counts.metrics <= lines_of(&a.packet.bytes));
    }
    true
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
