//! Batched datagram receive, for UDP and unix datagram sockets alike: `recvmmsg(MSG_DONTWAIT)`
//! into a preallocated pool, with each datagram's control messages (the kernel's drop count,
//! the sender's credentials) read from a fixed buffer beside it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// The per-shard receive state: the socket, a pool of `slots` buffers of `slot_size` bytes in
/// one allocation, and the `mmsghdr`/`iovec` arrays pointing into it, all made once.
pub struct DatagramReceiver {
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

/// u64 words per control buffer: room for a drop counter (`CMSG_SPACE(4)` = 24 bytes) and
/// credentials (`CMSG_SPACE(sizeof ucred)` = 32 bytes) together.
const CONTROL_WORDS: usize = 8;

/// Outcome of one `recv_batch`.
pub enum Received {
    /// This many datagrams are in slots `0..n`.
    Datagrams(usize),
    /// The socket is empty.
    WouldBlock,
}

impl DatagramReceiver {
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
        let mut rx = DatagramReceiver {
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
        // SAFETY: SO_RXQ_OVFL data is one u32.
        self.control_message(i, libc::SO_RXQ_OVFL, |p| unsafe {
            std::ptr::read_unaligned(p.cast::<u32>())
        })
    }

    /// The sender's pid from datagram `i`'s SCM_CREDENTIALS (sockets with SO_PASSCRED only).
    /// `None` when there were none, or the pid is 0 (a sender in another pid namespace that the
    /// kernel could not map).
    pub fn sender_pid(&self, i: usize) -> Option<i32> {
        // SAFETY: SCM_CREDENTIALS data is one `ucred`.
        self.control_message(i, libc::SCM_CREDENTIALS, |p| unsafe {
            std::ptr::read_unaligned(p.cast::<libc::ucred>()).pid
        })
        .filter(|&pid| pid > 0)
    }

    /// Reads the SOL_SOCKET control message of type `kind` that came with datagram `i`.
    fn control_message<T>(
        &self,
        i: usize,
        kind: libc::c_int,
        read: impl FnOnce(*const u8) -> T,
    ) -> Option<T> {
        let hdr = &self.headers.get(i)?.msg_hdr;
        // SAFETY: the kernel filled this header's control buffer (its length is in
        // `msg_controllen`); the CMSG_* walk stays within it, and `read` gets a pointer to a
        // message of the type asked for.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == kind {
                    return Some(read(libc::CMSG_DATA(cmsg)));
                }
                cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
            }
        }
        None
    }
}

/// What a receive task waits on while its socket is empty: glommio sees the socket only here,
/// through a second descriptor, and only to learn that it became readable.
pub enum Readiness {
    Udp(glommio::net::UdpSocket),
    /// glommio's `UnixDatagram` cannot wrap a descriptor; its `UnixStream` can, and a 1-byte
    /// `peek` works the same on a datagram socket, but for one trap: see `wait`. `fd` is the
    /// stream's own descriptor (glommio's `UnixStream` does not expose it).
    Unix {
        stream: glommio::net::UnixStream,
        fd: std::os::fd::RawFd,
    },
}

impl Readiness {
    /// Takes ownership of a second descriptor of the socket (`DatagramReceiver::readiness_fd`).
    pub fn new(fd: OwnedFd, unix: bool) -> Readiness {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` is an open socket of the kind named, owned by nothing else now; the
        // glommio value takes ownership and closes it.
        unsafe {
            if unix {
                Readiness::Unix {
                    stream: glommio::net::UnixStream::from_raw_fd(raw),
                    fd: raw,
                }
            } else {
                Readiness::Udp(glommio::net::UdpSocket::from_raw_fd(raw))
            }
        }
    }

    /// Returns once a datagram is waiting (or the socket reports an error).
    ///
    /// A zero-length datagram at the head of a unix socket peeks as 0 bytes, which glommio's
    /// stream takes for the end of the stream and remembers: every later `peek` on that wrapper
    /// returned at once, and a receive loop alternating it with an empty `recvmmsg` starved its
    /// shard (10 000 empty datagrams froze the server, SIGTERM included). A datagram socket has
    /// no end of stream, so a 0 here means "an empty datagram is waiting": it is reported as
    /// ready, and the wrapper is replaced by one on a fresh descriptor so the next wait really
    /// waits. If that descriptor cannot be had, later waits may keep returning at once; the
    /// receive loop bounds that case itself (`shard/receive.rs`).
    pub async fn wait(&mut self) {
        let mut byte = [0u8; 1];
        match self {
            // `peek_from`, not `peek`: the latter asks for a peer address and fails with
            // ENOTCONN on a server socket.
            Readiness::Udp(s) => {
                let _ = s.peek_from(&mut byte).await;
            }
            Readiness::Unix { stream, fd } => {
                if let Ok(0) = stream.peek(&mut byte).await
                    && let Ok(fresh) = dup_unix(*fd)
                {
                    (*stream, *fd) = fresh;
                }
            }
        }
    }
}

/// A new glommio wrapper over a duplicate of `fd` (the wrapper it replaces closes `fd` when
/// dropped), and its descriptor.
fn dup_unix(fd: std::os::fd::RawFd) -> io::Result<(glommio::net::UnixStream, std::os::fd::RawFd)> {
    use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd};
    // SAFETY: `fd` belongs to the live wrapper being replaced, open for this call.
    let fresh = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    let raw = fresh.into_raw_fd();
    // SAFETY: `raw` is a fresh, open descriptor of the same unix socket, owned by nothing else;
    // the glommio value takes ownership and closes it.
    Ok((unsafe { glommio::net::UnixStream::from_raw_fd(raw) }, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    /// Whether `wait` returns within `limit` (a bound for the "nothing to read" case, not a
    /// wait for a condition).
    async fn waits_within(ready: &mut Readiness, limit: Duration) -> bool {
        futures_lite::future::or(
            async {
                ready.wait().await;
                true
            },
            async {
                glommio::timer::sleep(limit).await;
                false
            },
        )
        .await
    }

    #[test]
    fn an_empty_unix_datagram_wakes_one_wait_and_later_waits_still_wait() {
        let dir = std::env::temp_dir().join(format!("corestatsd-ready-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dsd.socket");
        let fd = crate::listen::bind_uds_datagram(&path, 0o700, 0, false).unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut rx = DatagramReceiver::new(fd, 4, 64);
                let mut ready = Readiness::new(rx.readiness_fd().unwrap(), true);
                for round in 0..3 {
                    tx.send_to(b"", &path).unwrap();
                    assert!(waits_within(&mut ready, Duration::from_secs(5)).await);
                    let Ok(Received::Datagrams(1)) = rx.recv_batch() else {
                        panic!("round {round}: the empty datagram is received");
                    };
                    assert_eq!(rx.datagram(0), (&b""[..], false));
                    assert!(matches!(rx.recv_batch(), Ok(Received::WouldBlock)));
                    assert!(
                        !waits_within(&mut ready, Duration::from_millis(50)).await,
                        "round {round}: an empty socket must not read as ready"
                    );
                }
                tx.send_to(b"a:1|c", &path).unwrap();
                assert!(waits_within(&mut ready, Duration::from_secs(5)).await);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
