"""Keyframe request throttling for one published track (one simulcast layer).

Owns the decision of when a PLI/FIR goes upstream to the publisher. Every
subscriber that loses a picture asks for a keyframe; forwarding each ask would
make the publisher encode back-to-back keyframes, which costs far more bitrate
than the brief wait for the next one. So at most one request leaves per
`min_interval`, and asks inside that window collapse into a single deferred one.
"""

from __future__ import annotations


class KeyframeRequester:
    """Throttle and coalesce keyframe requests.

    Counters: `requests` counts calls to `request`; `sent` counts requests that
    must go upstream (immediate ones plus deferred ones released by
    `handle_timer`); `suppressed` counts `request` calls that did not send
    immediately (each was folded into a pending deferred request).
    """

    def __init__(self, min_interval: float = 0.5) -> None:
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0, got {min_interval}")
        self._min_interval = min_interval
        self._last_sent: float | None = None
        self._pending = False
        self._last_keyframe: float | None = None
        self.requests = 0
        self.sent = 0
        self.suppressed = 0

    @property
    def pending(self) -> bool:
        """True while a coalesced request waits for the throttle window to end."""
        return self._pending

    @property
    def last_keyframe_at(self) -> float | None:
        """`now` of the last `keyframe_received`, for diagnostics."""
        return self._last_keyframe

    def request(self, now: float) -> bool:
        """Record a keyframe request; True means send a PLI upstream now."""
        self.requests += 1
        if self._window_open(now):
            self._send(now)
            return True
        self.suppressed += 1
        self._pending = True
        return False

    def get_timer(self) -> float | None:
        """When `handle_timer` should next be called, or None if nothing is pending."""
        if not self._pending or self._last_sent is None:
            return None
        return self._last_sent + self._min_interval

    def handle_timer(self, now: float) -> bool:
        """True when the deferred request is due and must be sent now.

        Safe to call early or spuriously: it returns False until the window ends.
        """
        if not self._pending or not self._window_open(now):
            return False
        self._send(now)
        return True

    def keyframe_received(self, now: float) -> None:
        """A keyframe arrived from the publisher: it answers every pending ask.

        The throttle window is left alone; the publisher just paid for a
        keyframe, so a fresh ask right after still waits out the interval.
        """
        self._pending = False
        self._last_keyframe = now

    def _window_open(self, now: float) -> bool:
        return self._last_sent is None or now - self._last_sent >= self._min_interval

    def _send(self, now: float) -> None:
        self._last_sent = now
        self._pending = False
        self.sent += 1
