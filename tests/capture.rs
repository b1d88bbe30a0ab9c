//! Traffic capture and replay end to end: `corestatsd capture` records what a server receives
//! (UDP and a unix datagram socket) into a `.dog` file; `corestatsd-blast --replay` sends it into
//! a fresh server, whose flushed output must equal the first's, context by context.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, temp_dir};
use serde_json::Value;

/// The load generator's binary, beside this package's (built here if this test runs alone).
fn blast() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_corestatsd")).with_file_name("corestatsd-blast");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "corestatsd-blast"])
            .status()
            .unwrap();
        assert!(ok.success(), "cannot build corestatsd-blast");
    }
    path
}

/// What a server flushed of the clients' metrics, per (name, type, tags): counts summed over
/// windows (zero-filled windows add nothing), the values of every other point in order, and a
/// distribution's sketch count and sum.
fn totals(lines: &[Value]) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for l in common::metric_lines(lines) {
        let name = l["name"].as_str().unwrap();
        if name.starts_with("corestatsd.") {
            continue;
        }
        let key = format!("{name} {} {}", l["type"], l["tags"]);
        let entry = out.entry(key).or_default();
        match l["type"].as_str().unwrap() {
            "count" => match entry.first_mut() {
                Some(sum) => *sum += l["value"].as_f64().unwrap(),
                None => entry.push(l["value"].as_f64().unwrap()),
            },
            "distribution" => {
                entry.push(l["sketch"]["count"].as_f64().unwrap());
                entry.push(l["sketch"]["sum"].as_f64().unwrap());
            }
            _ => entry.push(l["value"].as_f64().unwrap()),
        }
    }
    out
}

/// Waits (bounded) until the server at `http` reports a capture running.
fn wait_running(http: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ureq::get(&format!("http://{http}/capture")).call().unwrap();
        let body = r.into_body().read_to_string().unwrap();
        if body.contains("\"running\": true") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the capture never started: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A capture file as the format describes it: header, records (timestamp, payload size,
/// payload, pid), end marker, an empty tagger state and its size.
fn built_v3(payloads: &[&[u8]]) -> Vec<u8> {
    let mut f = vec![0xD4, 0x74, 0xD0, 0x60, 0xF3, 0xFF, 0x00, 0x00];
    for (i, p) in payloads.iter().enumerate() {
        let mut m = vec![0x08, 1 + i as u8, 0x10, p.len() as u8, 0x1A, p.len() as u8];
        m.extend_from_slice(p);
        m.extend([0x20, 0x00]);
        f.extend((m.len() as u32).to_le_bytes());
        f.extend(m);
    }
    f.extend(0u32.to_le_bytes());
    f.extend(0u32.to_le_bytes());
    f
}

#[test]
fn a_capture_replayed_into_a_fresh_server_flushes_the_same() {
    let dir = temp_dir("capture");
    let uds = dir.join("dsd.sock");
    let uds_arg = uds.display().to_string();
    let dir_arg = dir.display().to_string();
    let server = Server::start(&[
        "--cores",
        "0",
        "--uds-path",
        &uds_arg,
        "--capture-dir",
        &dir_arg,
    ]);
    let http = server.http.unwrap().to_string();
    let capture = Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args(["capture", "--seconds", "2", "--http-addr", &http])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the capture runs, then send known traffic over both transports.
    wait_running(&http);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let unix = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let mut sent = 0;
    for i in 0..40 {
        let line = format!(
            "cap.count:{i}|c|#k:{}\ncap.gauge:{i}|g\ncap.dist:{i}|d|#x:y\ncap.set:{}|s",
            i % 3,
            i % 7
        );
        udp.send_to(line.as_bytes(), server.addr).unwrap();
        unix.send_to(format!("cap.unix:1|c|#i:{}", i % 2).as_bytes(), &uds)
            .unwrap();
        sent += 2;
    }
    let out = capture.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `FILE: N packets (D dropped)`
    let (file, rest) = stdout.trim().split_once(": ").expect(&stdout);
    assert_eq!(rest, format!("{sent} packets (0 dropped)"), "{stdout}");
    let first = server.stop();
    assert_eq!(first.status, 0);
    assert!(
        first
            .stderr
            .iter()
            .any(|l| l.contains(&format!("wrote {sent} packets to {file}")))
    );

    let fresh = Server::start(&["--cores", "0"]);
    let target = fresh.addr.to_string();
    let replayed = Command::new(blast())
        .args(["--target", &target, "--replay", file, "--replay-speed", "0"])
        .output()
        .unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let report: Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(report["packets"], sent);
    assert_eq!(report["recorded_packets"], sent);
    assert_eq!(report["metrics"], 40 * 5);
    let second = fresh.stop();
    assert_eq!(second.status, 0);
    let (a, b) = (totals(&first.lines), totals(&second.lines));
    assert!(a.len() >= 5, "{a:?}");
    assert_eq!(a, b);
}

#[test]
fn a_zstd_capture_replays_and_a_corrupt_one_is_refused_naming_its_offset() {
    let dir = temp_dir("capture-zstd");
    let dir_arg = dir.display().to_string();
    let server = Server::start(&["--cores", "0"]);
    let http = server.http.unwrap().to_string();
    let capture = Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args([
            "capture",
            "--seconds",
            "1",
            "--zstd",
            "--dir",
            &dir_arg,
            "--http-addr",
            &http,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_running(&http);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..30 {
        udp.send_to(b"z.count:1|c", server.addr).unwrap();
    }
    let out = capture.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let file = stdout.split(": ").next().unwrap().to_owned();
    assert!(
        file.ends_with(".dog.zst") && file.starts_with(&dir_arg),
        "{stdout}"
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes[..4], [0x28, 0xB5, 0x2F, 0xFD], "a zstd frame");
    let fresh = Server::start(&["--cores", "0", "--no-http"]);
    let target = fresh.addr.to_string();
    let r = Command::new(blast())
        .args([
            "--target",
            &target,
            "--replay",
            &file,
            "--replay-speed",
            "0",
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let report: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(report["packets"].as_u64().unwrap() >= 1, "{report}");
    // A version 3 file built byte by byte from the format, replayed too.
    let built = dir.join("built.dog");
    std::fs::write(
        &built,
        built_v3(&[b"built.count:1|c", b"built.count:2|c\nbuilt.g:5|g"]),
    )
    .unwrap();
    let r = Command::new(blast())
        .args([
            "--target",
            &target,
            "--replay",
            built.to_str().unwrap(),
            "--replay-speed",
            "0",
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let done = fresh.stop();
    let flushed = totals(&done.lines);
    assert_eq!(flushed["built.count \"count\" []"], [3.0]);
    assert_eq!(flushed["built.g \"gauge\" []"], [5.0]);
    let counted = totals(&done.lines)["z.count \"count\" []"][0];
    assert_eq!(counted, report["metrics"].as_f64().unwrap());
    assert_eq!(server.stop().status, 0);

    // Truncated: decompressed, cut, and handed over plain.
    let plain = zstd::decode_all(&bytes[..]).unwrap();
    let cut = dir.join("cut.dog");
    std::fs::write(&cut, &plain[..plain.len() - 3]).unwrap();
    let r = Command::new(blast())
        .args(["--target", &target, "--replay", cut.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cut.dog: offset ") && err.contains("truncated"),
        "{err}"
    );
}
