//! Unix sockets: the datagram socket(s) of `--uds-path` and the stream listener of
//! `--uds-stream-path`. Socket files are created with `--uds-mode`; a stale one left by a
//! previous run is replaced, but a path that is not a socket, or a socket another process still
//! serves, is an error.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, UnixAddr, bind, listen, setsockopt, socket, sockopt,
};

/// Binds a unix datagram socket at `path`. `passcred` turns on SO_PASSCRED, so every datagram
/// carries its sender's pid (origin detection).
pub fn bind_uds_datagram(
    path: &Path,
    mode: u32,
    rcvbuf: usize,
    passcred: bool,
) -> io::Result<OwnedFd> {
    clear_stale(path, SockType::Datagram)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if rcvbuf > 0 && setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
        setsockopt(&fd, sockopt::RcvBuf, &rcvbuf)?;
    }
    if passcred {
        setsockopt(&fd, sockopt::PassCred, &true)?;
    }
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(fd)
}

/// Binds and listens on a unix stream socket at `path` (non-blocking, for io_uring accepts).
pub fn bind_uds_stream(path: &Path, mode: u32) -> io::Result<OwnedFd> {
    clear_stale(path, SockType::Stream)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listen(&fd, 1024)?;
    Ok(fd)
}

/// The pid of the process at the other end of a unix stream connection (SO_PEERCRED), or
/// `None` when the kernel gives none (0: a peer in a pid namespace it cannot map).
pub fn peer_pid(fd: &impl std::os::fd::AsFd) -> Option<i32> {
    let creds = nix::sys::socket::getsockopt(fd, sockopt::PeerCredentials).ok()?;
    (creds.pid() > 0).then_some(creds.pid())
}

/// Removes a socket file left by a previous run. Refuses a path that is not a socket, and a
/// socket some process still serves (a connect to it succeeds).
fn clear_stale(path: &Path, kind: SockType) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; corestatsd will not remove it",
        ));
    }
    let live = match kind {
        SockType::Datagram => std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect(path))
            .is_ok(),
        _ => std::os::unix::net::UnixStream::connect(path).is_ok(),
    };
    if live {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is serving this socket",
        ));
    }
    std::fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("corestatsd-uds-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("dsd.socket")
    }

    #[test]
    fn a_stale_socket_is_replaced_and_the_mode_applied() {
        let path = temp_path("stale");
        drop(UnixDatagram::bind(&path).unwrap());
        assert!(path.exists(), "a closed socket leaves its file behind");
        let fd = bind_uds_datagram(&path, 0o722, 1 << 16, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o722);
        let tx = UnixDatagram::unbound().unwrap();
        tx.send_to(b"x:1|c", &path).unwrap();
        let mut rx = crate::listen::DatagramReceiver::new(fd, 4, 64);
        let crate::listen::Received::Datagrams(1) = rx.recv_batch().unwrap() else {
            panic!("one datagram expected");
        };
        assert_eq!(rx.datagram(0), (&b"x:1|c"[..], false));
        assert_eq!(rx.sender_pid(0), Some(std::process::id() as i32));
    }

    #[test]
    fn a_path_that_is_not_a_socket_or_is_in_use_is_refused() {
        let path = temp_path("file");
        std::fs::write(&path, b"data").unwrap();
        let err = bind_uds_datagram(&path, 0o722, 0, false).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"data",
            "the file is left alone"
        );

        let path = temp_path("live");
        let _live = UnixDatagram::bind(&path).unwrap();
        let err = bind_uds_datagram(&path, 0o722, 0, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn stream_listener_reports_the_peer_pid() {
        let path = temp_path("stream");
        let fd = bind_uds_stream(&path, 0o722).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let listener = std::os::unix::net::UnixListener::from(fd);
        listener.set_nonblocking(false).unwrap();
        let (conn, _) = listener.accept().unwrap();
        assert_eq!(peer_pid(&conn), Some(std::process::id() as i32));
    }
}
