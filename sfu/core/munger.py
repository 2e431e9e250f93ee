"""RTP sequence/timestamp munging for one down-track.

Owns the mapping from whichever incoming RTP source currently feeds a
down-track (one publisher, one simulcast layer) to the single continuous
(seq, ts) timeline the subscriber sees, across source switches and packets the
SFU chooses not to forward.

Sequence numbers are tracked internally as unbounded "extended" integers so
16-bit wrap never needs special cases; only the wire values are reduced mod
2^16 (seq) and 2^32 (ts).

Drop policy (`drop`):
* dropping the newest incoming seq (or one newer than anything seen) closes
  the gap: later packets are shifted down by one, so the subscriber sees no hole;
* dropping an older, out-of-order seq cannot close the gap because packets
  after it were already sent with their numbers; the outgoing seq it would have
  had stays a hole (the subscriber may NACK it; there is nothing to resend);
* either way a later `rewrite` of a dropped seq (e.g. a retransmission) returns
  None, because its outgoing slot was given away or deliberately left empty;
* dropping the newest seq after it was already forwarded is a no-op (its slot
  is on the wire); dropping an older already-forwarded seq only stops later
  duplicates of it.

Insertion (`insert`): the node's own packets in the media seq space (ULPFEC over
RED takes the seqs right after the frame it protects) get the next outgoing slots,
and every later incoming seq is shifted up past them; older ones keep their slots.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
_WINDOW = 1 << 15


class RtpMunger:
    """Rewrites (seq, ts) of incoming RTP into one outgoing sequence.

    Callers must not feed packets of the previous source after `switch_source`:
    the munger cannot tell sources apart and would map them onto the new one.
    """

    def __init__(self, clock_rate: int, seq_start: int, ts_start: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {clock_rate}")
        self._clock_rate = clock_rate
        self._ts_start = ts_start % _TS_MOD
        # Extended outgoing seq of the newest forwarded-or-dropped slot.
        self._last_out_ext = seq_start % _SEQ_MOD - 1
        self._last_out_ts = (self._ts_start - 1) % _TS_MOD
        self._last_forward_now: float | None = None
        self._switch_now: float | None = None
        self._in_source = False
        self._start_ext = 0
        self._highest_ext = 0
        self._ts_offset = 0
        # Offset changes caused by drops: packets with ext seq >= threshold use offset.
        self._base_offset = 0
        self._offset = 0  # the offset of the newest threshold (what new packets get)
        self._thresholds: list[int] = []
        self._offsets: list[int] = []
        self._dropped: set[int] = set()
        # Insertion order of _dropped, so expired entries can be popped from the front.
        self._dropped_order: deque[int] = deque()
        self.packets_forwarded = 0

    @property
    def last_out_seq(self) -> int:
        """Outgoing seq of the newest slot used (seq_start - 1 before any packet)."""
        return self._last_out_ext % _SEQ_MOD

    @property
    def last_out_ts(self) -> int:
        """Outgoing ts of the newest forwarded packet (ts_start - 1 before any packet)."""
        return self._last_out_ts

    @property
    def has_source(self) -> bool:
        """True once a packet of the current source went through `rewrite`."""
        return self._in_source

    @property
    def switched_at(self) -> float | None:
        """`now` of the last `switch_source` call, for diagnostics."""
        return self._switch_now

    def switch_source(self, now: float) -> None:
        """Make the next `rewrite` start a new incoming sequence right after the last one.

        The timestamp gap is measured up to the `now` of that first `rewrite`
        (when the packet is actually forwarded), not up to this call, so a
        switch that waits for a keyframe does not put timestamps behind wall time.
        """
        self._switch_now = now
        self._in_source = False

    def rewrite(self, seq: int, ts: int, now: float) -> tuple[int, int] | None:
        """Return (out_seq, out_ts) for an incoming packet, or None to not forward it."""
        if self._in_source and (seq - self._highest_ext) & 0xFFFF == 1:
            # Fast path, nearly every packet: the next in order. Every threshold is at or
            # below it, so it takes the newest offset.
            ext = self._highest_ext + 1
            out_ext = ext + self._offset
            out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
            self._highest_ext = ext
            self._last_out_ext = out_ext
            self._last_out_ts = out_ts
            self._last_forward_now = now
            if self._dropped_order or (self._thresholds
                                       and self._thresholds[0] <= ext - _WINDOW):
                self._prune()
            self.packets_forwarded += 1
            return out_ext & 0xFFFF, out_ts
        if not self._in_source:
            return self._start_source(seq, ts, now)
        ext = self._extend(seq)
        if ext < self._start_ext or ext <= self._highest_ext - _WINDOW or ext in self._dropped:
            return None
        out_ext = ext + self._offset_at(ext)
        out_ts = (ts + self._ts_offset) % _TS_MOD
        if ext > self._highest_ext:
            self._highest_ext = ext
            self._last_out_ext = out_ext
            self._last_out_ts = out_ts
            self._last_forward_now = now
            self._prune()
        self.packets_forwarded += 1
        return out_ext % _SEQ_MOD, out_ts

    def drop(self, seq: int) -> None:
        """The caller will not forward incoming `seq`; see the module docstring for policy."""
        if not self._in_source:
            # No mapping yet: the first forwarded packet takes the next slot anyway.
            return
        ext = self._extend(seq)
        if ext < self._start_ext or ext <= self._highest_ext - _WINDOW or ext in self._dropped:
            return
        if ext == self._highest_ext:
            # Already forwarded as the newest packet: its slot is on the wire, nothing to close.
            return
        self._dropped.add(ext)
        self._dropped_order.append(ext)
        if ext < self._highest_ext:
            return
        # Slots between the old highest and ext stay reserved for late arrivals;
        # only ext's own slot is reclaimed by shifting everything after it down.
        self._shift(ext + 1, self._offset - 1)
        self._highest_ext = ext
        self._last_out_ext = ext + self._offset
        self._prune()

    def ahead(self, seq: int) -> bool:
        """True when incoming `seq` is newer than every seq seen of the current source (a
        `drop` of it closes its slot instead of leaving a hole)."""
        return self._in_source and self._extend(seq) > self._highest_ext

    def insert(self, count: int) -> int | None:
        """Take `count` outgoing slots right after the newest one for packets of the node's
        own (FEC); returns the first slot's seq, or None before the source's first packet.

        Later incoming packets are shifted up past them; late older ones keep their slots.
        """
        if not self._in_source or count <= 0:
            return None
        first = self._last_out_ext + 1
        self._shift(self._highest_ext + 1, self._offset + count)
        self._last_out_ext += count
        return first % _SEQ_MOD

    def _shift(self, threshold: int, offset: int) -> None:
        if self._thresholds and self._thresholds[-1] == threshold:
            self._offsets[-1] = offset  # a second change at the same point replaces the first
        else:
            self._thresholds.append(threshold)
            self._offsets.append(offset)
        self._offset = offset

    def translate_ts(self, ts: int) -> int:
        """Map an incoming RTP timestamp (e.g. from the publisher's SR) to the outgoing timeline.

        Raises RuntimeError until a packet of the current source has been rewritten,
        because before that there is no offset to apply; check `has_source`.
        """
        if not self._in_source:
            raise RuntimeError("no packet of the current source rewritten yet")
        return (ts + self._ts_offset) % _TS_MOD

    def _start_source(self, seq: int, ts: int, now: float) -> tuple[int, int]:
        ext = seq % _SEQ_MOD
        out_ext = self._last_out_ext + 1
        if self._last_forward_now is None:
            out_ts = self._ts_start
        else:
            elapsed = round((now - self._last_forward_now) * self._clock_rate)
            out_ts = (self._last_out_ts + max(1, elapsed)) % _TS_MOD
        self._in_source = True
        self._start_ext = self._highest_ext = ext
        self._base_offset = self._offset = out_ext - ext
        self._ts_offset = (out_ts - ts) % _TS_MOD
        self._thresholds.clear()
        self._offsets.clear()
        self._dropped.clear()
        self._dropped_order.clear()
        self._last_out_ext = out_ext
        self._last_out_ts = out_ts
        self._last_forward_now = now
        self.packets_forwarded += 1
        return out_ext % _SEQ_MOD, out_ts

    def _extend(self, seq: int) -> int:
        diff = ((seq - self._highest_ext) % _SEQ_MOD + 0x8000) % _SEQ_MOD - 0x8000
        return self._highest_ext + diff

    def _offset_at(self, ext: int) -> int:
        idx = bisect_right(self._thresholds, ext) - 1
        return self._offsets[idx] if idx >= 0 else self._base_offset

    def _prune(self) -> None:
        horizon = self._highest_ext - _WINDOW
        if self._thresholds and self._thresholds[0] <= horizon:
            # Everything at or below the horizon is rejected anyway, so the
            # newest expired offset becomes the base for what is left.
            idx = bisect_right(self._thresholds, horizon)
            self._base_offset = self._offsets[idx - 1]
            del self._thresholds[:idx]
            del self._offsets[:idx]
        # Stale entries left behind an out-of-order drop are harmless: anything
        # at or below the horizon is rejected before the dropped set is consulted.
        while self._dropped_order and self._dropped_order[0] <= horizon:
            self._dropped.discard(self._dropped_order.popleft())
