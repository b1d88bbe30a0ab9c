"""Sends one known set of metrics through the real `datadog` package's DogStatsd client.

Usage: datadog_client.py PORT | unix:///PATH | unixstream:///PATH
Half of the calls go through an unbuffered client (one datagram each), half through a buffered
one (several lines per datagram, trailing newline), as real applications use both.
"""
import sys

from datadog import DogStatsd
from target import client_settings

common = client_settings(sys.argv[1])
unbuffered = DogStatsd(**common)
buffered = DogStatsd(disable_buffering=False, **common)

for client in (unbuffered, buffered):
    client.increment("page.views", tags=["env:prod", "page:home"])
    client.increment("page.views", 2, tags=["page:home", "env:prod"])
    client.gauge("cpu.temp", 42.5, tags=["env:prod", "host:a"])
    client.histogram("request.latency", 0.25, tags=["env:prod"])
    client.histogram("request.latency", 0.75, tags=["env:prod"])
    client.distribution("request.size", 512, tags=["env:prod"])
    client.timing("db.query.ms", 12, tags=["env:prod"])
    client.set("users.unique", "user_0", tags=["env:prod"])
    client.set("users.unique", "user_1", tags=["env:prod"])
    client.gauge_with_timestamp("cpu.temp.ts", 41.0, timestamp=1700000000, tags=["env:prod"])
    client.flush()
buffered.close_socket()
unbuffered.close_socket()
