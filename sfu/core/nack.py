"""NACK loss recovery: the generator (receiving side), the responder (sending side) and the
upstream aggregator that turns many viewers' NACKs into one request to the publisher.

Rules of this module (sans-I/O): nothing here reads a clock or touches a socket; every method
takes `now` in seconds; decisions are return values; timers go through `get_timer()` and
`handle_timer(now)`.

Policy, from libwebrtc's NackRequester and pion/interceptor's pkg/nack:
* a gap is NACKed as soon as it is seen (after an optional `delay` that tolerates reordering
  or waits for FEC), then again whenever one RTT has passed without the packet: asking
  sooner only duplicates a retransmission that is still in flight;
* each seq is asked at most `max_retries` times and never after it is `max_age` old (nor
  further than `max_window` seqs behind the newest): past that the frame it belongs to is
  late for playout anyway and a keyframe is the cheaper way out;
* giving up on a packet sets `keyframe_needed`; the shell turns it into a request through
  the stream's existing `KeyframeRequester` (sfu.core.keyframe), which throttles PLIs per
  layer, so a burst of give-ups can never become a PLI storm;
* the start of a keyframe makes older gaps irrelevant (the decoder restarts there), so they
  are dropped without asking for another keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sfu.wire import rtx as rtx_wire
from sfu.wire.rtp import parse_header

DEFAULT_RTT = 0.1
LOSS_DECAY = 0.1  # weight of a lower loss report in the smoothed loss
MIN_RTT = 0.01  # below this a NACK would be re-sent before the first answer could arrive
MAX_RETRIES = 10
MIN_MAX_AGE = 1.0
MAX_WINDOW = 1000  # seqs; libwebrtc's kMaxNackPackets


@dataclass(slots=True)
class _Missing:
    first_seen: float
    sent_at: float | None = None
    retries: int = 0


class NackGenerator:
    """Detects gaps in one incoming RTP stream and decides which seqs to NACK, and when.

    Counters: `requested` (seq entries put in NACKs, retries included), `recovered` (missing
    seqs that arrived later), `given_up` (seqs abandoned), `keyframe_requests` (times
    `keyframe_needed` was raised).
    """

    def __init__(self, *, rtt: float = DEFAULT_RTT, max_retries: int = MAX_RETRIES,
                 delay: float = 0.0, max_window: int = MAX_WINDOW) -> None:
        if max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, got {max_retries}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.max_retries = max_retries
        self.delay = delay
        self.max_window = max_window
        self._rtt = max(MIN_RTT, rtt)
        self._highest: int | None = None  # extended seq of the newest packet
        self._missing: dict[int, _Missing] = {}  # extended seq -> state, insertion = seq order
        self.keyframe_needed = False
        self.requested = 0
        self.recovered = 0
        self.given_up = 0
        self.keyframe_requests = 0

    # --- configuration --------------------------------------------------------------------

    @property
    def rtt(self) -> float:
        return self._rtt

    def set_rtt(self, rtt: float) -> None:
        """Round-trip time to the sender (from RTCP); paces re-requests and the age limit."""
        self._rtt = max(MIN_RTT, rtt)

    @property
    def max_age(self) -> float:
        """Give up on a packet this long after its gap was seen."""
        # At least a second (libwebrtc-like), and room for a few round trips on slow paths.
        return max(MIN_MAX_AGE, 4 * self._rtt)

    @property
    def missing(self) -> list[int]:
        """The seqs (16-bit) currently considered missing, oldest first."""
        return [s & 0xFFFF for s in self._missing]

    def is_missing(self, seq: int) -> bool:
        ext = self._extend(seq)
        return ext is not None and ext in self._missing

    # --- input ----------------------------------------------------------------------------

    def on_packet(self, seq: int, now: float, is_keyframe: bool = False,
                  is_retransmission: bool = False) -> None:
        """A packet with `seq` arrived (original or, unwrapped, a retransmission).

        `is_keyframe` means the packet STARTS a keyframe (what `Receiver.on_rtp` returns):
        gaps before it no longer matter.
        """
        ext = self._extend(seq)
        if ext is None:
            self._highest = seq
            return
        highest = self._highest
        assert highest is not None
        if ext > highest:
            if ext - highest - 1 > self.max_window:
                # A jump this large is a stream restart or a huge outage: asking for each
                # seq would be a NACK storm; a keyframe is the only sensible recovery.
                self._missing.clear()
                self._raise_keyframe()
            else:
                for s in range(highest + 1, ext):
                    self._missing[s] = _Missing(now)
            self._highest = ext
        elif self._missing.pop(ext, None) is not None:
            self.recovered += 1
        if is_keyframe and self._missing:
            for s in [s for s in self._missing if s < ext]:
                del self._missing[s]
        self._trim_window()

    # --- timers ---------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` must next run (a NACK is due or a packet expires)."""
        if not self._missing:
            return None
        rtt, delay, max_age = self._rtt, self.delay, self.max_age
        due = min(
            (m.first_seen + delay if m.sent_at is None else m.sent_at + rtt)
            for m in self._missing.values()
        )
        oldest = next(iter(self._missing.values())).first_seen
        return min(due, oldest + max_age)

    def handle_timer(self, now: float) -> list[int]:
        """The seqs (16-bit, oldest first) to put in a NACK now; gives up on expired ones.

        Check `keyframe_needed` afterwards (or call `take_keyframe_request`).
        """
        out: list[int] = []
        rtt, delay, max_age = self._rtt, self.delay, self.max_age
        eps = 1e-9
        expired: list[int] = []
        for s, m in self._missing.items():
            if now - m.first_seen >= max_age - eps:
                expired.append(s)
                continue
            if m.sent_at is None:
                if now - m.first_seen < delay - eps:
                    continue
            elif now - m.sent_at < rtt - eps:
                continue
            if m.retries >= self.max_retries:
                # The last answer had one RTT to arrive and did not: it never will.
                expired.append(s)
                continue
            m.sent_at = now
            m.retries += 1
            out.append(s & 0xFFFF)
        for s in expired:
            del self._missing[s]
        if expired:
            self.given_up += len(expired)
            self._raise_keyframe()
        self.requested += len(out)
        return out

    def take_keyframe_request(self) -> bool:
        """True once per raised `keyframe_needed` (then cleared)."""
        needed, self.keyframe_needed = self.keyframe_needed, False
        return needed

    # --- internals ------------------------------------------------------------------------

    def _raise_keyframe(self) -> None:
        if not self.keyframe_needed:
            self.keyframe_requests += 1
        self.keyframe_needed = True

    def _trim_window(self) -> None:
        if self._highest is None or not self._missing:
            return
        floor = self._highest - self.max_window
        if next(iter(self._missing)) >= floor:  # oldest first: nothing is out of the window
            return
        stale = [s for s in self._missing if s < floor]
        for s in stale:
            del self._missing[s]
        if stale:
            self.given_up += len(stale)
            self._raise_keyframe()

    def _extend(self, seq: int) -> int | None:
        if self._highest is None:
            return None
        diff = ((seq - self._highest + 0x8000) & 0xFFFF) - 0x8000
        return self._highest + diff


# --- responder -------------------------------------------------------------------------------


class PacketStore(Protocol):
    """What the responder needs from `sfu.core.history.History`."""

    def get(self, seq: int, now: float) -> _SentLike | None: ...

    def incoming_seq(self, seq: int) -> int | None: ...


class _SentLike(Protocol):
    seq: int
    data: bytes
    sent_at: float
    resent_at: float | None
    resends: int


@dataclass(slots=True, frozen=True)
class RtxConfig:
    """The negotiated RTX stream of one down-track (a=fmtp:<pt> apt=..., ssrc-group FID)."""

    ssrc: int
    payload_type: int
    seq_start: int = 0
    # A second media payload type on the same stream and its own RTX payload type (video
    # RED: the RTX whose apt is RED repeats packets that went out in RED).
    red_payload_type: int | None = None
    red_rtx_payload_type: int | None = None

    def payload_type_for(self, media_pt: int) -> int:
        """The RTX payload type that repeats a packet sent with `media_pt`."""
        if media_pt == self.red_payload_type and self.red_rtx_payload_type is not None:
            return self.red_rtx_payload_type
        return self.payload_type


@dataclass(slots=True, frozen=True)
class Retransmit:
    """One answer to a NACKed outgoing seq.

    `data` is what to send (an RTX packet when RTX is negotiated, else the original packet;
    under heavy loss the same seq can appear twice, each copy with its own RTX seq);
    None means the node does not have the packet. Then `upstream_seq`, when not None, is the
    publisher's seq that the node never received: pass it to the receiver's
    `UpstreamNackAggregator` (one upstream NACK however many viewers ask).
    """

    seq: int
    data: bytes | None
    upstream_seq: int | None = None


class NackResponder:
    """Answers one down-track's NACKs from its History.

    Limits: a packet is resent at most once per `resend_fraction` of an RTT (a second NACK
    sooner means the first retransmission is still on its way), and all retransmissions
    share a token bucket of `budget_fraction` of the measured media bitrate (at least
    `min_budget_bps`) so a receiver on a collapsing link cannot make the node double its
    send rate. The fraction is 0.8: three copies of every packet lost at 10 % need 0.3 x
    the media rate on average and more in bursts, and with 0.5 a Chromium viewer at 10 %
    loss got 1.9 copies per loss, so about one retransmission a run was lost in every copy
    (a 100 ms NACK retry and, now and then, a freeze). The bucket holds `burst` seconds of
    that budget: one second, because second and third copies only come from its upper
    half, and with half a second a few losses in one frame at 10 % loss emptied it to
    single copies (both measured in the Chromium recovery test).
    Counters: `resent`, `resent_bytes`, `suppressed_rate` (per-packet limit),
    `suppressed_budget` (bucket empty), `not_found`, `missing_upstream`, `repeated` (a NACK
    for a packet already retransmitted: every copy was lost or came too late, and the viewer
    waited another NACK round for it).
    """

    def __init__(self, history: PacketStore, *, rtx: RtxConfig | None = None,
                 rtt: float = DEFAULT_RTT, budget_fraction: float = 0.8,
                 min_budget_bps: float = 200_000.0, burst: float = 1.0,
                 resend_fraction: float = 0.8, dup_loss: float = 0.04) -> None:
        if budget_fraction <= 0 or burst <= 0:
            raise ValueError("budget_fraction and burst must be positive")
        self.history = history
        self.rtx = rtx
        self._rtx_seq = rtx_wire.RtxSequencer(rtx.seq_start) if rtx is not None else None
        self._rtt = max(MIN_RTT, rtt)
        self.budget_fraction = budget_fraction
        self.min_budget_bps = min_budget_bps
        self.burst = burst
        self.resend_fraction = resend_fraction
        self.dup_loss = dup_loss
        self.copies = 1
        # media rate: bytes sent in the current 1 s window and the last full window's rate
        self._win_start: float | None = None
        self._win_bytes = 0
        self._rate_bps = 0.0
        self._tokens: float | None = None  # bytes; None until the first NACK
        self._tokens_at = 0.0
        self.resent = 0
        self.resent_bytes = 0
        self.suppressed_rate = 0
        self.suppressed_budget = 0
        self.not_found = 0
        self.missing_upstream = 0
        self.repeated = 0
        self._loss = 0.0  # smoothed viewer loss (set_loss)

    def next_rtx_seq(self) -> int | None:
        """Take the RTX stream's next seq (probe padding shares it), None without RTX."""
        return self._rtx_seq.next() if self._rtx_seq is not None else None

    def set_rtt(self, rtt: float) -> None:
        self._rtt = max(MIN_RTT, rtt)

    def set_loss(self, fraction: float, now: float) -> None:
        """The viewer's loss (RR fraction_lost / 256) decides how many copies each
        retransmission gets: a lost RTX costs the viewer another NACK round (Chromium waits
        100 ms when it cannot measure RTT, which a receive-only peer cannot), long enough to
        count as a freeze. Reports are smoothed, rising at once and falling slowly: Chromium
        sends one before every NACK, over a few dozen packets, so single reports swing
        between 0 and 50 %."""
        if fraction >= self._loss:
            self._loss = fraction
        else:
            self._loss += (fraction - self._loss) * LOSS_DECAY
        if self._loss >= self.dup_loss * 2:
            self.copies = 3
        elif self._loss >= self.dup_loss:
            self.copies = 2
        else:
            self.copies = 1

    def on_media(self, size: int, now: float) -> None:
        """A media packet of `size` bytes was sent (feeds the budget's bitrate estimate)."""
        if self._win_start is None:
            self._win_start = now
        elif now - self._win_start >= 1.0:
            elapsed = now - self._win_start
            self._rate_bps = self._win_bytes * 8 / elapsed
            self._win_start, self._win_bytes = now, 0
        self._win_bytes += size

    @property
    def budget_bps(self) -> float:
        # Before the first full second of media the floor applies.
        return max(self.min_budget_bps, self.budget_fraction * self._rate_bps)

    def on_nack(self, seqs: list[int], now: float) -> list[Retransmit]:
        """Answers for the NACKed outgoing `seqs`, in order; rate-limited ones are omitted."""
        self._refill(now)
        out: list[Retransmit] = []
        min_gap = self.resend_fraction * self._rtt - 1e-9
        for seq in seqs:
            entry = self.history.get(seq, now)
            if entry is None:
                up = self.history.incoming_seq(seq)
                if up is None:
                    self.not_found += 1
                else:
                    self.missing_upstream += 1
                out.append(Retransmit(seq, None, up))
                continue
            if entry.resent_at is not None and now - entry.resent_at < min_gap:
                self.suppressed_rate += 1
                continue
            data = entry.data
            size = len(data) + (2 if self.rtx is not None else 0)  # RTX adds the OSN
            assert self._tokens is not None
            if self._tokens < size:
                self.suppressed_budget += 1
                continue
            # Second copies only from the upper half of the bucket: single retransmissions
            # must never be starved by duplicates.
            spare = self._tokens - self.budget_bps / 8 * self.burst / 2
            copies = 1 + max(0, min(self.copies - 1, int(spare // size) - 1))
            self._tokens -= size * copies
            if entry.resends:
                self.repeated += 1
            entry.resent_at = now
            entry.resends += 1
            for _ in range(copies):
                pkt = data
                if self.rtx is not None:
                    assert self._rtx_seq is not None
                    pkt = rtx_wire.wrap(data, parse_header(data), rtx_ssrc=self.rtx.ssrc,
                                        rtx_pt=self.rtx.payload_type_for(data[1] & 0x7F),
                                        rtx_seq=self._rtx_seq.next())
                self.resent += 1
                self.resent_bytes += len(pkt)
                out.append(Retransmit(seq, pkt))
        return out

    def _refill(self, now: float) -> None:
        cap = self.budget_bps / 8 * self.burst
        if self._tokens is None:
            self._tokens = cap
        else:
            self._tokens = min(cap, self._tokens + (now - self._tokens_at) * self.budget_bps / 8)
        self._tokens_at = now


# --- upstream aggregation --------------------------------------------------------------------


class UpstreamNackAggregator:
    """One published stream's NACKs toward the publisher, deduplicated per RTT.

    Viewers NACK packets the node itself never received; each such seq must cost one
    upstream NACK entry per RTT however many viewers ask. If the receiver also runs a
    `NackGenerator`, pass it: seqs it is already chasing are left to it.
    """

    def __init__(self, *, rtt: float = DEFAULT_RTT, generator: NackGenerator | None = None,
                 horizon: float = 2.0) -> None:
        self._rtt = max(MIN_RTT, rtt)
        self.generator = generator
        self.horizon = horizon
        self._asked: dict[int, float] = {}  # incoming seq -> last time it went upstream
        self.forwarded = 0
        self.deduplicated = 0

    def set_rtt(self, rtt: float) -> None:
        self._rtt = max(MIN_RTT, rtt)

    def request(self, seqs: list[int], now: float) -> list[int]:
        """The incoming seqs to NACK upstream now (possibly empty)."""
        out: list[int] = []
        for seq in seqs:
            seq &= 0xFFFF
            if self.generator is not None and self.generator.is_missing(seq):
                self.deduplicated += 1
                continue
            last = self._asked.get(seq)
            if last is not None and now - last < self._rtt:
                self.deduplicated += 1
                continue
            self._asked[seq] = now
            out.append(seq)
        self.forwarded += len(out)
        if len(self._asked) > 4096:
            self._asked = {s: t for s, t in self._asked.items() if now - t < self.horizon}
        return out
