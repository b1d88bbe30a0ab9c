//! The listeners: each bound here, or taken from the sockets systemd passed, and dealt to the
//! shards. Every failure names its flag and address.

use super::{RunError, usage};
use crate::config::Config;
use crate::listen::activation::{self, Kind, Passed};
use crate::listen::{bind_tcp_shards, bind_udp_shards, bind_uds_datagram, bind_uds_stream};
use crate::shard::Sockets;

/// What `bind_all` made ready.
pub(super) struct Bound {
    /// Per shard.
    pub(super) sockets: Vec<Sockets>,
    /// For the start-up line.
    pub(super) listening: Vec<String>,
    /// Socket files this process made (a stop removes them).
    pub(super) socket_files: Vec<std::path::PathBuf>,
}

/// Binds every listener (or takes the socket systemd passed for it), deals the sockets to the
/// shards, and describes them for the log. Also returns the socket files this process made,
/// which a stop removes (a passed socket's file is the service manager's).
pub(super) fn bind_all(cfg: &Config, passed: &mut Vec<Passed>) -> Result<Bound, RunError> {
    let mut created = Vec::new();
    let bound = bind_each(cfg, passed, &mut created).and_then(|b| match passed.first() {
        // Passed for nothing configured: a unit and command line that disagree.
        Some(p) => Err(usage(format!(
            "systemd passed a socket no flag asks for: {} (name it with --udp-addr, \
             --uds-path, --uds-stream-path or --tcp-addr)",
            p.kind
        ))),
        None => Ok(b),
    });
    match bound {
        Ok((sockets, listening)) => Ok(Bound {
            sockets,
            listening,
            socket_files: created,
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
    created: &mut Vec<std::path::PathBuf>,
) -> Result<(Vec<Sockets>, Vec<String>), RunError> {
    let shards = cfg.cores.len();
    let mut sockets: Vec<Sockets> = (0..shards).map(|_| Sockets::default()).collect();
    let mut listening = Vec::new();
    let dup = |fd: &std::os::fd::OwnedFd, what: &str| {
        fd.try_clone().map_err(|e| RunError {
            message: format!("cannot share {what} with every shard: {e}"),
            status: 1,
        })
    };
    if let Some(fd) = cfg
        .udp_addr
        .and_then(|a| activation::claim(passed, &Kind::Udp(a)))
    {
        let granted = activation::prepare(&fd, cfg.so_rcvbuf_bytes, false)
            .map_err(|e| usage(format!("--udp-addr (passed by systemd): {e}")))?;
        listening.push(format!(
            "udp {} (passed by systemd, read by every shard, rcvbuf requested {} granted {} bytes)",
            cfg.udp_addr.unwrap_or(([0, 0, 0, 0], 0).into()),
            cfg.so_rcvbuf_bytes,
            granted
        ));
        for s in &mut sockets {
            s.udp = Some(dup(&fd, "--udp-addr")?);
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
                    "--uds-path {} (passed by systemd): {e}",
                    path.display()
                ))
            })?;
            listening.push(format!("uds {} (passed by systemd)", path.display()));
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
                "--uds-stream-path {} (passed by systemd): {e}",
                path.display()
            ))
        })?;
        listening.push(format!(
            "uds_stream {} (passed by systemd, 4-byte length framing)",
            path.display()
        ));
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
    if let Some((fd, addr)) = cfg
        .tcp_addr
        .and_then(|a| activation::claim(passed, &Kind::Tcp(a)).map(|fd| (fd, a)))
    {
        activation::prepare(&fd, 0, false)
            .map_err(|e| usage(format!("--tcp-addr {addr} (passed by systemd): {e}")))?;
        listening.push(format!(
            "tcp {addr} (passed by systemd, every shard accepting, {framing} framing)"
        ));
        for s in &mut sockets {
            s.tcp = Some(dup(&fd, "--tcp-addr")?);
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
