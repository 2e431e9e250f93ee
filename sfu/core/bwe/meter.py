"""Bitrate of a stream from its running byte counter, sampled (no per-packet work).

The allocator needs each simulcast layer's real bitrate, not its nominal one. Receivers
already count bytes (`Receiver.stats.bytes`); a `RateMeter` samples that counter whenever the
allocator runs and averages over `window` seconds, long enough to smooth key frames (one key
frame is several delta frames' worth of bytes).
"""

from __future__ import annotations

from collections import deque

WINDOW = 2.0


class RateMeter:
    def __init__(self, window: float = WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()
        self.last_rate: float | None = None  # the last non-zero measurement, kept when idle

    def sample(self, total_bytes: int, now: float) -> float | None:
        """Record the counter at `now`; the bitrate over the window (None until 0.5 s)."""
        s = self._samples
        s.append((now, total_bytes))
        while len(s) > 2 and s[1][0] <= now - self._window:
            s.popleft()
        t0, b0 = s[0]
        if now - t0 < min(0.5, self._window):
            return None
        rate = (total_bytes - b0) * 8 / (now - t0)
        if rate > 0:
            self.last_rate = rate
        return rate
