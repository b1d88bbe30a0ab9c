//! UDP: one SO_REUSEPORT socket per shard on the same address (drained by `DatagramReceiver`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, bind, getsockname, setsockopt, socket,
    sockopt,
};

/// A bound socket and what the kernel granted it.
pub struct BoundUdp {
    pub fd: OwnedFd,
    pub local: SocketAddr,
    /// SO_RCVBUF as read back (the kernel doubles the request for bookkeeping).
    pub rcvbuf_granted: usize,
}

/// Binds `count` SO_REUSEPORT sockets to `addr`. With port 0 the first socket picks the port and
/// the others join it. Before that, a probe bind without SO_REUSEPORT makes a port already held
/// by another process an error instead of a silent share.
pub fn bind_udp_shards(addr: SocketAddr, count: usize, rcvbuf: usize) -> io::Result<Vec<BoundUdp>> {
    if addr.port() != 0 {
        drop(std::net::UdpSocket::bind(addr)?);
    }
    let mut out: Vec<BoundUdp> = Vec::with_capacity(count);
    for _ in 0..count {
        let target = out.first().map_or(addr, |b| b.local);
        out.push(bind_one(target, rcvbuf)?);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr, rcvbuf: usize) -> io::Result<BoundUdp> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    // The kernel's drop count for this socket rides on every datagram (SO_RXQ_OVFL), so drops
    // from a full receive buffer show in corestatsd's own telemetry, not only in /proc/net/snmp.
    setsockopt(&fd, sockopt::RxqOvfl, &1)?;
    if rcvbuf > 0 {
        // SO_RCVBUFFORCE passes rmem_max when we have CAP_NET_ADMIN; otherwise the plain option
        // is capped by the kernel, and the granted size is logged either way.
        if setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &rcvbuf)?;
        }
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    let local: SockaddrStorage = getsockname(fd.as_raw_fd())?;
    let local = to_std(&local).ok_or_else(|| io::Error::other("bound address is not IP"))?;
    let rcvbuf_granted = nix::sys::socket::getsockopt(&fd, sockopt::RcvBuf)?;
    Ok(BoundUdp {
        fd,
        local,
        rcvbuf_granted,
    })
}

pub(super) fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((
            std::net::Ipv4Addr::from(v4.ip()),
            v4.port(),
        )));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{DatagramReceiver, Received};

    #[test]
    fn shards_share_one_port_and_receive_in_batches() {
        let socks = bind_udp_shards("127.0.0.1:0".parse().unwrap(), 2, 1 << 20).unwrap();
        assert_eq!(socks[0].local, socks[1].local);
        assert!(socks[0].rcvbuf_granted >= 1 << 20);
        let addr = socks[0].local;
        let mut receivers: Vec<DatagramReceiver> = socks
            .into_iter()
            .map(|b| DatagramReceiver::new(b.fd, 8, 16))
            .collect();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"a:1|c", addr).unwrap();
        tx.send_to(b"0123456789abcdefXYZ", addr).unwrap();
        // One sender's datagrams land on one socket (the reuseport hash of its 4-tuple).
        let mut got = Vec::new();
        for rx in receivers.iter_mut() {
            if let Received::Datagrams(n) = rx.recv_batch().unwrap() {
                for i in 0..n {
                    let (d, t) = rx.datagram(i);
                    got.push((d.to_vec(), t));
                }
            }
        }
        assert_eq!(
            got,
            vec![
                (b"a:1|c".to_vec(), false),
                (b"0123456789abcdef".to_vec(), true)
            ]
        );
        assert!(matches!(
            receivers[0].recv_batch().unwrap(),
            Received::WouldBlock
        ));
    }

    #[test]
    fn kernel_drops_on_a_full_socket_are_reported_with_the_next_datagram() {
        // The smallest receive buffer the kernel allows holds a few of these datagrams at most.
        let socks = bind_udp_shards("127.0.0.1:0".parse().unwrap(), 1, 0).unwrap();
        let b = socks.into_iter().next().unwrap();
        setsockopt(&b.fd, sockopt::RcvBuf, &1).unwrap();
        let addr = b.local;
        let mut rx = DatagramReceiver::new(b.fd, 64, 2048);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            tx.send_to(&[b'x'; 1000], addr).unwrap();
        }
        let Received::Datagrams(n) = rx.recv_batch().unwrap() else {
            panic!("nothing received");
        };
        assert!(n > 0 && n < 200, "{n}");
        // Those were queued before the drops; the count rides on the next datagram queued.
        let before = rx.new_kernel_drops(n - 1);
        tx.send_to(b"y", addr).unwrap();
        let Received::Datagrams(1) = rx.recv_batch().unwrap() else {
            panic!("one more datagram expected");
        };
        assert_eq!(before + rx.new_kernel_drops(0), 200 - n as u64);
        tx.send_to(b"z", addr).unwrap();
        let Received::Datagrams(1) = rx.recv_batch().unwrap() else {
            panic!("one more datagram expected");
        };
        assert_eq!(rx.new_kernel_drops(0), 0, "counts are deltas");
    }

    #[test]
    fn a_port_held_elsewhere_is_refused() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = bind_udp_shards(held.local_addr().unwrap(), 1, 0)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
