"""Client helpers for the commerce datachannel: server-clock sync over ``clock.ping``.

:class:`ClockSync` is the sans-I/O client side of the NTP-style exchange estimated by
:class:`~signalling.domain.clock.ClockOffsetEstimator`: it numbers pings, remembers when it
sent each one (by ``id``), turns pongs into samples and says when the next ping is due (an
initial burst of ``samples`` pings ``interval`` apart, then a fresh burst every
``resync_interval``). :func:`sync_over_channel` runs one burst over an aiortc
``RTCDataChannel``; :func:`open_clock_channel` creates the dedicated channel the architecture
asks for (``clock``: unordered, no retransmissions, so a lost or late pong is simply
replaced by the next one instead of delaying it behind a retransmission).

Units: every time here is float seconds. The client clock is whatever ``clock`` returns
(``time.monotonic`` by default; any clock works if used consistently); ``server_time`` in a
pong is the node's Unix time. ``offset`` is ``server - client``, so ``server_now(t) = t +
offset`` and the local instant of a server time ``T`` is ``T - offset``
(:meth:`ClockSync.local_time_of`).

Pongs are matched by ``id`` against the client's own record of send times, never by the
echoed ``client_time``: a node that does not echo it (``{"type": "clock.pong", "id",
"server_time"}``) and one that does (``signalling.messages.ClockPong``) both work, and a pong
whose id was never sent, was already answered, or is too old is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

from signalling.domain.clock import ClockOffsetEstimator

__all__ = [
    "CLOCK_CHANNEL_LABEL",
    "ClockSync",
    "open_clock_channel",
    "sync_over_channel",
]

CLOCK_CHANNEL_LABEL: Final = "clock"
DEFAULT_SAMPLES: Final = 8
DEFAULT_INTERVAL: Final = 0.1  # s between the pings of a burst
DEFAULT_RESYNC: Final = 30.0  # s from the start of one burst to the next
DEFAULT_LOST_AFTER: Final = 1.0  # s unanswered before a burst's ping is presumed lost
MAX_PENDING: Final = 64  # pings remembered while unanswered (oldest forgotten first)
PENDING_TTL: Final = 10.0  # s: a pong later than this is not a useful sample anyway
PONG_GRACE: Final = 1.0  # s sync_over_channel waits for the last pongs of a burst
_MAX_PING_ID: Final = 2**53 - 1
_TIMER_SLACK: Final = 0.002  # s: asyncio may wake a timer this early (another clock)


class ClockSync:
    """Client-side clock sync state (see the module docstring). Not thread-safe.

    ``make_ping``/``on_pong`` take ``now`` on the client clock; when omitted, ``clock()`` is
    read. ``max_pings`` bounds one burst: pings unanswered for ``lost_after`` are replaced
    until ``samples`` pongs arrived or ``max_pings`` pings were sent (default
    ``2 * samples``).
    """

    def __init__(
        self,
        samples: int = DEFAULT_SAMPLES,
        *,
        interval: float = DEFAULT_INTERVAL,
        resync_interval: float = DEFAULT_RESYNC,
        max_pings: int | None = None,
        lost_after: float = DEFAULT_LOST_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if samples < 1:
            raise ValueError("samples must be at least 1")
        if not (math.isfinite(interval) and interval >= 0):
            raise ValueError("interval must be finite and >= 0")
        self.samples = samples
        self.interval = interval
        self.resync_interval = resync_interval
        self.max_pings = 2 * samples if max_pings is None else max_pings
        if self.max_pings < samples:
            raise ValueError("max_pings must be at least samples")
        self.lost_after = lost_after
        self.clock = clock
        # The estimator's window is one burst: each resync replaces the previous samples.
        self.estimator = ClockOffsetEstimator(window=samples, resync_interval=resync_interval)
        self._next_id = 1
        self._pending: OrderedDict[int, float] = OrderedDict()  # id -> client send time
        self._round_started: float | None = None
        self._round_sent = 0
        self._round_received = 0
        self._last_ping: float | None = None
        self.pongs_ignored = 0

    # --- sending -----------------------------------------------------------------------------

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else now

    def make_ping(self, now: float | None = None) -> dict[str, Any]:
        """A ``clock.ping`` message to send now (id increasing from 1), recorded as pending."""
        t = self._now(now)
        if self._round_started is None or self._round_complete():
            self._start_round(t)
        ping_id = self._next_id
        self._next_id = self._next_id + 1 if self._next_id < _MAX_PING_ID else 1
        self._pending[ping_id] = t
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        self._round_sent += 1
        self._last_ping = t
        return {"v": 1, "type": "clock.ping", "id": ping_id, "client_time": t}

    def encode_ping(self, now: float | None = None) -> str:
        """:meth:`make_ping` as the JSON text to put on a datachannel."""
        return json.dumps(self.make_ping(now), separators=(",", ":"))

    def _start_round(self, now: float) -> None:
        # Pings of an earlier burst still unanswered are given up (their pongs are ignored).
        self._pending.clear()
        self._round_started = now
        self._round_sent = 0
        self._round_received = 0

    def _round_complete(self) -> bool:
        return self._round_received >= self.samples or self._round_sent >= self.max_pings

    def next_ping_at(self) -> float:
        """Client time at which the next ping is due (may be in the past).

        A burst sends ``samples`` pings ``interval`` apart. If pongs are missing after that,
        a ping unanswered for ``lost_after`` is presumed lost and replaced (until
        ``max_pings``); a pong that is merely slow still counts when it arrives.
        """
        if self._round_started is None:
            return -math.inf
        if self._round_complete():
            return self._round_started + self.resync_interval
        assert self._last_ping is not None
        paced = self._last_ping + self.interval
        if self._round_sent < self.samples:
            return paced
        missing = self.samples - self._round_received
        in_flight = sorted(self._pending.values())  # this burst's unanswered send times
        if len(in_flight) < missing:
            return paced
        # Enough pongs may still come: wait until all but missing-1 of them are presumed lost.
        return max(paced, in_flight[len(in_flight) - missing] + self.lost_after)

    def due(self, now: float | None = None) -> bool:
        """Whether a ping should be sent at ``now``: during a burst every ``interval`` until
        ``samples`` pongs came back (or ``max_pings`` went out), then ``resync_interval``
        after the burst started."""
        return self._now(now) >= self.next_ping_at()

    @property
    def burst_done(self) -> bool:
        """True once the current burst has its samples (or gave up on more pings)."""
        return self._round_started is not None and self._round_complete()

    @property
    def round_received(self) -> int:
        """Pongs taken as samples in the current burst."""
        return self._round_received

    @property
    def pending(self) -> int:
        """Pings sent and not yet answered (bounded by ``MAX_PENDING``)."""
        return len(self._pending)

    # --- receiving ---------------------------------------------------------------------------

    def on_pong(self, msg: Mapping[str, Any], now: float | None = None) -> bool:
        """Take a decoded ``clock.pong``; True if it became a sample, False if ignored."""
        t = self._now(now)
        if msg.get("type") != "clock.pong":
            self.pongs_ignored += 1
            return False
        ping_id = msg.get("id")
        server_time = msg.get("server_time")
        if (
            not isinstance(ping_id, int)
            or isinstance(ping_id, bool)
            or not isinstance(server_time, int | float)
            or isinstance(server_time, bool)
            or not math.isfinite(server_time)
        ):
            self.pongs_ignored += 1
            return False
        sent = self._pending.pop(ping_id, None)
        if sent is None or t - sent > PENDING_TTL:
            self.pongs_ignored += 1  # unknown, duplicate, or too late to mean anything
            return False
        try:
            self.estimator.add_sample(sent, float(server_time), t)
        except ValueError:  # the client clock went backwards between ping and pong
            self.pongs_ignored += 1
            return False
        self._round_received += 1
        return True

    def on_message(self, message: str | bytes, now: float | None = None) -> bool:
        """Handle raw datachannel text: True if it was a ``clock.pong`` taken as a sample.

        Reads ``now`` before decoding so JSON parsing does not count as network delay.
        Anything else (other message types, malformed text) returns False untouched.
        """
        t = self._now(now)
        try:
            msg = json.loads(message)
        except (ValueError, RecursionError):
            return False
        if not isinstance(msg, dict) or msg.get("type") != "clock.pong":
            return False
        return self.on_pong(msg, t)

    # --- the estimate ------------------------------------------------------------------------

    @property
    def offset(self) -> float | None:
        """``server_time - client_time`` in seconds, or None before the first sample."""
        return self.estimator.offset

    @property
    def uncertainty(self) -> float | None:
        """Hard bound on the offset's error (half the best round trip), seconds."""
        return self.estimator.uncertainty

    @property
    def synced(self) -> bool:
        return self.estimator.offset is not None

    def server_now(self, now: float | None = None) -> float:
        """The server's Unix time at client time ``now``; RuntimeError before any sample."""
        offset = self.estimator.offset
        if offset is None:
            raise RuntimeError("no clock sample yet")
        return self._now(now) + offset

    def local_time_of(self, server_time: float) -> float:
        """The client-clock instant at which the server clock reads ``server_time``."""
        offset = self.estimator.offset
        if offset is None:
            raise RuntimeError("no clock sample yet")
        return server_time - offset


def open_clock_channel(pc: Any, label: str = CLOCK_CHANNEL_LABEL) -> Any:
    """Create the dedicated clock channel on an aiortc ``RTCPeerConnection``: unordered and
    never retransmitted (a stale pong is worthless; the next ping replaces a lost one).

    Create it before the offer when it is the first channel (it then brings the SCTP
    section); afterwards it opens in-band. The node answers pings on the channel they came on.
    """
    return pc.createDataChannel(label, ordered=False, maxRetransmits=0)


async def _wait_open(channel: Any, timeout: float) -> None:  # noqa: ASYNC109
    if channel.readyState == "open":
        return
    opened = asyncio.Event()
    channel.on("open", opened.set)
    channel.on("close", opened.set)
    try:
        if channel.readyState == "connecting":
            await asyncio.wait_for(opened.wait(), timeout)
    finally:
        channel.remove_listener("open", opened.set)
        channel.remove_listener("close", opened.set)
    if channel.readyState != "open":
        raise ConnectionError(f"clock datachannel {channel.readyState}")


async def sync_over_channel(
    channel: Any,
    samples: int = DEFAULT_SAMPLES,
    timeout: float = 5.0,  # noqa: ASYNC109 (part of the API)
    *,
    sync: ClockSync | None = None,
    clock: Callable[[], float] = time.monotonic,
    interval: float = DEFAULT_INTERVAL,
) -> ClockSync:
    """Run one burst of pings over an aiortc ``RTCDataChannel`` and return the ClockSync.

    Waits (within ``timeout``) for the channel to open, then sends pings as
    :meth:`ClockSync.due` says (``samples`` pings ``interval`` apart, lost ones replaced
    after ``lost_after`` up to ``max_pings``) until ``samples`` pongs came back, then waits
    for pongs still in flight (at most ``PONG_GRACE``); all within ``timeout`` seconds.
    Pass ``sync`` to resync an existing one (its own settings and ``clock`` are then used;
    ``samples``/``clock``/``interval`` only configure a new one). Raises ConnectionError if
    the channel closes first, TimeoutError if not one pong came back. The message listener
    is removed before returning; other messages on the channel are left alone.
    """
    if sync is None:
        sync = ClockSync(samples, interval=interval, clock=clock)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await _wait_open(channel, timeout)
    progress = asyncio.Event()

    def on_message(message: str | bytes) -> None:
        if sync.on_message(message):
            progress.set()

    channel.on("message", on_message)
    try:
        # A burst starts now (a resync need not wait for resync_interval); one in progress
        # just continues.
        channel.send(sync.encode_ping())
        # Bounded: a pass sends a ping (at most max_pings), takes a pong (at most max_pings
        # count), or ends at the deadline; the slack covers timers firing a little early.
        for _ in range(4 * sync.max_pings + 8):
            if sync.burst_done or channel.readyState != "open":
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            wait = min(remaining, max(0.0, sync.next_ping_at() - sync.clock()))
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), wait)
            except TimeoutError:  # the next ping is due (pacing only), or the deadline
                now = sync.clock()
                if sync.due(now + _TIMER_SLACK) and channel.readyState == "open":
                    channel.send(sync.encode_ping(now))
        # Every ping of the burst is out: give the pongs in flight a bounded grace.
        grace_end = min(deadline, loop.time() + PONG_GRACE)
        for _ in range(sync.samples + 1):
            if sync.round_received >= sync.samples or sync.pending == 0:
                break
            remaining = grace_end - loop.time()
            if remaining <= 0:
                break
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), remaining)
    finally:
        channel.remove_listener("message", on_message)
    if not sync.synced:
        raise TimeoutError(f"no clock.pong within {timeout}s ({sync.pending} pings unanswered)")
    return sync
