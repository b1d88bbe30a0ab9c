//! The receive side of a shard: one task per datagram socket (UDP, unix datagram) draining it
//! with `recvmmsg`, and the start of every receive task, the stream ones (`stream`) included,
//! all on the shard's latency-sensitive queue and inside its receive gate, so a stop can wait
//! for every one of them to drain. Every packet, whatever its transport, goes through `ingest`.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::TaskQueueHandle;
use glommio::net::TcpListener;

use super::stream::{Listener, accept_loop};
use super::{DRAIN_LIMIT, Shard};
use crate::aggregate::{NEWS_CHUNK, Packet, ingest};
use crate::counters::Counters;
use crate::listen::capture::{Capture, Record};
use crate::listen::{
    DatagramReceiver, Framing, Lookup, Readiness, Received, Stream, Transport, Unresolved,
};

/// Longest a datagram task waits on readiness before looking at its socket again anyway.
const READINESS_RECHECK: Duration = Duration::from_millis(10);

/// Readiness wake-ups in a row that find nothing before the task polls on a timer instead.
const FALSE_WAKES_TO_POLL: u32 = 4;

/// The poll interval while readiness cannot be trusted.
const FALSE_WAKE_POLL: Duration = Duration::from_millis(1);

/// The sockets one shard serves.
#[derive(Default)]
pub struct Sockets {
    pub udp: Option<OwnedFd>,
    /// Unix datagram sockets (this shard's share of `--uds-path`).
    pub uds: Vec<OwnedFd>,
    /// A descriptor of the `--uds-stream-path` listener (every shard accepts on it).
    pub uds_stream: Option<OwnedFd>,
    /// This shard's own SO_REUSEPORT `--tcp-addr` listener.
    pub tcp: Option<OwnedFd>,
}

/// Starts a task for every socket, inside the shard's receive gate.
pub(super) fn start(shard: &Rc<Shard>, sockets: Sockets, queue: TaskQueueHandle) -> io::Result<()> {
    let spawn_err = |e: glommio::GlommioError<()>| io::Error::other(e.to_string());
    let datagram_sources = sockets
        .udp
        .map(|fd| (fd, Transport::Udp))
        .into_iter()
        .chain(sockets.uds.into_iter().map(|fd| (fd, Transport::Uds)));
    for (fd, transport) in datagram_sources {
        let rx = DatagramReceiver::new(
            fd,
            shard.cfg.recv_batch_datagrams,
            shard.cfg.buffer_size_bytes,
        );
        let ready = Readiness::new(rx.readiness_fd()?, transport == Transport::Uds);
        shard
            .receivers
            .spawn_into(datagram_loop(shard.clone(), rx, ready, transport), queue)
            .map_err(spawn_err)?
            .detach();
    }
    let listeners = [
        (sockets.uds_stream, Stream::UdsStream, Framing::Length),
        (sockets.tcp, Stream::Tcp, shard.cfg.tcp_framing),
    ];
    for (fd, stream, framing) in listeners {
        let Some(fd) = fd else { continue };
        // glommio's TcpListener is a thin wrapper over a listening descriptor (accept through
        // io_uring) and serves a unix stream listener the same way; its address methods, which
        // would not, are never called.
        let fd = fd.into_raw_fd();
        // SAFETY: `fd` is an open, listening stream socket we own; ownership passes on.
        let listener = Listener {
            inner: unsafe { TcpListener::from_raw_fd(fd) },
            fd,
        };
        shard
            .receivers
            .spawn_into(
                accept_loop(shard.clone(), listener, stream, framing, queue),
                queue,
            )
            .map_err(spawn_err)?
            .detach();
    }
    Ok(())
}

/// Resolves when the shard is stopping.
pub(super) async fn stopped(shard: &Shard) {
    // The semaphore is closed, never signalled: every waiter fails out at once.
    let _ = shard.stop_signal.acquire(1).await;
}

/// What ended a datagram task's wait on an empty socket.
enum Woke {
    /// The readiness wait returned: a datagram should be waiting.
    Ready,
    /// The re-check timer, or the poll that replaces a readiness wait that keeps lying.
    Timer,
    Stop,
}

async fn datagram_loop(
    shard: Rc<Shard>,
    mut rx: DatagramReceiver,
    mut ready: Readiness,
    transport: Transport,
) {
    let base = shard.clock_base;
    let mut errors = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    let mut containers: Vec<Option<Rc<[u8]>>> = Vec::with_capacity(rx.slots());
    // Readiness wake-ups in a row that found the socket empty (shards sharing one unix socket
    // lose races for a datagram now and then), and how often that turned into polling.
    let mut false_wakes = 0u32;
    let mut polling_spells = 0u64;
    let mut woke = Woke::Timer;
    loop {
        match rx.recv_batch() {
            Ok(Received::Datagrams(n)) => {
                false_wakes = 0;
                let at = base.elapsed().as_nanos() as u64;
                handle_batch(&shard, &mut rx, transport, n, at, &mut containers);
                if shard.stop.get() {
                    // Stopping: drain what the socket holds, but a client that keeps sending
                    // must not hold the stop off forever.
                    let deadline =
                        *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_LIMIT);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                let yielded = Instant::now();
                glommio::yield_if_needed().await;
                let paused = yielded.elapsed().as_micros() as u64;
                let mut c = shard.counters.borrow_mut();
                c.receive_max_pause_us = c.receive_max_pause_us.max(paused);
            }
            Ok(Received::WouldBlock) => {
                if shard.stop.get() {
                    break;
                }
                if matches!(woke, Woke::Ready) {
                    false_wakes += 1;
                    if false_wakes == FALSE_WAKES_TO_POLL {
                        polling_spells += 1;
                        if polling_spells.is_power_of_two() {
                            eprintln!(
                                "corestatsd: shard {}: {} readiness woke {false_wakes} times in a \
                                 row with nothing to read ({polling_spells} times so far); \
                                 polling every {} ms until data arrives",
                                shard.index,
                                transport.name(),
                                FALSE_WAKE_POLL.as_millis()
                            );
                        }
                    }
                }
                woke = if false_wakes >= FALSE_WAKES_TO_POLL {
                    // A wait that returns at once with nothing to read would make this loop
                    // spin without ever yielding, so the window and stop tasks would never run
                    // (it once froze a shard, SIGTERM included). A timer always suspends.
                    let poll = async {
                        glommio::timer::sleep(FALSE_WAKE_POLL).await;
                        Woke::Timer
                    };
                    wait_or_stop(&shard, poll).await
                } else {
                    // The re-check bounds the damage of a readiness wake-up that never comes:
                    // flat out with one line per datagram, a shard once sat idle while its
                    // socket overflowed (docs/BENCHMARKS.md). 10 ms at 450k datagrams/s is
                    // ~4.5 MB, well within the default 4 MiB..16 MiB buffers' reach; idle, it
                    // is 100 wake-ups/s.
                    let recheck = async {
                        glommio::timer::sleep(READINESS_RECHECK).await;
                        Woke::Timer
                    };
                    let readable = async {
                        ready.wait().await;
                        Woke::Ready
                    };
                    wait_or_stop(&shard, futures_lite::future::or(readable, recheck)).await
                };
            }
            Err(e) => {
                socket_error(&shard, transport, "receive", &mut errors, &e);
                if shard.stop.get() {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// `wait`, or the shard's stop, whichever comes first.
async fn wait_or_stop(shard: &Shard, wait: impl Future<Output = Woke>) -> Woke {
    let stop = async {
        stopped(shard).await;
        Woke::Stop
    };
    futures_lite::future::or(wait, stop).await
}

/// Counts a socket error for its transport and logs it when this task's count of them is a power
/// of two: a failing socket cannot flood the log.
pub(super) fn socket_error(
    shard: &Shard,
    transport: Transport,
    op: &str,
    so_far: &mut u64,
    e: &dyn std::fmt::Display,
) {
    shard.counters.borrow_mut().receive_errors[transport] += 1;
    *so_far += 1;
    if so_far.is_power_of_two() {
        eprintln!(
            "corestatsd: shard {}: {} {op} error ({so_far} so far): {e}",
            shard.index,
            transport.name()
        );
    }
}

/// Parses and aggregates datagrams `0..n` of the pool. No allocation in steady state.
fn handle_batch(
    shard: &Shard,
    rx: &mut DatagramReceiver,
    transport: Transport,
    n: usize,
    at: u64,
    containers: &mut Vec<Option<Rc<[u8]>>>,
) {
    let mut c = shard.counters.borrow_mut();
    if let Some(f) = shard.forwarder.borrow_mut().as_mut() {
        let r = f.forward((0..n).map(|i| rx.datagram(i).0));
        c.forwarded += r.sent;
        c.forward_errors += r.failed;
    }
    if n == rx.slots() {
        c.pool_full += 1;
    }
    if transport == Transport::Udp
        && let Some(last) = n.checked_sub(1)
    {
        c.kernel_drops += rx.new_kernel_drops(last);
    }
    containers.clear();
    if transport == Transport::Uds && shard.cfg.origin.is_some() {
        let now = Instant::now();
        for i in 0..n {
            let container = resolve_origin(shard, &mut c, rx.sender_pid(i), now);
            containers.push(container);
        }
    }
    if shard.capture.is_on() {
        let ns = Capture::now_ns();
        let records = (0..n).map(|i| Record {
            ns,
            pid: rx.sender_pid(i).unwrap_or(0),
            container: containers.get(i).and_then(|c| c.as_deref()).map(Into::into),
            payload: rx.datagram(i).0.into(),
        });
        shard.capture.offer(shard.index, records);
    }
    let eol_required = shard.cfg.eol_required.on(transport);
    let mut bytes = 0;
    let mut agg = shard.agg.borrow_mut();
    let c = &mut *c;
    let mut truncated = 0;
    let mut unterminated = 0;
    let packets = (0..n).map(|i| {
        let (data, cut) = rx.datagram(i);
        bytes += data.len() as u64;
        let (data, lost) = complete_lines(data, cut, eol_required);
        match lost {
            Some(LostTail::Truncated) => truncated += 1,
            Some(LostTail::Unterminated) => unterminated += 1,
            None => {}
        }
        Packet {
            bytes: data,
            container: containers.get(i).and_then(|c| c.as_deref()),
        }
    });
    ingest(&mut agg, c, packets, at);
    drop(agg);
    super::send_news(shard, NEWS_CHUNK);
    c.packets[transport] += n as u64;
    c.bytes[transport] += bytes;
    c.truncated_datagrams += truncated;
    c.unterminated_lines += unterminated;
}

/// Why the last line of a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LostTail {
    /// The kernel cut the datagram to the buffer size.
    Truncated,
    /// `--eol-required` and no final `\n`.
    Unterminated,
}

/// The complete lines of a packet: a cut, or (with `eol_required`) unterminated, last line is
/// dropped and reported.
pub(super) fn complete_lines(
    data: &[u8],
    cut: bool,
    eol_required: bool,
) -> (&[u8], Option<LostTail>) {
    let lost = if cut {
        LostTail::Truncated
    } else if eol_required && !data.is_empty() && !data.ends_with(b"\n") {
        LostTail::Unterminated
    } else {
        return (data, None);
    };
    match memchr::memrchr(b'\n', data) {
        Some(nl) => (&data[..nl], Some(lost)),
        None => (&[], Some(lost)),
    }
}

/// The container of a unix socket sender, counting what could not be resolved.
pub(super) fn resolve_origin(
    shard: &Shard,
    c: &mut Counters,
    pid: Option<i32>,
    now: Instant,
) -> Option<Rc<[u8]>> {
    let Some(pid) = pid else {
        c.origin_unresolved[Unresolved::NoCredentials] += 1;
        return None;
    };
    let mut cache = shard.containers.borrow_mut();
    let cache = cache.as_mut()?;
    match cache.lookup(pid, now) {
        Lookup::Container(id) => {
            c.origin_resolved += 1;
            Some(id.clone())
        }
        Lookup::NoContainer => {
            c.origin_unresolved[Unresolved::NoContainer] += 1;
            None
        }
        Lookup::Unreadable => {
            c.origin_unresolved[Unresolved::Unreadable] += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_drops_only_a_cut_or_unterminated_tail() {
        assert_eq!(complete_lines(b"a\nb", false, false), (&b"a\nb"[..], None));
        assert_eq!(
            complete_lines(b"a\nb", true, false),
            (&b"a"[..], Some(LostTail::Truncated))
        );
        assert_eq!(
            complete_lines(b"a\nb", false, true),
            (&b"a"[..], Some(LostTail::Unterminated))
        );
        assert_eq!(
            complete_lines(b"a\nb\n", false, true),
            (&b"a\nb\n"[..], None)
        );
        assert_eq!(
            complete_lines(b"ab", false, true),
            (&b""[..], Some(LostTail::Unterminated))
        );
        assert_eq!(complete_lines(b"", false, true), (&b""[..], None));
    }
}
