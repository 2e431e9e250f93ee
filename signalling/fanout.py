"""Paced, bounded outbound queues for commerce datachannel messages (one per channel).

aiortc's SCTP accepts every ``RTCDataChannel.send`` at once and buffers it without limit; a
burst to thousands of viewers then collapses the association's congestion window and, for
a viewer that cannot keep up, grows memory without bound. ``Outbox`` sits in front of each
channel:

- it hands a message to aiortc only while ``channel.bufferedAmount`` is under
  ``high_water`` and resumes on the ``bufferedamountlow`` event (threshold ``low_water``),
  so aiortc never holds more than about ``high_water`` bytes per channel;
- messages with a ``coalesce`` key (``stock.updated`` per product) replace a queued message
  with the same key and move to the back of the queue, so a slow viewer gets the latest
  value and ``seq`` still only increases in delivery order (a skipped, superseded
  ``stock.updated`` is the only gap a client can see without a snapshot);
- past ``max_queue`` messages it drops every queued room message (they are superseded by
  state) and sends a fresh ``snapshot`` first when the channel drains (``resync``).
  Direct replies (``order.result``, ``cart.updated``, ``error``) are never dropped for
  room traffic; they are bounded by the viewer's rate limits and a hard cap.

``send_now`` bypasses the queue (``clock.pong``: a queued pong would spoil the clock
estimate).
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger("signalling.fanout")

HIGH_WATER: Final = 32 * 1024  # bytes aiortc may buffer for one channel before we queue
LOW_WATER: Final = 8 * 1024  # resume writing when aiortc's buffer drains to this
MAX_QUEUE: Final = 256  # queued messages per channel before room messages are dropped
MAX_DIRECT: Final = 1024  # hard cap on queued direct replies (a viewer that never reads)


class FanoutStats:
    """Counters shared by every outbox of a node (exported in /metrics)."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()  # by message type
        self.bytes_sent = 0
        self.coalesced: Counter[str] = Counter()  # by message type
        self.dropped: Counter[str] = Counter()  # by reason
        self.resyncs = 0
        self.outboxes: set[Outbox] = set()

    def queued(self) -> int:
        return sum(len(o) for o in self.outboxes)


class Outbox:
    """The outbound queue of one datachannel."""

    def __init__(
        self,
        channel: Any,
        stats: FanoutStats,
        *,
        resync: Callable[[], str | None] | None = None,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.channel = channel
        self.stats = stats
        self.resync = resync
        self.high_water = high_water
        self.max_queue = max_queue
        # key -> (type, data, droppable); int keys for plain messages, tuples for coalescing
        self._queue: OrderedDict[object, tuple[str, str, bool]] = OrderedDict()
        self._next_key = 0
        self._direct = 0
        self.needs_resync = False
        self.closed = False
        channel.bufferedAmountLowThreshold = low_water
        channel.on("bufferedamountlow", self.pump)
        stats.outboxes.add(self)

    def __len__(self) -> int:
        return len(self._queue) + (1 if self.needs_resync else 0)

    # --- writing -----------------------------------------------------------------------------

    def _write(self, type_: str, data: str) -> bool:
        channel = self.channel
        if self.closed or channel.readyState != "open":
            self.close()
            return False
        try:
            channel.send(data)
        except Exception:  # InvalidStateError, ConnectionError: the association is gone
            self.close()
            return False
        self.stats.sent[type_] += 1
        self.stats.bytes_sent += len(data)
        return True

    def send_now(self, type_: str, data: str) -> None:
        """Write at once, ahead of anything queued (clock pongs)."""
        self._write(type_, data)

    def push(
        self, type_: str, data: str, *, droppable: bool = True, coalesce: object = None
    ) -> None:
        """Queue one message; it goes out now if nothing is queued and aiortc has room."""
        if self.closed:
            return
        if (
            not self._queue
            and not self.needs_resync
            and self.channel.bufferedAmount < self.high_water
        ):
            self._write(type_, data)
            return
        if coalesce is not None:
            if self._queue.pop(coalesce, None) is not None:
                self.stats.coalesced[type_] += 1
            key: object = coalesce
        else:
            key = self._next_key
            self._next_key += 1
        self._queue[key] = (type_, data, droppable)
        if not droppable:
            self._direct += 1
            if self._direct > MAX_DIRECT:
                self._drop_oldest_direct()
        if len(self._queue) > self.max_queue:
            self._overflow()

    def _overflow(self) -> None:
        kept: OrderedDict[object, tuple[str, str, bool]] = OrderedDict()
        dropped = 0
        for key, item in self._queue.items():
            if item[2]:
                dropped += 1
            else:
                kept[key] = item
        self._queue = kept
        self.stats.dropped["overflow"] += dropped
        if self.resync is not None and dropped:
            self.needs_resync = True

    def _drop_oldest_direct(self) -> None:
        for key, item in self._queue.items():
            if not item[2]:
                del self._queue[key]
                self._direct -= 1
                self.stats.dropped["direct_overflow"] += 1
                return

    def pump(self) -> None:
        """Write queued messages while aiortc's buffer is under the high-water mark."""
        channel = self.channel
        while not self.closed and (self._queue or self.needs_resync):
            if channel.bufferedAmount >= self.high_water:
                return
            if self.needs_resync:
                self.needs_resync = False
                data = self.resync() if self.resync is not None else None
                if data is not None and self._write("snapshot", data):
                    self.stats.resyncs += 1
                continue
            _, (type_, data, droppable) = self._queue.popitem(last=False)
            if not droppable:
                self._direct -= 1
            self._write(type_, data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        dropped = len(self._queue)
        if dropped:
            self.stats.dropped["closed"] += dropped
        self._queue.clear()
        self.needs_resync = False
        self.stats.outboxes.discard(self)
        try:
            self.channel.remove_listener("bufferedamountlow", self.pump)
        except Exception:  # pragma: no cover - pyee versions differ
            pass
