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
    /// One control buffer per slot, for the SO_RXQ_OVFL drop counter.
    control: Box<[u64]>,
    headers: Box<[libc::mmsghdr]>,
    /// The socket's cumulative kernel drop count as last seen.
    drops_seen: u32,
}

/// u64 words per control buffer: room for one `cmsghdr` carrying a `u32`, aligned.
const CONTROL_WORDS: usize = 4;

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
            control: vec![0u64; slots * CONTROL_WORDS].into_boxed_slice(),
            headers: Box::default(),
            drops_seen: 0,
        };
        let control = rx.control.as_mut_ptr();
        rx.headers = rx
            .iovecs
            .iter_mut()
            .enumerate()
            .map(|(i, iov)| {
                // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                // Same reasoning as the pool: a boxed slice that lives as long as `self`.
                h.msg_hdr.msg_control = control.wrapping_add(i * CONTROL_WORDS).cast();
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
            h.msg_hdr.msg_controllen = CONTROL_WORDS * 8;
        }
        // SAFETY: `headers` holds `len` valid mmsghdr whose single iovec points at a distinct
        // `slot_size` region of `pool` and whose control buffer is a distinct `CONTROL_WORDS`
        // region of `control`; all outlive the call. No address buffers.
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

    /// Datagrams the kernel dropped on this socket (receive buffer full) since the last call,
    /// read from the counter that came with datagram `last` of the last batch.
    pub fn new_kernel_drops(&mut self, last: usize) -> u64 {
        let Some(total) = self.drop_counter(last) else {
            return 0;
        };
        let new = total.wrapping_sub(self.drops_seen);
        self.drops_seen = total;
        u64::from(new)
    }

    fn drop_counter(&self, i: usize) -> Option<u32> {
        let hdr = &self.headers.get(i)?.msg_hdr;
        // SAFETY: the kernel filled this header's control buffer (its length is in
        // `msg_controllen`); the CMSG_* walk stays within it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL
                {
                    return Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<u32>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        None
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
    fn kernel_drops_on_a_full_socket_are_reported_with_the_next_datagram() {
        // The smallest receive buffer the kernel allows holds a few of these datagrams at most.
        let socks = bind_udp_shards("127.0.0.1:0".parse().unwrap(), 1, 0).unwrap();
        let b = socks.into_iter().next().unwrap();
        setsockopt(&b.fd, sockopt::RcvBuf, &1).unwrap();
        let addr = b.local;
        let mut rx = UdpReceiver::new(b.fd, 64, 2048);
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
