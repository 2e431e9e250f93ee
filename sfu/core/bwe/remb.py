"""REMB-driven estimate for viewers that did not negotiate transport-cc.

The viewer runs the estimator (receive side, e.g. libwebrtc's or aiortc's
RemoteBitrateEstimator over abs-send-time) and reports a bitrate in REMB messages; the node
only keeps the latest value, clamps it, and drops it back to a floor when REMBs stop (a viewer
that stopped reporting may be congested, not idle).
"""

from __future__ import annotations

from sfu.core.bwe.base import Estimator, register

DEFAULT_START = 300_000.0
STALE_AFTER = 5.0  # seconds without REMB before the estimate decays to the start value


class RembEstimator(Estimator):
    name = "remb"

    def __init__(
        self,
        *,
        start_bitrate: float = DEFAULT_START,
        min_bitrate: float = 30_000.0,
        max_bitrate: float = 20e6,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self._start = start_bitrate
        self._min = min_bitrate
        self._max = max_bitrate
        self._stale = stale_after
        self._bitrate = start_bitrate
        self._last: float | None = None
        self.rembs = 0

    def on_remb(self, bitrate: float, now: float) -> None:
        self.rembs += 1
        self._last = now
        self._bitrate = min(self._max, max(self._min, float(bitrate)))

    @property
    def target_bitrate(self) -> float:
        return self._bitrate

    def get_timer(self) -> float | None:
        return None if self._last is None else self._last + self._stale

    def handle_timer(self, now: float) -> None:
        if self._last is not None and now >= self._last + self._stale:
            self._bitrate = min(self._bitrate, self._start)
            self._last = None


register("remb", RembEstimator)
