"""Video FEC for one viewer (FecEncoder) and FEC recovery at the node's ingress (FecDecoder).

Encoder: NACK repairs a loss in about one RTT; when the RTT is long or loss so heavy that
retransmissions themselves get lost, frames wait several round trips and the picture
freezes. XOR parity sent right after each frame repairs most single losses with no round
trip, at the cost of bandwidth, so it is only switched on when NACK alone is too slow:
measured loss of at least `min_loss` and either RTT >= `rtt_threshold` or loss >=
`loss_threshold`. The protection (FEC packets per media packet) then grows with loss.

Grouping: one group per video frame (the marker bit ends it, or `max_group` packets), so FEC
never delays a frame behind the next one; within a group, packets are spread round-robin
over the FEC packets (`sfu.wire.ulpfec.interleaved_groups`) so a burst of consecutive losses
hits different parity packets. Two output formats:

* `UlpfecEncoder` (the live node): ULPFEC (RFC 5109) inside RED (RFC 2198), what Chromium
  decodes once a viewer negotiates `red/90000` + `ulpfec/90000`. ULPFEC shares the media SSRC
  and seq space, so each group's FEC packets take the seqs right after its last media packet
  (`reserve`, backed by the down-track's `RtpMunger.insert`), and the media packets it
  protects go out RED-wrapped; with FEC off they go out plain (libwebrtc would wrap them
  all: RED alone costs a clean link CPU for nothing, see docs/benchmarks.md).
* `FecEncoder` itself (the simulator): FlexFEC-03 on its own SSRC and seq space
  (`sfu.wire.flexfec`); Chromium's FlexFEC is behind a field trial, so it stays sim-only.

Decoder: keeps recent media packets of one SSRC and the FEC packets that could not be used
yet; whenever exactly one packet of an FEC packet's set is missing, it rebuilds it. Feeds:
plain media packets, FlexFEC packets, or (what Chromium publishers send with red+ulpfec)
RED packets carrying either media or ULPFEC.

FecGaps: a publisher's ULPFEC packets take seqs in its media stream, which the node does not
forward (viewers get plain media or the node's own FEC), so each one's seq is closed in every
viewer's stream. A LOST one would leave a hole that viewers NACK forever and that the
publisher never retransmits (libwebrtc keeps no FEC in its retransmission history), so the
node would NACK it until it gives up and asks for a key frame. FecGaps tells which missing
seqs can only have been FEC: those between the end of a frame and either an FEC packet that
does not protect them or the start of the very next frame (VP8 picture ID + 1). Ahead of
what viewers were sent such a seq is closed; behind it, viewers get a padding-only packet
in its slot, so no hole is left for them to wait on.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sfu.wire import flexfec, red, ulpfec
from sfu.wire.rtp import build_packet, parse_header
from sfu.wire.ulpfec import FecPacket

DEFAULT_RTT = 0.1


class FecEncoder:
    """Adds FlexFEC packets to one viewer's video down-track, adaptively.

    Counters: `media_packets`, `fec_packets`, `fec_bytes`.
    """

    def __init__(self, *, media_ssrc: int, fec_ssrc: int, payload_type: int, seq_start: int = 0,
                 rtt: float = DEFAULT_RTT, min_loss: float = 0.02, loss_threshold: float = 0.1,
                 rtt_threshold: float = 0.1, max_protection: float = 1.0,
                 loss_factor: float = 2.0, max_group: int = 48, smoothing: float = 0.3) -> None:
        if not 1 <= max_group <= flexfec.MAX_SPAN:
            raise ValueError(f"max_group must be in [1, {flexfec.MAX_SPAN}]")
        self.media_ssrc = media_ssrc
        self.fec_ssrc = fec_ssrc
        self.payload_type = payload_type
        self._seq = seq_start & 0xFFFF
        self.rtt = rtt
        self.min_loss = min_loss
        self.loss_threshold = loss_threshold
        self.rtt_threshold = rtt_threshold
        self.max_protection = max_protection
        self.loss_factor = loss_factor
        self.max_group = max_group
        self.smoothing = smoothing
        self._loss: float | None = None
        self._loss_at = 0.0
        self.active = False  # the last packet was protected (UlpfecEncoder: sent in RED)
        self._group: list[bytes] = []
        self._group_seqs: list[int] = []
        self.media_packets = 0
        self.fec_packets = 0
        self.fec_bytes = 0

    # --- adaptation -----------------------------------------------------------------------

    def set_rtt(self, rtt: float) -> None:
        self.rtt = rtt

    def set_loss(self, fraction: float, now: float) -> None:
        """Loss from the viewer's receiver report (fraction_lost / 256); rises at once,
        falls slowly: by `smoothing` of the difference per second since the last report,
        not per report, because Chromium sends a report with every NACK, over a few
        packets each, and a run of lossless ones would otherwise switch FEC off within a
        fraction of a second on a link that keeps losing 10 %."""
        fraction = min(1.0, max(0.0, fraction))
        prev = self._loss
        if prev is None or fraction >= prev:
            self._loss = fraction
        else:
            elapsed = min(1.0, max(0.0, now - self._loss_at))
            weight = 1.0 - (1.0 - self.smoothing) ** elapsed
            self._loss = prev + weight * (fraction - prev)
        self._loss_at = now

    @property
    def loss(self) -> float | None:
        return self._loss

    @property
    def protection(self) -> float:
        """FEC packets per media packet now (0 = FEC off)."""
        loss = self._loss or 0.0
        if loss < self.min_loss:
            return 0.0
        if self.rtt < self.rtt_threshold and loss < self.loss_threshold:
            return 0.0  # NACK repairs this within the playout delay on its own
        return min(self.max_protection, self.loss_factor * loss)

    # --- per packet -----------------------------------------------------------------------

    def on_packet(self, data: bytes, now: float) -> list[bytes]:
        """Media packet `data` (as sent to the viewer) went out; FEC packets to send now."""
        self.media_packets += 1
        r = self.protection
        self.active = r > 0.0
        if r <= 0.0:
            self._group.clear()
            self._group_seqs.clear()
            return []
        hdr = parse_header(data)
        if self._group_seqs and (hdr.seq - self._group_seqs[-1]) & 0xFFFF >= 0x8000:
            # Older than the group (a retransmission sent late): it was protected, or
            # repaired, already; putting it in a group would make the span wrap around.
            return []
        if self._group_seqs and (hdr.seq - self._group_seqs[0]) & 0xFFFF >= self.max_group:
            out = self._flush(r, now)  # a seq jump or a huge frame: close what we have
        else:
            out = []
        self._group.append(data)
        self._group_seqs.append(hdr.seq)
        if hdr.marker or len(self._group) >= self.max_group:
            out += self._flush(r, now, hdr.timestamp)
        return out

    def _flush(self, r: float, now: float, timestamp: int | None = None) -> list[bytes]:
        packets, seqs = self._group, self._group_seqs
        self._group, self._group_seqs = [], []
        if not packets:
            return []
        n = len(packets)
        m = min(n, max(1, math.ceil(n * r - 1e-9)))
        ts = timestamp if timestamp is not None else parse_header(packets[-1]).timestamp
        fecs = [ulpfec.xor([packets[i] for i in idx], [seqs[i] for i in idx])
                for idx in ulpfec.interleaved_groups(n, m)]
        out = self._emit(fecs, ts)
        self.fec_packets += len(out)
        self.fec_bytes += sum(map(len, out))
        return out

    def _emit(self, fecs: list[FecPacket], ts: int) -> list[bytes]:
        out = []
        for fec in fecs:
            out.append(flexfec.packet(fec, media_ssrc=self.media_ssrc, fec_ssrc=self.fec_ssrc,
                                      payload_type=self.payload_type, seq=self._seq,
                                      timestamp=ts))
            self._seq = (self._seq + 1) & 0xFFFF
        return out


class UlpfecEncoder(FecEncoder):
    """ULPFEC in RED for one viewer's video down-track (the live node), adaptively.

    `on_packet` takes the plain media packet as the viewer will see it once RED is removed
    (its PT, outgoing seq); while `active` (FEC on), `wrap` is that packet as it goes on
    the wire: libwebrtc's FEC decoder only sees packets that came in RED. With FEC off the
    packet goes out plain, which the viewer takes as well (it negotiated both types). `reserve(n)` must
    hand out n consecutive media seqs right after the newest one sent (None: no room, the
    group goes unprotected). Same policy and counters as `FecEncoder`.
    """

    def __init__(self, *, media_ssrc: int, red_pt: int, ulpfec_pt: int,
                 reserve: Callable[[int], int | None], max_group: int = ulpfec.MASK_LONG,
                 **policy: float) -> None:
        if not 1 <= max_group <= ulpfec.MASK_LONG:
            raise ValueError(f"max_group must be in [1, {ulpfec.MASK_LONG}]")
        super().__init__(media_ssrc=media_ssrc, fec_ssrc=media_ssrc, payload_type=red_pt,
                         max_group=max_group, **policy)  # type: ignore[arg-type]
        self.red_pt = red_pt
        self.ulpfec_pt = ulpfec_pt
        self._reserve = reserve
        self._ulpfec_block = bytes((ulpfec_pt & 0x7F,))  # a primary-only RED header

    def wrap(self, data: bytes) -> bytes:
        """Media packet `data` as RED with no redundant block (what goes on the wire)."""
        b0 = data[0]
        if b0 & 0x20:  # padded: rare, the general path
            return red.wrap(data, parse_header(data), self.red_pt)
        start = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
        b1 = data[1]
        return b"".join((bytes((b0, (b1 & 0x80) | self.red_pt)), data[2:start],
                         bytes((b1 & 0x7F,)), data[start:]))

    def _emit(self, fecs: list[FecPacket], ts: int) -> list[bytes]:
        first = self._reserve(len(fecs))
        if first is None:
            return []
        return [build_packet(payload_type=self.red_pt, seq=(first + i) & 0xFFFF, timestamp=ts,
                             ssrc=self.media_ssrc,
                             payload=self._ulpfec_block + ulpfec.encode(fec))
                for i, fec in enumerate(fecs)]


class FecDecoder:
    """Rebuilds lost media packets of one SSRC from FEC packets.

    Counters: `recovered`, `fec_received`, `fec_useless` (dropped without ever helping).
    """

    def __init__(self, media_ssrc: int, *, history: int = 512, max_pending: int = 64) -> None:
        self.media_ssrc = media_ssrc
        self._have: dict[int, bytes] = {}
        self._order: deque[int] = deque()
        self._history = history
        # FEC packets not used up yet: in arrival order (the oldest go first when there are
        # too many) and by protected seq, so a packet's arrival re-checks only the FEC
        # packets it can complete rather than every pending one.
        self._pending: deque[FecPacket] = deque()
        self._live: dict[int, FecPacket] = {}  # id -> FEC packet still pending
        self._by_seq: dict[int, list[FecPacket]] = {}
        self._max_pending = max_pending
        self._resent: set[int] = set()  # seqs that came as RTX only: known, not for XOR
        self._resent_order: deque[int] = deque()
        self.recovered = 0
        self.fec_received = 0
        self.fec_useless = 0

    def on_media(self, data: bytes, now: float) -> list[bytes]:
        """A media packet arrived (plain RTP, as sent); packets it lets FEC rebuild."""
        seq = parse_header(data).seq
        if seq in self._have:
            return []
        self._store(seq, data)
        return self._drain(self._by_seq.get(seq, ()))

    def on_fec(self, fec: FecPacket, now: float) -> list[bytes]:
        """An FEC packet arrived (decoded by sfu.wire.flexfec or sfu.wire.ulpfec)."""
        self.fec_received += 1
        self._pending.append(fec)
        self._live[id(fec)] = fec
        for s in fec.seqs:
            self._by_seq.setdefault(s, []).append(fec)
        while len(self._pending) > self._max_pending:
            old = self._pending.popleft()
            if id(old) in self._live:
                self._resolve(old)
                self.fec_useless += 1
        return self._drain((fec,))

    def on_flexfec(self, data: bytes, now: float) -> list[bytes]:
        """A whole FlexFEC RTP packet arrived."""
        ssrc, fec = flexfec.parse_packet(data)
        if ssrc != self.media_ssrc:
            return []
        return self.on_fec(fec, now)

    def on_red(self, data: bytes, ulpfec_pt: int, now: float,
               retransmission: bool = False) -> list[bytes]:
        """A RED packet from a publisher using red+ulpfec: the plain media packets to forward
        (the unwrapped primary, if media and new, then anything rebuilt).

        A `retransmission` (unwrapped RTX) is passed on but never used for FEC: its header
        extensions may differ from the original's the FEC was computed over (libwebrtc
        gives RTX its own transport-wide seq, for one), which would corrupt any packet
        rebuilt with it."""
        hdr = parse_header(data)
        blocks = red.unwrap(data, hdr)
        pt, _, payload = blocks[-1]
        if pt == ulpfec_pt:
            return self.on_fec(ulpfec.decode(payload), now)
        plain = red.primary_packet(data, hdr)
        seq = hdr.seq
        if seq in self._have or seq in self._resent:
            return []
        if retransmission:
            self._resent.add(seq)
            self._resent_order.append(seq)
            if len(self._resent_order) > self._history:
                self._resent.discard(self._resent_order.popleft())
            return [plain, *self._drain(self._by_seq.get(seq, ()))]
        self._store(seq, plain)
        return [plain, *self._drain(self._by_seq.get(seq, ()))]

    def _store(self, seq: int, data: bytes) -> None:
        self._have[seq] = data
        self._order.append(seq)
        if len(self._order) > self._history:
            self._have.pop(self._order.popleft(), None)

    def _resolve(self, fec: FecPacket) -> None:
        """`fec` is done with (used, useless, or evicted): out of the index."""
        self._live.pop(id(fec), None)
        for s in fec.seqs:
            waiting = self._by_seq.get(s)
            if waiting is not None:
                waiting[:] = [f for f in waiting if f is not fec]
                if not waiting:
                    del self._by_seq[s]

    def _drain(self, candidates: tuple[FecPacket, ...] | list[FecPacket]) -> list[bytes]:
        """Check `candidates` (and, after each rebuild, the FEC packets of the rebuilt seq)."""
        out: list[bytes] = []
        stack = list(candidates)
        while stack:
            fec = stack.pop()
            if id(fec) not in self._live:
                continue
            absent = [s for s in fec.seqs if s not in self._have]
            missing = sum(1 for s in absent if s not in self._resent)
            if missing == 0:
                self._resolve(fec)  # nothing left to repair: done with it
                continue
            if len(absent) > 1:
                continue  # two or more gone (an RTX copy cannot stand in for its original)
            got = ulpfec.recover(fec, self._have, self.media_ssrc)
            if got is None:
                continue
            seq, pkt = got
            self._resolve(fec)
            self._store(seq, pkt)
            self.recovered += 1
            out.append(pkt)
            stack.extend(self._by_seq.get(seq, ()))
        return out


@dataclass(slots=True)
class _Seen:
    fec: frozenset[int] | None  # protected seqs of an FEC packet; None for media
    marker: bool
    begins_frame: bool
    picture_id: int | None
    picture_id_bits: int
    timestamp: int


class FecGaps:
    """Finds the seqs of lost FEC packets in a RED+ULPFEC publisher's VP8 stream.

    Every packet, in any order (late retransmissions and FEC-rebuilt packets too), goes to
    `on_packet`; each call returns the (seq, timestamp) of missing seqs that can now only
    have been FEC, each once. The one rule: between the packet that ends a frame (marker,
    picture ID P) and the packet that starts frame P + 1, with nothing but FEC packets and
    missing seqs in between, every missing seq was FEC. (FEC packets themselves tell
    nothing safe: libwebrtc's pacer sends media ahead of older frames' FEC, so a missing
    seq just before an FEC packet may be a newer frame's media.) Counter: `closed`.
    """

    def __init__(self, window: int = 128, max_gap: int = 16) -> None:
        self.window = window
        self.max_gap = max_gap
        self._seen: dict[int, _Seen] = {}
        self._closed: set[int] = set()
        self._highest: int | None = None
        self.closed = 0

    def on_packet(self, seq: int, timestamp: int, *, fec: FecPacket | None = None,
                  marker: bool = False, begins_frame: bool = False,
                  picture_id: int | None = None,
                  picture_id_bits: int = 15) -> list[tuple[int, int]]:
        h = self._highest
        if h is not None and (h - seq) & 0xFFFF < 0x8000 and (h - seq) & 0xFFFF >= self.window:
            return []  # older than the window
        if seq in self._seen:
            return []
        self._seen[seq] = _Seen(frozenset(fec.seqs) if fec is not None else None, marker,
                                begins_frame, picture_id, picture_id_bits, timestamp)
        if h is None or 0 < (seq - h) & 0xFFFF < 0x8000:
            self._highest = seq
            self._forget(seq)
        if fec is not None:
            spans = [(self._media(seq, -1), self._media(seq, +1))]
        else:  # a frame's first packet closes a span on its left, its last one on its right
            spans = ([(self._media(seq, -1), seq)] if begins_frame else []) + (
                [(seq, self._media(seq, +1))] if marker else [])
        out: list[tuple[int, int]] = []
        for left, right in spans:
            if left is not None and right is not None:
                out += self._close(left, right)
        self.closed += len(out)
        return out

    def _close(self, left: int, right: int) -> list[tuple[int, int]]:
        """The missing seqs between media packets `left` and `right` if `left` ends frame P
        and `right` starts frame P + 1."""
        end, start = self._seen[left], self._seen[right]
        if not (end.marker and start.begins_frame and end.picture_id is not None
                and start.picture_id is not None
                and (start.picture_id - end.picture_id) % (1 << start.picture_id_bits) == 1):
            return []
        out = []
        s = (left + 1) & 0xFFFF
        while s != right:
            if s not in self._seen and s not in self._closed:
                self._closed.add(s)
                out.append((s, end.timestamp))
            s = (s + 1) & 0xFFFF
        return out

    def _media(self, seq: int, step: int) -> int | None:
        """The nearest media packet from `seq` (exclusive) in direction `step`, over FEC,
        closed and missing seqs only; None when none within `max_gap`."""
        s = seq
        for _ in range(self.max_gap + 1):
            s = (s + step) & 0xFFFF
            e = self._seen.get(s)
            if e is not None and e.fec is None:
                return s
        return None

    def _forget(self, newest: int) -> None:
        if len(self._seen) + len(self._closed) <= 2 * self.window:
            return
        keep = lambda s: (newest - s) & 0xFFFF < self.window  # noqa: E731
        self._seen = {s: e for s, e in self._seen.items() if keep(s)}
        self._closed = {s for s in self._closed if keep(s)}
