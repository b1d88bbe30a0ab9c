//! corestatsd-blast: a DogStatsD load generator for benchmarks. Builds a seeded workload in
//! memory, sends it from pinned threads over UDP, unix datagram, unix stream or TCP, flat out or
//! at a rate, for a fixed time, then prints exactly what it sent as one JSON object.
//!
//! `corestatsd-blast --target 127.0.0.1:8125 --preset mixed-100k --cores 1 --duration-secs 10`
//!
//! `--replay FILE` sends a traffic capture (`corestatsd capture`, the Agent's
//! `dogstatsd-capture`) instead, at its recorded pace (`replay.rs`).

mod replay;
mod send;
mod workload;

use std::time::{Duration, Instant};

use clap::Parser;
use send::{Pace, Source, Target};
use workload::{Counts, Generator, PRESETS, Shape, TYPES};

#[derive(Parser, Debug)]
#[command(name = "corestatsd-blast", version)]
struct Flags {
    /// Where to send: `HOST:PORT` or `udp:HOST:PORT`, `uds:PATH`, `uds-stream:PATH`,
    /// `tcp:HOST:PORT` (stream transports use 4-byte length frames: give corestatsd
    /// `--tcp-framing length`). Loopback only.
    #[arg(long)]
    target: String,

    /// A named workload: counters-1k, mixed-100k, mixed-1m, distributions, one-per-datagram;
    /// or one made while sending: new-contexts (every line a context not sent before) and churn
    /// (--contexts live, default 1M, --churn-share of them replaced every --churn-window-secs),
    /// both counters of 1 with 10 tags, one unique per context, and 30-byte names. The shape
    /// flags below override a prebuilt preset's fields. Without one: 1000 contexts, 2 tags, the
    /// type mix Datadog reports from production (c 208, g 66, d 72, s 9, h 1).
    #[arg(long)]
    preset: Option<String>,

    /// Contexts of the workload (churn: live at a time).
    #[arg(long)]
    contexts: Option<usize>,
    /// churn: the share of the live contexts replaced every window (0: the same contexts
    /// throughout). Default 0.1.
    #[arg(long)]
    churn_share: Option<f64>,
    /// churn: how often contexts are replaced, in seconds. Default 10 (the server's window).
    #[arg(long)]
    churn_window_secs: Option<f64>,
    /// Length of metric names.
    #[arg(long)]
    names_len: Option<usize>,
    /// Tags per metric: `N` or `MIN-MAX`.
    #[arg(long)]
    tags_per_metric: Option<String>,
    #[arg(long)]
    tag_len: Option<usize>,
    /// Type weights, e.g. `c=40,g=20,d=30,s=5,h=5,ms=0`.
    #[arg(long)]
    weights: Option<String>,
    #[arg(long)]
    multivalue_prob: Option<f64>,
    #[arg(long)]
    sample_rate_prob: Option<f64>,
    /// Lines per packet are packed up to this size. Defaults to 1432 for UDP, 8192 otherwise;
    /// one-per-datagram sends one line per packet.
    #[arg(long)]
    packet_bytes: Option<usize>,

    /// Total metric lines per second over all threads; default flat out.
    #[arg(long, conflicts_with = "bytes_per_sec")]
    metrics_per_sec: Option<f64>,
    #[arg(long)]
    bytes_per_sec: Option<f64>,
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Sender threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPUs to pin the threads to, round-robin (`1`, `2-5`, `1,3`). Defaults to no pinning.
    #[arg(long)]
    cores: Option<String>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Prebuilt packet bytes per thread at most (at least one pass over the contexts).
    #[arg(long, default_value_t = 64 << 20)]
    max_prebuilt_bytes: usize,

    /// Send the packets of a traffic capture instead of a workload: a `.dog` file of the
    /// Datadog Agent's `dogstatsd-capture` or `corestatsd capture` (versions 2 and 3, plain or
    /// zstd), in order, from one thread, at the recorded pace times --replay-speed.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["preset", "metrics_per_sec", "bytes_per_sec"])]
    replay: Option<String>,
    /// With --replay: 1 is the recorded pace, 2 twice as fast, 0 flat out.
    #[arg(long, default_value_t = 1.0)]
    replay_speed: f64,
    /// With --replay: start over at the end until --duration-secs have passed (without it the
    /// capture is sent once, however long that takes).
    #[arg(long = "loop")]
    looping: bool,
}

fn parse_cores(s: &str) -> Result<Vec<usize>, String> {
    let bad = |p: &str| format!("--cores: {p:?} is not a CPU or a range");
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.parse().map_err(|_| bad(part))?,
                    b.parse().map_err(|_| bad(part))?,
                );
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad(part))?),
        }
    }
    Ok(out)
}

fn shape(f: &Flags, target: &Target) -> Result<Shape, String> {
    let packet_bytes = f.packet_bytes.unwrap_or(match target {
        Target::Udp(_) => 1432,
        _ => 8192,
    });
    let mut s = match &f.preset {
        Some(p) => Shape::preset(p, packet_bytes)
            .ok_or_else(|| format!("--preset {p:?} is not one of {}", PRESETS.join(", ")))?,
        None => Shape::custom(packet_bytes),
    };
    if f.packet_bytes.is_some() {
        s.packet_bytes = packet_bytes;
    }
    s.contexts = f.contexts.unwrap_or(s.contexts).max(1);
    s.names_len = f.names_len.unwrap_or(s.names_len);
    s.tag_len = f.tag_len.unwrap_or(s.tag_len);
    s.multivalue_prob = f.multivalue_prob.unwrap_or(s.multivalue_prob);
    s.sample_rate_prob = f.sample_rate_prob.unwrap_or(s.sample_rate_prob);
    if let Some(workload::Stream::Churn { share, window_secs }) = &mut s.stream {
        *share = f.churn_share.unwrap_or(*share);
        *window_secs = f.churn_window_secs.unwrap_or(*window_secs);
        let valid = (0.0..=1.0).contains(share) && *window_secs > 0.0;
        if !valid {
            return Err("--churn-share must be in [0, 1] and --churn-window-secs above 0".into());
        }
    }
    if let Some(t) = &f.tags_per_metric {
        let bad = || format!("--tags-per-metric {t:?} is not N or MIN-MAX");
        s.tags_per_metric = match t.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let n = t.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if s.tags_per_metric.0 > s.tags_per_metric.1 {
            return Err(bad());
        }
    }
    if let Some(w) = &f.weights {
        s.weights = [0; 6];
        for item in w.split(',') {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("--weights: {item:?} is not TYPE=N"))?;
            let i = TYPES
                .iter()
                .position(|t| *t == k)
                .ok_or_else(|| format!("--weights: {k:?} is not one of {}", TYPES.join(", ")))?;
            s.weights[i] = v
                .parse()
                .map_err(|_| format!("--weights: {v:?} is not a number"))?;
        }
        if s.weights.iter().all(|&w| w == 0) {
            return Err("--weights: every weight is 0".into());
        }
    }
    Ok(s)
}

fn main() {
    let f = Flags::parse();
    if let Err(e) = run(&f) {
        eprintln!("corestatsd-blast: {e}");
        std::process::exit(2);
    }
}

/// `"c":N,"g":N,...`: the samples of each type, for the JSON totals.
fn samples_by_type(total: &Counts) -> String {
    let by_type: Vec<String> = TYPES
        .iter()
        .zip(total.samples)
        .map(|(t, n)| format!("\"{t}\":{n}"))
        .collect();
    by_type.join(",")
}

/// `--replay`: one pass (or loops) over a capture, then the same JSON totals.
fn run_replay(f: &Flags, file: &str) -> Result<(), String> {
    let target = Target::parse(&f.target)?;
    if !(f.replay_speed >= 0.0 && f.replay_speed.is_finite()) {
        return Err(format!(
            "--replay-speed {}: a number from 0 up",
            f.replay_speed
        ));
    }
    let recorded = replay::read(file)?;
    if let Some(core) = f
        .cores
        .as_deref()
        .map(parse_cores)
        .transpose()?
        .and_then(|c| c.first().copied())
    {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
    let started = Instant::now();
    let run_for = Duration::from_secs_f64(f.duration_secs);
    let sent = send::replay(&target, &recorded, f.replay_speed, f.looping, run_for)?;
    let total = sent.counts;
    let by_type = samples_by_type(&total);
    println!(
        "{{\"replay\":{file:?},\"transport\":\"{}\",\"recorded_packets\":{},\"seconds\":{:.3},\
         \"packets\":{},\"bytes\":{},\"metrics\":{},\"samples\":{},\"samples_by_type\":{{{}}},\
         \"send_errors\":{}}}",
        target.name(),
        recorded.len(),
        started.elapsed().as_secs_f64(),
        total.packets,
        total.bytes,
        total.metrics,
        total.total_samples(),
        by_type,
        sent.errors
    );
    Ok(())
}

fn run(f: &Flags) -> Result<(), String> {
    if let Some(file) = &f.replay {
        return run_replay(f, file);
    }
    let target = Target::parse(&f.target)?;
    let shape = shape(f, &target)?;
    let cores = f.cores.as_deref().map(parse_cores).transpose()?;
    let threads = f.threads.max(1);
    let pace = match (f.metrics_per_sec, f.bytes_per_sec) {
        (Some(r), _) => Pace::MetricsPerSec(r / threads as f64),
        (_, Some(r)) => Pace::BytesPerSec(r / threads as f64),
        _ => Pace::FlatOut,
    };
    let run_for = Duration::from_secs_f64(f.duration_secs);
    let built = Instant::now();
    // Build every thread's packets first, so all threads start sending together.
    let packets: Vec<Vec<workload::Packet>> = match shape.stream {
        Some(_) => (0..threads).map(|_| Vec::new()).collect(),
        None => std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let shape = &shape;
                    s.spawn(move || workload::build(shape, f.seed, t, f.max_prebuilt_bytes))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("build thread"))
                .collect()
        }),
    };
    let build_secs = built.elapsed().as_secs_f64();
    let mut replaced_per_window = 0;
    let sources: Vec<Source<'_>> = packets
        .iter()
        .enumerate()
        .map(|(t, p)| match shape.stream {
            Some(stream) => {
                let g = Generator::new(&shape, stream, t, threads);
                replaced_per_window = g.replaced_per_window();
                Source::Made(g)
            }
            None => Source::Prebuilt(p),
        })
        .collect();
    let started = Instant::now();
    let results: Vec<Result<send::Sent, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .into_iter()
            .enumerate()
            .map(|(t, source)| {
                let target = &target;
                let core = cores.as_ref().map(|c| c[t % c.len()]);
                s.spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    }
                    send::send(target, source, run_for, pace)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("send thread"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut total = Counts::default();
    let mut errors = 0;
    for r in results {
        let r = r?;
        total.add(&r.counts);
        errors += r.errors;
    }
    let by_type = samples_by_type(&total);
    println!(
        "{{\"preset\":\"{}\",\"transport\":\"{}\",\"threads\":{threads},\"contexts\":{},\"seconds\":{seconds:.3},\
         \"build_seconds\":{build_secs:.3},\"packets\":{},\"bytes\":{},\"metrics\":{},\"samples\":{},\
         \"samples_by_type\":{{{}}},\"send_errors\":{errors},\"replaced_per_window\":{replaced_per_window}}}",
        f.preset.as_deref().unwrap_or("custom"),
        target.name(),
        match shape.stream {
            // Every line its own context.
            Some(workload::Stream::NewContexts) => total.metrics,
            _ => shape.contexts as u64,
        },
        total.packets,
        total.bytes,
        total.metrics,
        total.total_samples(),
        by_type
    );
    Ok(())
}
