"""RTP time to media time: timestamp unwrapping and the sender-report (RFC 3550 6.4.1) mapping
that puts every track of a recording on the publisher's one NTP clock, so audio and video stay
in sync however their packets were delayed. Sans-I/O: times are arguments.
"""

from __future__ import annotations

_TS_MOD = 1 << 32
_TS_HALF = 1 << 31


def ntp_seconds(ntp: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point) in seconds."""
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / 4294967296.0


class RtpUnwrapper:
    """32-bit RTP timestamps to a monotonic-ish 64-bit timeline (wrap-around, reordering)."""

    def __init__(self) -> None:
        self._last: int | None = None

    def nearest(self, ts: int) -> int:
        """The extended value of `ts` closest to the last one, without moving the state."""
        last = self._last
        if last is None:
            return ts
        ext = (last & ~(_TS_MOD - 1)) | ts
        if ext - last > _TS_HALF:
            ext -= _TS_MOD
        elif last - ext > _TS_HALF:
            ext += _TS_MOD
        return ext

    def unwrap(self, ts: int) -> int:
        ext = self.nearest(ts)
        if self._last is None or ext > self._last:
            self._last = ext
        return ext


class TrackClock:
    """One track's RTP clock: extended timestamps, their sender (NTP) time and arrival time."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.unwrapper = RtpUnwrapper()
        self.sr: tuple[float, int] | None = None  # (sender seconds, extended RTP) of the 1st SR
        self.anchor: tuple[int, float] | None = None  # (extended RTP, arrival) of the 1st frame

    def unwrap(self, ts: int) -> int:
        return self.unwrapper.unwrap(ts)

    def on_frame(self, ext: int, now: float) -> None:
        if self.anchor is None:
            self.anchor = (ext, now)

    def on_sender_report(self, ntp: int, rtp_ts: int) -> None:
        # The first SR fixes the mapping: a sender's RTP and NTP clocks are one clock, and a
        # fixed mapping keeps timestamps strictly monotonic (later SRs only add jitter).
        if self.sr is None:
            self.sr = (ntp_seconds(ntp), self.unwrapper.nearest(rtp_ts))

    def sender_time(self, ext: int) -> float | None:
        """The publisher's NTP time of extended RTP timestamp `ext`, once an SR arrived."""
        if self.sr is None:
            return None
        t0, r0 = self.sr
        return t0 + (ext - r0) / self.clock_rate

    def arrival_time(self, ext: int) -> float | None:
        """The node-clock time `ext` would arrive at, extrapolated from the first frame."""
        if self.anchor is None:
            return None
        r0, t0 = self.anchor
        return t0 + (ext - r0) / self.clock_rate

    def sender_offset(self) -> float | None:
        """Sender NTP time minus node arrival time (network delay plus clock offset)."""
        if self.sr is None or self.anchor is None:
            return None
        sender = self.sender_time(self.anchor[0])
        assert sender is not None
        return sender - self.anchor[1]
