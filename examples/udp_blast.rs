//! A minimal UDP load generator for the core-scaling run (scripts/scale.sh): pinned sender
//! threads, each with many source sockets so SO_REUSEPORT spreads datagrams over every server
//! shard, sending with `sendmmsg` as fast as they can for a fixed time.
//!
//! `udp_blast ADDR CORES SECONDS CONTEXTS LINES_PER_DATAGRAM` prints one line:
//! `sent_datagrams=N sent_metrics=N seconds=S`. Loopback only; it stops by itself.
//! ADDR may also be `unix:PATH` (unix datagram), `unixstream:PATH` or `tcp:HOST:PORT` (4-byte
//! length frames): those block when the server falls behind, so they measure what it takes.
//!
//! # Missing
//! Rate control, mixed workloads and latency: the benchmark harness issue brings a full one.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SOCKETS_PER_THREAD: usize = 32;
const BATCH: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: udp_blast ADDR CORES(0,1|2-5) SECONDS CONTEXTS LINES_PER_DATAGRAM");
        std::process::exit(2);
    }
    let target = Target::parse(&args[1]);
    let cores = parse_cores(&args[2]);
    let seconds: f64 = args[3].parse().expect("SECONDS");
    let contexts: usize = args[4].parse().expect("CONTEXTS");
    let lines: usize = args[5].parse().expect("LINES_PER_DATAGRAM");

    let threads: Vec<_> = cores
        .iter()
        .enumerate()
        .map(|(t, &core)| {
            let target = target.clone();
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: core });
                let run = Duration::from_secs_f64(seconds);
                let payloads = payloads(t, contexts, lines);
                match target {
                    Target::Udp(addr) => send(addr, run, &payloads),
                    other => send_blocking(&other, run, &payloads),
                }
            })
        })
        .collect();
    let mut datagrams = 0u64;
    for t in threads {
        datagrams += t.join().expect("sender thread");
    }
    println!(
        "sent_datagrams={datagrams} sent_metrics={} seconds={seconds}",
        datagrams * lines as u64
    );
}

fn parse_cores(s: &str) -> Vec<usize> {
    s.split(',')
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![p.parse().unwrap()],
        })
        .collect()
}

#[derive(Clone)]
enum Target {
    Udp(SocketAddr),
    Unix(String),
    UnixStream(String),
    Tcp(SocketAddr),
}

impl Target {
    fn parse(s: &str) -> Target {
        let loopback = |a: &str| {
            let addr: SocketAddr = a.parse().expect("ADDR");
            assert!(addr.ip().is_loopback(), "udp_blast only sends to loopback");
            addr
        };
        if let Some(p) = s.strip_prefix("unix:") {
            Target::Unix(p.into())
        } else if let Some(p) = s.strip_prefix("unixstream:") {
            Target::UnixStream(p.into())
        } else if let Some(a) = s.strip_prefix("tcp:") {
            Target::Tcp(loopback(a))
        } else {
            Target::Udp(loopback(s))
        }
    }
}

/// Sends whole packets with blocking writes until `run` is over; returns packets sent.
fn send_blocking(target: &Target, run: Duration, payloads: &[Vec<u8>]) -> u64 {
    use std::io::Write;
    let start = Instant::now();
    let mut sent = 0u64;
    match target {
        Target::Unix(path) => {
            let s = std::os::unix::net::UnixDatagram::unbound().expect("socket");
            s.connect(path).expect("connect");
            while start.elapsed() < run {
                for p in payloads.iter().take(256) {
                    if s.send(p).is_ok() {
                        sent += 1;
                    }
                }
            }
        }
        Target::UnixStream(_) | Target::Tcp(_) => {
            let mut w: Box<dyn Write> = match target {
                Target::Tcp(a) => Box::new(std::net::TcpStream::connect(a).expect("connect")),
                Target::UnixStream(p) => {
                    Box::new(std::os::unix::net::UnixStream::connect(p).expect("connect"))
                }
                _ => unreachable!(),
            };
            // Frames written 64 at a time, as a client with a send buffer would.
            let framed: Vec<(Vec<u8>, u64)> = payloads
                .chunks(64)
                .map(|c| {
                    let bytes = c
                        .iter()
                        .flat_map(|p| {
                            let mut f = (p.len() as u32).to_le_bytes().to_vec();
                            f.extend_from_slice(p);
                            f
                        })
                        .collect();
                    (bytes, c.len() as u64)
                })
                .collect();
            while start.elapsed() < run {
                for (bytes, n) in &framed {
                    w.write_all(bytes).expect("write");
                    sent += n;
                }
            }
        }
        Target::Udp(_) => unreachable!(),
    }
    sent
}

/// A ring of distinct datagrams, each `lines` metric lines over `contexts` contexts: enough
/// distinct datagrams that every context recurs.
fn payloads(thread: usize, contexts: usize, lines: usize) -> Vec<Vec<u8>> {
    let ring = contexts.div_ceil(lines).max(1024);
    (0..ring)
        .map(|d| {
            let mut p = String::new();
            for l in 0..lines {
                let ctx = (thread * 7919 + d * lines + l) % contexts;
                p.push_str(&format!(
                    "bench.metric.{}:{}|c|#env:prod,service:checkout,ctx:{}\n",
                    ctx % 1000,
                    l + 1,
                    ctx
                ));
            }
            p.into_bytes()
        })
        .collect()
}

/// Returns datagrams sent.
fn send(to: SocketAddr, run: Duration, payloads: &[Vec<u8>]) -> u64 {
    let sockets: Vec<UdpSocket> = (0..SOCKETS_PER_THREAD)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.connect(to).expect("connect");
            s
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    while start.elapsed() < run {
        for s in &sockets {
            iov.clear();
            msgs.clear();
            for _ in 0..BATCH {
                let p = &payloads[next % payloads.len()];
                next += 1;
                iov.push(libc::iovec {
                    iov_base: p.as_ptr() as *mut _,
                    iov_len: p.len(),
                });
            }
            for v in iov.iter_mut() {
                // SAFETY: all-zero is a valid mmsghdr; the iovec outlives the call below.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                msgs.push(h);
            }
            // SAFETY: `msgs` points at `iov`, which points at live payloads; connected socket.
            let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
            }
        }
    }
    sent
}
