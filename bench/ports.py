"""Free ports on 127.0.0.1 for the nodes and servers the bench and the tests start."""

from __future__ import annotations

import socket

_given: set[int] = set()  # every port this process has handed out


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port (``socket.SOCK_STREAM`` or ``socket.SOCK_DGRAM``) that the OS holds free now and
    that this process has not handed out before. The OS alone can give the same port to two
    probes in a row once the first probe has closed (a CI run once gave two nodes of one test
    cluster the same UDP port that way)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)
