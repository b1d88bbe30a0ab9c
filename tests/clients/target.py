"""The DogStatsd client settings for a test target: a UDP port on 127.0.0.1, or a socket path
(`unix:///PATH`, `unixstream:///PATH`)."""


def client_settings(target):
    settings = dict(disable_telemetry=True, origin_detection_enabled=False)
    if target.isdigit():
        settings.update(host="127.0.0.1", port=int(target))
    else:
        # Blocking sends: the client's default (non-blocking) drops a datagram whenever the
        # socket's queue is full, and net.unix.max_dgram_qlen is small on many hosts.
        settings.update(socket_path=target, socket_timeout=None)
    return settings
