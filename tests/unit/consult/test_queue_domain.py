"""The consultation queue domain (sans-I/O, virtual clock): FIFO assignment, booked slots,
advisor free/busy transitions, and the invariants under random operation sequences."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from signalling.consult.domain import ADVISOR_TTL, Assigned, CallEnded, Queue, QueueError


class VirtualClock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


def assigned_to(q: Queue, request_id: str) -> str | None:
    return q.requests[request_id].advisor


def test_fifo_two_advisors_three_customers() -> None:
    clock = VirtualClock()
    q = Queue()
    q.available("a1", clock())
    q.available("a2", clock.advance(1))
    r1 = q.request("c1", "r1", clock.advance(1))
    r2 = q.request("c2", "r2", clock.advance(1))
    r3 = q.request("c3", "r3", clock.advance(1))
    # longest-idle advisor first, customers in arrival order
    assert (r1.state, r1.advisor) == ("assigned", "a1")
    assert (r2.state, r2.advisor) == ("assigned", "a2")
    assert r3.state == "waiting" and q.position("r3", clock()) == 1
    q.accept("a1", "r1", clock.advance(1))
    q.accept("a2", "r2", clock.advance(1))
    q.check_invariants()
    # a2 is the first to become free: r3 goes to a2
    q.end("r2", clock.advance(60), by="c2")
    assert (r3.state, r3.advisor) == ("assigned", "a2")
    assert q.advisors["a1"].state == "busy"
    ended = [e for e in q.events if isinstance(e, CallEnded)]
    assert ended[-1].duration == pytest.approx(60.0)
    waits = {e.request: e.waited for e in q.events if isinstance(e, Assigned)}
    assert waits["r1"] == 0.0 and waits["r3"] == pytest.approx(62.0)
    q.check_invariants()


def test_fifo_order_of_many_waiting() -> None:
    clock = VirtualClock()
    q = Queue()
    for i in range(5):
        q.request(f"c{i}", f"r{i}", clock.advance(1))
    assert [r.id for r in q.waiting(clock())] == ["r0", "r1", "r2", "r3", "r4"]
    for i in range(5):
        q.available(f"a{i}", clock.advance(1))
        assert q.requests[f"r{i}"].advisor == f"a{i}"
    q.check_invariants()


def test_request_is_idempotent_per_customer() -> None:
    q = Queue()
    first = q.request("c1", "r1", 10.0)
    again = q.request("c1", "r2", 11.0)
    assert again is first and "r2" not in q.requests


def test_booked_slot_waits_for_its_time_then_goes_first() -> None:
    clock = VirtualClock(0.0)
    q = Queue()
    q.available("a1", 0.0)
    q.away("a1", 0.0)
    booked = q.request("b", "rb", clock(), slot_at=100.0)
    walk_in = q.request("w", "rw", clock.advance(10))
    assert q.waiting(clock()) == [walk_in]  # the booking is not due yet
    clock.advance(95)  # t = 105: the slot has come
    assert [r.id for r in q.waiting(clock())] == ["rb", "rw"]
    q.available("a1", clock())
    assert booked.state == "assigned" and walk_in.state == "waiting"
    assert q.events[-1] == Assigned("rb", "b", "a1", pytest.approx(5.0))


def test_booked_slot_not_assigned_early_even_with_free_advisor() -> None:
    q = Queue()
    q.available("a1", 0.0)
    r = q.request("b", "rb", 0.0, slot_at=60.0)
    assert r.state == "waiting"
    q.assign(59.9)
    assert r.state == "waiting"
    q.assign(60.0)
    assert r.state == "assigned"


def test_reserve_ahead_holds_an_advisor_for_a_booking() -> None:
    q = Queue(reserve_ahead=120.0)
    q.available("a1", 0.0)
    q.available("a2", 0.0)
    q.request("b", "rb", 0.0, slot_at=100.0)
    w1 = q.request("w1", "r1", 1.0)
    w2 = q.request("w2", "r2", 2.0)
    assert w1.state == "assigned" and w2.state == "waiting"  # one advisor held back
    q.assign(100.0)
    assert q.requests["rb"].state == "assigned"
    q.check_invariants()


def test_slot_capacity() -> None:
    q = Queue(slot_capacity=1)
    q.request("c1", "r1", 0.0, slot_at=900.0)
    with pytest.raises(QueueError) as exc:
        q.request("c2", "r2", 0.0, slot_at=900.0)
    assert exc.value.code == "slot_full"
    with pytest.raises(QueueError):
        q.request("c3", "r3", 1000.0, slot_at=1.0)  # in the past


def test_advisor_transitions() -> None:
    q = Queue()
    a = q.available("a1", 0.0)
    assert a.state == "free"
    q.request("c1", "r1", 1.0)
    assert a.state == "busy" and a.request == "r1"
    with pytest.raises(QueueError):
        q.away("a1", 2.0)
    with pytest.raises(QueueError):
        q.accept("a2", "r1", 2.0)
    with pytest.raises(QueueError):
        q.end("r1", 2.0, by="stranger")
    q.accept("a1", "r1", 2.0)
    q.end("r1", 3.0, by="a1")
    assert a.state == "free" and a.free_since == 3.0 and a.request is None
    assert q.requests["r1"].state == "done"
    q.away("a1", 4.0)
    assert a.state == "offline"
    q.request("c2", "r2", 5.0)
    assert q.requests["r2"].state == "waiting"


def test_cancel_before_the_call_frees_the_advisor() -> None:
    q = Queue()
    q.available("a1", 0.0)
    q.request("c1", "r1", 1.0)
    q.request("c2", "r2", 2.0)
    q.cancel("r1", 3.0, by="c1")
    assert q.requests["r1"].state == "cancelled"
    assert q.requests["r2"].advisor == "a1"  # the next in line gets the advisor at once
    with pytest.raises(QueueError):
        q.cancel("r2", 4.0, by="c1")


def test_expire_takes_silent_free_advisors_offline() -> None:
    q = Queue()
    q.available("a1", 0.0)
    q.available("a2", 0.0)
    q.seen("a2", ADVISOR_TTL)
    assert q.expire(ADVISOR_TTL + 1) == ["a1"]
    q.request("c1", "r1", ADVISOR_TTL + 2)
    assert q.requests["r1"].advisor == "a2"


# --- random sequences -----------------------------------------------------------------------

CUSTOMERS = [f"c{i}" for i in range(6)]
ADVISORS = [f"a{i}" for i in range(3)]


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.q = Queue(reserve_ahead=0.0)
        self.now = 0.0
        self.n = 0

    @rule(dt=st.floats(0, 30))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.q.expire(self.now)
        self.q.assign(self.now)

    @rule(c=st.sampled_from(CUSTOMERS), slot=st.none() | st.floats(0, 200))
    def request(self, c: str, slot: float | None) -> None:
        self.n += 1
        try:
            self.q.request(c, f"r{self.n}", self.now, slot_at=slot if slot is None else self.now + slot)
        except QueueError:
            pass

    @rule(a=st.sampled_from(ADVISORS))
    def available(self, a: str) -> None:
        self.q.available(a, self.now)

    @rule(a=st.sampled_from(ADVISORS))
    def away(self, a: str) -> None:
        try:
            self.q.away(a, self.now)
        except QueueError:
            assert self.q.advisors[a].state == "busy"

    @precondition(lambda self: any(r.state == "assigned" for r in self.q.requests.values()))
    @rule(data=st.data())
    def accept(self, data: st.DataObject) -> None:
        r = data.draw(st.sampled_from([r for r in self.q.requests.values() if r.state == "assigned"]))
        assert r.advisor is not None
        self.q.accept(r.advisor, r.id, self.now)

    @precondition(lambda self: any(r.active for r in self.q.requests.values()))
    @rule(data=st.data(), by_advisor=st.booleans())
    def end(self, data: st.DataObject, by_advisor: bool) -> None:
        r = data.draw(st.sampled_from([r for r in self.q.requests.values() if r.active]))
        if r.state == "waiting":
            self.q.cancel(r.id, self.now, by=r.customer)
        else:
            self.q.end(r.id, self.now, by=(r.advisor if by_advisor else r.customer) or r.customer)

    @invariant()
    def rules_hold(self) -> None:
        self.q.check_invariants()

    @invariant()
    def no_idle_advisor_while_someone_due_waits(self) -> None:
        # after every operation assignment has run: free advisors and due requests never coexist
        self.q.assign(self.now)
        assert not (self.q.free_advisors() and self.q.waiting(self.now))

    @invariant()
    def fifo_among_walk_ins(self) -> None:
        waiting = [r.seq for r in self.q.waiting(self.now) if r.slot_at is None]
        assigned_later = [
            r.seq for r in self.q.requests.values()
            if r.slot_at is None and r.state in ("assigned", "in_call")
        ]
        # nobody who came after a still-waiting walk-in has been served
        if waiting and assigned_later:
            assert max(assigned_later) < min(waiting) or all(
                s < min(waiting) for s in assigned_later
            )


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
