"""REMB-driven estimate for viewers that did not negotiate transport-cc.

The viewer runs the estimator (receive side, e.g. libwebrtc's or aiortc's
RemoteBitrateEstimator over abs-send-time) and reports a bitrate in REMB messages; the node
only keeps the latest value, clamps it, and drops it back to a floor when REMBs stop (a viewer
that stopped reporting may be congested, not idle).

Probing: a receive-side estimator never grows beyond 1.5 x what it receives, and an SFU that
only forwards what the estimate allows never sends more, so without help the viewer stays on
its lowest layer. While the allocator wants more than the estimate (`set_desired_bitrate`),
`padding_rate` asks the pacer to fill the link with padding up to the last REMB (media plus
padding = what the viewer reported; up to the goal itself before the first REMB: aiortc's estimator
starts from what it received over its first 3 s), so the viewer receives what its estimate
allows, not only the media, and the estimate can climb (a receive-side AIMD grows while it
receives more than 1/1.5 of it). Padding above the estimate would congest a link the
estimate already matches, and media would lose to padding in its queue. A padding window
that did not raise the estimate by `PAD_GAIN` within `PAD_WINDOW` seconds, or during which
the estimate fell (`PAD_DROP`: the viewer saw congestion), is followed by `PAD_PAUSE`
seconds without padding.

A ceiling, not a starting point (as libwebrtc senders treat REMB): a receive-side estimate
starts from what arrived in its first seconds and then grows ~8 %/s, so capping a viewer to
it from the first REMB would start every viewer at its lowest layer and hold it there for
tens of seconds on a link with room to spare. So `target_bitrate` is None (no ceiling: the
viewer keeps its preferred layer) until the REMB signals congestion: it reports less than
`CONGESTED` x what the allocation forwards (`set_send_rate`) and it fell since the last REMB
(a receive-side AIMD only cuts on overuse) or has not grown by `STABLE_GAIN` over
`STABLE_WINDOW` seconds (converged). From then on the REMB caps (the allocator moves the
viewer down at once) and padding lets it grow back; after `HOLD` seconds without congestion
and with the REMB covering everything the allocator wants, the ceiling is lifted again.
"""

from __future__ import annotations

from typing import Any

from sfu.core.bwe.base import Estimator, register

DEFAULT_START = 300_000.0
STALE_AFTER = 5.0  # seconds without REMB before the estimate decays to the start value
PAD_DROP = 0.8  # the estimate fell below this x its value when padding began: stop
PAD_WINDOW = 6.0
PAD_GAIN = 1.1
PAD_PAUSE = 10.0
CONGESTED = 0.9  # a REMB below this x the forwarded rate is congestion (once it is not growing)
STABLE_WINDOW = 3.0  # seconds of REMB history that tell growing from converged
STABLE_GAIN = 1.05  # grew less than this over STABLE_WINDOW: converged
HOLD = 10.0  # seconds without congestion before a REMB covering the goal lifts the ceiling


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
        self.last_remb: float | None = None
        self._goal: float | None = None
        self._window: tuple[float, float] | None = None  # (start, estimate then) of padding
        self._paused_until = 0.0
        self._padding = 0.0
        self.pad_pauses = 0
        self._send_rate: float | None = None
        self.capping = False
        self.congestions = 0
        self._congested_at: float | None = None
        self._history: list[tuple[float, float]] = []  # (time, REMB) over STABLE_WINDOW

    def on_remb(self, bitrate: float, now: float) -> None:
        """The viewer's REMB (bits/s) is the estimate. (Dividing it by the 0.85 a
        receive-side AIMD cuts to after an overuse, to keep a viewer whose REMB sits at its
        layer's rate on that layer, was tried: in the sim it held layers at exactly the
        capacity after a drop, with a standing 300 ms queue.)"""
        bitrate = float(bitrate)
        previous = self.last_remb
        self.rembs += 1
        self._last = now
        self.last_remb = bitrate
        self._bitrate = min(self._max, max(self._min, bitrate))
        history = self._history
        while history and history[0][0] < now - STABLE_WINDOW:
            del history[0]
        history.append((now, bitrate))
        send = self._send_rate
        if send is None or bitrate >= CONGESTED * send:
            return
        fell = previous is not None and bitrate < previous
        # Converged: REMBs for the whole window and no real growth in it (the oldest kept
        # is at most STABLE_WINDOW old, so also require a first one at least that old).
        oldest = history[0]
        converged = (now - oldest[0] >= STABLE_WINDOW - 1.0
                     and bitrate < STABLE_GAIN * min(r for _, r in history))
        if fell or converged:
            if not self.capping:
                self.capping = True
            self.congestions += 1
            self._congested_at = now

    def set_send_rate(self, bitrate: float, now: float) -> None:
        """What the allocation forwards (bits/s): a REMB below it is congestion."""
        self._send_rate = bitrate

    @property
    def target_bitrate(self) -> float | None:
        return self._bitrate if self.capping else None

    def set_desired_bitrate(self, bitrate: float, now: float) -> None:
        self._goal = bitrate
        if (self.capping and self._congested_at is not None
                and now - self._congested_at >= HOLD and self._bitrate >= bitrate):
            self.capping = False  # the REMB covers the goal again: only a ceiling on demand
        self._update_padding(now)

    def padding_rate(self) -> float:
        return self._padding

    def _update_padding(self, now: float) -> None:
        goal = self._goal
        est = self._bitrate
        if not self.capping or goal is None or est >= goal or now < self._paused_until:
            self._padding = 0.0
            self._window = None
            return
        window = self._window
        if window is None:
            window = self._window = (now, est)
        elif est < PAD_DROP * window[1] or now - window[0] >= PAD_WINDOW:
            if est < PAD_GAIN * window[1]:
                # The estimate did not follow the padding: the link carries no more.
                self._paused_until = now + PAD_PAUSE
                self.pad_pauses += 1
                self._padding = 0.0
                self._window = None
                return
            window = self._window = (now, est)
        # Up to what the viewer reported (not the estimate above it): more would congest a
        # link the report already matches.
        remb = self.last_remb
        self._padding = goal if self._last is None or remb is None else min(goal, remb)

    def get_timer(self) -> float | None:
        return None if self._last is None else self._last + self._stale

    def handle_timer(self, now: float) -> None:
        if self._last is not None and now >= self._last + self._stale:
            self._bitrate = min(self._bitrate, self._start)
            self._last = None
            self.capping = True  # a viewer that stopped reporting may be congested

    def stats(self) -> dict[str, Any]:
        return {"name": self.name, "target_bitrate": self._bitrate, "state": self.state,
                "rembs": self.rembs, "last_remb": self.last_remb, "padding_rate": self._padding,
                "pad_pauses": self.pad_pauses, "capping": self.capping,
                "congestions": self.congestions}


register("remb", RembEstimator)
