"""Pacer: spreads one viewer's egress over time so a key frame does not hit its queue at once.

Packets are queued per kind and released in bursts every `interval` (5 ms) against a byte
budget that grows at the pacing rate (`factor` x the estimator's target, 2.5 as in libwebrtc),
so the link sees the video at up to 2.5x its mean rate rather than at line rate. `try_send` is
the cheap path for a packet that an idle pacer would send at once anyway. Order:

1. audio: sent at the next burst whatever the budget (it is small and late audio is worse than
   late video); it still consumes budget, so video yields to it;
2. retransmissions (`rtx`), then `video` (and `fec`), FIFO within a kind;
3. probe clusters (`start_probe`): while one runs the rate is the probe's, and when no media
   is queued the pacer asks for padding (`PacedPacket.packet is None`, kind `padding`) that the
   shell turns into RTX of a recent packet or a padding-only RTP packet.

If the queue would take longer than `max_queue_time` to drain at the pacing rate, the rate is
raised to drain it in that time (a pacer must not become the bottleneck); packets that waited
longer than `max_queue_delay` are dropped from the video queue (counted in `dropped`).

Sans-I/O: `enqueue(packet, size, kind, now)`, then `handle_timer(now)` at `get_timer()`
returns what to send now, in order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from sfu.core.bwe.base import ProbeCluster

INTERVAL = 0.005
PACING_FACTOR = 2.5
MAX_QUEUE_TIME = 0.5
MAX_QUEUE_DELAY = 2.0
PADDING_SIZE = 1000
MAX_ELAPSED = 0.25  # budget for at most this much time since the last burst
# What the SFU uses (the node shell and the sim): the estimate itself as the pacing rate (2.5 x
# made every new layer's key frame overfill the viewer's bottleneck, docs/benchmarks.md).
SFU_FACTOR = 1.0
KINDS = ("audio", "rtx", "video", "fec")


@dataclass(slots=True)
class PacedPacket:
    """One packet to send now. `packet` is what was enqueued (None for padding to generate)."""

    packet: Any
    size: int
    kind: str
    probe_cluster: int | None = None


@dataclass(slots=True)
class _Probe:
    cluster: ProbeCluster
    sent_bytes: int = 0
    sent_packets: int = 0
    started: float | None = None


class Pacer:
    def __init__(
        self,
        *,
        target_bitrate: float = 300_000.0,
        factor: float = PACING_FACTOR,
        interval: float = INTERVAL,
        max_queue_time: float = MAX_QUEUE_TIME,
        max_queue_delay: float = MAX_QUEUE_DELAY,
        padding_size: int = PADDING_SIZE,
        max_elapsed: float = MAX_ELAPSED,
    ) -> None:
        if factor <= 0 or interval <= 0:
            raise ValueError("factor and interval must be positive")
        self.factor = factor
        self.interval = interval
        self.max_queue_time = max_queue_time
        self.max_queue_delay = max_queue_delay
        self.padding_size = padding_size
        self.max_elapsed = max_elapsed
        self._rate = target_bitrate * factor
        self._queues: dict[str, deque[tuple[Any, int, float]]] = {k: deque() for k in KINDS}
        self._queued_bytes = 0
        self._budget = 0.0  # bytes that may go now (negative: debt)
        self._last: float | None = None  # the last burst while busy (None: idle)
        self._next: float | None = None
        self._probes: deque[_Probe] = deque()
        self._padding_rate = 0.0
        self.sent_bytes = 0
        self.sent_packets = 0
        self.padding_bytes = 0
        self.dropped = 0

    # --- configuration ---------------------------------------------------------------------

    def set_target(self, bitrate: float) -> None:
        """The estimator's target (bits/s); the pacing rate is `factor` times it."""
        self._rate = max(1.0, bitrate * self.factor)

    def set_padding_rate(self, bitrate: float) -> None:
        """Keep the link busy at `bitrate` (bits/s) with padding when media is below it."""
        self._padding_rate = max(0.0, bitrate)

    def start_probe(self, cluster: ProbeCluster, now: float) -> None:
        self._probes.append(_Probe(cluster))
        self._wake(now)

    @property
    def pacing_rate(self) -> float:
        return self._rate

    @property
    def padding_rate(self) -> float:
        return self._padding_rate

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def queued(self, kind: str | None = None) -> int:
        if kind is None:
            return sum(len(q) for q in self._queues.values())
        return len(self._queues[kind])

    def expected_queue_time(self) -> float:
        return self._queued_bytes * 8 / self._rate

    # --- input -----------------------------------------------------------------------------

    def enqueue(self, packet: Any, size: int, kind: str, now: float) -> None:
        """Queue `packet` (`size` bytes) of `kind` (audio, rtx, video, fec)."""
        q = self._queues.get(kind)
        if q is None:
            raise ValueError(f"unknown packet kind {kind!r}: use one of {', '.join(KINDS)}")
        q.append((packet, size, now))
        self._queued_bytes += size
        self._wake(now)

    def try_send(self, size: int, now: float) -> bool:
        """The fast path for one `size`-byte media packet: True when an idle pacer (nothing
        queued, no probe, no padding) lets it go at once, exactly as `enqueue` followed by
        `handle_timer(now)` would (it counts it); False means `enqueue` it. The usual case,
        a delta frame below the pacing rate, then costs no queue and no timer."""
        if self._next is not None or self._queued_bytes or self._probes or self._padding_rate:
            return False
        budget = min(self._budget, 0.0) + self._rate * self.interval / 8
        if budget <= 0:
            return False
        self._budget = min(budget - size, 0.0)
        self.sent_bytes += size
        self.sent_packets += 1
        return True

    def _wake(self, now: float) -> None:
        if self._next is None:
            # Idle: the first packet goes at once (no point holding a lone packet back).
            self._next = now

    # --- timer -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._next

    def handle_timer(self, now: float) -> list[PacedPacket]:
        """The packets to send at `now`, in order (empty when called early)."""
        if self._next is None or now < self._next:
            return []
        probe = self._probes[0] if self._probes else None
        rate = self._rate
        if probe is not None:
            rate = max(rate, probe.cluster.bitrate)
        # Drain what is queued before its oldest packet has waited `max_queue_time`.
        heads = [q[0][2] for q in self._queues.values() if q]
        left = self.max_queue_time - (now - min(heads)) if heads else self.max_queue_time
        drain = self._queued_bytes * 8 / max(left, self.interval)
        rate = max(rate, drain)
        # A late timer (a busy event loop) still gets the budget of the time that passed, up
        # to `max_elapsed`: capping it at a few intervals would turn every stall of the loop
        # into lost sending time and a standing queue.
        elapsed = self.interval if self._last is None else min(now - self._last,
                                                                self.max_elapsed)
        self._last = now
        # Budget for this burst; unused budget does not carry over beyond one burst (no bursts
        # of saved-up credit after an idle spell), debt does.
        self._budget = min(self._budget, 0.0) + rate * elapsed / 8
        out: list[PacedPacket] = []
        self._expire(now)
        cid = probe.cluster.id if probe is not None else None
        audio = self._queues["audio"]
        while audio:
            packet, size, _ = audio.popleft()
            self._emit(out, packet, size, "audio", cid, probe)
        for kind in ("rtx", "video", "fec"):
            q = self._queues[kind]
            while q and self._budget > 0:
                packet, size, _ = q.popleft()
                self._emit(out, packet, size, kind, cid, probe)
        if probe is not None:
            if probe.started is None:
                probe.started = now
            c = probe.cluster
            while self._budget > 0 and (probe.sent_bytes < c.min_bytes
                                        or probe.sent_packets < c.min_packets):
                self._emit(out, None, self.padding_size, "padding", cid, probe)
            if probe.sent_bytes >= c.min_bytes and probe.sent_packets >= c.min_packets:
                self._probes.popleft()
        elif self._padding_rate > 0:
            # Fill up to the padding rate, never beyond the budget.
            pad_budget = self._padding_rate * elapsed / 8 - sum(p.size for p in out)
            while pad_budget > 0 and self._budget > 0:
                self._emit(out, None, self.padding_size, "padding", None, None)
                pad_budget -= self.padding_size
        busy = self._queued_bytes > 0 or bool(self._probes) or self._padding_rate > 0
        self._next = now + self.interval if busy else None
        if not busy:
            self._last = None
            self._budget = min(self._budget, 0.0)
        return out

    def _emit(self, out: list[PacedPacket], packet: Any, size: int, kind: str,
              cid: int | None, probe: _Probe | None) -> None:
        out.append(PacedPacket(packet, size, kind, cid))
        self._budget -= size
        self.sent_bytes += size
        self.sent_packets += 1
        if packet is None:
            self.padding_bytes += size
        else:
            self._queued_bytes -= size
        if probe is not None:
            probe.sent_bytes += size
            probe.sent_packets += 1

    def _expire(self, now: float) -> None:
        q = self._queues["video"]
        while q and now - q[0][2] > self.max_queue_delay:
            _, size, _ = q.popleft()
            self._queued_bytes -= size
            self.dropped += 1
