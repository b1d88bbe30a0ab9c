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

pub use lines::Encoder;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use super::Sink;
use super::http::DownstreamPoints;
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

/// Counters of one relay, cumulative.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RelayStats {
    pub packets: u64,
    pub bytes: u64,
    pub lines: u64,
    pub send_errors: u64,
    pub lines_dropped: u64,
}

/// The relay sink: encodes on the sink thread and sends from it.
pub struct RelaySink {
    target: Target,
    socket: Socket,
    enc: Encoder,
    stats: RelayStats,
    last: RelayStats,
    telemetry_host: Option<Vec<u8>>,
    interval: u32,
    /// Emit `corestatsd.relay.*` points (not `--no-self-metrics`).
    self_metrics: bool,
    seen: NonZeroSeen,
}

impl RelaySink {
    pub fn new(
        target: Target,
        max_packet_bytes: usize,
        telemetry_host: Option<Vec<u8>>,
        interval: u32,
        self_metrics: bool,
    ) -> io::Result<Self> {
        Ok(RelaySink {
            socket: Socket::open(&target)?,
            target,
            enc: Encoder::new(max_packet_bytes),
            stats: RelayStats::default(),
            last: RelayStats::default(),
            telemetry_host,
            interval,
            self_metrics,
            seen: NonZeroSeen::default(),
        })
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Udp(a) => format!("dogstatsd:{a}"),
            Target::Uds(p) => format!("dogstatsd+uds:{}", p.display()),
        }
    }
}

impl Sink for RelaySink {
    fn write(&mut self, batch: View<'_>) -> io::Result<()> {
        let socket = &mut self.socket;
        let stats = &mut self.stats;
        let mut first_error = None;
        self.enc.encode(
            batch,
            &mut |packet: &[u8], lines: u64| match socket.send(packet) {
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
            },
        );
        if let Some(e) = first_error
            && self.stats.send_errors.is_power_of_two()
        {
            eprintln!(
                "corestatsd: relay to {}: send failed, datagrams dropped ({} lines so far): {e}",
                self.describe(),
                self.stats.lines_dropped
            );
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn emit_telemetry(&mut self, out: &mut FlushBatch, window: u64) {
        let (now, last) = (self.stats, std::mem::replace(&mut self.last, self.stats));
        eprintln!(
            "corestatsd: relay window {window}: packets={} bytes={} lines={} send_errors={} \
             lines_dropped={}",
            now.packets - last.packets,
            now.bytes - last.bytes,
            now.lines - last.lines,
            now.send_errors - last.send_errors,
            now.lines_dropped - last.lines_dropped
        );
        if self.self_metrics {
            let name = self.describe();
            let mut w = PointWriter::new(self.telemetry_host.as_deref(), window, self.interval);
            let mut p = DownstreamPoints::with_prefix(&mut w, &mut self.seen, &name, "relay");
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
            ] {
                p.once_non_zero(name, None, OutKind::Count, a - b);
            }
            w.finish(out);
        }
    }

    fn close(&mut self) -> io::Result<u64> {
        eprintln!(
            "corestatsd: relay to {}: sent {} datagrams ({} bytes, {} lines); {} send errors, \
             {} lines dropped",
            self.describe(),
            self.stats.packets,
            self.stats.bytes,
            self.stats.lines,
            self.stats.send_errors,
            self.stats.lines_dropped
        );
        Ok(self.stats.lines_dropped)
    }
}
