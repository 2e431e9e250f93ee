"""Free ports on 127.0.0.1 for the nodes and servers the tests start."""

from __future__ import annotations

import contextlib
import socket


def free_ports(*kinds: int) -> list[int]:
    """One port per kind (``socket.SOCK_STREAM`` or ``socket.SOCK_DGRAM``) that the OS holds
    free now, all distinct. Every probe socket stays bound until the last port is chosen:
    probed one at a time the OS can hand the same port out twice (a CI run once gave two
    nodes of one cluster the same UDP port that way)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for kind in kinds:
            while True:
                s = stack.enter_context(socket.socket(socket.AF_INET, kind))
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
                if port not in ports:  # a TCP and a UDP probe may share a number
                    ports.append(port)
                    break
        return ports


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    return free_ports(kind)[0]


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)
