//! UDP: one SO_REUSEPORT socket per shard on the same address, drained with `recvmmsg`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((
            std::net::Ipv4Addr::from(v4.ip()),
            v4.port(),
        )));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// The per-shard receive state: the socket, a pool of `slots` buffers of `slot_size` bytes in
/// one allocation, and the `mmsghdr`/`iovec` arrays pointing into it, all made once.
pub struct UdpReceiver {
    fd: OwnedFd,
    pool: Box<[u8]>,
    slot_size: usize,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
}

/// Outcome of one `recv_batch`.
pub enum Received {
    /// This many datagrams are in slots `0..n`.
    Datagrams(usize),
    /// The socket is empty.
    WouldBlock,
}

impl UdpReceiver {
    pub fn new(fd: OwnedFd, slots: usize, slot_size: usize) -> Self {
        let mut pool = vec![0u8; slots * slot_size].into_boxed_slice();
        let base = pool.as_mut_ptr();
        let iovecs: Box<[libc::iovec]> = (0..slots)
            .map(|i| libc::iovec {
                // SAFETY: `i * slot_size` is within the pool, which lives as long as `self` and
                // never moves (a boxed slice is not reallocated).
                iov_base: unsafe { base.add(i * slot_size) }.cast(),
                iov_len: slot_size,
            })
            .collect();
        let mut rx = UdpReceiver {
            fd,
            pool,
            slot_size,
            iovecs,
            headers: Box::default(),
        };
        rx.headers = rx
            .iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        rx
    }

    /// A second descriptor for the same socket, for glommio to wait on readiness.
    pub fn readiness_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// One `recvmmsg(MSG_DONTWAIT)` into the pool.
    pub fn recv_batch(&mut self) -> io::Result<Received> {
        for h in self.headers.iter_mut() {
            h.msg_len = 0;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: `headers` holds `len` valid mmsghdr whose single iovec points at a distinct
        // `slot_size` region of `pool`; both outlive the call. No address or control buffers.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(Received::WouldBlock),
                _ => Err(e),
            };
        }
        Ok(Received::Datagrams(n as usize))
    }

    /// Datagram `i` of the last batch, and whether the kernel cut it to the slot size.
    pub fn datagram(&self, i: usize) -> (&[u8], bool) {
        let h = &self.headers[i];
        let len = (h.msg_len as usize).min(self.slot_size);
        let start = i * self.slot_size;
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.pool[start..start + len], truncated)
    }

    pub fn slots(&self) -> usize {
        self.headers.len()
    }
}

/// Wraps a descriptor for glommio; takes ownership.
pub fn glommio_socket(fd: OwnedFd) -> glommio::net::UdpSocket {
    use std::os::fd::IntoRawFd;
    // SAFETY: `fd` is an open UDP socket we own; ownership passes to the glommio socket.
    unsafe { glommio::net::UdpSocket::from_raw_fd(fd.into_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_share_one_port_and_receive_in_batches() {
        let socks = bind_udp_shards("127.0.0.1:0".parse().unwrap(), 2, 1 << 20).unwrap();
        assert_eq!(socks[0].local, socks[1].local);
        assert!(socks[0].rcvbuf_granted >= 1 << 20);
        let addr = socks[0].local;
        let mut receivers: Vec<UdpReceiver> = socks
            .into_iter()
            .map(|b| UdpReceiver::new(b.fd, 8, 16))
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
    fn a_port_held_elsewhere_is_refused() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = bind_udp_shards(held.local_addr().unwrap(), 1, 0)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
