"""RTP statistics: what RTCP reports need for one incoming and one outgoing SSRC.

`ReceiveStats` owns loss, extended-sequence and jitter bookkeeping for one
incoming SSRC and turns it into report blocks (RFC 3550 A.3 and A.8).
`SendStats` owns the packet/octet counters for one outgoing SSRC and the RTT
measurement from the report blocks that come back (RFC 3550 6.4.1).

All times are `now` values from the caller's monotonic clock in seconds; they
never need to be wall-clock time because only differences are used.
"""

from __future__ import annotations

from collections import OrderedDict

from sfu.wire.rtcp import ReportBlock, ntp_middle32

_SEQ_MOD = 1 << 16
_U32 = 0xFFFF_FFFF


def _signed_diff(a: int, b: int, modulus: int) -> int:
    """a - b for wrapping counters, in [-modulus/2, modulus/2)."""
    half = modulus // 2
    return (a - b + half) % modulus - half


class ReceiveStats:
    """Reception statistics for one incoming SSRC.

    Policies worth knowing:
    * no probation (RFC 3550 A.1): the first packet starts the sequence and any
      jump up to 2^15 counts as progress (the packets skipped count as lost);
    * duplicates count as received, as in A.3, so cumulative loss can go
      negative (clamped to 24 bits when the block is serialised);
    * a packet older than the first one received lowers the base, so a
      reordered start of stream is not counted as loss;
    * jitter (A.8) is updated only from packets newer than every earlier one:
      a retransmitted or late packet carries an old timestamp and would
      otherwise read as a huge transit jump.
    """

    def __init__(self, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {clock_rate}")
        self._clock_rate = clock_rate
        self._started = False
        self._base_ext = 0
        self._highest_ext = 0
        self._received = 0
        self._bytes = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._last_arrival = 0.0
        self._last_ts = 0
        self._lsr = 0
        self._lsr_at: float | None = None

    @property
    def packets(self) -> int:
        return self._received

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def expected(self) -> int:
        return self._highest_ext - self._base_ext + 1 if self._started else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (expected - received); negative with duplicates."""
        return self.expected - self._received

    @property
    def extended_highest_seq(self) -> int:
        """Highest seq with the wrap count in the upper 16 bits, as sent in report blocks."""
        return self._highest_ext & _U32

    @property
    def jitter(self) -> float:
        """Interarrival jitter in RTP clock units."""
        return self._jitter

    def on_packet(self, seq: int, ts: int, now: float, size: int) -> None:
        """Account one received RTP packet; `now` is its arrival time, `size` its bytes."""
        self._received += 1
        self._bytes += size
        arrival = now * self._clock_rate
        if not self._started:
            self._started = True
            self._base_ext = self._highest_ext = seq % _SEQ_MOD
            self._last_arrival, self._last_ts = arrival, ts
            return
        ext = self._highest_ext + _signed_diff(seq, self._highest_ext, _SEQ_MOD)
        if ext < self._base_ext:
            self._base_ext = ext
        if ext <= self._highest_ext:
            return
        self._highest_ext = ext
        transit_delta = (arrival - self._last_arrival) - _signed_diff(ts, self._last_ts, 1 << 32)
        self._jitter += (abs(transit_delta) - self._jitter) / 16
        self._last_arrival, self._last_ts = arrival, ts

    def on_sender_report(self, ntp_timestamp: int, now: float) -> None:
        """Remember the publisher's last SR so the next block can echo LSR/DLSR."""
        self._lsr = ntp_middle32(ntp_timestamp)
        self._lsr_at = now

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        """Build a report block about this source; fraction lost covers the time since
        the previous call, so call it exactly once per report sent."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(0xFF, (lost_interval << 8) // expected_interval)
        dlsr = 0
        if self._lsr_at is not None:
            dlsr = min(_U32, max(0, int((now - self._lsr_at) * 65536)))
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            packets_lost=self.lost,
            highest_seq=self.extended_highest_seq,
            jitter=min(_U32, int(self._jitter)),
            lsr=self._lsr,
            dlsr=dlsr,
        )


class SendStats:
    """Send-side counters for one outgoing SSRC and RTT from returned report blocks."""

    _SR_MEMORY = 16  # RRs may echo an SR older than the newest when reports cross

    def __init__(self) -> None:
        self._packets = 0
        self._octets = 0
        self._last_ts: int | None = None
        self._last_packet_at: float | None = None
        self._sr_sent_at: OrderedDict[int, float] = OrderedDict()

    @property
    def packet_count(self) -> int:
        """Packets sent, modulo 2^32 as the SR field requires."""
        return self._packets & _U32

    @property
    def octet_count(self) -> int:
        """Payload octets sent (what the caller passed as size), modulo 2^32."""
        return self._octets & _U32

    @property
    def last_rtp_timestamp(self) -> int | None:
        return self._last_ts

    @property
    def last_packet_at(self) -> float | None:
        return self._last_packet_at

    def on_packet(self, size: int, ts: int, now: float) -> None:
        """Account one sent packet; RFC 3550 counts payload octets only, so pass those."""
        self._packets += 1
        self._octets += size
        self._last_ts = ts
        self._last_packet_at = now

    def on_sender_report_sent(self, ntp_timestamp: int, now: float) -> None:
        """Remember when the SR carrying `ntp_timestamp` left, keyed by its LSR value."""
        self._sr_sent_at[ntp_middle32(ntp_timestamp)] = now
        while len(self._sr_sent_at) > self._SR_MEMORY:
            self._sr_sent_at.popitem(last=False)

    def rtt_from_report(self, block: ReportBlock, now: float) -> float | None:
        """RTT in seconds from a report block received at `now`.

        None when the block echoes no SR (LSR 0) or one we do not remember.
        Clamped at 0 because DLSR is rounded by the receiver.
        """
        if block.lsr == 0:
            return None
        sent_at = self._sr_sent_at.get(block.lsr)
        if sent_at is None:
            return None
        return max(0.0, now - sent_at - block.dlsr / 65536)
