//! TCP: one SO_REUSEPORT listener per shard on the same address, so the kernel spreads
//! connections over the shards and each connection is served by the shard that accepted it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, getsockname, listen, setsockopt,
    socket, sockopt,
};

pub struct BoundTcp {
    pub fd: OwnedFd,
    pub local: SocketAddr,
}

/// Binds `count` listening sockets to `addr` (non-blocking, for io_uring accepts). With port 0
/// the first picks the port and the others join it; a port another process holds is refused
/// by a probe bind first, as for UDP.
pub fn bind_tcp_shards(addr: SocketAddr, count: usize) -> io::Result<Vec<BoundTcp>> {
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr)?);
    }
    let mut out: Vec<BoundTcp> = Vec::with_capacity(count);
    for _ in 0..count {
        let target = out.first().map_or(addr, |b| b.local);
        let family = if target.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        setsockopt(&fd, sockopt::ReusePort, &true)?;
        bind(fd.as_raw_fd(), &SockaddrStorage::from(target))?;
        listen(&fd, 1024)?;
        let local: SockaddrStorage = getsockname(fd.as_raw_fd())?;
        let local = super::udp::to_std(&local)
            .ok_or_else(|| io::Error::other("bound address is not IP"))?;
        out.push(BoundTcp { fd, local });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_share_one_port_and_a_held_port_is_refused() {
        let socks = bind_tcp_shards("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        assert_eq!(socks[0].local, socks[1].local);
        assert_ne!(socks[0].local.port(), 0);
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_tcp_shards(held.local_addr().unwrap(), 1)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
