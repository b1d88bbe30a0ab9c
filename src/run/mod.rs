//! Start-up and shutdown around the shards: checks, sockets, the sink thread, the HTTP
//! endpoint, signals.
//!
//! Everything that can fail because of a flag or the machine fails here, before any shard starts,
//! with an error that names the flag or address.

mod bind;
mod control;
mod open_sink;
mod signals;

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use bind::{Bound, bind_all};
use open_sink::open_sink;
use signals::{RELOAD, install_signal_handlers, reload_shards};

use crate::config::Config;
use crate::listen::activation;
use crate::listen::capture::Capture;
use crate::memory;
use crate::operator;
use crate::shard;
use crate::sink;
use crate::sink::handover::{Handover, HandoverSink};
use crate::telemetry::TelemetryConfig;
use crate::telemetry::board::Board;

/// A start-up or run failure, worded for the operator.
#[derive(Debug)]
pub struct RunError {
    pub message: String,
    /// Exit status: 2 for bad flags or an unusable address, 1 for a failure while running.
    pub status: i32,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn usage(message: String) -> RunError {
    RunError { message, status: 2 }
}

/// Runs until SIGINT/SIGTERM, then drains, flushes every window and returns.
///
/// Everything a flag or the machine can make fail is checked before a socket is bound (the
/// downstream, its API key and spill directory included); the start-up line, with every bound
/// address, is printed once every shard runs: tests and scripts wait for it.
pub fn run(cfg: Config) -> Result<(), RunError> {
    check_io_uring()?;
    if !cfg.ignored_config_keys.is_empty() {
        eprintln!(
            "corestatsd: --config: ignoring keys corestatsd does not use: {}{}",
            cfg.ignored_config_keys.join(", "),
            if cfg.ignored_config_keys.iter().any(|k| k == "mappings") {
                " (`mappings` is statsd_exporter's mapping file: give it as --mapping-config)"
            } else {
                ""
            }
        );
    }
    let names = &cfg.aggregate.names;
    if !names.mapping_not_honoured.is_empty() {
        eprintln!(
            "corestatsd: --mapping-config: read but not honoured (matching or exposition \
             corestatsd does not do): {}",
            names.mapping_not_honoured.join(", ")
        );
    }
    if names.exposition != Default::default()
        && !cfg.has_downstream(&crate::config::Downstream::PrometheusScrape)
    {
        eprintln!(
            "corestatsd: --mapping-config: its observer types, buckets, quantiles, ttl and help \
             shape --downstream prometheus-scrape only; unused with --downstream {}",
            cfg.downstream_names()
        );
    }
    if let Some(m) = &names.mapper {
        match m.engine_name() {
            "dense" => eprintln!(
                "corestatsd: mapper: {} rules in one DFA of {} KiB, cache {} names per shard",
                m.rule_count(),
                m.dfa_bytes() >> 10,
                names.cache_size
            ),
            _ => eprintln!(
                "corestatsd: mapper: {} rules in a lazy DFA (their dense DFA would pass {} MiB), \
                 at most {} KiB of DFA states and {} cached names per shard",
                m.rule_count(),
                crate::map::mapper::DENSE_LIMIT >> 20,
                m.dfa_bytes() >> 10,
                names.cache_size
            ),
        }
    }
    // First, while no other thread runs: it clears the activation variables.
    let mut passed = activation::take().map_err(|e| RunError {
        message: format!("cannot take the sockets systemd passed (LISTEN_FDS): {e}"),
        status: 1,
    })?;
    install_signal_handlers().map_err(|e| RunError {
        message: format!("cannot install signal handlers: {e}"),
        status: 1,
    })?;
    let helper_cpus = keep_helpers_off_ingest_cores(&cfg.cores);
    if !helper_cpus.is_empty() {
        eprintln!("corestatsd: sink and control threads on CPUs {helper_cpus:?}");
    }
    // Opened once this thread is off the ingest cores: a delivery thread started here inherits
    // that placement.
    let scrape = cfg
        .has_downstream(&crate::config::Downstream::PrometheusScrape)
        .then(|| Arc::new(sink::scrape::Published::default()));
    let mut sink = open_sink(&cfg, scrape.as_ref())?;
    let handover = Handover::default();
    let mut taken_over = None;
    let mut passed_http = None;
    let mut source = "systemd";
    if let Some(path) = &cfg.control_socket {
        if cfg.take_over {
            let taken = control::take_over(path).map_err(usage)?;
            passed.extend(taken.passed);
            passed_http = taken.http;
            taken_over = Some(taken.conn);
            shard::hold_receive();
            source = "the process taken over";
        } else if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(usage(format!(
                "--control-socket {}: another corestatsd serves it; start with --take-over to \
                 take its place",
                path.display()
            )));
        }
        sink = Box::new(HandoverSink::new(sink, handover.clone()));
    }
    // A socket systemd passed for the HTTP endpoint: on its address exactly (a port-0 match
    // is left to the DogStatsD listeners).
    if passed_http.is_none()
        && let crate::config::HttpListen::Given(a) | crate::config::HttpListen::Default(a) =
            cfg.http
        && let Some(i) = passed
            .iter()
            .position(|p| p.kind == activation::Kind::Tcp(a))
    {
        passed_http = Some(std::net::TcpListener::from(passed.remove(i).fd));
    }
    let Bound {
        sockets,
        listening,
        socket_files,
        listeners,
    } = bind_all(&cfg, &mut passed, source)?;
    let http = operator::bind(cfg.http, passed_http).map_err(usage)?;
    if http.is_none() && scrape.is_some() {
        return Err(usage(
            "--downstream prometheus-scrape needs the HTTP endpoint, and its default address is \
             taken: pass --http-addr"
                .into(),
        ));
    }
    // The control socket: served now, or once the take-over is done.
    let mut then_serve = None;
    if let Some(path) = &cfg.control_socket {
        let http_fd = match &http {
            Some(l) => Some(l.try_clone().map(OwnedFd::from).map_err(|e| RunError {
                message: format!("cannot keep the HTTP listener for a take-over: {e}"),
                status: 1,
            })?),
            None => None,
        };
        if taken_over.is_some() {
            then_serve = Some((path.clone(), listeners, http_fd, handover.clone()));
        } else {
            control::serve(path, listeners, http_fd, handover.clone())
                .map_err(|e| usage(format!("--control-socket {}: {e}", path.display())))?;
        }
    }
    let board = Arc::new(Board::new(cfg.cores.len()));
    let capture = Capture::new(cfg.cores.len());
    let endpoint = match http {
        Some(listener) => {
            let summary = operator::Summary {
                version: env!("CARGO_PKG_VERSION"),
                cores: cfg.cores.clone(),
                listening: listening.clone(),
                downstream: cfg.downstream_names(),
                window_secs: cfg.aggregate.bucket_secs,
                memory_limit_bytes: cfg.memory_limit.map(|(b, _)| b),
                transports: cfg.transports().iter().map(|t| t.name()).collect(),
            };
            let served = operator::Served {
                board: board.clone(),
                summary,
                capture: capture.clone(),
                capture_dir: cfg.capture_dir.clone(),
                scrape: scrape.clone(),
            };
            Some(operator::serve(listener, served).map_err(|e| RunError {
                message: format!("cannot start the HTTP endpoint: {e}"),
                status: 1,
            })?)
        }
        None => None,
    };
    let ready_line = format!(
        "corestatsd: {} shards on cores {:?}; listening {}; buffers {} x {} bytes per shard; \
         windows of {} s; downstream {}; {}; {}{}{}",
        cfg.cores.len(),
        cfg.cores,
        listening.join(", "),
        cfg.recv_batch_datagrams,
        cfg.buffer_size_bytes,
        cfg.aggregate.bucket_secs,
        cfg.downstream_names(),
        match &endpoint {
            Some(e) => format!("HTTP endpoint http://{}/", e.addr),
            None => "no HTTP endpoint".into(),
        },
        match cfg.memory_limit {
            Some((bytes, source)) => format!("memory limit {bytes} bytes ({source})"),
            None => "no memory limit".into(),
        },
        cfg.forward_addr
            .map(|a| format!("; forwarding raw packets to {a}"))
            .unwrap_or_default(),
        cfg.origin
            .as_ref()
            .map(|o| format!(
                "; origin detection on unix sockets ({}/<pid>/cgroup, cached {} s)",
                o.proc_root.display(),
                o.cache_ttl.as_secs()
            ))
            .unwrap_or_default(),
    );
    let telemetry = TelemetryConfig {
        shards: cfg.cores.len(),
        points: cfg.self_metrics,
        per_shard: cfg.self_metrics_per_shard,
        transports: cfg.transports(),
        host: cfg.aggregate.default_host.clone(),
        interval: cfg.aggregate.bucket_secs,
    };
    let posting = sink::Posting {
        board: board.clone(),
        downstream: cfg.downstream_names(),
        context_stats: cfg.aggregate.context_stats,
    };
    let (tx, sink_thread) = sink::spawn(sink, telemetry, cfg.sink_queue_max_points, Some(posting))
        .map_err(|e| RunError {
            message: format!("cannot start the sink thread: {e}"),
            status: 1,
        })?;
    let limit = std::cell::Cell::new(None);
    let (inject_senders, injected): (Vec<mpsc::Sender<Vec<u8>>>, Vec<_>) =
        cfg.cores.iter().map(|_| mpsc::channel()).unzip();
    let on_ready = || {
        board.set_ready();
        eprintln!("{ready_line}");
        if let Some(conn) = taken_over {
            // The old process' last windows go to the first shard, as if received there.
            if let Err(e) = control::after_ready(conn, inject_senders[0].clone(), then_serve) {
                // Reading beside a process that still writes its windows would write them twice.
                eprintln!(
                    "corestatsd: take-over failed ({e}); stopping, the old process serves on"
                );
                shard::request_stop();
            }
        }
        if let Some((bytes, _)) = cfg.memory_limit {
            // What the heap count cannot see (code, stacks, io_uring rings), once.
            let heap = memory::heap_bytes();
            let baseline = memory::resident_bytes()
                .unwrap_or(heap)
                .saturating_sub(heap);
            limit.set(Some(memory::Limit { bytes, baseline }));
        }
    };
    let mut level = memory::Pressure::Normal;
    let (reload_senders, reloads): (Vec<_>, Vec<_>) =
        cfg.cores.iter().map(|_| mpsc::channel()).unzip();
    let inputs = reloads
        .into_iter()
        .zip(injected)
        .map(|(reloads, injected)| shard::ShardInputs { reloads, injected })
        .collect();
    let on_tick = || {
        if RELOAD.swap(false, Ordering::Relaxed) {
            reload_shards(&cfg, &reload_senders, &board);
        }
        let Some(l) = limit.get() else { return };
        let now = l.update();
        if now != level {
            eprintln!(
                "corestatsd: memory {} of {} bytes: {}",
                l.used(),
                l.bytes,
                match now {
                    memory::Pressure::Normal => "back under 90 %; new contexts accepted again",
                    memory::Pressure::RefuseContexts =>
                        "over 90 %; new contexts go to overflow contexts",
                    memory::Pressure::Shed =>
                        "over 95 %; also dropping events and service checks, no exact histogram samples",
                }
            );
            level = now;
        }
    };
    let result = shard::run_shards(
        &cfg,
        (sockets, inputs),
        tx,
        (&board, &capture),
        on_ready,
        on_tick,
    );
    // After a take-over the socket files are the new process'.
    if !shard::handed_over() {
        for path in socket_files {
            let _ = std::fs::remove_file(path);
        }
    }
    let stats = sink_thread.join().unwrap_or_default();
    // Up until the last window is written: `/readyz` says "stopping" meanwhile.
    drop(endpoint);
    eprintln!(
        "corestatsd: stopped; {} points written, {} lost to sink errors",
        stats.written, stats.failed
    );
    result.map_err(|e| RunError {
        message: e.to_string(),
        status: 1,
    })?;
    if stats.failed > 0 {
        return Err(RunError {
            message: format!(
                "{} points could not be written to {}",
                stats.failed,
                cfg.downstream_names()
            ),
            status: 1,
        });
    }
    Ok(())
}

/// Moves this (main) thread, and so the sink thread it spawns next, onto the CPUs of the
/// affinity mask that run no shard, when there are any: the sink formats every flushed point
/// (about 1 µs each) and would otherwise take that time from a shard (10 % of a busy core in a
/// mixed-1m profile, docs/BENCHMARKS.md). Shards pin themselves. Returns the CPUs chosen.
fn keep_helpers_off_ingest_cores(ingest: &[usize]) -> Vec<usize> {
    let others: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .filter(|c| !ingest.contains(c))
        .collect();
    if others.is_empty() {
        return others;
    }
    // SAFETY: an all-zero cpu_set_t is empty; CPU_SET writes within it for ids below
    // CPU_SETSIZE (checked); sched_setaffinity(0) applies to the calling thread only.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in &others {
            if c < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c, &mut set);
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if ok { others } else { Vec::new() }
}

fn check_io_uring() -> Result<(), RunError> {
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(v) if v.trim() != "0" => Err(RunError {
            message: format!(
                "io_uring is disabled on this host (kernel.io_uring_disabled = {}); corestatsd's \
                 runtime needs it: set the sysctl to 0",
                v.trim()
            ),
            status: 1,
        }),
        _ => Ok(()),
    }
}
