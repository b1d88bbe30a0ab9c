//! systemd socket activation: the server takes the sockets it is passed (`LISTEN_FDS`) instead
//! of binding, so datagrams sent while no server runs wait in them and a restart loses none.

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use common::{Server, self_metric, temp_dir};

#[test]
fn passed_sockets_keep_what_is_queued_across_a_restart() {
    let dir = temp_dir("activation");
    let path = dir.join("dsd.sock");
    // What systemd holds: the sockets, bound before any server runs and kept across restarts.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uds = UnixDatagram::bind(&path).unwrap();
    let addr = udp.local_addr().unwrap();
    let (addr_arg, path_arg) = (addr.to_string(), path.to_str().unwrap().to_string());
    let args = [
        "--cores",
        "0,1",
        "--udp-addr",
        &addr_arg,
        "--uds-path",
        &path_arg,
        "--no-http",
    ];
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let unix = UnixDatagram::unbound().unwrap();
    // A unix datagram socket nobody reads holds net.unix.max_dgram_qlen datagrams (10 on many
    // hosts, this CI's among them), and a blocking sender then waits: so at most 8 are queued
    // while no server runs, and a send that still blocks fails the test instead of hanging it.
    unix.set_write_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let send = |name: &str, udp_n: usize, uds_n: usize| {
        for _ in 0..udp_n {
            client
                .send_to(format!("{name}.udp:1|c").as_bytes(), addr)
                .unwrap();
        }
        for _ in 0..uds_n {
            unix.send_to(format!("{name}.uds:1|c").as_bytes(), &path)
                .unwrap();
        }
    };
    let fds = [udp.as_raw_fd(), uds.as_raw_fd()];

    send("before", 50, 8);
    let first = Server::start_activated(&args, &fds);
    send("during", 30, 30);
    let done = first.stop();
    assert_eq!(done.status, 0, "{:#?}", done.stderr);
    assert!(
        done.stderr.iter().any(|l| l.contains("passed by systemd")),
        "{:#?}",
        done.stderr
    );
    assert!(
        path.exists(),
        "a passed socket's file is systemd's: a stop leaves it"
    );

    // Between the two processes: queued in the kernel, read by the next one.
    send("between", 40, 8);
    let second = Server::start_activated(&args, &fds);
    let again = second.stop();
    assert_eq!(again.status, 0, "{:#?}", again.stderr);
    let total =
        |name: &str| self_metric(&done.lines, name, &[]) + self_metric(&again.lines, name, &[]);
    for (t, before, between) in [("udp", 50.0, 40.0), ("uds", 8.0, 8.0)] {
        assert_eq!(total(&format!("before.{t}")), before, "{t}");
        assert_eq!(total(&format!("during.{t}")), 30.0, "{t}");
        assert_eq!(total(&format!("between.{t}")), between, "{t}");
    }
}

#[test]
fn a_passed_socket_no_flag_asks_for_is_refused_by_name() {
    // A TCP listener, and no --tcp-addr.
    let stray = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = stray.local_addr().unwrap();
    let out = common::activated(&[stray.as_raw_fd()])
        .args(["--udp-addr", "127.0.0.1:0", "--no-http"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "systemd passed a socket no flag asks for: tcp {addr}"
        )),
        "{stderr}"
    );
}

#[test]
fn a_descriptor_that_is_not_open_is_an_error_not_a_crash() {
    let out = std::process::Command::new("sh")
        .arg("-c")
        // Descriptor 3 is closed in the server: LISTEN_FDS claims a socket that is not there.
        .arg("export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$@\" 3<&-")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_corestatsd"))
        .args(["--udp-addr", "127.0.0.1:0", "--no-http"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("descriptor 3 is not open"), "{stderr}");
}
