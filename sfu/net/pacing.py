"""One event-loop timer for every viewer's pacer on the node.

Each viewer with an estimate paces its video through a `sfu.core.pacer.Pacer` that wants to
run every 5 ms while it has something queued. A timer per viewer would cost 100 viewers x
200 wake-ups/s; `PaceScheduler` keeps one `call_at` for the earliest due pacer and, when it
fires, runs every pacer due within `SLACK` (the loop's timer granularity is 1 ms), so the
wake-ups stay at most 1 / `SLACK` per second whatever the number of viewers.

The scheduler knows nothing of pacing: a client is anything with `run_pacer(now)`, which
re-arms itself through `arm(client, at)`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("sfu.pacing")

SLACK = 0.001  # run pacers due up to this much later in the same wake-up


class PacedClient(Protocol):
    def run_pacer(self, now: float) -> None: ...


class PaceScheduler:
    def __init__(self) -> None:
        self._due: dict[PacedClient, float] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        self._firing = False
        self.wakeups = 0

    def arm(self, client: PacedClient, at: float | None) -> None:
        """Run `client.run_pacer` at `at` (None: nothing to do, forget it)."""
        if at is None:
            self._due.pop(client, None)
            return
        self._due[client] = at
        if self._firing:
            return  # _fire schedules the earliest once every due pacer has run
        if self._at is None or at < self._at - SLACK:
            if self._handle is not None:
                self._handle.cancel()
            self._at = at
            self._handle = asyncio.get_running_loop().call_at(at, self._fire)

    def cancel(self, client: PacedClient) -> None:
        self._due.pop(client, None)

    def due(self, client: PacedClient) -> float | None:
        return self._due.get(client)

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        self.wakeups += 1
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        ready = [(c, at) for c, at in due.items() if at <= now + SLACK]
        self._firing = True
        try:
            for client, at in ready:
                if due.get(client) == at:
                    del due[client]
                try:
                    # A timer may fire a hair early; the pacer's clock never goes backwards.
                    client.run_pacer(max(now, at))
                except Exception:
                    log.exception("pacer failed")
        finally:
            self._firing = False
        if due:
            at = min(due.values())
            self._at = at
            self._handle = loop.call_at(at, self._fire)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._at = None
        self._due.clear()
