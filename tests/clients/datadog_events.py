"""Sends one event and one service check with every optional field, and a mixed datagram, through
the real `datadog` package's DogStatsd client.

Usage: datadog_events.py PORT | unix:///PATH | unixstream:///PATH
"""
import sys

from datadog import DogStatsd
from target import client_settings

common = client_settings(sys.argv[1])
client = DogStatsd(**common)
client.event(
    "Deploy finished",
    "Build #42 went out\nsecond line",
    alert_type="success",
    aggregation_key="deploy",
    source_type_name="demo",
    date_happened=1700000000,
    priority="low",
    tags=["env:prod", "team:a"],
    hostname="myhost",
)
client.service_check(
    "app.can_connect",
    1,
    tags=["env:prod"],
    timestamp=1700000001,
    hostname="myhost",
    message="slow but up",
)
client.close_socket()
