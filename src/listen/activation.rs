//! systemd socket activation: the listening sockets a service manager passed (`LISTEN_PID`,
//! `LISTEN_FDS`, descriptors from 3 on, as `sd_listen_fds(3)` reads them), each described by what
//! the kernel says of it (type, family, bound address or path), so the listener setup can take
//! the one matching each configured listener instead of binding a new socket.
//!
//! The service manager keeps its copies open across restarts, so datagrams queued while no
//! corestatsd runs wait in the kernel for the next one. Reads descriptors only; the variables are
//! removed so nothing this process starts inherits them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{SockType, SockaddrStorage, getsockname, getsockopt, sockopt};

use super::udp::to_std;

/// The first descriptor a service manager passes.
const LISTEN_FDS_START: RawFd = 3;

/// What a passed socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    UnixDatagram(PathBuf),
    UnixStream(PathBuf),
    /// Anything else (a FIFO, an unbound or listening-less socket): refused by name.
    Other(String),
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Udp(a) => write!(f, "udp {a}"),
            Kind::Tcp(a) => write!(f, "tcp {a}"),
            Kind::UnixDatagram(p) => write!(f, "unix datagram {}", p.display()),
            Kind::UnixStream(p) => write!(f, "unix stream {}", p.display()),
            Kind::Other(what) => f.write_str(what),
        }
    }
}

pub struct Passed {
    pub fd: OwnedFd,
    pub kind: Kind,
}

/// The sockets passed to this process, in descriptor order; none without socket activation.
pub fn take() -> io::Result<Vec<Passed>> {
    let count = passed_count(
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::env::var("LISTEN_FDS").ok().as_deref(),
        std::process::id(),
    );
    // SAFETY: single-threaded start-up (no other thread reads the environment yet).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    (0..count)
        .map(|i| {
            let raw = LISTEN_FDS_START + i as RawFd;
            if nix::fcntl::fcntl(raw, nix::fcntl::FcntlArg::F_GETFD).is_err() {
                return Err(io::Error::other(format!(
                    "LISTEN_FDS={count}, but descriptor {raw} is not open"
                )));
            }
            // SAFETY: the service manager passed descriptors 3.. to this process, which owns
            // them from here; nothing else in it has touched them.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // Not inherited by what this process starts.
            nix::fcntl::fcntl(
                raw,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
            let kind = describe(&fd);
            Ok(Passed { fd, kind })
        })
        .collect()
}

/// How many descriptors were passed: `LISTEN_FDS` when `LISTEN_PID` names this process.
fn passed_count(pid: Option<&str>, fds: Option<&str>, me: u32) -> usize {
    match (pid.and_then(|p| p.parse::<u32>().ok()), fds) {
        (Some(p), Some(n)) if p == me => n.parse().unwrap_or(0),
        _ => 0,
    }
}

pub fn describe(fd: &OwnedFd) -> Kind {
    let Ok(ty) = getsockopt(fd, sockopt::SockType) else {
        return Kind::Other(format!("descriptor {} (not a socket)", fd.as_raw_fd()));
    };
    let Ok(local) = getsockname::<SockaddrStorage>(fd.as_raw_fd()) else {
        return Kind::Other(format!("descriptor {} (no address)", fd.as_raw_fd()));
    };
    let path = local
        .as_unix_addr()
        .and_then(|u| u.path())
        .map(PathBuf::from);
    match (ty, to_std(&local), path) {
        (SockType::Datagram, Some(a), _) => Kind::Udp(a),
        (SockType::Stream, Some(a), _) => Kind::Tcp(a),
        (SockType::Datagram, None, Some(p)) => Kind::UnixDatagram(p),
        (SockType::Stream, None, Some(p)) => Kind::UnixStream(p),
        _ => Kind::Other(format!(
            "descriptor {} (a {ty:?} socket on {local})",
            fd.as_raw_fd()
        )),
    }
}

/// Readies a passed socket as corestatsd's own are made: non-blocking (a drained listen
/// backlog ends on EAGAIN), and for a datagram socket the receive buffer, the kernel's drop
/// count on every datagram (UDP) and the senders' credentials (`passcred`, unix). Returns the
/// receive buffer granted.
pub fn prepare(fd: &OwnedFd, rcvbuf: usize, passcred: bool) -> io::Result<usize> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::socket::setsockopt;
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    if getsockopt(fd, sockopt::SockType)? != SockType::Datagram {
        return Ok(0);
    }
    if matches!(describe(fd), Kind::Udp(_)) {
        setsockopt(fd, sockopt::RxqOvfl, &1)?;
    }
    if rcvbuf > 0 && setsockopt(fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
        setsockopt(fd, sockopt::RcvBuf, &rcvbuf)?;
    }
    if passcred {
        setsockopt(fd, sockopt::PassCred, &true)?;
    }
    Ok(getsockopt(fd, sockopt::RcvBuf)?)
}

/// Whether a passed socket is the one a flag asks for: the same address or path, where a
/// flag's port 0 ("any free port") takes a socket of the same address on any port.
fn matches(passed: &Kind, wanted: &Kind) -> bool {
    let ip_port = |p: &std::net::SocketAddr, w: &std::net::SocketAddr| {
        p == w || (w.port() == 0 && p.ip() == w.ip())
    };
    match (passed, wanted) {
        (Kind::Udp(p), Kind::Udp(w)) | (Kind::Tcp(p), Kind::Tcp(w)) => ip_port(p, w),
        (p, w) => p == w,
    }
}

/// Takes the passed socket of `kind` out of `passed`.
pub fn claim(passed: &mut Vec<Passed>, kind: &Kind) -> Option<OwnedFd> {
    let i = passed.iter().position(|p| matches(&p.kind, kind))?;
    Some(passed.remove(i).fd)
}

/// Takes every passed socket of `kind` (a take-over passes one UDP socket per shard), with the
/// address each is bound to.
pub fn claim_all(passed: &mut Vec<Passed>, kind: &Kind) -> Vec<(OwnedFd, Kind)> {
    let mut out = Vec::new();
    while let Some(i) = passed.iter().position(|p| matches(&p.kind, kind)) {
        let p = passed.remove(i);
        out.push((p.fd, p.kind));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descriptors_meant_for_this_process_count() {
        assert_eq!(passed_count(Some("42"), Some("3"), 42), 3);
        assert_eq!(passed_count(Some("41"), Some("3"), 42), 0);
        assert_eq!(passed_count(None, Some("3"), 42), 0);
        assert_eq!(passed_count(Some("42"), None, 42), 0);
        assert_eq!(passed_count(Some("42"), Some("x"), 42), 0);
    }

    #[test]
    fn passed_sockets_are_described_by_what_the_kernel_says() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        assert_eq!(describe(&OwnedFd::from(udp)), Kind::Udp(addr));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        assert_eq!(describe(&OwnedFd::from(tcp)), Kind::Tcp(addr));
        let dir = std::env::temp_dir().join(format!("corestatsd-act-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dgram = std::os::unix::net::UnixDatagram::bind(dir.join("d.sock")).unwrap();
        assert_eq!(
            describe(&OwnedFd::from(dgram)),
            Kind::UnixDatagram(dir.join("d.sock"))
        );
        let stream = std::os::unix::net::UnixListener::bind(dir.join("s.sock")).unwrap();
        assert_eq!(
            describe(&OwnedFd::from(stream)),
            Kind::UnixStream(dir.join("s.sock"))
        );
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(matches!(describe(&OwnedFd::from(file)), Kind::Other(_)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
