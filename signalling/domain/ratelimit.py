"""Token-bucket rate limiting for viewer-originated events (cart edits, orders, pings).

The bucket starts full, refills continuously at ``rate_per_s`` up to ``burst``, and each
allowed event spends ``cost`` tokens. Time is passed in, so the limiter is exact under a
virtual clock; a clock that steps backwards refills nothing rather than going negative.
"""

from __future__ import annotations

import math


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError("rate_per_s must be positive")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError("burst must be at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        if self._last is None or now > self._last:
            self._last = now

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if available and say whether the event may proceed."""
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (for metrics and tests)."""
        self._refill(now)
        return self._tokens

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``allow(now + retry_after, cost)`` would succeed."""
        missing = cost - self.tokens(now)
        return 0.0 if missing <= 0 else missing / self.rate_per_s
