//! Start-up and shutdown around the shards: checks, sockets, the sink thread, signals.
//!
//! Everything that can fail because of a flag or the machine fails here, before any shard starts,
//! with an error that names the flag or address.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};

use crate::config::{Config, Downstream};
use crate::listen::bind_udp_shards;
use crate::shard;
use crate::sink::{self, Sink, jsonl::JsonlSink};

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
pub fn run(cfg: Config) -> Result<(), RunError> {
    check_io_uring()?;
    let bound = bind_udp_shards(cfg.udp_addr, cfg.cores.len(), cfg.so_rcvbuf_bytes)
        .map_err(|e| usage(format!("cannot bind --udp-addr {}: {e}", cfg.udp_addr)))?;
    let sink = open_sink(&cfg.downstream)?;
    eprintln!(
        "corestatsd: {} shards on cores {:?}; listening udp {} ({} SO_REUSEPORT sockets, \
         rcvbuf requested {} granted {} bytes); buffers {} x {} bytes per shard; \
         windows of {} s; downstream {}{}",
        cfg.cores.len(),
        cfg.cores,
        bound[0].local,
        bound.len(),
        cfg.so_rcvbuf_bytes,
        bound[0].rcvbuf_granted,
        cfg.recv_batch_datagrams,
        cfg.buffer_size_bytes,
        cfg.aggregate.bucket_secs,
        cfg.downstream,
        cfg.forward_addr
            .map(|a| format!("; forwarding raw datagrams to {a}"))
            .unwrap_or_default(),
    );
    install_signal_handlers().map_err(|e| RunError {
        message: format!("cannot install signal handlers: {e}"),
        status: 1,
    })?;
    let (tx, sink_thread) = sink::spawn(sink, cfg.cores.len()).map_err(|e| RunError {
        message: format!("cannot start the sink thread: {e}"),
        status: 1,
    })?;
    let fds = bound.into_iter().map(|b| b.fd).collect();
    let result = shard::run_shards(&cfg, fds, tx);
    let stats = sink_thread.join().unwrap_or_default();
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

fn open_sink(d: &Downstream) -> Result<Box<dyn Sink>, RunError> {
    let out: Box<dyn Write + Send> = match d {
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
    };
    Ok(Box::new(JsonlSink::new(out)))
}

extern "C" fn on_signal(_: libc::c_int) {
    shard::request_stop();
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
    Ok(())
}
