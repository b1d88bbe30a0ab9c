//! The stream transports of a shard (unix stream, TCP): one accept task per listener and one
//! task per connection, framed (`listen::Framer`) and ingested like datagrams, inside the
//! shard's receive gate. Must not block its executor: every wait is a glommio future that a stop
//! also ends.
//!
//! Bounded per transport: each has its own `--max-connections-per-shard` and idle timeout, and a
//! connection holding part of a frame for `--stream-frame-timeout-secs` without completing one
//! is closed. A newcomer past the limit takes the place of the transport's longest-idle
//! connection (read to its end, then closed as `evicted`), so idle or trickling clients cannot
//! lock out the ones that send.

use std::cell::Cell;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::TaskQueueHandle;
use glommio::net::{TcpListener, TcpStream};

use super::receive::{complete_lines, resolve_origin, socket_error, stopped};
use super::{DRAIN_LIMIT, Shard};
use crate::aggregate::{NEWS_CHUNK, Packet, ingest};
use crate::label::Label;
use crate::listen::capture::{Capture, Record};
use crate::listen::{CloseReason, Framer, Framing, Stream, Transport, peer_pid};

/// How long a stopping connection waits for more bytes before it counts as drained.
const STREAM_DRAIN_WAIT: Duration = Duration::from_millis(20);

/// What ended an accept loop's wait.
enum Accepted {
    Conn(glommio::Result<glommio::net::AcceptedTcpStream, ()>),
    Stop,
    /// Stopping, and no connection came for `STREAM_DRAIN_WAIT`.
    Quiet,
}

/// One open connection, as its shard's registry (`Shard::live`) sees it.
pub(super) struct Live {
    /// The connection's descriptor (open while it is in the registry).
    fd: RawFd,
    /// The accept, or the last read that brought bytes.
    last_active: Cell<Instant>,
    /// A read has brought bytes.
    sent_any: Cell<bool>,
    /// Chosen to make room: the connection reads what is left and closes.
    evicting: Cell<bool>,
    /// Closed (never signalled) when evicted, which wakes the connection's wait.
    evict: glommio::sync::Semaphore,
}

/// A stream listener and its descriptor (glommio's `TcpListener` does not expose it).
pub(super) struct Listener {
    pub(super) inner: TcpListener,
    pub(super) fd: RawFd,
}

pub(super) async fn accept_loop(
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
        if shard.stop.get() {
            // The gate is closing (this loop has not seen the stop yet): serve it from here, as
            // every connection accepted while stopping.
            stopping = true;
            if let Ok(task) = glommio::spawn_local_into(serve, queue) {
                serving.push(task);
            }
            continue;
        }
        match shard.receivers.spawn_into(serve, queue) {
            Ok(task) => {
                task.detach();
            }
            // Not reached: the gate closes only after `stop` is set, and nothing ran between.
            // Counted all the same; the registry forgets the connection the future held.
            Err(_) => {
                shard.open_connections.borrow_mut()[stream] -= 1;
                shard.counters.borrow_mut().connections_closed[stream][CloseReason::Stopped] += 1;
                shard.live.borrow_mut()[stream.index()].retain(|l| Rc::strong_count(l) > 1);
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

/// Counts a new connection and returns the task that serves it. At the transport's
/// `--max-connections-per-shard`, its longest-idle connection is evicted to make room; the
/// newcomer is refused (counted) only when every open one is already being evicted.
fn admit(
    shard: &Rc<Shard>,
    conn: TcpStream,
    stream: Stream,
    framing: Framing,
) -> Option<impl Future<Output = ()> + use<>> {
    let mut c = shard.counters.borrow_mut();
    c.connections_opened[stream] += 1;
    let open = shard.open_connections.borrow()[stream];
    if open >= shard.cfg.max_connections_per_shard as u64 {
        let live = shard.live.borrow();
        let Some(victim) = longest_idle(&live[stream.index()]) else {
            c.connections_closed[stream][CloseReason::Refused] += 1;
            return None;
        };
        victim.evicting.set(true);
        victim.evict.close();
    }
    // The peer's pid (unix stream only), for origin detection and captures.
    let pid = (stream == Stream::UdsStream).then(|| {
        // SAFETY: the descriptor belongs to `conn`, alive for this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(conn.as_raw_fd()) };
        peer_pid(&fd)
    });
    let container = match pid {
        Some(pid) if shard.cfg.origin.is_some() => {
            resolve_origin(shard, &mut c, pid, Instant::now())
        }
        _ => None,
    };
    let pid = pid.flatten().unwrap_or(0);
    drop(c);
    shard.open_connections.borrow_mut()[stream] += 1;
    let live = Rc::new(Live {
        fd: conn.as_raw_fd(),
        last_active: Cell::new(Instant::now()),
        sent_any: Cell::new(false),
        evicting: Cell::new(false),
        evict: glommio::sync::Semaphore::new(0),
    });
    shard.live.borrow_mut()[stream.index()].push(live.clone());
    Some(serve_connection(
        shard.clone(),
        (conn, live),
        stream,
        framing,
        (pid, container),
    ))
}

/// The open connection to evict: the longest-idle one that has never sent a byte (it holds a
/// slot and offers nothing; clients send once connected), else the one whose last bytes were
/// read longest ago, unless bytes wait in its socket (a busy shard has not read them yet: it is
/// not idle, and is marked active now); after a few such, the oldest whatever waits. `None`
/// when every one is being evicted already.
fn longest_idle(open: &[Rc<Live>]) -> Option<&Rc<Live>> {
    const TRIES: usize = 8;
    let candidates = || open.iter().filter(|l| !l.evicting.get());
    let silent = candidates()
        .filter(|l| !l.sent_any.get())
        .min_by_key(|l| l.last_active.get());
    if silent.is_some() {
        return silent;
    }
    let oldest = || candidates().min_by_key(|l| l.last_active.get());
    for _ in 0..TRIES {
        let candidate = oldest()?;
        let mut waiting: libc::c_int = 0;
        // SAFETY: FIONREAD on a descriptor the registry keeps open, into an int we own.
        let r = unsafe { libc::ioctl(candidate.fd, libc::FIONREAD, &mut waiting) };
        if r != 0 || waiting == 0 {
            return Some(candidate);
        }
        candidate.last_active.set(Instant::now());
    }
    oldest()
}

/// What ended one wait of a connection.
enum Wake {
    Read(io::Result<usize>),
    /// Nothing arrived for the idle timeout, the frame timeout (or, when draining, the drain
    /// wait).
    Quiet,
    Stop,
    Evicted,
}

/// Reads one connection until its client closes, it breaks a limit, idles out, trickles, or
/// the shard stops or evicts it (then what the client already sent is read first).
async fn serve_connection(
    shard: Rc<Shard>,
    (mut conn, live): (TcpStream, Rc<Live>),
    stream: Stream,
    framing: Framing,
    (pid, container): (i32, Option<Rc<[u8]>>),
) {
    let transport = stream.transport();
    let mut framer = Framer::new(framing, shard.cfg.buffer_size_bytes);
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let idle = match stream {
        Stream::Tcp => shard.cfg.tcp_idle_timeout,
        Stream::UdsStream => shard.cfg.uds_stream_idle_timeout,
    };
    let frame_timeout = shard.cfg.stream_frame_timeout;
    // Since when part of a frame has waited with none completed.
    let mut partial_since: Option<Instant> = None;
    let mut draining: Option<Instant> = None;
    let mut evicted = false;
    let reason = loop {
        if draining.is_none() && (shard.stop.get() || evicted) {
            draining = Some(Instant::now() + DRAIN_LIMIT);
        }
        let frame_left = partial_since
            .zip(frame_timeout)
            .map(|(since, t)| (since + t).saturating_duration_since(Instant::now()));
        let wait = if draining.is_some() {
            Some(STREAM_DRAIN_WAIT)
        } else {
            match (idle, frame_left) {
                (Some(i), Some(f)) => Some(i.min(f)),
                (i, f) => i.or(f),
            }
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
        let evict = async {
            if draining.is_some() {
                futures_lite::future::pending().await
            } else {
                // Closed, never signalled: fails out when the connection is evicted.
                let _ = live.evict.acquire(1).await;
                Wake::Evicted
            }
        };
        let woke = futures_lite::future::or(
            read,
            futures_lite::future::or(timer, futures_lite::future::or(stop, evict)),
        )
        .await;
        let read = match woke {
            Wake::Read(r) => Some(r),
            Wake::Quiet if draining.is_some() && evicted => break CloseReason::Evicted,
            Wake::Quiet if draining.is_some() => break CloseReason::Stopped,
            Wake::Quiet if frame_left.is_some_and(|f| f <= wait.unwrap_or(f)) => {
                break CloseReason::FrameTimeout;
            }
            Wake::Quiet => break CloseReason::IdleTimeout,
            Wake::Stop => None,
            Wake::Evicted => {
                evicted = true;
                None
            }
        };
        let n = match read {
            // The stop or the eviction arrived while waiting: drain with short reads from here.
            None => continue,
            Some(Ok(0)) => {
                let end = framer.finish();
                if let Ok(Some(rest)) = &end {
                    ingest_stream(
                        &shard,
                        &framer,
                        std::slice::from_ref(rest),
                        transport,
                        (pid, container.as_deref()),
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
        let now = Instant::now();
        live.last_active.set(now);
        live.sent_any.set(true);
        ranges.clear();
        let cut = framer.packets(&mut ranges);
        if !ranges.is_empty() || !framer.holds_partial() {
            partial_since = None;
        } else if partial_since.is_none() {
            partial_since = Some(now);
        }
        ingest_stream(
            &shard,
            &framer,
            &ranges,
            transport,
            (pid, container.as_deref()),
        );
        if let Err(e) = cut {
            break e.into();
        }
        // Also here: bytes that keep arriving (a frame never completed) win every race with
        // the timer.
        if partial_since
            .zip(frame_timeout)
            .is_some_and(|(since, t)| now >= since + t)
        {
            break CloseReason::FrameTimeout;
        }
        if draining.is_some_and(|d| Instant::now() >= d) {
            break if evicted {
                CloseReason::Evicted
            } else {
                CloseReason::Stopped
            };
        }
        glommio::yield_if_needed().await;
    };
    shard.open_connections.borrow_mut()[stream] -= 1;
    let mut registry = shard.live.borrow_mut();
    let list = &mut registry[stream.index()];
    if let Some(i) = list.iter().position(|l| Rc::ptr_eq(l, &live)) {
        list.swap_remove(i);
    }
    drop(registry);
    shard.counters.borrow_mut().connections_closed[stream][reason] += 1;
    if reason == CloseReason::TextOnLengthFraming {
        let n = shard.text_closes.get() + 1;
        shard.text_closes.set(n);
        if n.is_power_of_two() {
            let fix = match stream {
                Stream::Tcp => {
                    "--tcp-framing is length; newline clients need --tcp-framing newline"
                }
                Stream::UdsStream => {
                    "the unix stream socket takes 4-byte little-endian length frames (Datadog's framing)"
                }
            };
            eprintln!(
                "corestatsd: shard {}: a {} connection sent text where a length frame was due: \
                 closed ({fix}; {n} such so far)",
                shard.index,
                stream.transport().name()
            );
        }
    }
}

/// Ingests complete packets cut from a connection's buffer.
fn ingest_stream(
    shard: &Shard,
    framer: &Framer,
    ranges: &[Range<usize>],
    transport: Transport,
    (pid, container): (i32, Option<&[u8]>),
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
    if shard.capture.is_on() {
        let ns = Capture::now_ns();
        let records = ranges.iter().map(|r| Record {
            ns,
            pid,
            container: container.map(Into::into),
            payload: framer.get(r.clone()).into(),
        });
        shard.capture.offer(shard.index, records);
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
