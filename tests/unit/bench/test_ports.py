"""bench.ports: a port is handed out once per process, whatever the OS repeats."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from bench import ports


class _ScriptedSocket:
    """Stands in for the OS: bind(0) assigns the next port of a script."""

    script: list[int] = []

    def __init__(self, family: int, kind: int) -> None:
        self.port = 0

    def __enter__(self) -> _ScriptedSocket:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def bind(self, addr: tuple[str, int]) -> None:
        self.port = self.script.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def test_a_port_the_os_gives_twice_is_handed_out_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_given", set())
    monkeypatch.setattr(ports.socket, "socket", _ScriptedSocket)
    _ScriptedSocket.script = [40001, 40001, 40001, 40002, 40002, 40003]
    assert ports.free_port() == 40001
    assert ports.free_udp_port() == 40002  # the OS offered 40001 twice more
    assert ports.free_port(socket.SOCK_DGRAM) == 40003
    assert _ScriptedSocket.script == []


def test_real_ports_are_free_and_distinct() -> None:
    got = [ports.free_port() for _ in range(20)] + [ports.free_udp_port() for _ in range(20)]
    assert len(set(got)) == len(got)
    for port in got[:3]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))  # free: binding it works
