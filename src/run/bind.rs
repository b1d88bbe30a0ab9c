//! The listeners: each bound here, or taken from the sockets systemd passed, and dealt to the
//! shards. Every failure names its flag and address.

use super::{RunError, usage};
use crate::config::Config;
use crate::listen::activation::{self, Kind, Passed};
use crate::listen::{bind_tcp_shards, bind_udp_shards, bind_uds_datagram, bind_uds_stream};
use crate::shard::Sockets;

use std::os::fd::{AsRawFd, OwnedFd};

/// What `bind_all` made ready.
pub(super) struct Bound {
    /// Per shard.
    pub(super) sockets: Vec<Sockets>,
    /// For the start-up line.
    pub(super) listening: Vec<String>,
    /// Socket files this process made, or took over (a stop removes them).
    pub(super) socket_files: Vec<std::path::PathBuf>,
    /// One descriptor of every listening socket, for a later take-over (`--control-socket`).
    pub(super) listeners: Vec<OwnedFd>,
}

/// One descriptor per distinct socket among the shards' (a shared one is a dup on each).
fn distinct_listeners(sockets: &[Sockets]) -> Result<Vec<OwnedFd>, RunError> {
    let err = |e: &dyn std::fmt::Display| RunError {
        message: format!("cannot keep the listeners for --control-socket: {e}"),
        status: 1,
    };
    let mut seen = Vec::new();
    let mut out = Vec::new();
    let all = sockets.iter().flat_map(|s| {
        s.udp
            .iter()
            .chain(&s.uds)
            .chain(&s.uds_stream)
            .chain(&s.tcp)
    });
    for fd in all {
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| err(&e))?;
        if seen.contains(&(st.st_dev, st.st_ino)) {
            continue;
        }
        seen.push((st.st_dev, st.st_ino));
        out.push(fd.try_clone().map_err(|e| err(&e))?);
    }
    Ok(out)
}

/// Passed sockets of one listener dealt to the shards: one each when there are as many (a
/// take-over of as many shards), shared round-robin when fewer.
fn deal(fds: Vec<OwnedFd>, shards: usize, flag: &str) -> Result<Vec<OwnedFd>, RunError> {
    if fds.len() > shards {
        return Err(usage(format!(
            "{} sockets were passed for {flag}, more than this process' {shards} shards \
             (--cores): each must be read",
            fds.len()
        )));
    }
    (0..shards)
        .map(|i| {
            fds[i % fds.len()].try_clone().map_err(|e| RunError {
                message: format!("cannot share {flag} with every shard: {e}"),
                status: 1,
            })
        })
        .collect()
}

/// Binds every listener (or takes the socket systemd passed for it), deals the sockets to the
/// shards, and describes them for the log. Also returns the socket files this process made,
/// which a stop removes (a passed socket's file is the service manager's).
pub(super) fn bind_all(
    cfg: &Config,
    passed: &mut Vec<Passed>,
    source: &str,
) -> Result<Bound, RunError> {
    let mut created = Vec::new();
    let bound = bind_each(cfg, passed, source, &mut created).and_then(|b| match passed.first() {
        // Passed for nothing configured: a unit and command line that disagree.
        Some(p) => Err(usage(format!(
            "{source} passed a socket no flag asks for: {} (name it with --udp-addr, \
             --uds-path, --uds-stream-path or --tcp-addr)",
            p.kind
        ))),
        None => Ok(b),
    });
    let bound = bound.and_then(|(sockets, listening)| {
        let listeners = if cfg.control_socket.is_some() {
            distinct_listeners(&sockets)?
        } else {
            Vec::new()
        };
        Ok((sockets, listening, listeners))
    });
    match bound {
        Ok((sockets, listening, listeners)) => Ok(Bound {
            sockets,
            listening,
            socket_files: created,
            listeners,
        }),
        Err(e) => {
            // Only the files this process made: a path refused as another process' stays.
            for path in created {
                let _ = std::fs::remove_file(path);
            }
            Err(e)
        }
    }
}

/// `bind_all`'s work; the socket files it creates go into `created` as they are made.
fn bind_each(
    cfg: &Config,
    passed: &mut Vec<Passed>,
    source: &str,
    created: &mut Vec<std::path::PathBuf>,
) -> Result<(Vec<Sockets>, Vec<String>), RunError> {
    // A take-over's socket files become this process' (its stop removes them); systemd's stay
    // systemd's.
    let owns_passed = source != "systemd";
    let shards = cfg.cores.len();
    let mut sockets: Vec<Sockets> = (0..shards).map(|_| Sockets::default()).collect();
    let mut listening = Vec::new();
    let dup = |fd: &std::os::fd::OwnedFd, what: &str| {
        fd.try_clone().map_err(|e| RunError {
            message: format!("cannot share {what} with every shard: {e}"),
            status: 1,
        })
    };
    let passed_udp = cfg
        .udp_addr
        .map(|a| activation::claim_all(passed, &Kind::Udp(a)))
        .unwrap_or_default();
    if let Some((_, Kind::Udp(local))) = passed_udp.first() {
        let local = *local;
        let mut granted = 0;
        let fds: Vec<OwnedFd> = passed_udp.into_iter().map(|(fd, _)| fd).collect();
        for fd in &fds {
            granted = activation::prepare(fd, cfg.so_rcvbuf_bytes, false)
                .map_err(|e| usage(format!("--udp-addr (passed by {source}): {e}")))?;
        }
        listening.push(format!(
            "udp {local} (passed by {source}, {} sockets, rcvbuf requested {} granted {} bytes)",
            fds.len(),
            cfg.so_rcvbuf_bytes,
            granted
        ));
        for (s, fd) in sockets.iter_mut().zip(deal(fds, shards, "--udp-addr")?) {
            s.udp = Some(fd);
        }
    } else if let Some(addr) = cfg.udp_addr {
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
        if let Some(fd) = activation::claim(passed, &Kind::UnixDatagram(path.clone())) {
            activation::prepare(&fd, cfg.so_rcvbuf_bytes, cfg.origin.is_some()).map_err(|e| {
                usage(format!(
                    "--uds-path {} (passed by {source}): {e}",
                    path.display()
                ))
            })?;
            listening.push(format!("uds {} (passed by {source})", path.display()));
            if owns_passed {
                created.push(path.clone());
            }
            uds.push(fd);
            continue;
        }
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
    if !uds.is_empty() && uds.len() < shards {
        for (i, s) in sockets.iter_mut().enumerate() {
            s.uds.push(dup(&uds[i % uds.len()], "--uds-path")?);
        }
    } else {
        for (i, fd) in uds.into_iter().enumerate() {
            sockets[i % shards].uds.push(fd);
        }
    }
    let passed_stream = cfg
        .uds_stream_path
        .as_ref()
        .and_then(|p| activation::claim(passed, &Kind::UnixStream(p.clone())));
    if let (Some(fd), Some(path)) = (passed_stream, &cfg.uds_stream_path) {
        activation::prepare(&fd, 0, false).map_err(|e| {
            usage(format!(
                "--uds-stream-path {} (passed by {source}): {e}",
                path.display()
            ))
        })?;
        listening.push(format!(
            "uds_stream {} (passed by {source}, 4-byte length framing)",
            path.display()
        ));
        if owns_passed {
            created.push(path.clone());
        }
        for s in &mut sockets {
            s.uds_stream = Some(dup(&fd, "--uds-stream-path")?);
        }
    } else if let Some(path) = &cfg.uds_stream_path {
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
    let framing = match cfg.tcp_framing {
        crate::listen::Framing::Length => "4-byte length",
        crate::listen::Framing::Newline => "newline",
    };
    let passed_tcp = cfg
        .tcp_addr
        .map(|a| activation::claim_all(passed, &Kind::Tcp(a)))
        .unwrap_or_default();
    if let Some((_, Kind::Tcp(local))) = passed_tcp.first() {
        let local = *local;
        let fds: Vec<OwnedFd> = passed_tcp.into_iter().map(|(fd, _)| fd).collect();
        for fd in &fds {
            activation::prepare(fd, 0, false)
                .map_err(|e| usage(format!("--tcp-addr {local} (passed by {source}): {e}")))?;
        }
        listening.push(format!(
            "tcp {local} (passed by {source}, {} listeners, {framing} framing)",
            fds.len()
        ));
        for (s, fd) in sockets.iter_mut().zip(deal(fds, shards, "--tcp-addr")?) {
            s.tcp = Some(fd);
        }
    } else if let Some(addr) = cfg.tcp_addr {
        let bound = bind_tcp_shards(addr, shards)
            .map_err(|e| usage(format!("cannot bind --tcp-addr {addr}: {e}")))?;
        listening.push(format!(
            "tcp {} ({} SO_REUSEPORT listeners, {framing} framing)",
            bound[0].local,
            bound.len(),
        ));
        for (s, b) in sockets.iter_mut().zip(bound) {
            s.tcp = Some(b.fd);
        }
    }
    Ok((sockets, listening))
}
