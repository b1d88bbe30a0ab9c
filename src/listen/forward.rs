//! Raw forwarding (`--forward-addr`, the Agent's `statsd_forward_host/port`): every received
//! datagram is copied, before parsing, to one UDP address from the shard that received it, with
//! one non-blocking `sendmmsg` per receive batch. A full send buffer or an unreachable target is
//! counted, never waited on.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

pub struct Forwarder {
    socket: UdpSocket,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

/// What one `forward` call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub sent: u64,
    pub failed: u64,
}

impl Forwarder {
    pub fn connect(to: SocketAddr, batch: usize) -> io::Result<Forwarder> {
        let local: SocketAddr = if to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(to)?;
        socket.set_nonblocking(true)?;
        Ok(Forwarder {
            socket,
            iovecs: Vec::with_capacity(batch),
            headers: Vec::with_capacity(batch),
        })
    }

    /// Sends every datagram of `batch`; what the kernel does not take at once is counted failed.
    pub fn forward<'a>(&mut self, batch: impl Iterator<Item = &'a [u8]>) -> Forwarded {
        self.iovecs.clear();
        self.headers.clear();
        for d in batch {
            self.iovecs.push(libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            });
        }
        for iov in self.iovecs.iter_mut() {
            // SAFETY: all-zero is a valid `mmsghdr`; the iovec it points at lives until the end
            // of this call.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            self.headers.push(h);
        }
        let total = self.headers.len();
        let mut done = Forwarded::default();
        let mut at = 0;
        while at < total {
            let rest = &mut self.headers[at..];
            // SAFETY: `rest` holds valid headers whose iovecs point at datagrams borrowed for
            // the duration of this call; the socket is connected, so no address is needed.
            let n = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                at += n as usize;
                done.sent += n as u64;
            } else {
                // The first remaining datagram failed (EAGAIN: send buffer full; ECONNREFUSED:
                // an earlier one met a closed port): count it and go on with the rest.
                at += 1;
                done.failed += 1;
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_each_datagram_byte_for_byte() {
        let target = UdpSocket::bind("127.0.0.1:0").unwrap();
        target
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut f = Forwarder::connect(target.local_addr().unwrap(), 4).unwrap();
        let datagrams: [&[u8]; 3] = [b"a:1|c\n", b"b:2|g", b"_sc|x|0"];
        assert_eq!(
            f.forward(datagrams.into_iter()),
            Forwarded { sent: 3, failed: 0 }
        );
        let mut buf = [0u8; 64];
        for d in datagrams {
            let n = target.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], d);
        }
    }

    #[test]
    fn a_closed_target_is_counted_not_waited_on() {
        let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let mut f = Forwarder::connect(addr, 4).unwrap();
        let mut total = Forwarded::default();
        for _ in 0..3 {
            let r = f.forward([&b"x:1|c"[..], b"y:1|c"].into_iter());
            total.sent += r.sent;
            total.failed += r.failed;
        }
        assert_eq!(total.sent + total.failed, 6);
        assert!(
            total.failed > 0,
            "ICMP port unreachable surfaces as ECONNREFUSED: {total:?}"
        );
    }
}
