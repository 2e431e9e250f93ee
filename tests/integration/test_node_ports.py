"""A node refuses a port another node already holds, with a clear error (real sockets)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.ports import free_port
from sfu.config import PortUnavailable
from sfu.node import Node
from tests.conftest import TEST_API_KEY, TEST_API_SECRET
from tests.deploy.helpers import ROOT


def _second(settings: Any, tmp_path: Path, **ports: int) -> Node:
    data_dir = tmp_path / "second"
    data_dir.mkdir()
    return Node(dataclasses.replace(settings, data_dir=data_dir, **ports))


async def test_a_taken_udp_port_is_refused_not_shared(
    node: Any, node_settings: Any, tmp_path: Path
) -> None:
    # With SO_REUSEADDR both binds succeed on Linux and the two nodes split the media.
    second = _second(node_settings, tmp_path, udp_port=node.udp_port)
    with pytest.raises(PortUnavailable, match=f"UDP media port 127.0.0.1:{node.udp_port}"):
        await asyncio.wait_for(second.start(), 15)
    assert second.sock is None
    # The first node still owns it.
    assert node.sock is not None and node.sock.getsockname()[1] == node.udp_port


async def test_a_taken_http_port_is_refused_and_the_rest_released(
    node: Any, node_settings: Any, tmp_path: Path
) -> None:
    second = _second(node_settings, tmp_path, http_port=node.http_port, udp_port=0)
    with pytest.raises(PortUnavailable, match=f"HTTP port 127.0.0.1:{node.http_port}"):
        await asyncio.wait_for(second.start(), 15)
    assert second.sock is None  # its UDP socket was closed again


async def test_a_taken_cascade_port_is_refused_and_the_rest_released(
    node_settings: Any, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        second = _second(node_settings, tmp_path, cascade_port=port)
        with pytest.raises(PortUnavailable, match=f"cascade port 127.0.0.1:{port}"):
            await asyncio.wait_for(second.start(), 15)
    assert second.sock is None and second.cascade is None


def test_serve_exits_1_with_the_port_in_the_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        env = {**os.environ, "SFU_API_KEY": TEST_API_KEY, "SFU_API_SECRET": TEST_API_SECRET}
        proc = subprocess.run(
            [sys.executable, "-m", "sfu", "serve", "--host", "127.0.0.1",
             "--http-port", str(free_port()), "--udp-port", str(port),
             "--data-dir", str(tmp_path / "data")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )
    assert proc.returncode == 1, proc.stderr
    assert f"error: UDP media port 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
