"""Graceful drain of a real `python -m sfu serve` process (SIGTERM by PID).

First SIGTERM: /healthz answers 503 "draining", new WHIP/WHEP offers get 503, room-protocol
sockets receive `drain`, datachannel peers receive `{"v":1,"type":"drain"}`, and the process
exits once its clients have left. A second signal exits at once; --drain-timeout bounds the
wait. Every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bench.clients.room import RoomClient
from bench.clients.whip import whep_play
from bench.ports import free_port, free_udp_port
from sfu.auth import mint_token
from tests.conftest import TEST_API_KEY, TEST_API_SECRET
from tests.deploy.helpers import ROOT

START_TIMEOUT = 30.0
EXIT_TIMEOUT = 10.0


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def token(self, room: str, identity: str, grants: list[str]) -> str:
        return mint_token(api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, room=room,
                          identity=identity, grants=grants)

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def wait_exit(self, limit: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while (code := self.proc.poll()) is None:
            assert loop.time() < deadline, f"node still running after {limit}s:\n{self.log_tail()}"
            await asyncio.sleep(0.05)
        return code


def _spawn(tmp_path: Path, drain_timeout: float) -> NodeProcess:
    http_port, udp_port = free_port(), free_udp_port()
    env = {**os.environ, "SFU_API_KEY": TEST_API_KEY, "SFU_API_SECRET": TEST_API_SECRET,
           "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sfu", "serve", "--host", "127.0.0.1",
             "--http-port", str(http_port), "--udp-port", str(udp_port),
             "--data-dir", str(tmp_path / "data"), "--peer-network", "127.0.0.0/8",
             "--drain-timeout", str(drain_timeout), "--production"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    return NodeProcess(proc=proc, url=f"http://127.0.0.1:{http_port}", log=log)


async def _start(tmp_path: Path, drain_timeout: float) -> NodeProcess:
    node = _spawn(tmp_path, drain_timeout)
    proc = node.proc
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            assert proc.poll() is None, f"node exited with {proc.returncode}:\n{node.log_tail()}"
            try:
                async with http.get(node.url + "/healthz") as resp:
                    if resp.status == 200:
                        return node
            except (aiohttp.ClientError, TimeoutError):
                pass
            assert loop.time() < deadline, f"node not healthy in {START_TIMEOUT}s"
            await asyncio.sleep(0.1)


StartNode = Callable[[float], Awaitable[NodeProcess]]


@pytest.fixture
async def start_node(tmp_path: Path) -> AsyncIterator[StartNode]:
    started: list[NodeProcess] = []

    async def start(drain_timeout: float) -> NodeProcess:
        node = await _start(tmp_path, drain_timeout)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            if node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(timeout=10)


async def _until(predicate: Callable[[], bool], limit: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, f"{what}: not within {limit}s"
        await asyncio.sleep(0.05)


async def _healthz(http: aiohttp.ClientSession, node: NodeProcess) -> tuple[int, dict[str, object]]:
    async with http.get(node.url + "/healthz") as resp:
        return resp.status, await resp.json()


async def _offer_status(http: aiohttp.ClientSession, node: NodeProcess, kind: str) -> int:
    grant = "publish" if kind == "whip" else "subscribe"
    headers = {"Content-Type": "application/sdp",
               "Authorization": f"Bearer {node.token('shop', 'late', [grant])}"}
    async with http.post(f"{node.url}/{kind}/shop", data=b"v=0\r\n", headers=headers) as resp:
        await resp.read()
        return resp.status


def _drain_events(client: RoomClient) -> list[dict[str, object]]:
    return [e for e in client.events if e.get("type") == "drain"]


async def test_sigterm_drains_then_exits_when_clients_leave(
    start_node: StartNode,
) -> None:
    node = await start_node(20.0)
    room = await RoomClient.connect(node.url, node.token("shop", "ws-viewer", ["subscribe"]))
    player = await whep_play(node.url, "shop", node.token("shop", "viewer", ["subscribe"]),
                             video=False, audio=False, datachannel=True)
    try:
        await player.wait_channel_open(timeout=15)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            assert (await _healthz(http, node))[0] == 200

            node.signal(signal.SIGTERM)

            async def draining() -> bool:
                status, body = await _healthz(http, node)
                return status == 503 and body.get("status") == "draining"

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not await draining():
                assert loop.time() < deadline, "/healthz never reported draining"
                await asyncio.sleep(0.05)
            assert await _offer_status(http, node, "whip") == 503
            assert await _offer_status(http, node, "whep") == 503

        await _until(lambda: bool(_drain_events(room)), 5, "room socket got no drain")
        [event] = _drain_events(room)
        assert event["v"] == 1 and isinstance(event.get("reason"), str)

        def channel_drain() -> bool:
            return any(isinstance(m, str) and json.loads(m).get("type") == "drain"
                       for m in player.channel_messages)

        await _until(channel_drain, 5, "datachannel got no drain")
        drain_msg = next(json.loads(m) for m in player.channel_messages
                         if isinstance(m, str) and json.loads(m).get("type") == "drain")
        assert drain_msg["v"] == 1

        # Clients are still there: the node keeps serving them.
        await asyncio.sleep(1.0)
        assert node.proc.poll() is None, "node exited while sessions were still open"

        await room.close()
        assert await player.close() == 200  # DELETE still works while draining
        assert await node.wait_exit(EXIT_TIMEOUT) == 0
    finally:
        await room.close()
        await player.close()


async def test_second_signal_exits_at_once(start_node: StartNode) -> None:
    node = await start_node(60.0)
    room = await RoomClient.connect(node.url, node.token("shop", "stays", ["subscribe"]))
    try:
        node.signal(signal.SIGTERM)
        await _until(lambda: bool(_drain_events(room)), 5, "room socket got no drain")
        assert node.proc.poll() is None
        node.signal(signal.SIGINT)
        assert await node.wait_exit(EXIT_TIMEOUT) == 0
    finally:
        await room.close()


async def test_drain_timeout_bounds_the_wait(start_node: StartNode) -> None:
    node = await start_node(1.5)
    room = await RoomClient.connect(node.url, node.token("shop", "stays", ["subscribe"]))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        node.signal(signal.SIGTERM)
        assert await node.wait_exit(EXIT_TIMEOUT) == 0
        assert loop.time() - started >= 1.4, "exited before the drain timeout"
        assert _drain_events(room)
    finally:
        await room.close()


async def test_idle_node_exits_promptly_on_sigterm(start_node: StartNode) -> None:
    node = await start_node(30.0)
    node.signal(signal.SIGTERM)
    assert await node.wait_exit(5) == 0


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, 30.0),
        ([], {"SFU_DRAIN_TIMEOUT": "12.5"}, 12.5),
        (["--drain-timeout", "0"], {"SFU_DRAIN_TIMEOUT": "12.5"}, 0.0),
    ],
)
def test_drain_timeout_setting(argv: list[str], env: dict[str, str], expected: float) -> None:
    from sfu.cli import _build_parser, _settings_from_args

    args = _build_parser().parse_args(["serve", *argv])
    assert _settings_from_args(args, env).drain_timeout == expected


@pytest.mark.parametrize(
    ("argv", "env"),
    [(["--drain-timeout", "-1"], {}), ([], {"SFU_DRAIN_TIMEOUT": "soon"}),
     (["--drain-timeout", "nan"], {})],
)
def test_bad_drain_timeout_is_a_usage_error(argv: list[str], env: dict[str, str]) -> None:
    from sfu.cli import UsageError, _build_parser, _settings_from_args

    args = _build_parser().parse_args(["serve", *argv])
    with pytest.raises(UsageError, match="drain|SFU_DRAIN_TIMEOUT"):
        _settings_from_args(args, env)
