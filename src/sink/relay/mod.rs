//! The relay sink (`dogstatsd:HOST:PORT`, `dogstatsd+uds:PATH`): a tier of corestatsd feeding
//! another DogStatsD aggregator with what it flushed, as DogStatsD datagrams.
//!
//! * Counters as the window's sum and gauges as the last value, without `|T`: the downstream
//!   aggregates them into its open window, so the same series from several edges is one point
//!   there (a client's `|T` point keeps its timestamp).
//! * Sets as their distinct members, one line each.
//! * Histograms, timers and distributions losslessly: exact samples, packed, grouped by weight,
//!   with the sample rate `@1/weight` carrying the weight (`name:v1:v2|d|@0.25` is weight 4 each);
//!   a sketch (distributions; histograms past `--histogram-exact-samples`) as its exact min and
//!   max plus each bin's value with the bin's weight, so the downstream's bins, count, min and
//!   max equal ours (the sum is then within the sketch's accuracy).
//! * Events and service checks re-encoded; host as a `host:` tag (empty for none) or `h:`; the
//!   origin as `c:`, `e:` and `card:` fields.
//!
//! Lines are packed into datagrams of at most `max_packet_bytes`. Sends block (a unix datagram
//! socket pushes back when its reader falls behind); a failed send drops that datagram, counted
//! with the lines it held. Owns its socket; must not aggregate.
//!
//! This module owns the socket and the sink; `lines.rs` formats the lines and packs them.

mod lines;

pub use lines::{Encoder, Selection};

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::Xxh3;

use super::Sink;
use super::http::DownstreamPoints;
use crate::flushed::desc::Desc;
use crate::flushed::{FlushBatch, OutKind, PointWriter, View};
use crate::telemetry::NonZeroSeen;

/// Where relayed datagrams go.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Udp(SocketAddr),
    Uds(PathBuf),
}

impl Target {
    /// `--relay-max-packet-bytes` default: an Ethernet-safe UDP payload, or the Agent's unix
    /// buffer.
    pub fn default_max_packet_bytes(&self) -> usize {
        match self {
            Target::Udp(_) => 1432,
            Target::Uds(_) => 8192,
        }
    }
}

enum Socket {
    Udp(UdpSocket),
    Uds(UnixDatagram, PathBuf, bool),
}

impl Socket {
    fn open(t: &Target) -> io::Result<Socket> {
        match t {
            Target::Udp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let s = UdpSocket::bind(local)?;
                s.connect(addr)?;
                s.set_write_timeout(Some(SEND_TIMEOUT))?;
                Ok(Socket::Udp(s))
            }
            Target::Uds(path) => {
                let s = UnixDatagram::unbound()?;
                s.set_write_timeout(Some(SEND_TIMEOUT))?;
                // The downstream may start later: connect lazily.
                let connected = s.connect(path).is_ok();
                Ok(Socket::Uds(s, path.clone(), connected))
            }
        }
    }

    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        match self {
            Socket::Udp(s) => s.send(packet).map(drop),
            Socket::Uds(s, path, connected) => {
                if !*connected {
                    s.connect(&*path)?;
                    *connected = true;
                }
                let r = s.send(packet).map(drop);
                if r.is_err() {
                    // A restarted downstream has a new socket behind the same path.
                    *connected = false;
                }
                r
            }
        }
    }
}

/// How long one datagram may wait for room in the downstream's socket before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node that failed a send is left out before it is tried again.
const NODE_RETRY: Duration = Duration::from_secs(2);

/// Counters of one relay node, cumulative.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RelayStats {
    pub packets: u64,
    pub bytes: u64,
    pub lines: u64,
    pub send_errors: u64,
    pub lines_dropped: u64,
    /// Points sent here because the node their context hashes to first was down.
    pub rerouted: u64,
}

/// One node of the global tier.
struct Node {
    target: Target,
    socket: Socket,
    /// Its rendezvous seed: a hash of its address, so every edge ranks nodes alike.
    seed: u64,
    /// Left out until then after a failed send.
    down_until: Option<Instant>,
    stats: RelayStats,
    last: RelayStats,
    seen: NonZeroSeen,
}

impl Node {
    fn describe(&self) -> String {
        match &self.target {
            Target::Udp(a) => format!("dogstatsd:{a}"),
            Target::Uds(p) => format!("dogstatsd+uds:{}", p.display()),
        }
    }

    /// Whether the node takes datagrams now. A unix socket is asked each time (a connection
    /// is refused once its reader is gone), so a node that stopped loses nothing sent after;
    /// UDP cannot be asked: a node whose send failed is left out for `NODE_RETRY`, then tried.
    fn up(&mut self, now: Instant) -> bool {
        let was_down = self.down_until.is_some();
        let ok = match &self.target {
            Target::Uds(p) => UnixDatagram::unbound().and_then(|s| s.connect(p)).is_ok(),
            Target::Udp(_) => self.down_until.is_none_or(|until| now >= until),
        };
        match (was_down, ok) {
            (true, true) => {
                eprintln!("corestatsd: relay node {} is back", self.describe());
                self.down_until = None;
            }
            (false, false) => {
                eprintln!(
                    "corestatsd: relay node {} is down: its contexts go to the next node by \
                     their hash",
                    self.describe()
                );
                self.down_until = Some(now + NODE_RETRY);
            }
            _ => {}
        }
        ok
    }
}

/// A context's place on the ring of nodes: a hash of its name, host and tags, the same on every
/// edge.
fn context_hash(d: &Desc<'_>) -> u64 {
    let mut h = Xxh3::new();
    h.update(d.name);
    h.update(&[0xFF]);
    h.update(d.host.unwrap_or_default());
    for t in d.tags() {
        h.update(&[0xFE]);
        h.update(t);
    }
    h.digest()
}

/// splitmix64's finaliser: a node's score for a key (rendezvous hashing).
fn score(key: u64, seed: u64) -> u64 {
    let mut z = key ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The relay sink: encodes on the sink thread and sends from it, each context to one node.
pub struct RelaySink {
    nodes: Vec<Node>,
    enc: Encoder,
    telemetry_host: Option<Vec<u8>>,
    interval: u32,
    /// Emit `corestatsd.relay.*` points (not `--no-self-metrics`).
    self_metrics: bool,
    /// Per node, what of the batch goes there (reused).
    routes: Vec<Selection>,
}

impl RelaySink {
    /// Several targets make a sharded global tier: each context goes to the node with the
    /// highest rendezvous score for it among those up, so every edge sends a context to the
    /// same node and adding a node moves about 1/N of them.
    pub fn new(
        targets: Vec<Target>,
        max_packet_bytes: usize,
        telemetry_host: Option<Vec<u8>>,
        interval: u32,
        self_metrics: bool,
    ) -> io::Result<Self> {
        let mut nodes = Vec::with_capacity(targets.len());
        for target in targets {
            let seed = xxhash_rust::xxh3::xxh3_64(format!("{target:?}").as_bytes());
            nodes.push(Node {
                socket: Socket::open(&target)?,
                target,
                seed,
                down_until: None,
                stats: RelayStats::default(),
                last: RelayStats::default(),
                seen: NonZeroSeen::default(),
            });
        }
        Ok(RelaySink {
            routes: vec![Selection::default(); nodes.len()],
            nodes,
            enc: Encoder::new(max_packet_bytes),
            telemetry_host,
            interval,
            self_metrics,
        })
    }

    /// The node for `key`: the best-scoring one that is up (the best of all when none is),
    /// and whether that is not the key's first choice.
    fn route(&self, key: u64, up: &[bool]) -> (usize, bool) {
        let best = |only_up: bool| {
            (0..self.nodes.len())
                .filter(|&i| !only_up || up[i])
                .max_by_key(|&i| score(key, self.nodes[i].seed))
        };
        let first = best(false).expect("a relay has a node");
        let chosen = best(true).unwrap_or(first);
        (chosen, chosen != first)
    }

    fn stats(&self) -> RelayStats {
        let mut t = RelayStats::default();
        for n in &self.nodes {
            let s = n.stats;
            t.packets += s.packets;
            t.bytes += s.bytes;
            t.lines += s.lines;
            t.send_errors += s.send_errors;
            t.lines_dropped += s.lines_dropped;
            t.rerouted += s.rerouted;
        }
        t
    }
}

impl Sink for RelaySink {
    fn write(&mut self, batch: View<'_>) -> io::Result<()> {
        let now = Instant::now();
        let up: Vec<bool> = if self.nodes.len() == 1 {
            vec![true]
        } else {
            self.nodes.iter_mut().map(|n| n.up(now)).collect()
        };
        let mut routes = std::mem::take(&mut self.routes);
        routes.iter_mut().for_each(Selection::clear);
        if self.nodes.len() == 1 {
            let all = &mut routes[0];
            all.metrics.extend(0..batch.metrics.len());
            all.events.extend(0..batch.events.len());
            all.service_checks.extend(0..batch.service_checks.len());
        } else {
            for (i, m) in batch.metrics.iter().enumerate() {
                let (node, moved) = self.route(context_hash(&batch.desc(m)), &up);
                routes[node].metrics.push(i);
                self.nodes[node].stats.rerouted += u64::from(moved);
            }
            let text_key = |a: &[u8], b: Option<&[u8]>| {
                xxhash_rust::xxh3::xxh3_64(&[a, &[0xFF], b.unwrap_or_default()].concat())
            };
            for (i, e) in batch.events.iter().enumerate() {
                let (node, _) = self.route(text_key(&e.title, e.host.as_deref()), &up);
                routes[node].events.push(i);
            }
            for (i, sc) in batch.service_checks.iter().enumerate() {
                let (node, _) = self.route(text_key(&sc.name, sc.host.as_deref()), &up);
                routes[node].service_checks.push(i);
            }
        }
        for (node, which) in self.nodes.iter_mut().zip(&routes) {
            if which.is_empty() {
                continue;
            }
            let (socket, stats) = (&mut node.socket, &mut node.stats);
            let mut first_error = None;
            self.enc
                .encode_selected(batch, which, &mut |packet: &[u8], lines: u64| match socket
                    .send(packet)
                {
                    Ok(()) => {
                        stats.packets += 1;
                        stats.bytes += packet.len() as u64;
                        stats.lines += lines;
                    }
                    Err(e) => {
                        stats.send_errors += 1;
                        stats.lines_dropped += lines;
                        first_error.get_or_insert(e);
                    }
                });
            if let Some(e) = first_error {
                // Its contexts go to the next node by the same hash until it is back.
                node.down_until = Some(now + NODE_RETRY);
                if node.stats.send_errors.is_power_of_two() {
                    eprintln!(
                        "corestatsd: relay to {}: send failed, datagrams dropped ({} lines so \
                         far): {e}",
                        node.describe(),
                        node.stats.lines_dropped
                    );
                }
            }
        }
        self.routes = routes;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn emit_telemetry(&mut self, out: &mut FlushBatch, window: u64) {
        let mut w = PointWriter::new(self.telemetry_host.as_deref(), window, self.interval);
        let several = self.nodes.len() > 1;
        for n in &mut self.nodes {
            let (now, last) = (n.stats, std::mem::replace(&mut n.last, n.stats));
            eprintln!(
                "corestatsd: relay window {window}{}: packets={} bytes={} lines={} \
                 send_errors={} lines_dropped={} rerouted={}",
                if several {
                    format!(" {}", n.describe())
                } else {
                    String::new()
                },
                now.packets - last.packets,
                now.bytes - last.bytes,
                now.lines - last.lines,
                now.send_errors - last.send_errors,
                now.lines_dropped - last.lines_dropped,
                now.rerouted - last.rerouted,
            );
            let name = n.describe();
            let mut p = DownstreamPoints::with_prefix(&mut w, &mut n.seen, &name, "relay");
            for (name, a, b) in [
                ("packets", now.packets, last.packets),
                ("bytes", now.bytes, last.bytes),
                ("lines", now.lines, last.lines),
            ] {
                p.always(name, None, OutKind::Count, a - b);
            }
            for (name, a, b) in [
                ("send_errors", now.send_errors, last.send_errors),
                ("lines_dropped", now.lines_dropped, last.lines_dropped),
                ("rerouted_points", now.rerouted, last.rerouted),
            ] {
                p.once_non_zero(name, None, OutKind::Count, a - b);
            }
        }
        if self.self_metrics {
            w.finish(out);
        }
    }

    fn close(&mut self) -> io::Result<u64> {
        for n in &self.nodes {
            let s = n.stats;
            eprintln!(
                "corestatsd: relay to {}: sent {} datagrams ({} bytes, {} lines); {} send errors, \
                 {} lines dropped, {} points rerouted here",
                n.describe(),
                s.packets,
                s.bytes,
                s.lines,
                s.send_errors,
                s.lines_dropped,
                s.rerouted
            );
        }
        Ok(self.stats().lines_dropped)
    }
}
