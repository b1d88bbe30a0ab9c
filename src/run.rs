//! Start-up and shutdown around the shards: checks, sockets, the sink thread, the HTTP
//! endpoint, signals.
//!
//! Everything that can fail because of a flag or the machine fails here, before any shard starts,
//! with an error that names the flag or address.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use crate::aggregate::Reload;
use crate::config::{Config, Downstream};
use crate::listen::capture::Capture;
use crate::listen::{bind_tcp_shards, bind_udp_shards, bind_uds_datagram, bind_uds_stream};
use crate::memory;
use crate::operator;
use crate::shard::{self, Sockets};
use crate::sink::datadog::{AGENT_LIMITS, DatadogEncoder, Encoding};
use crate::sink::delivery::{Delivery, DeliveryConfig};
use crate::sink::http::HttpSink;
use crate::sink::prometheus;
use crate::sink::relay::RelaySink;
use crate::sink::{self, Sink, jsonl::JsonlSink};
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
            "corestatsd: --config: ignoring keys corestatsd does not use: {}",
            cfg.ignored_config_keys.join(", ")
        );
    }
    let names = &cfg.aggregate.names;
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
    let sink = open_sink(&cfg)?;
    let (sockets, listening) = bind_all(&cfg)?;
    let http = operator::bind(cfg.http).map_err(usage)?;
    let board = Arc::new(Board::new(cfg.cores.len()));
    let capture = Capture::new(cfg.cores.len());
    let endpoint = match http {
        Some(listener) => {
            let summary = operator::Summary {
                version: env!("CARGO_PKG_VERSION"),
                cores: cfg.cores.clone(),
                listening: listening.clone(),
                downstream: cfg.downstream.to_string(),
                window_secs: cfg.aggregate.bucket_secs,
                memory_limit_bytes: cfg.memory_limit.map(|(b, _)| b),
                transports: cfg.transports().iter().map(|t| t.name()).collect(),
            };
            let served = operator::Served {
                board: board.clone(),
                summary,
                capture: capture.clone(),
                capture_dir: cfg.capture_dir.clone(),
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
        cfg.downstream,
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
        downstream: cfg.downstream.to_string(),
        context_stats: cfg.aggregate.context_stats,
    };
    let (tx, sink_thread) = sink::spawn(sink, telemetry, cfg.sink_queue_max_points, Some(posting))
        .map_err(|e| RunError {
            message: format!("cannot start the sink thread: {e}"),
            status: 1,
        })?;
    let limit = std::cell::Cell::new(None);
    let on_ready = || {
        board.set_ready();
        eprintln!("{ready_line}");
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
        (sockets, reloads),
        tx,
        (&board, &capture),
        on_ready,
        on_tick,
    );
    remove_socket_files(&cfg);
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
                stats.failed, cfg.downstream
            ),
            status: 1,
        });
    }
    Ok(())
}

/// The socket files go with the process that made them (a later start would replace them
/// anyway; this keeps clients from sending into a socket nobody reads).
fn remove_socket_files(cfg: &Config) {
    for path in cfg.uds_paths.iter().chain(&cfg.uds_stream_path) {
        let _ = std::fs::remove_file(path);
    }
}

/// Binds every listener, deals the sockets to the shards, and describes them for the log.
fn bind_all(cfg: &Config) -> Result<(Vec<Sockets>, Vec<String>), RunError> {
    let mut created = Vec::new();
    let bound = bind_each(cfg, &mut created);
    if bound.is_err() {
        // Only the files this process made: a path refused as another process' stays.
        for path in created {
            let _ = std::fs::remove_file(path);
        }
    }
    bound
}

/// `bind_all`'s work; the socket files it creates go into `created` as they are made.
fn bind_each(
    cfg: &Config,
    created: &mut Vec<std::path::PathBuf>,
) -> Result<(Vec<Sockets>, Vec<String>), RunError> {
    let shards = cfg.cores.len();
    let mut sockets: Vec<Sockets> = (0..shards).map(|_| Sockets::default()).collect();
    let mut listening = Vec::new();
    if let Some(addr) = cfg.udp_addr {
        let bound = bind_udp_shards(addr, shards, cfg.so_rcvbuf_bytes)
            .map_err(|e| usage(format!("cannot bind --udp-addr {addr}: {e}")))?;
        listening.push(format!(
            "udp {} ({} SO_REUSEPORT sockets, rcvbuf requested {} granted {} bytes)",
            bound[0].local,
            bound.len(),
            cfg.so_rcvbuf_bytes,
            bound[0].rcvbuf_granted
        ));
        for (s, b) in sockets.iter_mut().zip(bound) {
            s.udp = Some(b.fd);
        }
    }
    let mut uds = Vec::new();
    for path in &cfg.uds_paths {
        let fd = bind_uds_datagram(
            path,
            cfg.uds_mode,
            cfg.so_rcvbuf_bytes,
            cfg.origin.is_some(),
        )
        .map_err(|e| usage(format!("cannot bind --uds-path {}: {e}", path.display())))?;
        created.push(path.clone());
        listening.push(format!("uds {} (mode {:o})", path.display(), cfg.uds_mode));
        uds.push(fd);
    }
    // Fewer paths than shards: shard i reads path i % paths (one path: every shard reads it).
    // Otherwise path i goes to shard i % shards.
    let dup = |fd: &std::os::fd::OwnedFd, what: &str| {
        fd.try_clone().map_err(|e| RunError {
            message: format!("cannot share {what} with every shard: {e}"),
            status: 1,
        })
    };
    if !uds.is_empty() && uds.len() < shards {
        for (i, s) in sockets.iter_mut().enumerate() {
            s.uds.push(dup(&uds[i % uds.len()], "--uds-path")?);
        }
    } else {
        for (i, fd) in uds.into_iter().enumerate() {
            sockets[i % shards].uds.push(fd);
        }
    }
    if let Some(path) = &cfg.uds_stream_path {
        let fd = bind_uds_stream(path, cfg.uds_mode).map_err(|e| {
            usage(format!(
                "cannot bind --uds-stream-path {}: {e}",
                path.display()
            ))
        })?;
        created.push(path.clone());
        listening.push(format!(
            "uds_stream {} (mode {:o}, 4-byte length framing)",
            path.display(),
            cfg.uds_mode
        ));
        for s in &mut sockets {
            s.uds_stream = Some(dup(&fd, "--uds-stream-path")?);
        }
    }
    if let Some(addr) = cfg.tcp_addr {
        let bound = bind_tcp_shards(addr, shards)
            .map_err(|e| usage(format!("cannot bind --tcp-addr {addr}: {e}")))?;
        listening.push(format!(
            "tcp {} ({} SO_REUSEPORT listeners, {} framing)",
            bound[0].local,
            bound.len(),
            match cfg.tcp_framing {
                crate::listen::Framing::Length => "4-byte length",
                crate::listen::Framing::Newline => "newline",
            }
        ));
        for (s, b) in sockets.iter_mut().zip(bound) {
            s.tcp = Some(b.fd);
        }
    }
    Ok((sockets, listening))
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

fn open_sink(cfg: &Config) -> Result<Box<dyn Sink>, RunError> {
    let ds = &cfg.downstream_settings;
    let host = cfg.aggregate.default_host.clone();
    let interval = cfg.aggregate.bucket_secs;
    let delivery = |name: &'static str, base_url: String, headers: Vec<(String, String)>| {
        // Remote write: one request at a time, so each series' samples arrive in order.
        let max_in_flight = match cfg.downstream {
            Downstream::PrometheusRemoteWrite(_) => 1,
            _ => ds.http_max_in_flight,
        };
        Delivery::start(DeliveryConfig {
            max_in_flight,
            name,
            base_url,
            headers,
            timeout: ds.http_timeout,
            queue_bytes: ds.retry_queue_bytes,
            spill_dir: ds.retry_spill_dir.clone(),
            spill_max_bytes: ds.retry_spill_max_bytes,
            backoff_base: ds.backoff_base,
            backoff_max: ds.backoff_max,
            stop_timeout: ds.stop_timeout,
        })
        .map_err(|e| {
            usage(format!(
                "cannot start the {name} delivery (--retry-spill-dir {}): {e}",
                ds.retry_spill_dir
                    .as_deref()
                    .map_or("unset".into(), |p| p.display().to_string())
            ))
        })
    };
    let out: Box<dyn Write + Send> = match &cfg.downstream {
        Downstream::JsonlStdout => Box::new(io::stdout()),
        Downstream::JsonlFile(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    usage(format!(
                        "cannot open --downstream jsonl:{}: {e}",
                        path.display()
                    ))
                })?,
        ),
        Downstream::Datadog => {
            let key = api_key(ds.dd_api_key_file.as_deref(), ds.dd_api_key.as_deref())?;
            let enc = Encoding {
                counters_as: ds.dd_counters_as,
                compression: ds.dd_compression,
                limits: AGENT_LIMITS,
            };
            let d = delivery(
                "datadog",
                ds.dd_url.clone(),
                vec![("DD-API-KEY".into(), key)],
            )?;
            let e = DatadogEncoder::new(enc);
            let sink = HttpSink::new("datadog", e, d, host, interval, cfg.self_metrics);
            return Ok(Box::new(sink));
        }
        Downstream::PrometheusRemoteWrite(url) => {
            let d = delivery(
                "prometheus-remote-write",
                url.clone(),
                prometheus::headers(),
            )?;
            let e = prometheus::Encoder::new(ds.remote_write_counter_expiry_secs);
            let name = "prometheus-remote-write";
            let sink = HttpSink::new(name, e, d, host, interval, cfg.self_metrics);
            return Ok(Box::new(sink));
        }
        Downstream::Relay(target) => {
            let max = ds
                .relay_max_packet_bytes
                .unwrap_or_else(|| target.default_max_packet_bytes());
            let sink = RelaySink::new(target.clone(), max, host, interval, cfg.self_metrics)
                .map_err(|e| usage(format!("cannot open --downstream {}: {e}", cfg.downstream)))?;
            return Ok(Box::new(sink));
        }
    };
    Ok(Box::new(JsonlSink::new(out)))
}

/// The Datadog API key: from --dd-api-key-file, else DD_API_KEY. Never logged.
/// The API key: --dd-api-key-file, else DD_API_KEY, else the config file's `api_key`.
fn api_key(file: Option<&std::path::Path>, configured: Option<&str>) -> Result<String, RunError> {
    let key = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            usage(format!(
                "cannot read --dd-api-key-file {}: {e}",
                path.display()
            ))
        })?,
        None => std::env::var("DD_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .or_else(|| configured.map(str::to_owned))
            .unwrap_or_default(),
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(usage(match file {
            Some(path) => format!("--dd-api-key-file {} is empty", path.display()),
            None => "--downstream datadog needs an API key: set DD_API_KEY, --dd-api-key-file or \
                 api_key in --config"
                .into(),
        }));
    }
    if key.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(usage(
            "the Datadog API key holds characters an HTTP header cannot carry".into(),
        ));
    }
    Ok(key)
}

extern "C" fn on_signal(_: libc::c_int) {
    shard::request_stop();
}

/// Set by SIGHUP; the main thread's tick takes it and reloads.
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}

/// SIGHUP: reads the command line, its `--config` and the environment again and hands every
/// shard what a running server may change; a configuration that does not load changes nothing.
fn reload_shards(cfg: &Config, shards: &[mpsc::Sender<Reload>], board: &Board) {
    let (reload, restart) = match crate::config::reload(cfg, std::env::args_os().collect()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corestatsd: SIGHUP: not reloaded, the running configuration stays: {e}");
            board.reload_refused(e);
            return;
        }
    };
    let n = &reload.names;
    let caps = |c: Option<usize>| c.map_or("none".to_string(), |c| format!("{c} per shard"));
    let line = format!(
        "mapper {}, namespace {}, {} blocked names and prefixes, {} extra tags, max contexts {}, \
         per metric {}",
        n.mapper
            .as_ref()
            .map_or("off".to_string(), |m| format!("{} rules", m.rule_count())),
        n.namespace.as_deref().unwrap_or("none"),
        n.block_exact.len() + n.block_prefix.len(),
        n.extra_tags.len(),
        caps(reload.max_contexts),
        caps(reload.max_contexts_per_metric),
    );
    for s in shards {
        // A shard that has ended is stopping the server anyway.
        let _ = s.send(reload.clone());
    }
    eprintln!(
        "corestatsd: SIGHUP: reloaded: {line}{}",
        if restart.is_empty() {
            String::new()
        } else {
            format!("; changed but kept until a restart: {}", restart.join(", "))
        }
    );
}

fn install_signal_handlers() -> nix::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }?;
    }
    let hangup = SigAction::new(
        SigHandler::Handler(on_hangup),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: as above.
    unsafe { sigaction(Signal::SIGHUP, &hangup) }?;
    Ok(())
}
