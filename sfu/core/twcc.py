"""Transport-wide congestion control, receive side: the feedback a publisher's estimator needs.

`FeedbackGenerator` owns, for one transport (one publishing peer), the arrival times of the
packets carrying the transport-wide sequence number extension and the schedule of the
transport-cc feedback messages that report them (draft-holmer-rmcat-transport-wide-cc-
extensions-01). The sender turns those reports into its bandwidth estimate; without them
Chromium keeps its estimate, and so its simulcast layers and bitrate, at the floor.

Rules, following libwebrtc's receive-side proxy (remote_estimator_proxy.cc):
* feedback is due `interval` after the first packet it will report arrived, or at once when
  `early_packets` packets are waiting;
* a message starts at the first sequence number not reported yet and ends at the highest
  received one, so losses inside the window are reported as not received and trailing ones
  wait for the next message (they may still arrive);
* a reordered packet whose slot is still unreported simply fills it; one that arrives after its
  slot was reported moves the window back, so the next message reports it again as received
  (Chrome ignores repeats of packets it already has feedback for, and accepts a packet reported
  lost then received);
* a message is split when a receive delta would not fit in 16 bits (a pause of over 8 s), when
  it holds `max_received` received packets, or at 65535 statuses;
* arrival times are kept for `history` seconds and at most `max_history` packets, so memory is
  bounded whatever the peer sends; a packet older than what was forgotten is ignored.

Sans-I/O: every input carries `now` (seconds, any monotonic clock); the shell sends what
`handle_timer` returns and re-arms a timer from `get_timer`.
"""

from __future__ import annotations

from collections import OrderedDict

from sfu.wire.twcc import (
    LARGE_DELTA_MAX,
    LARGE_DELTA_MIN,
    MAX_STATUS_COUNT,
    TICKS_PER_REFERENCE,
    TransportFeedback,
)

FEEDBACK_INTERVAL = 0.05
EARLY_PACKETS = 100
MAX_RECEIVED_PER_MESSAGE = 100  # keeps a message well under the MTU whatever the loss pattern
HISTORY = 0.5
MAX_HISTORY = 8192
_TICKS_PER_SECOND = 4000  # receive deltas are in 250 us


class FeedbackGenerator:
    """Records transport-wide sequence numbers as they arrive and builds feedback messages.

    Counters: `recorded` packets accepted, `duplicates` ignored repeats, `late` packets that
    arrived after their slot was reported (and will be reported again), `too_old` packets
    ignored because they predate the kept history, `messages` feedback messages built.
    """

    def __init__(
        self,
        sender_ssrc: int = 0,
        media_ssrc: int = 0,
        *,
        interval: float = FEEDBACK_INTERVAL,
        early_packets: int = EARLY_PACKETS,
        max_received: int = MAX_RECEIVED_PER_MESSAGE,
        history: float = HISTORY,
        max_history: int = MAX_HISTORY,
    ) -> None:
        if interval <= 0 or early_packets < 1 or max_received < 1 or max_history < 1:
            raise ValueError("interval, early_packets, max_received and max_history must be > 0")
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self._interval = interval
        self._early = early_packets
        self._max_received = max_received
        self._history = history
        self._max_history = max_history
        # unwrapped seq -> arrival time; insertion (arrival) order makes pruning O(1) per packet
        self._arrivals: OrderedDict[int, float] = OrderedDict()
        self._highest: int | None = None  # highest unwrapped seq received
        self._start = 0  # first unwrapped seq the next message reports
        self._floor = 0  # seqs below this were forgotten; later arrivals there are ignored
        self._pending = 0  # packets recorded since the last feedback
        self._timer: float | None = None
        self._fb_count = 0
        self.recorded = 0
        self.duplicates = 0
        self.late = 0
        self.too_old = 0
        self.messages = 0

    @property
    def pending(self) -> int:
        """Packets recorded since the last feedback was built."""
        return self._pending

    @property
    def tracked(self) -> int:
        """Arrival times currently kept (bounded by `max_history`)."""
        return len(self._arrivals)

    def record(self, transport_seq: int, now: float) -> None:
        """A packet with transport-wide sequence number `transport_seq` (16 bits) arrived."""
        highest = self._highest
        if highest is None:
            ext = transport_seq & 0xFFFF
            self._highest = self._start = ext
            self._floor = ext - 0x8000  # nothing forgotten yet: any reordering is fine
        else:
            ext = highest + ((transport_seq - highest + 0x8000) & 0xFFFF) - 0x8000
            if ext > highest:
                self._highest = ext
            elif ext in self._arrivals:
                self.duplicates += 1
                return
            elif ext < self._start:
                if ext < self._floor:
                    self.too_old += 1
                    return
                self._start = ext
                self.late += 1
        arrivals = self._arrivals
        arrivals[ext] = now
        if len(arrivals) > self._max_history:
            self._forget(arrivals.popitem(last=False)[0])
        self.recorded += 1
        self._pending += 1
        if self._pending == 1:
            self._timer = now + self._interval
        elif self._pending == self._early:
            self._timer = now

    def get_timer(self) -> float | None:
        """When `handle_timer` should next run, or None while there is nothing to report."""
        return self._timer

    def handle_timer(self, now: float) -> list[TransportFeedback]:
        """The feedback messages due at `now` (none when called early), in sending order."""
        if self._timer is None or now < self._timer:
            return []
        self._timer = None
        self._pending = 0
        messages = self._build()
        cutoff = now - self._history
        arrivals = self._arrivals
        while arrivals:
            ext, at = next(iter(arrivals.items()))
            if at >= cutoff:
                break
            del arrivals[ext]
            self._forget(ext)
        return messages

    def _forget(self, ext: int) -> None:
        if ext >= self._floor:
            self._floor = ext + 1
        if ext >= self._start:
            # Only when the history cap bites before a message went out: never report a
            # received packet as lost because its arrival time was dropped.
            self._start = ext + 1

    def _build(self) -> list[TransportFeedback]:
        highest = self._highest
        if highest is None:
            return []
        arrivals = self._arrivals
        messages: list[TransportFeedback] = []
        start = self._start
        while start <= highest:
            packets: list[tuple[int, int | None]] = []
            reference = prev = received = reported = 0
            ext = start
            while ext <= highest and len(packets) < MAX_STATUS_COUNT:
                at = arrivals.get(ext)
                if at is None:
                    packets.append((ext & 0xFFFF, None))
                    ext += 1
                    continue
                ticks = round(at * _TICKS_PER_SECOND)
                if not received:
                    reference = ticks // TICKS_PER_REFERENCE
                    prev = reference * TICKS_PER_REFERENCE
                delta = ticks - prev
                if received >= self._max_received or not LARGE_DELTA_MIN <= delta <= LARGE_DELTA_MAX:
                    break
                packets.append((ext & 0xFFFF, delta))
                prev = ticks
                received += 1
                ext += 1
                reported = len(packets)
            if not received:
                # Nothing but losses fits (65535 of them): skip them rather than loop forever.
                start = ext
                continue
            del packets[reported:]  # trailing losses wait: those packets may still come
            messages.append(
                TransportFeedback(
                    sender_ssrc=self.sender_ssrc,
                    media_ssrc=self.media_ssrc,
                    base_seq=start & 0xFFFF,
                    reference_time=reference & 0xFFFFFF,
                    fb_pkt_count=self._fb_count & 0xFF,
                    packets=packets,
                )
            )
            self._fb_count += 1
            start += reported
        self._start = start
        self.messages += len(messages)
        return messages
