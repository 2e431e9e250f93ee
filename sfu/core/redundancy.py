"""Audio redundancy (RED, RFC 2198) for one viewer's Opus down-track, with adaptive distance.

Opus packets are small (60-120 bytes at 20 ms), so repeating the last few inside the next
packet recovers random loss with no round trip at all, which NACK cannot do for audio's
tight playout deadline. The cost is bandwidth, so the distance (how many earlier payloads
ride along) follows the viewer's measured loss: none on a clean link, one at a few percent,
up to `max_distance` when most packets are lost. A packet is then unrecoverable only when it
and the `distance` packets after it are all lost, p^(distance+1) under random loss p, and
the distance is the smallest that brings that under `target_residual`.

Loss comes from the viewer's RTCP receiver reports (`fraction_lost / 256`). Increases are
taken at once and decreases slowly (an EWMA), because a loss burst that outlives the report
interval would otherwise hit a link just switched to no redundancy.

A publisher that sends RED itself (Chromium with red negotiated) is passed through as is to
viewers that negotiated RED (never wrapped twice); for the others `RedRecovery` turns it
back into plain Opus: the primary, and, for packets lost on the publisher's uplink, the
earlier encodings the RED packets carry, so its redundancy helps every viewer.
"""

from __future__ import annotations

import math
from collections import deque

from sfu.wire import red
from sfu.wire.rtp import RtpHeader, parse_header

CLEAN_LOSS = 0.005  # below this the link is clean: no redundancy at all


class RedEncoder:
    """Turns one viewer's plain Opus packets into RED packets carrying earlier payloads.

    Counters: `packets`, `media_bytes` (the plain packets' sizes), `overhead_bytes` (what RED
    added on top), `passed_through` (publisher RED forwarded as is).
    """

    def __init__(self, red_pt: int, *, max_distance: int = 8, initial_distance: int = 1,
                 target_residual: float = 0.005, max_packet: int = 1100,
                 smoothing: float = 0.3) -> None:
        if not 0 <= initial_distance <= max_distance:
            raise ValueError("initial_distance must be in [0, max_distance]")
        if not 0 < target_residual < 1:
            raise ValueError(f"target_residual must be in (0, 1), got {target_residual}")
        self.red_pt = red_pt
        self.max_distance = max_distance
        self.target_residual = target_residual
        self.max_packet = max_packet
        self.smoothing = smoothing
        # Until the first report the link is unknown: one copy is cheap insurance.
        self._distance = initial_distance
        self._loss: float | None = None
        self._recent: deque[tuple[int, int, bytes]] = deque(maxlen=max(1, max_distance))
        self.packets = 0
        self.media_bytes = 0
        self.overhead_bytes = 0
        self.passed_through = 0
        # Redundant blocks in the newest publisher RED packet passed through (None: the
        # node wraps itself), so the distance in use can be reported either way.
        self.passthrough_distance: int | None = None

    @property
    def distance(self) -> int:
        return self._distance

    @property
    def distance_in_use(self) -> int:
        """Redundant copies per packet on the wire: the publisher's when passing through."""
        d = self.passthrough_distance
        return self._distance if d is None else d

    @property
    def loss(self) -> float | None:
        """The smoothed loss the distance is based on (None before the first report)."""
        return self._loss

    def set_loss(self, fraction: float, now: float) -> None:
        """A receiver report said `fraction` (0..1) of packets were lost since the last one."""
        fraction = min(1.0, max(0.0, fraction))
        prev = self._loss
        if prev is None or fraction >= prev:
            self._loss = fraction
        else:
            self._loss = prev + self.smoothing * (fraction - prev)
        self._distance = self.distance_for(self._loss)

    def distance_for(self, loss: float) -> int:
        """The smallest distance with loss^(distance+1) <= target_residual (capped)."""
        if loss < CLEAN_LOSS:
            return 0
        if loss >= 1.0:
            return self.max_distance
        need = math.log(self.target_residual) / math.log(loss) - 1
        return max(1, min(self.max_distance, math.ceil(need - 1e-9)))

    def encode(self, data: bytes, now: float) -> bytes:
        """The packet to send for plain Opus packet `data` (header already rewritten)."""
        hdr = parse_header(data)
        if hdr.payload_type == self.red_pt:
            self.passed_through += 1
            return data
        payload = data[hdr.payload_start : hdr.payload_end]
        ts = hdr.timestamp
        blocks: list[red.RedBlock] = []
        size = hdr.payload_start + 1 + len(payload)
        # Newest first, so the size cap drops the oldest copies (least likely still useful).
        for rts, pt, old in reversed(self._recent):
            if len(blocks) >= self._distance:
                break
            offset = (ts - rts) & 0xFFFF_FFFF
            if offset == 0 or offset > red.MAX_OFFSET or len(old) > red.MAX_BLOCK:
                continue  # a duplicate, a wrap, or too far back for 14 bits
            if size + 4 + len(old) > self.max_packet:
                break
            size += 4 + len(old)
            blocks.append(red.RedBlock(pt, offset, old))
        blocks.reverse()
        out = red.wrap(data, hdr, self.red_pt, blocks)
        if not self._recent or _ts_newer(ts, self._recent[-1][0]):
            self._recent.append((ts, hdr.payload_type, payload))
        self.packets += 1
        self.media_bytes += len(data)
        self.overhead_bytes += len(out) - len(data)
        return out


class RedDecoder:
    """Receiving side (a test peer, the simulator): RED packets back to plain Opus packets.

    Returns each encoding once, by timestamp, so a copy that arrives after its original
    (or twice as redundancy) is not played twice, as NetEq does.
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self.recovered = 0

    def decode(self, data: bytes, now: float) -> list[tuple[int, int, bytes, bool]]:
        """(payload type, timestamp, payload, was_redundant) not delivered before."""
        hdr = parse_header(data)
        out: list[tuple[int, int, bytes, bool]] = []
        encodings = red.unwrap(data, hdr)
        last = len(encodings) - 1
        for i, (pt, ts, payload) in enumerate(encodings):
            if ts in self._seen:
                continue
            self._seen.add(ts)
            self._order.append(ts)
            if len(self._order) > 4096:
                self._seen.discard(self._order.popleft())
            if i != last:
                self.recovered += 1
            out.append((pt, ts, payload, i != last))
        return out


class RedRecovery:
    """A publisher's Opus RED stream as plain Opus packets, lost ones rebuilt from the
    redundant blocks of later packets (one Receiver's, in arrival order).

    Chromium's redundant blocks are the packets sent just before, oldest first, so the
    newest redundant block is seq - 1, the one before it seq - 2, and so on (with DTX too:
    the RTP timestamp jumps, the seq does not). Counter: `recovered`.
    """

    def __init__(self, window: int = 256) -> None:
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self._window = window
        self._highest: int | None = None
        self.recovered = 0

    def on_packet(self, data: bytes, hdr: RtpHeader) -> list[bytes]:
        """Plain Opus packets for RED packet `data`: rebuilt older ones first, then its
        primary; nothing already delivered. Raises RedError when malformed."""
        redundant, primary = red.decode(memoryview(data)[hdr.payload_start : hdr.payload_end])
        seq = hdr.seq
        out: list[bytes] = []
        h = self._highest
        if h is not None and (seq - h) & 0xFFFF >= 0x8000 and (h - seq) & 0xFFFF > self._window:
            return []  # far behind everything: a stale duplicate
        head = data[2 : hdr.payload_start]
        b0 = data[0] & 0xDF
        for back, block in enumerate(reversed(redundant), 1):
            old = (seq - back) & 0xFFFF
            behind = (h - old) & 0xFFFF if h is not None else 0
            if h is None or old in self._seen or self._window <= behind < 0x8000:
                continue  # delivered, or too old to matter (or nothing known yet)
            ts = (hdr.timestamp - block.timestamp_offset) & 0xFFFF_FFFF
            # Same SSRC, CSRCs and extensions; marker clear; its own seq and timestamp.
            pkt = bytearray(bytes((b0, block.payload_type & 0x7F)) + head + block.data)
            pkt[2:4] = old.to_bytes(2, "big")
            pkt[4:8] = ts.to_bytes(4, "big")
            self._mark(old)
            self.recovered += 1
            out.append(bytes(pkt))
        out.reverse()  # oldest first
        if seq not in self._seen:
            self._mark(seq)
            b1 = (data[1] & 0x80) | primary.payload_type
            out.append(bytes((b0, b1)) + head + primary.data)
        if h is None or 0 < (seq - h) & 0xFFFF < 0x8000:
            self._highest = seq
        return out

    def _mark(self, seq: int) -> None:
        self._seen.add(seq)
        self._order.append(seq)
        if len(self._order) > self._window:
            self._seen.discard(self._order.popleft())


def _ts_newer(a: int, b: int) -> bool:
    return a != b and ((a - b) & 0xFFFF_FFFF) < 0x8000_0000
