//! The receive side of a shard: one task per datagram socket (UDP, unix datagram) draining it
//! with `recvmmsg`, one accept task per stream listener (unix stream, TCP) and one task per
//! connection, all on the shard's latency-sensitive queue and inside its receive gate, so a
//! stop can wait for every one of them to drain. Every packet, whatever its transport, goes
//! through `ingest`.

use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::TaskQueueHandle;
use glommio::net::{TcpListener, TcpStream};

use super::{DRAIN_LIMIT, Shard};
use crate::aggregate::{NEWS_CHUNK, Packet, ingest};
use crate::counters::Counters;
use crate::listen::{
    CloseReason, DatagramReceiver, Framer, Framing, Lookup, Readiness, Received, Stream, Transport,
    Unresolved, peer_pid,
};

/// Longest a datagram task waits on readiness before looking at its socket again anyway.
const READINESS_RECHECK: Duration = Duration::from_millis(10);

/// Readiness wake-ups in a row that find nothing before the task polls on a timer instead.
const FALSE_WAKES_TO_POLL: u32 = 4;

/// The poll interval while readiness cannot be trusted.
const FALSE_WAKE_POLL: Duration = Duration::from_millis(1);

/// How long a stopping connection waits for more bytes before it counts as drained.
const STREAM_DRAIN_WAIT: Duration = Duration::from_millis(20);

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
async fn stopped(shard: &Shard) {
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
fn socket_error(
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
enum LostTail {
    /// The kernel cut the datagram to the buffer size.
    Truncated,
    /// `--eol-required` and no final `\n`.
    Unterminated,
}

/// The complete lines of a packet: a cut, or (with `eol_required`) unterminated, last line is
/// dropped and reported.
fn complete_lines(data: &[u8], cut: bool, eol_required: bool) -> (&[u8], Option<LostTail>) {
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
fn resolve_origin(
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

/// What ended an accept loop's wait.
enum Accepted {
    Conn(glommio::Result<glommio::net::AcceptedTcpStream, ()>),
    Stop,
    /// Stopping, and no connection came for `STREAM_DRAIN_WAIT`.
    Quiet,
}

/// A stream listener and its descriptor (glommio's `TcpListener` does not expose it).
struct Listener {
    inner: TcpListener,
    fd: RawFd,
}

async fn accept_loop(
    shard: Rc<Shard>,
    listener: Listener,
    stream: Stream,
    framing: Framing,
    queue: TaskQueueHandle,
) {
    let transport = stream.transport();
    let mut errors = 0u64;
    let mut stopping = false;
    // Connections accepted once stopping: served from tasks this one awaits, as the receive
    // gate, closing, takes no new tasks.
    let mut serving = Vec::new();
    loop {
        // A flood of connections (refused ones above all) keeps every accept ready at once:
        // without this the loop would never give the shard's other tasks a turn.
        glommio::yield_if_needed().await;
        // One accept, kept across the stop: an io_uring accept dropped after the kernel gave
        // it a connection would lose that connection and what its client sent. Once stopping,
        // the same accept is awaited until the listener has been quiet for a moment.
        let mut accept =
            std::pin::pin!(async { Accepted::Conn(listener.inner.shared_accept().await) });
        let accepted = loop {
            let other = async {
                if stopping {
                    glommio::timer::sleep(STREAM_DRAIN_WAIT).await;
                    Accepted::Quiet
                } else {
                    stopped(&shard).await;
                    Accepted::Stop
                }
            };
            match futures_lite::future::or(accept.as_mut(), other).await {
                Accepted::Stop => stopping = true,
                done => break done,
            }
        };
        let conn = match accepted {
            Accepted::Quiet | Accepted::Stop => break,
            Accepted::Conn(Ok(a)) => a.bind_to_executor(),
            Accepted::Conn(Err(e)) => {
                // Out of descriptors, or a connection reset before it was accepted.
                socket_error(&shard, transport, "accept", &mut errors, &e);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(serve) = admit(&shard, conn, stream, framing) else {
            continue;
        };
        if stopping {
            if let Ok(task) = glommio::spawn_local_into(serve, queue) {
                serving.push(task);
            }
            continue;
        }
        match shard.receivers.spawn_into(serve, queue) {
            Ok(task) => {
                task.detach();
            }
            // The gate closed: the shard is stopping; the stream was dropped with the future.
            Err(_) => {
                shard.open_connections.borrow_mut()[stream] -= 1;
                shard.counters.borrow_mut().connections_closed[stream][CloseReason::Stopped] += 1;
            }
        }
    }
    drain_backlog(&shard, &listener, stream, framing, queue, &mut serving);
    for task in serving {
        task.await;
    }
}

/// At a stop: the connections still waiting in the listen backlog hold data their clients
/// believe delivered. Each is accepted and read until its client falls quiet, like an open one,
/// from a task put in `serving`, which the accept task awaits (and the stop waits for it).
fn drain_backlog(
    shard: &Rc<Shard>,
    listener: &Listener,
    stream: Stream,
    framing: Framing,
    queue: TaskQueueHandle,
    serving: &mut Vec<glommio::Task<()>>,
) {
    loop {
        // SAFETY: accept4 on our own listening descriptor, no address buffers.
        let fd = unsafe {
            libc::accept4(
                listener.fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            // EAGAIN: the backlog is empty (or the listener failed, which ends the drain too).
            break;
        }
        // SAFETY: `fd` is a connected stream socket just accepted, owned by nothing else.
        let conn = unsafe { TcpStream::from_raw_fd(fd) };
        if let Some(serve) = admit(shard, conn, stream, framing) {
            // Not in the receive gate, which is closing; this task, which is in it, waits.
            if let Ok(task) = glommio::spawn_local_into(serve, queue) {
                serving.push(task);
            }
        }
    }
}

/// Counts a new connection and returns the task that serves it, or refuses it (counted) when
/// the shard is at `--max-connections-per-shard`.
fn admit(
    shard: &Rc<Shard>,
    conn: TcpStream,
    stream: Stream,
    framing: Framing,
) -> Option<impl Future<Output = ()> + use<>> {
    let mut c = shard.counters.borrow_mut();
    c.connections_opened[stream] += 1;
    let total_open: u64 = shard.open_connections.borrow().iter().map(|(_, n)| n).sum();
    if total_open >= shard.cfg.max_connections_per_shard as u64 {
        c.connections_closed[stream][CloseReason::Refused] += 1;
        return None;
    }
    let container = if stream == Stream::UdsStream && shard.cfg.origin.is_some() {
        // SAFETY: the descriptor belongs to `conn`, alive for this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(conn.as_raw_fd()) };
        resolve_origin(shard, &mut c, peer_pid(&fd), Instant::now())
    } else {
        None
    };
    drop(c);
    shard.open_connections.borrow_mut()[stream] += 1;
    Some(serve_connection(
        shard.clone(),
        conn,
        stream,
        framing,
        container,
    ))
}

/// What ended one wait of a connection.
enum Wake {
    Read(io::Result<usize>),
    /// Nothing arrived for the idle timeout (or, when stopping, the drain wait).
    Quiet,
    Stop,
}

/// Reads one connection until its client closes, it breaks a limit, idles out, or the shard
/// stops (then what the client already sent is read first).
async fn serve_connection(
    shard: Rc<Shard>,
    mut conn: TcpStream,
    stream: Stream,
    framing: Framing,
    container: Option<Rc<[u8]>>,
) {
    let transport = stream.transport();
    let mut framer = Framer::new(framing, shard.cfg.buffer_size_bytes);
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let idle = match stream {
        Stream::Tcp => shard.cfg.tcp_idle_timeout,
        Stream::UdsStream => None,
    };
    let mut draining: Option<Instant> = None;
    let reason = loop {
        if draining.is_none() && shard.stop.get() {
            draining = Some(Instant::now() + DRAIN_LIMIT);
        }
        let wait = if draining.is_some() {
            Some(STREAM_DRAIN_WAIT)
        } else {
            idle
        };
        let spare = framer.spare();
        // glommio reads wait on readiness, so dropping a read that lost the race loses no
        // bytes. (Its own read timeout cannot be shortened once armed, hence the timer here.)
        let read = async { Wake::Read(conn.read(spare).await) };
        let timer = async {
            match wait {
                Some(d) => {
                    glommio::timer::sleep(d).await;
                    Wake::Quiet
                }
                None => futures_lite::future::pending().await,
            }
        };
        let stop = async {
            if draining.is_some() {
                futures_lite::future::pending().await
            } else {
                stopped(&shard).await;
                Wake::Stop
            }
        };
        let read = match futures_lite::future::or(read, futures_lite::future::or(timer, stop)).await
        {
            Wake::Read(r) => Some(r),
            Wake::Quiet if draining.is_some() => break CloseReason::Stopped,
            Wake::Quiet => break CloseReason::IdleTimeout,
            Wake::Stop => None,
        };
        let n = match read {
            // The stop arrived while waiting: drain with short reads from here.
            None => continue,
            Some(Ok(0)) => {
                let end = framer.finish();
                if let Ok(Some(rest)) = &end {
                    ingest_stream(
                        &shard,
                        &framer,
                        std::slice::from_ref(rest),
                        transport,
                        container.as_deref(),
                    );
                }
                break match end {
                    Ok(_) => CloseReason::Eof,
                    Err(e) => e.into(),
                };
            }
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                shard.counters.borrow_mut().receive_errors[transport] += 1;
                break CloseReason::ReadError;
            }
        };
        framer.filled(n);
        shard.counters.borrow_mut().bytes[transport] += n as u64;
        ranges.clear();
        let cut = framer.packets(&mut ranges);
        ingest_stream(&shard, &framer, &ranges, transport, container.as_deref());
        if let Err(e) = cut {
            break e.into();
        }
        if draining.is_some_and(|d| Instant::now() >= d) {
            break CloseReason::Stopped;
        }
        glommio::yield_if_needed().await;
    };
    shard.open_connections.borrow_mut()[stream] -= 1;
    shard.counters.borrow_mut().connections_closed[stream][reason] += 1;
}

/// Ingests complete packets cut from a connection's buffer.
fn ingest_stream(
    shard: &Shard,
    framer: &Framer,
    ranges: &[Range<usize>],
    transport: Transport,
    container: Option<&[u8]>,
) {
    if ranges.is_empty() {
        return;
    }
    let at = shard.clock_base.elapsed().as_nanos() as u64;
    let mut c = shard.counters.borrow_mut();
    if let Some(f) = shard.forwarder.borrow_mut().as_mut() {
        let r = f.forward(ranges.iter().map(|r| framer.get(r.clone())));
        c.forwarded += r.sent;
        c.forward_errors += r.failed;
    }
    let eol_required = shard.cfg.eol_required.on(transport);
    let mut unterminated = 0;
    let packets = ranges.iter().map(|r| {
        let (bytes, lost) = complete_lines(framer.get(r.clone()), false, eol_required);
        unterminated += u64::from(lost.is_some());
        Packet { bytes, container }
    });
    let c = &mut *c;
    ingest(&mut shard.agg.borrow_mut(), c, packets, at);
    super::send_news(shard, NEWS_CHUNK);
    c.unterminated_lines += unterminated;
    c.packets[transport] += ranges.len() as u64;
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
