//! The per-core runtime: one pinned glommio executor per CPU, each owning its socket, buffer pool,
//! aggregator, merge table and counters, wired into four kinds of task:
//!
//! * receive (latency-sensitive queue, `receive.rs`): drain each datagram socket with `recvmmsg`,
//!   accept and read stream connections, and hand every packet to `aggregate::ingest`;
//! * window (background queue): at each wall-clock window end, sweep the closed window in chunks
//!   and send every owner its `ContextBatch`;
//! * inbox (background queue): merge the batches other shards send, hand results to the sink;
//! * control (background queue): wait for the stop signal and wake every other task;
//! * heartbeat (background queue): beat on the board every 100 ms, and apply a configuration
//!   reload (SIGHUP) the main thread sent.
//!
//! Runtime only: what a packet becomes is `aggregate`'s, how a window merges is `merge`'s.
//! Per-core state sits in `Rc<RefCell<..>>` and never leaves its executor; only `ShardMsg` values
//! cross cores. No borrow is held across an `.await`.

mod receive;
mod stream;

pub use receive::Sockets;

use std::cell::{Cell, RefCell};
use std::io;
use std::io::Write as _;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};

use crate::aggregate::{Aggregator, ContextBatch, Reload, ingest};
use crate::config::Config;
use crate::counters::{CacheResult, Counters};
use crate::label::by;
use crate::listen::capture::Capture;
use crate::listen::{ContainerCache, Forwarder};
use crate::merge::{Merger, ReadyWindow};
use crate::sink::{SinkGone, SinkSender, ToSink};
use crate::telemetry::TelemetrySnapshot;
use crate::telemetry::board::Board;

/// Set by SIGINT/SIGTERM. Only the main thread polls it; it then wakes every shard through a
/// socket pair (an I/O completion, which wakes a parked executor whatever its timers do).
static STOP: AtomicBool = AtomicBool::new(false);
/// Shards whose executor has returned; one that ends before a stop failed, and the main thread
/// then stops the others instead of waiting for a signal.
static SHARDS_ENDED: AtomicUsize = AtomicUsize::new(0);

/// Set once a newer process has taken the listeners (`--take-over`): the windows still to
/// close leave whole, for it.
static HANDOVER: AtomicBool = AtomicBool::new(false);

/// A take-over: the windows this process still closes go whole to the new process; then
/// stop as a signal would.
pub fn request_handover() {
    HANDOVER.store(true, Ordering::Relaxed);
    request_stop();
}

/// Set while a taking-over process waits for the old one's go: its shards do not read yet.
static HOLD_RECEIVE: AtomicBool = AtomicBool::new(false);

/// `--take-over`: shards start without reading their sockets until `release_receive`.
pub fn hold_receive() {
    HOLD_RECEIVE.store(true, Ordering::Relaxed);
}

pub fn release_receive() {
    HOLD_RECEIVE.store(false, Ordering::Relaxed);
}

/// Whether a take-over has happened (the socket files are the new process' then).
pub fn handed_over() -> bool {
    HANDOVER.load(Ordering::Relaxed)
}

/// What the main thread sends one shard while it runs.
pub struct ShardInputs {
    /// Configuration reloads (SIGHUP).
    pub reloads: mpsc::Receiver<Reload>,
    /// Packets of an older process' last windows (a take-over), ingested as if received.
    pub injected: mpsc::Receiver<Vec<u8>>,
}

/// Asks every shard to stop as a signal would (used by the signal handler).
pub fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

/// Whether a stop has been asked for (`/readyz` answers 503 from then on).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// How often the main thread looks at the stop flag, and so the longest a stop waits on it.
const STOP_POLL: Duration = Duration::from_millis(20);
/// How often an owner looks in its inbox for other shards' batches.
const INBOX_POLL: Duration = Duration::from_millis(10);
/// Longest a stopping shard keeps draining a socket that clients keep filling.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// How often a shard's timer beats its heart on the board.
const BEAT: Duration = Duration::from_millis(100);
/// Contexts swept, or partials merged, between two chances for receive to run.
pub const CHUNK: usize = 1024;

/// What crosses cores: a closed window's partials for their owner, or "this shard has stopped
/// and sent everything".
pub enum ShardMsg {
    Batch(ContextBatch),
    Done,
}

/// Everything a shard needs, moved onto its executor.
pub struct ShardSetup {
    pub index: usize,
    pub sockets: Sockets,
    /// One sender per shard (indexed by shard; this shard's own is unused).
    pub outboxes: Vec<mpsc::Sender<ShardMsg>>,
    /// Batches and `Done`s from the other shards.
    pub inbox: mpsc::Receiver<ShardMsg>,
    pub sink: SinkSender,
    pub clock_base: Instant,
    /// The shard's end of its stop socket pair: readable (a byte, or EOF) means stop.
    pub stop_wake: UnixStream,
    /// Told once the shard's tasks run (receive, window, inbox, control).
    pub ready: mpsc::Sender<()>,
    /// Where the shard's heartbeat goes (`/healthz`).
    pub board: Arc<Board>,
    /// The traffic capture the shard offers its packets to while one runs.
    pub capture: Arc<Capture>,
    /// Reloads and injected packets, taken at each heartbeat.
    pub inputs: ShardInputs,
}

struct Shard {
    index: usize,
    shards: usize,
    cfg: Config,
    agg: RefCell<Aggregator>,
    merger: RefCell<Merger>,
    counters: RefCell<Counters>,
    stop: Cell<bool>,
    /// Closed when `stop` is set, which wakes every task waiting on it.
    stop_signal: glommio::sync::Semaphore,
    /// Every receive task (datagram loops, accept loops, connections) runs inside this gate;
    /// a stop closes it and waits for them all to drain.
    receivers: glommio::sync::Gate,
    /// Open connections per stream transport.
    open_connections: RefCell<by!(crate::listen::Stream)>,
    /// The open connections themselves, per stream transport (by label index): whom to evict.
    live: RefCell<Vec<Vec<Rc<stream::Live>>>>,
    /// Origin detection's pid-to-container cache, with `--origin-detection`.
    containers: RefCell<Option<ContainerCache>>,
    forwarder: RefCell<Option<Forwarder>>,
    capture: Arc<Capture>,
    clock_base: Instant,
    peers_done: Cell<usize>,
    sink: SinkSender,
    /// Points the sink queue refused so far (for the log line's total).
    sink_queue_drops: Cell<u64>,
    /// Connections closed for text on a length-framed stream (logged at powers of two).
    text_closes: Cell<u64>,
}

/// Starts one executor per configured CPU, calls `on_ready` once every shard runs its tasks
/// and `on_tick` every `STOP_POLL` from then on, and waits for all of them to stop.
pub fn run_shards(
    cfg: &Config,
    (sockets, inputs): (Vec<Sockets>, Vec<ShardInputs>),
    sink: SinkSender,
    (board, capture): (&Arc<Board>, &Arc<Capture>),
    on_ready: impl FnOnce(),
    mut on_tick: impl FnMut(),
) -> io::Result<()> {
    let (outboxes, inboxes): (Vec<_>, Vec<_>) =
        (0..cfg.cores.len()).map(|_| mpsc::channel()).unzip();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let mut inboxes = inboxes.into_iter();
    let clock_base = Instant::now();
    let mut handles = Vec::new();
    let mut wakers = Vec::new();
    let shards = sockets.into_iter().zip(inputs).zip(&cfg.cores);
    for (index, ((sockets, inputs), &cpu)) in shards.enumerate() {
        let (waker, stop_wake) = UnixStream::pair()?;
        wakers.push(waker);
        let setup = ShardSetup {
            index,
            sockets,
            outboxes: outboxes.clone(),
            // One inbox was made per shard, so there is one for this index.
            inbox: inboxes.next().expect("one inbox per shard"),
            sink: sink.clone(),
            clock_base,
            stop_wake,
            ready: ready_tx.clone(),
            board: board.clone(),
            capture: capture.clone(),
            inputs,
        };
        let cfg = cfg.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("corestatsd-{index}"))
            .spin_before_park(cfg.spin_before_park)
            .preempt_timer(Duration::from_millis(1))
            // The io_uring buffer registration is unused here (receive goes through recvmmsg);
            // keep it small so every shard fits a default 8 MiB memlock limit.
            .io_memory(64 << 10)
            .spawn(move || async move {
                let result = shard_main(cfg, setup).await;
                SHARDS_ENDED.fetch_add(1, Ordering::Relaxed);
                result
            })
            .map_err(|e| io::Error::other(format!("cannot start the shard on CPU {cpu}: {e}")))?;
        handles.push(handle);
    }
    drop(sink);
    drop(ready_tx);
    // Shards end only when told to, so one that ended on its own failed: stop them all.
    let running = || !STOP.load(Ordering::Relaxed) && SHARDS_ENDED.load(Ordering::Relaxed) == 0;
    let mut ready = 0;
    while running() && ready < handles.len() {
        match ready_rx.recv_timeout(STOP_POLL) {
            Ok(()) => ready += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Every shard dropped its sender without saying so: each one failed to start.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if ready == handles.len() {
        on_ready();
    }
    while running() {
        std::thread::sleep(STOP_POLL);
        on_tick();
    }
    for mut w in wakers {
        // A shard that already ended has closed its end; nothing to wake then.
        let _ = w.write_all(&[1]);
    }
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(e) => {
                first_err = first_err.or(Some(io::Error::other(format!("a shard failed: {e}"))))
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn wall_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

async fn shard_main(cfg: Config, setup: ShardSetup) -> io::Result<()> {
    let shards = cfg.cores.len();
    let outboxes = setup.outboxes;
    let inbox = setup.inbox;
    let now = wall_secs() as u64;
    let shard = Rc::new(Shard {
        index: setup.index,
        shards,
        agg: RefCell::new(Aggregator::new(cfg.aggregate.clone(), now)),
        merger: RefCell::new(
            Merger::new(
                shards,
                cfg.aggregate.bucket_secs,
                crate::values::Limits {
                    histogram_samples: cfg.aggregate.exact_samples,
                    set_members: cfg.aggregate.set_exact_members,
                },
                cfg.histogram.clone(),
            )
            .keeping_whole(cfg.downstream.iter().any(|d| {
                matches!(
                    d,
                    crate::config::Downstream::Relay(_)
                        | crate::config::Downstream::PrometheusScrape
                )
            })),
        ),
        counters: RefCell::new(Counters::default()),
        stop: Cell::new(false),
        stop_signal: glommio::sync::Semaphore::new(0),
        receivers: glommio::sync::Gate::new(),
        open_connections: Default::default(),
        live: RefCell::new(
            <crate::listen::Stream as crate::label::Label>::ALL
                .iter()
                .map(|_| Vec::new())
                .collect(),
        ),
        containers: RefCell::new(
            cfg.origin
                .as_ref()
                .map(|o| ContainerCache::new(o.proc_root.clone(), o.cache_ttl)),
        ),
        forwarder: RefCell::new(match cfg.forward_addr {
            Some(to) => Some(
                Forwarder::connect(to, cfg.recv_batch_datagrams)
                    .map_err(|e| io::Error::other(format!("--forward-addr {to}: {e}")))?,
            ),
            None => None,
        }),
        capture: setup.capture.clone(),
        clock_base: setup.clock_base,
        peers_done: Cell::new(0),
        sink_queue_drops: Cell::new(0),
        text_closes: Cell::new(0),
        sink: setup.sink,
        cfg,
    });
    let ex = glommio::executor();
    let receive_queue = ex.create_task_queue(
        Shares::Static(1000),
        Latency::Matters(Duration::from_millis(1)),
        "receive",
    );
    let background = ex.create_task_queue(Shares::Static(200), Latency::NotImportant, "window");

    // SAFETY: `stop_wake` is an open unix stream socket we own; ownership passes to glommio.
    let mut wake: glommio::net::UnixStream =
        unsafe { glommio::net::UnixStream::from_raw_fd(setup.stop_wake.into_raw_fd()) };
    let control = shard.clone();
    glommio::spawn_local_into(
        async move {
            let mut byte = [0u8; 1];
            let _ = futures_lite::AsyncReadExt::read(&mut wake, &mut byte).await;
            control.stop.set(true);
            control.stop_signal.close();
        },
        background,
    )
    .map_err(|e| io::Error::other(e.to_string()))?
    .detach();

    // The heartbeat: a timer task that runs only while the executor runs its tasks. Awaited
    // below (a detached task still pending when the executor ends keeps its `Rc<Shard>`, and
    // with it the sink sender, alive).
    let (beating, board, index) = (shard.clone(), setup.board, setup.index);
    let ShardInputs { reloads, injected } = setup.inputs;
    let heartbeat = glommio::spawn_local_into(
        async move {
            // Plain sleeps: no wait on the stop semaphore (a stop is seen within one beat).
            while !beating.stop.get() {
                board.beat(index);
                // Between two samples: no borrow of the aggregator is held across an await.
                while let Ok(r) = reloads.try_recv() {
                    beating.agg.borrow_mut().reload(r);
                    board.reloaded(index);
                }
                while let Ok(packet) = injected.try_recv() {
                    let at = beating.clock_base.elapsed().as_nanos() as u64;
                    let mut c = beating.counters.borrow_mut();
                    ingest(&mut beating.agg.borrow_mut(), &mut c, [&packet[..]], at);
                    c.taken_over_packets += 1;
                    drop(c);
                    send_news(&beating, crate::aggregate::NEWS_CHUNK);
                }
                glommio::timer::sleep(BEAT).await;
            }
        },
        background,
    )
    .map_err(|e| io::Error::other(e.to_string()))?;

    let merges = glommio::spawn_local_into(inbox_loop(shard.clone(), inbox), background)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let windows = glommio::spawn_local_into(window_loop(shard.clone(), outboxes), background)
        .map_err(|e| io::Error::other(e.to_string()))?;
    // The main thread may be gone already if another shard failed; nothing to tell then.
    let _ = setup.ready.send(());
    // A take-over: the sockets are read only once the old process has switched its windows to
    // us (`release_receive`), so every window this one writes holds only what it read after.
    while HOLD_RECEIVE.load(Ordering::Relaxed) && !shard.stop.get() {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    // Stopped while waiting: the old process serves on.
    if !shard.stop.get() {
        receive::start(&shard, setup.sockets, receive_queue)?;
    }
    drop(setup.ready);
    windows.await;
    merges.await;
    heartbeat.await;
    Ok(())
}

/// Merges what the other shards send this owner until every one of them has said `Done`.
///
/// The inbox is a std channel polled every `INBOX_POLL`: batches arrive once per window, so
/// the poll costs nothing that matters, and it cannot lose a wake-up. (glommio's cross-executor
/// channels could: a two-shard server once hung at start or stop, and glommio #555 reports
/// deadlocks in its channel mesh.)
async fn inbox_loop(shard: Rc<Shard>, inbox: mpsc::Receiver<ShardMsg>) {
    let mut peers_left = shard.shards - 1;
    while peers_left > 0 {
        match inbox.try_recv() {
            Ok(ShardMsg::Batch(b)) => merge_batch(&shard, b).await,
            Ok(ShardMsg::Done) => {
                peers_left -= 1;
                peer_done(&shard).await;
            }
            Err(mpsc::TryRecvError::Empty) => glommio::timer::sleep(INBOX_POLL).await,
            // Every shard holds a sender to every inbox until it ends, after its `Done`.
            Err(mpsc::TryRecvError::Disconnected) => break,
        }
    }
}

/// Closes each window at its wall-clock end; on stop, waits for every receive task to drain,
/// closes the open window like any other and tells every owner this shard is done.
async fn window_loop(shard: Rc<Shard>, outboxes: Vec<mpsc::Sender<ShardMsg>>) {
    loop {
        if shard.stop.get() {
            break;
        }
        let end = shard.agg.borrow().window_end() as f64;
        let now = wall_secs();
        if now >= end {
            close_window(&shard, &outboxes).await;
            continue;
        }
        // Until the window ends, or the stop arrives.
        let until_end = Duration::from_secs_f64(end - now);
        futures_lite::future::or(glommio::timer::sleep(until_end), async {
            let _ = shard.stop_signal.acquire(1).await;
        })
        .await;
    }
    let _ = shard.receivers.close().await;
    if HANDOVER.load(Ordering::Relaxed) {
        // Every window still to close, or still merging, leaves whole for the new process.
        shard.merger.borrow_mut().set_keeping_whole(true);
        shard.agg.borrow_mut().stop_zero_fill();
    }
    close_window(&shard, &outboxes).await;
    for (peer, outbox) in outboxes.iter().enumerate() {
        if peer != shard.index {
            let _ = outbox.send(ShardMsg::Done);
        }
    }
    peer_done(&shard).await;
}

/// Closes the open window: sweeps it in chunks, sends each owner its batch, sends timestamped
/// points and telemetry to the sink.
async fn close_window(shard: &Rc<Shard>, outboxes: &[mpsc::Sender<ShardMsg>]) {
    let started = Instant::now();
    shard.agg.borrow_mut().begin_close();
    let closed = loop {
        if let Some(c) = shard.agg.borrow_mut().close_step(CHUNK) {
            break c;
        }
        glommio::yield_if_needed().await;
    };
    let window = closed.window;
    // The descriptions of every context created so far reach the sink before any batch leaves,
    // so before any point that needs them.
    send_news(shard, 0);
    for (owner, batch) in closed.batches.into_iter().enumerate() {
        if owner == shard.index {
            merge_batch(shard, batch).await;
        } else if outboxes[owner].send(ShardMsg::Batch(batch)).is_err() {
            eprintln!(
                "corestatsd: shard {}: owner {owner} is gone; window {window} partials lost",
                shard.index
            );
        }
    }
    let pending = {
        let mut agg = shard.agg.borrow_mut();
        let mut c = shard.counters.borrow_mut();
        c.flush_duration_us = c
            .flush_duration_us
            .max(started.elapsed().as_micros() as u64);
        c.live_contexts = closed.live_contexts;
        c.set_estimates += closed.set_estimates;
        c.connections = *shard.open_connections.borrow();
        let names = agg.take_name_stats();
        c.mapper_cache[CacheResult::Hit] += names.cache_hits;
        c.mapper_cache[CacheResult::Miss] += names.cache_misses;
        c.mapped_names += names.mapped;
        for (reason, n) in names.name_tag_errors.iter() {
            c.name_tag_errors[reason] += n;
        }
        let refusals = agg.take_refusals();
        c.contexts_refused = refusals.refused;
        (agg.take_pending(), top_refused(refusals.by_name))
    };
    let (pending, refused_by_metric) = pending;
    let counters = std::mem::take(&mut *shard.counters.borrow_mut());
    send_to_sink(shard, ToSink::Batch(pending));
    send_to_sink(
        shard,
        ToSink::Telemetry(Box::new(TelemetrySnapshot {
            shard: shard.index,
            window,
            counters,
            refused_by_metric,
            busiest: closed.busiest,
        })),
    );
}

async fn merge_batch(shard: &Shard, batch: ContextBatch) {
    let window = batch.window;
    let mut partials = shard.merger.borrow_mut().begin_batch(batch);
    loop {
        {
            if partials.len() == 0 {
                break;
            }
            let chunk = partials.by_ref().take(CHUNK);
            shard.merger.borrow_mut().merge(window, chunk);
        }
        glommio::yield_if_needed().await;
    }
    let ready = {
        let mut merger = shard.merger.borrow_mut();
        if HANDOVER.load(Ordering::Relaxed) {
            // Every window ready from the take-over on leaves whole, for the new process.
            merger.set_keeping_whole(true);
        }
        merger.batch_done(window)
    };
    if let Some(ready) = ready {
        expand_and_send(shard, ready).await;
    }
}

/// Expands a fully merged window into points in chunks, then hands it to the sink.
async fn expand_and_send(shard: &Shard, mut ready: ReadyWindow) {
    while !shard.merger.borrow().expand_step(&mut ready, CHUNK) {
        glommio::yield_if_needed().await;
    }
    send_to_sink(shard, ToSink::Batch(ready.out));
}

/// Counts one shard (or this one) as finished; once all are, flushes windows still collecting.
async fn peer_done(shard: &Shard) {
    shard.peers_done.set(shard.peers_done.get() + 1);
    if shard.peers_done.get() == shard.shards {
        let rest = shard.merger.borrow_mut().flush_all();
        for ready in rest {
            expand_and_send(shard, ready).await;
        }
    }
}

/// The metric names with the most refused contexts, most first (ties by name), at most
/// `TOP_REFUSED`.
fn top_refused(by_name: hashbrown::HashMap<Box<[u8]>, u64>) -> Vec<(Box<[u8]>, u64)> {
    let mut top: Vec<(Box<[u8]>, u64)> = by_name.into_iter().collect();
    top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(crate::telemetry::TOP_REFUSED);
    top
}

/// Sends the sink the descriptions of the contexts created since the last time, once they hold
/// `min_bytes` (0: any).
fn send_news(shard: &Shard, min_bytes: usize) {
    let news = shard.agg.borrow_mut().take_news(min_bytes);
    if let Some(news) = news {
        send_to_sink(shard, ToSink::News(news));
    }
}

fn send_to_sink(shard: &Shard, out: ToSink) {
    match shard.sink.send(out) {
        Ok(0) => {}
        Ok(dropped) => {
            let mut c = shard.counters.borrow_mut();
            c.sink_queue_drops += dropped;
            let total = shard.sink_queue_drops.get() + dropped;
            shard.sink_queue_drops.set(total);
            if total == dropped || (total.ilog2() > (total - dropped).ilog2()) {
                eprintln!(
                    "corestatsd: shard {}: the sink is behind (--sink-queue-max-points {} \
                     waiting): {dropped} points dropped, {total} so far",
                    shard.index, shard.cfg.sink_queue_max_points
                );
            }
        }
        Err(SinkGone) => eprintln!(
            "corestatsd: shard {}: the sink thread is gone; a flush was lost",
            shard.index
        ),
    }
}
