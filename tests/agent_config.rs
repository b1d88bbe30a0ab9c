//! A `datadog.yaml` and the `DD_*` environment, as the Agent's users have them: the listener,
//! host and histogram keys act, the environment wins over the file and flags over both, and a
//! bad value is named by its key.

mod common;

use std::process::Command;

use common::{Server, metric_lines, temp_dir};

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_agents_keys_act_and_flags_beat_the_environment_which_beats_the_file() {
    let dir = temp_dir("agent-config");
    let port = free_udp_port();
    let sock = dir.join("dsd.sock");
    let yaml = dir.join("datadog.yaml");
    std::fs::write(
        &yaml,
        format!(
            "api_key: not-used-by-jsonl\ndogstatsd_port: {port}\nbind_host: localhost\n\
             dogstatsd_socket: {}\nhostname: from-file\nhistogram_aggregates: [max]\n\
             histogram_percentiles: []\nsome_agent_only_key: 1\n",
            sock.display()
        ),
    )
    .unwrap();
    let config = yaml.to_str().unwrap();
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["--cores", "0", "--no-http", "--config", config];
        args.extend_from_slice(extra);
        let server = Server::start_bare(&args, env);
        assert_eq!(server.addr.port(), port, "UDP on dogstatsd_port");
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"lat:5|h", server.addr).unwrap();
        let unix = std::os::unix::net::UnixDatagram::unbound().unwrap();
        unix.send_to(b"over.uds:1|c", &sock).unwrap();
        let done = server.stop();
        assert_eq!(done.status, 0, "{:?}", done.stderr);
        let lines = metric_lines(&done.lines);
        let names: Vec<&str> = lines
            .iter()
            .filter_map(|l| l["name"].as_str())
            .filter(|n| !n.starts_with("corestatsd."))
            .collect();
        // histogram_aggregates: [max] and no percentiles.
        let mut want = vec!["lat.max", "over.uds"];
        let mut got = names.clone();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        let host = lines.iter().find(|l| l["name"] == "lat.max").unwrap()["host"]
            .as_str()
            .unwrap()
            .to_owned();
        let ignored: Vec<&String> = done
            .stderr
            .iter()
            .filter(|l| l.contains("ignoring keys"))
            .collect();
        assert_eq!(ignored.len(), 1);
        assert!(
            ignored[0].ends_with(": some_agent_only_key"),
            "{}",
            ignored[0]
        );
        host
    };
    assert_eq!(run(&[], &[]), "from-file");
    assert_eq!(run(&[("DD_HOSTNAME", "from-env")], &[]), "from-env");
    assert_eq!(
        run(&[("DD_HOSTNAME", "from-env")], &["--hostname", "from-flag"]),
        "from-flag"
    );
}

#[test]
fn a_bad_value_in_the_file_or_the_environment_is_named_by_its_key() {
    let dir = temp_dir("agent-config-bad");
    let yaml = dir.join("datadog.yaml");
    std::fs::write(&yaml, "dogstatsd_buffer_size: lots\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .args(["--config", yaml.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "--config {}: dogstatsd_buffer_size (as --buffer-size-bytes): invalid value 'lots'",
            yaml.display()
        )),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_corestatsd"))
        .env("DD_DOGSTATSD_ORIGIN_DETECTION", "sometimes")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("DD_DOGSTATSD_ORIGIN_DETECTION: must be true or false"),
        "{err}"
    );
}
