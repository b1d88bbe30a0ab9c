//! A minimal UDP load generator for the core-scaling run (scripts/scale.sh): pinned sender
//! threads, each with many source sockets so SO_REUSEPORT spreads datagrams over every server
//! shard, sending with `sendmmsg` as fast as they can for a fixed time.
//!
//! `udp_blast ADDR CORES SECONDS CONTEXTS LINES_PER_DATAGRAM` prints one line:
//! `sent_datagrams=N sent_metrics=N seconds=S`. Loopback only; it stops by itself.
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
    let addr: SocketAddr = args[1].parse().expect("ADDR");
    assert!(addr.ip().is_loopback(), "udp_blast only sends to loopback");
    let cores = parse_cores(&args[2]);
    let seconds: f64 = args[3].parse().expect("SECONDS");
    let contexts: usize = args[4].parse().expect("CONTEXTS");
    let lines: usize = args[5].parse().expect("LINES_PER_DATAGRAM");

    let threads: Vec<_> = cores
        .iter()
        .enumerate()
        .map(|(t, &core)| {
            std::thread::spawn(move || {
                core_affinity::set_for_current(core_affinity::CoreId { id: core });
                send(t, addr, Duration::from_secs_f64(seconds), contexts, lines)
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

/// Returns datagrams sent.
fn send(thread: usize, to: SocketAddr, run: Duration, contexts: usize, lines: usize) -> u64 {
    let sockets: Vec<UdpSocket> = (0..SOCKETS_PER_THREAD)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.connect(to).expect("connect");
            s
        })
        .collect();
    // A ring of distinct datagrams, each `lines` metric lines over `contexts` contexts.
    // Enough distinct datagrams that every context recurs.
    let ring = contexts.div_ceil(lines).max(1024);
    let payloads: Vec<Vec<u8>> = (0..ring)
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
