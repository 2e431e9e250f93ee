"""History: the packets one down-track sent, kept for NACK retransmission.

Keyed by the OUTGOING sequence number (what the subscriber sees and NACKs), bounded both by
count (a power-of-two ring indexed by seq, so lookup is one modulo and no dict churn on the
hot path) and by age: a packet older than `max_age` is useless to a live receiver, whose NACK
generator gives up after about a second, so resending it only wastes the downlink.

It also remembers how outgoing seqs map to the incoming (publisher) seqs, so a NACK for an
outgoing seq the node never had (the publisher's packet was lost on the uplink) can be
turned into one upstream NACK for the right incoming seq (see `incoming_seq`). The offset
between the two changes within one source (a closed gap, the node's own FEC packets taking
seqs), so the last `MAX_SEGMENTS` offsets are kept, each from the outgoing seq where it
started; a new source (`new_source`) forgets them all.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

DEFAULT_SIZE = 1024
DEFAULT_MAX_AGE = 2.0
MAX_SEGMENTS = 128


@dataclass(slots=True)
class Sent:
    """One packet as it left for the subscriber (plain RTP, outgoing seq/ts/SSRC)."""

    seq: int
    data: bytes
    sent_at: float
    resent_at: float | None = None  # last retransmission, for the per-packet rate limit
    resends: int = 0


class History:
    """The last `size` packets sent on one down-track, by outgoing seq."""

    def __init__(self, size: int = DEFAULT_SIZE, max_age: float = DEFAULT_MAX_AGE) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"size must be a positive power of two, got {size}")
        if max_age <= 0:
            raise ValueError(f"max_age must be positive, got {max_age}")
        self._size = size
        self._mask = size - 1
        self.max_age = max_age
        self._ring: list[Sent | None] = [None] * size
        self._highest: int | None = None  # newest outgoing seq pushed
        # (from outgoing seq, delta), oldest first: incoming = outgoing - delta for outgoing
        # seqs from `from` up to the next segment's start (or the newest seq pushed).
        self._segments: deque[tuple[int, int]] = deque(maxlen=MAX_SEGMENTS)
        self.bytes_stored = 0

    def push(self, seq: int, data: bytes, now: float, incoming_seq: int | None = None) -> None:
        """Record a packet just sent with outgoing `seq` (from `incoming_seq`, if forwarded)."""
        seq &= 0xFFFF
        slot = seq & self._mask
        old = self._ring[slot]
        if old is not None:
            self.bytes_stored -= len(old.data)
        self._ring[slot] = Sent(seq, data, now)
        self.bytes_stored += len(data)
        if self._highest is None or _newer(seq, self._highest):
            self._highest = seq
        if incoming_seq is not None:
            delta = (seq - incoming_seq) & 0xFFFF
            segs = self._segments
            if not segs:
                segs.append((seq, delta))
            elif delta != segs[-1][1] and (seq - segs[-1][0]) & 0xFFFF < 0x8000:
                segs.append((seq, delta))  # (a late packet keeps the offset it was sent with)

    def new_source(self) -> None:
        """The down-track switched source: older outgoing seqs map to no incoming seq."""
        self._segments.clear()

    def get(self, seq: int, now: float) -> Sent | None:
        """The packet sent with outgoing `seq`, or None if overwritten, too old or never sent."""
        entry = self._ring[seq & self._mask]
        if entry is None or entry.seq != seq & 0xFFFF or now - entry.sent_at > self.max_age:
            return None
        return entry

    def incoming_seq(self, seq: int) -> int | None:
        """The incoming seq an outgoing `seq` stands for, when the mapping is still known.

        Only seqs from the current mapping's start to the newest sent one qualify: an older
        seq may belong to another source, a newer one has not been assigned yet.
        """
        highest = self._highest
        if highest is None:
            return None
        seq &= 0xFFFF
        for start, delta in reversed(self._segments):
            if (seq - start) & 0xFFFF <= (highest - start) & 0xFFFF:
                return (seq - delta) & 0xFFFF
        return None

    def __len__(self) -> int:
        return sum(1 for e in self._ring if e is not None)


def _newer(a: int, b: int) -> bool:
    return a != b and ((a - b) & 0xFFFF) < 0x8000
