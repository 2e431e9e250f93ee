"""signalling.client.ClockSync: ping bookkeeping, pong matching, burst/resync schedule, and
the estimate under virtual asymmetric jitter; sync_over_channel over a fake datachannel."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from pyee.asyncio import AsyncIOEventEmitter

from signalling.client import (
    CLOCK_CHANNEL_LABEL,
    MAX_PENDING,
    ClockSync,
    open_clock_channel,
    sync_over_channel,
)
from signalling.messages import ClockPing, ClockPong, decode_client_message, encode

SERVER_OFFSET = 1_700_000_000.0  # server Unix time minus the virtual client clock


def old_pong(ping: dict[str, Any], server_time: float) -> dict[str, Any]:
    """What the node sends today: no echoed client_time."""
    return {"v": 1, "type": "clock.pong", "id": ping["id"], "server_time": server_time}


def new_pong(ping: dict[str, Any], server_time: float) -> dict[str, Any]:
    """signalling.messages.ClockPong, echoing client_time."""
    msg = ClockPong(id=ping["id"], client_time=ping["client_time"], server_time=server_time)
    decoded: dict[str, Any] = json.loads(encode(msg))
    return decoded


# --- pings ------------------------------------------------------------------------------------


def test_pings_have_increasing_ids_and_are_valid_protocol_messages() -> None:
    sync = ClockSync()
    pings = [sync.make_ping(10.0 + i * 0.1) for i in range(3)]
    assert [p["id"] for p in pings] == [1, 2, 3]
    assert [p["client_time"] for p in pings] == [10.0, 10.1, 10.2]
    for p in pings:
        assert p["type"] == "clock.ping" and p["v"] == 1
        decoded = decode_client_message(json.dumps(p))
        assert isinstance(decoded, ClockPing) and decoded.id == p["id"]
    assert sync.pending == 3
    text = sync.encode_ping(11.0)
    assert json.loads(text)["id"] == 4 and " " not in text


def test_default_now_reads_the_clock() -> None:
    readings = iter([5.0, 5.25])
    sync = ClockSync(clock=lambda: next(readings))
    ping = sync.make_ping()
    assert ping["client_time"] == 5.0
    assert sync.on_pong(old_pong(ping, 105.0))  # received at 5.25
    assert sync.offset == pytest.approx(105.0 - 5.125)
    assert sync.uncertainty == pytest.approx(0.125)


def test_pending_pings_are_bounded() -> None:
    sync = ClockSync(samples=8, max_pings=10_000)
    for i in range(MAX_PENDING * 3):
        sync.make_ping(float(i))
    assert sync.pending == MAX_PENDING
    # The oldest were forgotten: their pongs are ignored; a recent one still counts.
    assert not sync.on_pong(old_pong({"id": 1}, 50.0), now=MAX_PENDING * 3.0)
    assert sync.on_pong(old_pong({"id": MAX_PENDING * 3}, 50.0), now=MAX_PENDING * 3.0)


# --- pongs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [old_pong, new_pong], ids=["without-client_time", "echoed"])
def test_both_pong_shapes_give_the_same_sample(
    shape: Callable[[dict[str, Any], float], dict[str, Any]],
) -> None:
    sync = ClockSync()
    ping = sync.make_ping(100.0)
    # 30 ms up, 10 ms down: the server stamps at client time 100.030.
    assert sync.on_pong(shape(ping, 100.030 + SERVER_OFFSET), now=100.040)
    assert sync.offset == pytest.approx(SERVER_OFFSET + 0.010)
    assert sync.uncertainty == pytest.approx(0.020)
    assert sync.server_now(200.0) == pytest.approx(200.0 + SERVER_OFFSET + 0.010)
    assert sync.local_time_of(SERVER_OFFSET + 300.0) == pytest.approx(300.0 - 0.010)


def test_send_time_comes_from_the_client_record_not_the_echo() -> None:
    sync = ClockSync()
    ping = sync.make_ping(100.0)
    forged = {**new_pong(ping, 100.05 + SERVER_OFFSET), "client_time": 0.0}
    assert sync.on_pong(forged, now=100.1)
    assert sync.offset == pytest.approx(SERVER_OFFSET)  # from send 100.0, not 0.0


@pytest.mark.parametrize(
    "pong",
    [
        {"type": "clock.pong", "id": 999, "server_time": 1.0},  # never sent
        {"type": "clock.pong", "id": True, "server_time": 1.0},
        {"type": "clock.pong", "id": "1", "server_time": 1.0},
        {"type": "clock.pong", "id": 1.0, "server_time": 1.0},
        {"type": "clock.pong", "id": 1, "server_time": "1.0"},
        {"type": "clock.pong", "id": 1, "server_time": math.nan},
        {"type": "clock.pong", "id": 1, "server_time": math.inf},
        {"type": "clock.pong", "id": 1, "server_time": None},
        {"type": "clock.pong", "id": 1},
        {"type": "hello", "id": 1, "server_time": 1.0},
    ],
)
def test_bad_or_unknown_pongs_are_ignored(pong: dict[str, Any]) -> None:
    sync = ClockSync()
    sync.make_ping(0.0)
    assert not sync.on_pong(pong, now=0.01)
    assert sync.offset is None and sync.pongs_ignored == 1
    assert not sync.synced


def test_duplicate_stale_and_backwards_pongs_are_ignored() -> None:
    sync = ClockSync()
    p1, p2, p3 = sync.make_ping(0.0), sync.make_ping(0.1), sync.make_ping(0.2)
    assert sync.on_pong(old_pong(p1, SERVER_OFFSET + 0.01), now=0.02)
    assert not sync.on_pong(old_pong(p1, SERVER_OFFSET + 0.01), now=0.03)  # duplicate
    assert not sync.on_pong(old_pong(p2, SERVER_OFFSET), now=30.0)  # older than the TTL
    assert not sync.on_pong(old_pong(p3, SERVER_OFFSET), now=0.1)  # "before" it was sent
    assert sync.pongs_ignored == 3 and len(sync.estimator.samples) == 1


def test_before_any_sample_there_is_no_server_time() -> None:
    sync = ClockSync()
    assert sync.offset is None and sync.uncertainty is None
    with pytest.raises(RuntimeError):
        sync.server_now(1.0)
    with pytest.raises(RuntimeError):
        sync.local_time_of(1.0)


def test_on_message_takes_raw_pongs_and_leaves_everything_else() -> None:
    sync = ClockSync()
    ping = sync.make_ping(1.0)
    hello = json.dumps({"v": 1, "type": "hello", "room": "r", "participant": "p", "session": "s"})
    for other in (hello, "{not json", "[1]", b"\xff", '"x"', "[" * 5000):
        assert not sync.on_message(other, now=1.01)
    assert sync.pongs_ignored == 0
    assert sync.on_message(json.dumps(old_pong(ping, SERVER_OFFSET + 1.005)), now=1.01)
    assert sync.offset == pytest.approx(SERVER_OFFSET)


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        ClockSync(samples=0)
    with pytest.raises(ValueError):
        ClockSync(samples=8, max_pings=7)
    with pytest.raises(ValueError):
        ClockSync(interval=math.nan)


# --- schedule -----------------------------------------------------------------------------------


def test_burst_of_eight_then_resync_every_30s() -> None:
    # Binary-exact steps (1/32 s) so that "due at last + interval" is hit exactly.
    sync = ClockSync(samples=8, interval=0.125, resync_interval=30.0)
    assert sync.due(0.0)
    sent: list[float] = []
    in_flight: list[tuple[float, dict[str, Any]]] = []
    for step in range(320):  # 10 s of virtual time; RTT 0.25 s, longer than the interval
        t = step / 32
        for arrival, ping in [x for x in in_flight if x[0] <= t]:
            in_flight.remove((arrival, ping))
            assert sync.on_pong(old_pong(ping, arrival - 0.125 + SERVER_OFFSET), now=arrival)
        if sync.due(t):
            in_flight.append((t + 0.25, sync.make_ping(t)))
            sent.append(t)
    # Exactly eight: slow pongs are waited for, not replaced.
    assert sent == [i * 0.125 for i in range(8)]
    assert sync.burst_done and sync.round_received == 8 and sync.pending == 0
    assert sync.offset == pytest.approx(SERVER_OFFSET)
    assert not sync.due(29.99)
    assert sync.next_ping_at() == 30.0
    assert sync.due(30.0)
    sync.make_ping(30.0)  # the resync burst starts over
    assert not sync.burst_done and sync.round_received == 0 and sync.pending == 1
    assert sync.next_ping_at() == pytest.approx(30.125)


def test_lost_pongs_are_replaced_up_to_max_pings() -> None:
    sync = ClockSync(samples=4, interval=0.1, max_pings=6)
    t = 0.0
    sent = 0
    for _ in range(100):
        if sync.due(t):
            ping = sync.make_ping(t)
            sent += 1
            if ping["id"] % 2 == 0:  # every other pong is lost
                sync.on_pong(old_pong(ping, t + SERVER_OFFSET), now=t)
        t += 0.05
    assert sent == 6 and sync.round_received == 3 and sync.burst_done
    assert sync.offset == pytest.approx(SERVER_OFFSET)


def test_a_resync_gives_up_the_previous_bursts_unanswered_pings() -> None:
    sync = ClockSync(samples=2, max_pings=2)
    old = sync.make_ping(0.0)
    sync.make_ping(0.1)  # burst done: both sent (both lost)
    assert sync.burst_done and sync.pending == 2
    sync.make_ping(30.0)
    assert sync.pending == 1
    assert not sync.on_pong(old_pong(old, SERVER_OFFSET), now=30.01)


# --- accuracy under asymmetric jitter -----------------------------------------------------------


def run_virtual_viewer(rng: random.Random, skew: float) -> tuple[float, float]:
    """One viewer whose clock is off by ``skew``: uplink 10 ms + U(0, 50 ms), downlink
    10 ms + U(0, 5 ms), no reordering. Returns (|error about T_open|, uncertainty)."""
    sync = ClockSync(samples=8, interval=0.1)
    real = rng.uniform(0, 100)  # true (server) Unix-ish time, arbitrary origin
    for _ in range(8):
        ping = sync.make_ping(real + skew)
        up = 0.010 + rng.uniform(0, 0.050)
        down = 0.010 + rng.uniform(0, 0.005)
        server_time = real + up
        assert sync.on_pong(new_pong(ping, server_time), now=real + up + down + skew)
        real += 0.1
    t_open = real + 3.0
    assert sync.uncertainty is not None
    err = abs(sync.local_time_of(t_open) - (t_open + skew))
    return err, sync.uncertainty


def test_200_viewers_under_asymmetric_jitter_recover_their_skew_within_20ms() -> None:
    rng = random.Random(7)
    results = [run_virtual_viewer(rng, rng.uniform(-10, 10)) for _ in range(200)]
    for err, bound in results:
        assert err <= bound + 1e-9
    assert max(err for err, _ in results) <= 0.020


# --- over a (fake) datachannel ------------------------------------------------------------------


class FakeNodeChannel(AsyncIOEventEmitter):
    """An open datachannel whose far end is a node answering pings after real delays."""

    def __init__(
        self,
        skew: float,
        up: Callable[[], float],
        down: Callable[[], float],
        *,
        answer: Callable[[int], bool] = lambda _id: True,
        echo: bool = False,
        state: str = "open",
    ) -> None:
        super().__init__()
        self.readyState = state
        self.skew = skew  # the server clock minus time.time()
        self.up, self.down, self.answer, self.echo = up, down, answer, echo
        self.sent: list[dict[str, Any]] = []
        self._io_loop = asyncio.get_running_loop()

    def send(self, data: str) -> None:
        msg = json.loads(data)
        self.sent.append(msg)
        self.emit("greeting", None)  # unrelated events must not disturb the client
        if msg.get("type") == "clock.ping" and self.answer(msg["id"]):
            self._io_loop.call_later(self.up(), self._reply, msg)

    def _reply(self, ping: dict[str, Any]) -> None:
        server_time = time.time() + self.skew
        pong = new_pong(ping, server_time) if self.echo else old_pong(ping, server_time)
        self._io_loop.call_later(self.down(), self.emit, "message", json.dumps(pong))
        self._io_loop.call_later(self.down(), self.emit, "message", '{"v":1,"type":"hello"}')


@pytest.mark.parametrize("echo", [False, True], ids=["old-pong", "messages-pong"])
async def test_sync_over_channel_estimates_the_server_clock(echo: bool) -> None:
    rng = random.Random(3)
    channel = FakeNodeChannel(
        skew=-4.321,
        up=lambda: 0.004 + rng.uniform(0, 0.010),
        down=lambda: 0.001,
        echo=echo,
    )
    sync = await sync_over_channel(channel, samples=8, timeout=5, clock=time.time, interval=0.01)
    assert len(channel.sent) == 8 and sync.round_received == 8 and sync.burst_done
    assert sync.offset is not None and sync.uncertainty is not None
    # The offset is right to within the bound (plus event-loop slack on a busy machine).
    assert abs(sync.offset - -4.321) <= sync.uncertainty + 0.005
    assert sync.uncertainty < 0.05
    assert channel.listeners("message") == []  # detached


async def test_sync_over_channel_replaces_lost_pings() -> None:
    channel = FakeNodeChannel(
        skew=2.0, up=lambda: 0.001, down=lambda: 0.001, answer=lambda i: i % 3 != 0
    )
    sync = ClockSync(4, interval=0.005, lost_after=0.05, clock=time.time)
    assert await sync_over_channel(channel, sync=sync, timeout=5) is sync
    assert sync.round_received == 4
    assert len(channel.sent) == 5  # ping 3 was lost and replaced
    assert sync.offset == pytest.approx(2.0, abs=0.05)


async def test_sync_over_channel_resyncs_an_existing_estimator() -> None:
    channel = FakeNodeChannel(skew=1.0, up=lambda: 0.001, down=lambda: 0.001)
    sync = await sync_over_channel(channel, samples=3, clock=time.time, interval=0.005)
    again = await sync_over_channel(channel, samples=3, sync=sync)
    assert again is sync and len(channel.sent) == 6
    assert [m["id"] for m in channel.sent] == [1, 2, 3, 4, 5, 6]


async def test_sync_over_channel_times_out_without_pongs() -> None:
    channel = FakeNodeChannel(skew=0.0, up=lambda: 0.0, down=lambda: 0.0, answer=lambda _i: False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await sync_over_channel(channel, samples=2, timeout=0.3, interval=0.01)
    assert 0.29 <= loop.time() - started < 1.0
    assert len(channel.sent) == 2  # unanswered, but not presumed lost before lost_after

    quick = ClockSync(2, interval=0.01, lost_after=0.02)
    with pytest.raises(TimeoutError):
        await sync_over_channel(channel, sync=quick, timeout=2.0)
    assert len(channel.sent) == 2 + 4  # lost ones replaced up to max_pings = 2 * samples
    assert loop.time() - started < 2.0  # then only the pong grace, not the whole timeout


async def test_sync_over_channel_waits_for_the_channel_to_open() -> None:
    channel = FakeNodeChannel(skew=0.5, up=lambda: 0.001, down=lambda: 0.001, state="connecting")

    def open_it() -> None:
        channel.readyState = "open"
        channel.emit("open")

    asyncio.get_running_loop().call_later(0.05, open_it)
    sync = await sync_over_channel(channel, samples=2, clock=time.time, interval=0.005)
    assert sync.offset == pytest.approx(0.5, abs=0.05)

    closed = FakeNodeChannel(skew=0.0, up=lambda: 0.0, down=lambda: 0.0, state="closed")
    with pytest.raises(ConnectionError):
        await sync_over_channel(closed, samples=2, timeout=0.5)


async def test_clock_channel_is_unordered_without_retransmissions() -> None:
    pc = RTCPeerConnection()
    try:
        channel = open_clock_channel(pc)
        assert channel.label == CLOCK_CHANNEL_LABEL == "clock"
        assert channel.ordered is False
        assert channel.maxRetransmits == 0
    finally:
        await pc.close()
