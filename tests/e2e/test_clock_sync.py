"""Countdown sync: 200 viewers behind asymmetric jitter agree on a sale's opening instant.

Each viewer is a real aiortc peer connection whose only section is the dedicated ``clock``
datachannel (unordered, no retransmissions). All its datagrams cross one shared
:class:`~bench.proxy.ImpairmentProxy`, which NATs each viewer's UDP port as its own flow with
its own pair of independently seeded links: uplink 10 ms + uniform 0..50 ms jitter, downlink 10 ms + 0..5 ms, the
asymmetry the NTP estimate is worst at. Every viewer reads a clock skewed by its own random
offset of up to +-10 s and estimates the server clock from the best of 8 pings.

The sale opens at server time ``T_open``. A viewer fires its countdown at its local instant
``T_open - offset``; since every process here shares one real clock, the true local instant
is ``T_open + skew``, and the viewer's error is ``|offset + skew|``. Each must be under 20 ms
(and under the viewer's own ``uncertainty`` bound). Each viewer then really arms its
countdown timer, and the machine's time when it fires is reported against ``T_open`` (that
adds the event loop's timer latency, so it is reported, not held to 20 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from bench.clients.whip import new_peer_connection
from bench.link import LinkConfig
from bench.proxy import ImpairmentProxy, rewrite_candidates
from signalling.client import ClockSync, open_clock_channel, sync_over_channel

log = logging.getLogger(__name__)

VIEWERS = 200
CONNECT_CONCURRENCY = 20  # offers/handshakes in flight at once
SAMPLES = 8
TOLERANCE = 0.020  # s: the bound on each viewer's error about T_open
MAX_SKEW = 10.0  # s: each viewer's clock is off by uniform(-MAX_SKEW, MAX_SKEW)
UPLINK = LinkConfig(delay=0.010, jitter=0.050, seed=1000)
DOWNLINK = LinkConfig(delay=0.010, jitter=0.005, seed=5000)
# Viewers start their bursts spread over this long (viewer i at i * SYNC_SPREAD / VIEWERS),
# about 35 bursts in flight at once, ~400 pings/s. Everything here (node, proxy, 200 aiortc
# peers) shares one Python event loop, so any stall of this process (its own CPU load, or
# other jobs on the machine) delays whichever pings are in flight in one direction and
# skews those samples. Measured on a 2-core box shared with other test runs: all 200 bursts
# inside the same 100 ms (2000 pings/s) saturates the loop, max error 69 ms; 1 s of spread
# passes on a quiet machine (max 13 ms) but not under outside load (max 27-230 ms); 4 s
# passed repeatedly under the same outside load (max 9.6-11.6 ms). The probe's stall figure
# in the summary tells a loaded machine from a regression.
SYNC_SPREAD = 4.0
OPEN_IN = 3.0  # s: the sale opens this long after the viewers are synced (server time)
ROOM = "clock-sync"


@dataclass(eq=False)
class Viewer:
    index: int
    skew: float  # s: this viewer's clock minus the machine's
    pc: RTCPeerConnection
    channel: Any = None
    location: str | None = None
    sync: ClockSync | None = None
    connect_s: float = 0.0

    def clock(self) -> float:
        """This viewer's local clock: the machine's Unix time, off by ``skew``."""
        return time.time() + self.skew


async def connect(
    viewer: Viewer,
    http: aiohttp.ClientSession,
    http_url: str,
    token: str,
    proxy_addr: tuple[str, int],
) -> None:
    """WHEP offer/answer with only the clock channel; the answer's candidates point at the
    proxy so every datagram of this viewer crosses its impaired links."""
    started = time.monotonic()
    pc = viewer.pc
    viewer.channel = open_clock_channel(pc)
    await pc.setLocalDescription(await pc.createOffer())
    local = pc.localDescription
    assert local is not None
    url = f"{http_url}/whep/{urllib.parse.quote(ROOM, safe='')}"
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with http.post(url, data=local.sdp.encode(), headers=headers) as resp:
        body = await resp.text()
        assert resp.status == 201, (resp.status, body)
        viewer.location = urllib.parse.urljoin(url, resp.headers["Location"])
    answer = rewrite_candidates(body, proxy_addr)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    viewer.connect_s = time.monotonic() - started


async def wait_open(viewer: Viewer) -> None:
    channel = viewer.channel
    if channel.readyState == "open":
        return
    changed = asyncio.Event()
    channel.on("open", changed.set)
    channel.on("close", changed.set)
    await changed.wait()  # bounded by the caller's wait_for
    assert channel.readyState == "open", (viewer.index, channel.readyState)


async def close(viewer: Viewer, http: aiohttp.ClientSession, token: str) -> None:
    if viewer.location is not None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            headers = {"Authorization": f"Bearer {token}"}
            async with http.delete(viewer.location, headers=headers) as resp:
                await resp.read()
    await viewer.pc.close()


async def bounded(
    limit: int,
    jobs: list[Callable[[], Awaitable[None]]],
    timeout: float,  # noqa: ASYNC109
) -> list[BaseException | None]:
    """Run coroutine factories with at most ``limit`` in flight; None or the exception."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    return await asyncio.wait_for(
        asyncio.gather(*(one(j) for j in jobs), return_exceptions=True), timeout
    )


class StallProbe:
    """Measures how late this process's event loop runs a 10 ms timer (a stall probe)."""

    PERIOD = 0.010

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._loop = asyncio.get_running_loop()
        self._due = self._loop.time() + self.PERIOD
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.lateness.append(max(0.0, now - self._due))
        self._due = now + self.PERIOD
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..100."""
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def ms(values: list[float]) -> str:
    return (
        f"max {max(values) * 1000:.1f} p95 {percentile(values, 95) * 1000:.1f} "
        f"p50 {percentile(values, 50) * 1000:.1f} ms"
    )


@pytest.mark.timeout(120)
async def test_viewers_agree_on_sale_open_within_20ms(node: Any, mint: Callable[..., str]) -> None:
    rng = random.Random(20240601)
    loop = asyncio.get_running_loop()
    proxy = ImpairmentProxy(target=("127.0.0.1", node.udp_port), uplink=UPLINK, downlink=DOWNLINK)
    proxy_addr = await proxy.start()
    viewers = [
        Viewer(i, rng.uniform(-MAX_SKEW, MAX_SKEW), new_peer_connection()) for i in range(VIEWERS)
    ]
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    token = mint(ROOM, "viewer", ["subscribe"])
    t0 = time.monotonic()
    try:
        # 1. Connect every viewer through the proxy, CONNECT_CONCURRENCY offers at a time.
        results = await bounded(
            CONNECT_CONCURRENCY,
            [partial(connect, v, http, node.http_url, token, proxy_addr) for v in viewers],
            timeout=60,
        )
        failed = [(v.index, r) for v, r in zip(viewers, results, strict=True) if r is not None]
        assert not failed, failed[:5]
        t_offers = time.monotonic() - t0
        await asyncio.wait_for(asyncio.gather(*(wait_open(v) for v in viewers)), 60)
        t_connected = time.monotonic() - t0
        assert len(proxy.flows) == VIEWERS  # each viewer's datagrams really cross the proxy

        # 2. Every viewer estimates the server clock: one burst, best of SAMPLES pings.
        async def sync(v: Viewer) -> None:
            await asyncio.sleep(v.index * SYNC_SPREAD / VIEWERS)  # pacing of the bursts
            v.sync = await sync_over_channel(v.channel, SAMPLES, timeout=20.0, clock=v.clock)

        t1 = time.monotonic()
        probe = StallProbe()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(sync(v) for v in viewers), return_exceptions=True), 60
            )
        finally:
            probe.stop()
        failed = [(v.index, r) for v, r in zip(viewers, results, strict=True) if r is not None]
        assert not failed, failed[:5]
        t_sync = time.monotonic() - t1

        # 3. The sale opens OPEN_IN s from now on the server's clock; each viewer translates
        # that into its own clock.
        t_open = time.time() + OPEN_IN
        errors: list[float] = []
        bounds: list[float] = []
        for v in viewers:
            assert v.sync is not None and v.sync.uncertainty is not None
            estimated_local = v.sync.local_time_of(t_open)
            true_local = t_open + v.skew  # this viewer's clock when the server's reads t_open
            err = abs(estimated_local - true_local)
            errors.append(err)
            bounds.append(v.sync.uncertainty)
            # Half the best round trip is a hard bound on the error, whatever the asymmetry.
            assert err <= v.sync.uncertainty + 1e-6, (v.index, err, v.sync.uncertainty)

        # 4. Each viewer arms its countdown; note the machine's time when it fires.
        fired: list[float] = []
        all_fired = loop.create_future()

        def fire() -> None:
            fired.append(time.time())
            if len(fired) == VIEWERS and not all_fired.done():
                all_fired.set_result(None)

        for v in viewers:
            assert v.sync is not None
            local_deadline = v.sync.local_time_of(t_open)
            loop.call_at(loop.time() + (local_deadline - v.clock()), fire)
        await asyncio.wait_for(all_fired, OPEN_IN + 5)
        fire_errors = [abs(t - t_open) for t in fired]

        summary = (
            f"{VIEWERS} viewers: offers {t_offers:.1f}s (each p95 "
            f"{percentile([v.connect_s for v in viewers], 95) * 1000:.0f} ms), all open "
            f"{t_connected:.1f}s, sync {t_sync:.1f}s; |estimate error| {ms(errors)}; "
            f"uncertainty {ms(bounds)}; |fired - T_open| {ms(fire_errors)}; "
            f"event-loop stalls during sync {ms(probe.lateness or [0.0])}; "
            f"datagrams up {proxy.uplink_stats.forwarded} down {proxy.downlink_stats.forwarded}"
        )
        print(summary)
        log.info("%s", summary)
        worst = max(range(VIEWERS), key=errors.__getitem__)
        assert errors[worst] <= TOLERANCE, (summary, worst, viewers[worst].skew)
    finally:
        await bounded(
            CONNECT_CONCURRENCY, [partial(close, v, http, token) for v in viewers], timeout=30
        )
        await http.close()
        await proxy.stop()
