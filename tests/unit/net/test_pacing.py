"""PaceScheduler: one event-loop timer for many viewers' pacers."""

from __future__ import annotations

import asyncio

from sfu.net.pacing import PaceScheduler


class Client:
    def __init__(self, sched: PaceScheduler, bursts: int, done: asyncio.Event,
                 interval: float = 0.005) -> None:
        self.sched = sched
        self.left = bursts
        self.done = done
        self.interval = interval
        self.runs: list[float] = []

    def run_pacer(self, now: float) -> None:
        self.runs.append(now)
        self.left -= 1
        if self.left > 0:
            self.sched.arm(self, now + self.interval)
        elif all(c.left <= 0 for c in CLIENTS):
            self.done.set()


CLIENTS: list[Client] = []


async def test_many_pacers_share_one_wakeup_per_burst() -> None:
    sched = PaceScheduler()
    done = asyncio.Event()
    CLIENTS.clear()
    CLIENTS.extend(Client(sched, 10, done) for _ in range(50))
    start = asyncio.get_running_loop().time() + 0.01
    for c in CLIENTS:
        sched.arm(c, start)
    await asyncio.wait_for(done.wait(), 10)
    assert all(len(c.runs) == 10 for c in CLIENTS)
    # 50 viewers x 10 bursts in about 10 wake-ups, not 500 (a loaded machine may split a
    # burst in two, never into one per viewer)
    assert sched.wakeups <= 25, sched.wakeups
    for c in CLIENTS:  # each client's clock only moves forward, by at least its interval
        assert all(b - a >= c.interval - 1e-9 for a, b in zip(c.runs, c.runs[1:], strict=False))


async def test_cancel_and_an_earlier_client_rearm_the_timer() -> None:
    sched = PaceScheduler()
    done = asyncio.Event()
    CLIENTS.clear()
    late, early = Client(sched, 1, done), Client(sched, 1, done)
    CLIENTS.extend([late, early])
    now = asyncio.get_running_loop().time()
    sched.arm(late, now + 0.2)
    sched.arm(early, now + 0.01)  # earlier: must not wait for the late one's timer
    gone = Client(sched, 1, done)
    sched.arm(gone, now + 0.01)
    sched.cancel(gone)
    await asyncio.wait_for(done.wait(), 10)
    assert early.runs[0] < late.runs[0]
    assert gone.runs == []
    sched.close()
