//! Signals: SIGINT and SIGTERM stop the server, SIGHUP reloads its configuration. Handlers
//! only store to atomics; the main thread's tick acts on them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::aggregate::Reload;
use crate::config::Config;
use crate::shard;
use crate::telemetry::board::Board;

extern "C" fn on_signal(_: libc::c_int) {
    shard::request_stop();
}

/// Set by SIGHUP; the main thread's tick takes it and reloads.
pub(super) static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}

/// SIGHUP: reads the command line, its `--config` and the environment again and hands every
/// shard what a running server may change; a configuration that does not load changes nothing.
pub(super) fn reload_shards(cfg: &Config, shards: &[mpsc::Sender<Reload>], board: &Board) {
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

pub(super) fn install_signal_handlers() -> nix::Result<()> {
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
