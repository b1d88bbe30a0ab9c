//! Sending packets (prebuilt, or made as it goes) over one transport as fast as allowed: `sendmmsg` from many source
//! ports for UDP (so SO_REUSEPORT spreads them over the server's shards), blocking sends for unix
//! datagram sockets, 4-byte length frames written in batches for unix stream and TCP. An optional
//! rate is kept per thread by pacing every batch.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::replay::Recorded;
use crate::workload::{Counts, Generator, Packet};

#[derive(Debug, Clone)]
pub enum Target {
    Udp(SocketAddr),
    Uds(String),
    UdsStream(String),
    Tcp(SocketAddr),
}

impl Target {
    /// `udp:HOST:PORT` (or a bare `HOST:PORT`), `uds:PATH`, `uds-stream:PATH`, `tcp:HOST:PORT`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let addr = |a: &str| -> Result<SocketAddr, String> {
            let addr: SocketAddr = a.parse().map_err(|e| format!("--target {s:?}: {e}"))?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "--target {s:?}: corestatsd-blast only sends to loopback"
                ));
            }
            Ok(addr)
        };
        Ok(if let Some(p) = s.strip_prefix("uds:") {
            Target::Uds(p.into())
        } else if let Some(p) = s.strip_prefix("uds-stream:") {
            Target::UdsStream(p.into())
        } else if let Some(a) = s.strip_prefix("tcp:") {
            Target::Tcp(addr(a)?)
        } else {
            Target::Udp(addr(s.strip_prefix("udp:").unwrap_or(s))?)
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Target::Udp(_) => "udp",
            Target::Uds(_) => "uds",
            Target::UdsStream(_) => "uds-stream",
            Target::Tcp(_) => "tcp",
        }
    }
}

/// How fast one thread may go.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    FlatOut,
    MetricsPerSec(f64),
    BytesPerSec(f64),
}

const BATCH: usize = 64;
const UDP_SOCKETS: usize = 32;

/// What one thread sent, and sends that failed (UDP: the kernel refused; counted, not retried).
pub struct Sent {
    pub counts: Counts,
    pub errors: u64,
}

/// What a thread sends: prebuilt packets round and round, or packets made as it goes.
pub enum Source<'a> {
    Prebuilt(&'a [Packet]),
    Made(Generator),
}

/// Sends from `source` for `run`, at `pace`.
pub fn send(
    target: &Target,
    source: Source<'_>,
    run: Duration,
    pace: Pace,
) -> Result<Sent, String> {
    let mut sink = Sink::open(target)?;
    let start = Instant::now();
    let mut sent = Sent {
        counts: Counts::default(),
        errors: 0,
    };
    let mut next = 0usize;
    let (packets, mut generator) = match source {
        Source::Prebuilt(p) => (p, None),
        Source::Made(g) => (&[][..], Some(g)),
    };
    let mut made: Vec<Packet> = (0..BATCH)
        .map(|_| Packet {
            bytes: Vec::new(),
            counts: Counts::default(),
        })
        .collect();
    while start.elapsed() < run {
        let batch: Vec<&Packet> = match generator.as_mut() {
            Some(g) => {
                let at = start.elapsed().as_secs_f64();
                for p in &mut made {
                    g.fill(at, p);
                }
                made.iter().collect()
            }
            None => {
                let batch = (0..BATCH)
                    .map(|k| &packets[(next + k) % packets.len()])
                    .collect();
                next = (next + BATCH) % packets.len();
                batch
            }
        };
        let ok = sink.send(&batch)?;
        for p in &batch[..ok] {
            sent.counts.add(&p.counts);
        }
        sent.errors += (batch.len() - ok) as u64;
        // Pacing: sleep until the time this much should have taken.
        let due = match pace {
            Pace::FlatOut => continue,
            Pace::MetricsPerSec(r) => sent.counts.metrics as f64 / r,
            Pace::BytesPerSec(r) => sent.counts.bytes as f64 / r,
        };
        let ahead = due - start.elapsed().as_secs_f64();
        if ahead > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(ahead));
        }
    }
    Ok(sent)
}

/// Sends a capture's packets in order, each at its recorded time divided by `speed` (0: flat
/// out), once, or with `looping` again and again until `run` is over.
pub fn replay(
    target: &Target,
    recorded: &[Recorded],
    speed: f64,
    looping: bool,
    run: Duration,
) -> Result<Sent, String> {
    let mut sink = Sink::open(target)?;
    let mut sent = Sent {
        counts: Counts::default(),
        errors: 0,
    };
    let start = Instant::now();
    let mut offset = 0.0;
    let span = recorded.last().map_or(0.0, |r| r.at_ns as f64 / 1e9);
    loop {
        for r in recorded {
            if speed > 0.0 {
                let due = offset + r.at_ns as f64 / 1e9 / speed;
                let ahead = due - start.elapsed().as_secs_f64();
                if ahead > 0.0 {
                    std::thread::sleep(Duration::from_secs_f64(ahead));
                }
            }
            if looping && start.elapsed() >= run {
                return Ok(sent);
            }
            match sink.send(&[&r.packet])? {
                1 => sent.counts.add(&r.packet.counts),
                _ => sent.errors += 1,
            }
        }
        if !looping || recorded.is_empty() {
            return Ok(sent);
        }
        // The next pass starts where this one ended (plus a millisecond, so a one-packet
        // capture does not spin).
        offset += span / speed.max(f64::MIN_POSITIVE) + 1e-3;
        if speed == 0.0 {
            offset = 0.0;
        }
    }
}

enum Sink {
    Udp(Vec<UdpSocket>, usize),
    Uds(std::os::unix::net::UnixDatagram),
    Stream(Box<dyn Write>, Vec<u8>),
}

impl Sink {
    fn open(target: &Target) -> Result<Sink, String> {
        let err = |e: std::io::Error| format!("cannot connect to {target:?}: {e}");
        Ok(match target {
            Target::Udp(addr) => {
                let socks = (0..UDP_SOCKETS)
                    .map(|_| {
                        let s = UdpSocket::bind("127.0.0.1:0")?;
                        s.connect(addr)?;
                        Ok(s)
                    })
                    .collect::<std::io::Result<Vec<_>>>()
                    .map_err(err)?;
                Sink::Udp(socks, 0)
            }
            Target::Uds(path) => {
                let s = std::os::unix::net::UnixDatagram::unbound().map_err(err)?;
                s.connect(path).map_err(err)?;
                Sink::Uds(s)
            }
            Target::UdsStream(path) => Sink::Stream(
                Box::new(std::os::unix::net::UnixStream::connect(path).map_err(err)?),
                Vec::new(),
            ),
            Target::Tcp(addr) => Sink::Stream(
                Box::new(std::net::TcpStream::connect(addr).map_err(err)?),
                Vec::new(),
            ),
        })
    }

    /// Sends a batch; returns how many packets went out.
    fn send(&mut self, batch: &[&Packet]) -> Result<usize, String> {
        match self {
            Sink::Udp(socks, turn) => {
                let s = &socks[*turn % socks.len()];
                *turn += 1;
                let mut iov: Vec<libc::iovec> = batch
                    .iter()
                    .map(|p| libc::iovec {
                        iov_base: p.bytes.as_ptr() as *mut _,
                        iov_len: p.bytes.len(),
                    })
                    .collect();
                let mut msgs: Vec<libc::mmsghdr> = iov
                    .iter_mut()
                    .map(|v| {
                        // SAFETY: all-zero is a valid mmsghdr; `v` outlives the call below.
                        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                        h.msg_hdr.msg_iov = v;
                        h.msg_hdr.msg_iovlen = 1;
                        h
                    })
                    .collect();
                // SAFETY: `msgs` points at `iov`, which points at live packets; the socket is
                // connected, so no addresses are needed.
                let n = unsafe {
                    libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0)
                };
                Ok(n.max(0) as usize)
            }
            Sink::Uds(s) => Ok(batch.iter().filter(|p| s.send(&p.bytes).is_ok()).count()),
            Sink::Stream(w, buf) => {
                buf.clear();
                for p in batch {
                    buf.extend_from_slice(&(p.bytes.len() as u32).to_le_bytes());
                    buf.extend_from_slice(&p.bytes);
                }
                w.write_all(buf)
                    .map_err(|e| format!("the server closed the stream: {e}"))?;
                Ok(batch.len())
            }
        }
    }
}
