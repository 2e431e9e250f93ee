"""The consultation queue as a pure state machine (sans-I/O: no clock, no store, no asyncio).

Customers ask for a 1:1 video consultation, now (walk-in) or for a booked time slot;
advisors say they are available; ``Queue.assign(now)`` pairs waiting customers with free
advisors. Every operation takes ``now`` from the caller, so tests drive it with a virtual
clock, and records what it changed (``dirty_*``) and what happened (``events``) so that a
store can persist exactly the changed rows inside one transaction.

Rules:

- **One active request per customer**: asking again while waiting, assigned or in a call
  returns the existing request (idempotent).
- **Assignment order**: booked requests whose slot has come (``slot_at <= now``), oldest
  slot first, then walk-ins in arrival order (``seq``, FIFO). Free advisors are taken
  longest-idle first (``free_since``, then id). A booked request is never assigned before
  its slot.
- **Holding advisors for bookings**: with ``reserve_ahead > 0``, walk-ins only get the free
  advisors left over after one advisor per booking due within ``reserve_ahead`` seconds.
- **Advisor states**: ``offline`` -> ``free`` (available) -> ``busy`` (assigned a request,
  then in the call) -> ``free`` when the call ends. Only a free advisor goes offline; a free
  advisor not seen for ``ADVISOR_TTL`` is taken offline by ``expire``.
- **Request states**: ``waiting`` -> ``assigned`` (an advisor is reserved for it) ->
  ``in_call`` (the advisor accepted) -> ``done``; ``cancelled`` from waiting or assigned.
- **Invariants** (``check_invariants``): an advisor is busy iff exactly one active
  (assigned or in_call) request names it; every active request names a busy advisor; a
  customer has at most one active request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Final, Literal

RequestState = Literal["waiting", "assigned", "in_call", "done", "cancelled"]
AdvisorState = Literal["offline", "free", "busy"]
ACTIVE: Final[frozenset[str]] = frozenset({"waiting", "assigned", "in_call"})
ADVISOR_TTL: Final = 30.0  # s without a poll/heartbeat before a free advisor goes offline
SLOT_GRACE: Final = 300.0  # s: a slot may be booked up to this long after it started


class QueueError(Exception):
    """An operation the queue refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class ConsultRequest:
    id: str
    customer: str
    seq: int
    created_at: float
    slot_at: float | None = None
    state: RequestState = "waiting"
    advisor: str | None = None
    assigned_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def due(self, now: float) -> bool:
        return self.slot_at is None or self.slot_at <= now

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ConsultRequest:
        return cls(**data)  # type: ignore[arg-type]


@dataclass(slots=True)
class Advisor:
    id: str
    state: AdvisorState = "offline"
    free_since: float = 0.0
    request: str | None = None
    seen_at: float = 0.0

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Advisor:
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Assigned:
    request: str
    customer: str
    advisor: str
    waited: float  # s from the request (or its slot) to the assignment


@dataclass(frozen=True, slots=True)
class CallStarted:
    request: str
    advisor: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    request: str
    advisor: str | None
    duration: float | None  # s in the call; None if it never started
    state: RequestState


Event = Assigned | CallStarted | CallEnded


@dataclass
class Queue:
    """The active part of one queue: open requests and known advisors.

    A store loads it, runs one operation on it and writes back ``dirty_requests`` and
    ``dirty_advisors`` (requests that left the active states are written once more, then
    no longer loaded)."""

    requests: dict[str, ConsultRequest] = field(default_factory=dict)
    advisors: dict[str, Advisor] = field(default_factory=dict)
    next_seq: int = 1
    reserve_ahead: float = 0.0
    slot_capacity: int | None = None  # bookings per slot; default: number of advisors
    dirty_requests: set[str] = field(default_factory=set)
    dirty_advisors: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)

    # --- lookups -------------------------------------------------------------------------

    def active_for(self, customer: str) -> ConsultRequest | None:
        for r in self.requests.values():
            if r.customer == customer and r.active:
                return r
        return None

    def waiting(self, now: float | None = None) -> list[ConsultRequest]:
        """Waiting requests in assignment order (only the due ones when ``now`` is given)."""
        out = [r for r in self.requests.values() if r.state == "waiting"]
        if now is not None:
            out = [r for r in out if r.due(now)]
        return sorted(out, key=_order)

    def position(self, request_id: str, now: float) -> int | None:
        """1-based place among due waiting requests (None if not waiting or not due)."""
        for i, r in enumerate(self.waiting(now), 1):
            if r.id == request_id:
                return i
        return None

    def free_advisors(self) -> list[Advisor]:
        free = [a for a in self.advisors.values() if a.state == "free"]
        return sorted(free, key=lambda a: (a.free_since, a.id))

    def _request(self, request_id: str) -> ConsultRequest:
        r = self.requests.get(request_id)
        if r is None:
            raise QueueError(404, "unknown_request", f"no open request {request_id}")
        return r

    def _advisor(self, advisor_id: str) -> Advisor:
        a = self.advisors.get(advisor_id)
        if a is None:
            a = self.advisors[advisor_id] = Advisor(advisor_id)
            self.dirty_advisors.add(advisor_id)
        return a

    def _touch_r(self, r: ConsultRequest) -> None:
        self.dirty_requests.add(r.id)

    def _touch_a(self, a: Advisor) -> None:
        self.dirty_advisors.add(a.id)

    # --- customers -----------------------------------------------------------------------

    def request(
        self, customer: str, request_id: str, now: float, *, slot_at: float | None = None
    ) -> ConsultRequest:
        """Ask for a consultation now (``slot_at`` None) or at a booked slot."""
        existing = self.active_for(customer)
        if existing is not None:
            return existing
        if slot_at is not None:
            if slot_at < now - SLOT_GRACE:
                raise QueueError(400, "invalid", "that slot is in the past")
            capacity = self.slot_capacity
            if capacity is None:
                capacity = max(1, len(self.advisors))
            booked = sum(
                1 for r in self.requests.values() if r.active and r.slot_at == slot_at
            )
            if booked >= capacity:
                raise QueueError(409, "slot_full", "that slot is fully booked")
        if request_id in self.requests:
            raise QueueError(409, "conflict", f"request id {request_id} exists")
        r = ConsultRequest(
            id=request_id, customer=customer, seq=self.next_seq, created_at=now, slot_at=slot_at
        )
        self.next_seq += 1
        self.requests[r.id] = r
        self._touch_r(r)
        self.assign(now)
        return r

    def cancel(self, request_id: str, now: float, *, by: str) -> ConsultRequest:
        """The customer leaves the queue (or gives up an assignment before the call)."""
        r = self._request(request_id)
        if r.customer != by:
            raise QueueError(403, "forbidden", "not your request")
        if r.state == "in_call":
            return self.end(request_id, now, by=by)
        if r.state not in ("waiting", "assigned"):
            return r
        self._finish(r, "cancelled", now)
        self.assign(now)
        return r

    # --- advisors ------------------------------------------------------------------------

    def available(self, advisor_id: str, now: float) -> Advisor:
        """The advisor takes customers (a no-op while busy, apart from ``seen_at``)."""
        a = self._advisor(advisor_id)
        a.seen_at = now
        if a.state == "offline":
            a.state = "free"
            a.free_since = now
        self._touch_a(a)
        self.assign(now)
        return a

    def away(self, advisor_id: str, now: float) -> Advisor:
        a = self._advisor(advisor_id)
        if a.state == "busy":
            raise QueueError(409, "busy", "finish the current consultation first")
        a.state = "offline"
        a.seen_at = now
        self._touch_a(a)
        return a

    def seen(self, advisor_id: str, now: float) -> None:
        a = self.advisors.get(advisor_id)
        if a is not None and a.state != "offline":
            a.seen_at = now
            self._touch_a(a)

    def accept(self, advisor_id: str, request_id: str, now: float) -> ConsultRequest:
        """The assigned advisor starts the call."""
        r = self._request(request_id)
        if r.advisor != advisor_id:
            raise QueueError(403, "forbidden", "this request is not assigned to you")
        if r.state == "in_call":
            return r
        if r.state != "assigned":
            raise QueueError(409, "conflict", f"request is {r.state}")
        r.state = "in_call"
        r.started_at = now
        self._touch_r(r)
        self.events.append(CallStarted(r.id, advisor_id))
        return r

    def end(self, request_id: str, now: float, *, by: str) -> ConsultRequest:
        """Either party ends the consultation; the advisor is free for the next one."""
        r = self._request(request_id)
        if by not in (r.customer, r.advisor):
            raise QueueError(403, "forbidden", "not your consultation")
        if not r.active:
            return r
        self._finish(r, "done" if r.state == "in_call" else "cancelled", now)
        self.assign(now)
        return r

    def _finish(self, r: ConsultRequest, state: RequestState, now: float) -> None:
        duration = now - r.started_at if r.started_at is not None else None
        advisor = r.advisor
        r.state = state
        r.ended_at = now
        self._touch_r(r)
        if advisor is not None:
            a = self.advisors.get(advisor)
            if a is not None and a.request == r.id:
                a.request = None
                a.state = "free"
                a.free_since = now
                self._touch_a(a)
        self.events.append(CallEnded(r.id, advisor, duration, state))

    def expire(self, now: float, ttl: float = ADVISOR_TTL) -> list[str]:
        """Take free advisors not seen for ``ttl`` offline; returns their ids."""
        gone = []
        for a in self.advisors.values():
            if a.state == "free" and a.seen_at < now - ttl:
                a.state = "offline"
                self._touch_a(a)
                gone.append(a.id)
        return gone

    # --- assignment ----------------------------------------------------------------------

    def assign(self, now: float) -> list[Assigned]:
        """Pair due waiting requests with free advisors (see the module rules)."""
        free = self.free_advisors()
        if not free:
            return []
        due = self.waiting(now)
        if self.reserve_ahead > 0:
            upcoming = sum(
                1
                for r in self.requests.values()
                if r.state == "waiting"
                and r.slot_at is not None
                and now < r.slot_at <= now + self.reserve_ahead
            )
            booked_due = [r for r in due if r.slot_at is not None]
            walk_ins = [r for r in due if r.slot_at is None]
            spare = max(0, len(free) - len(booked_due) - upcoming)
            due = booked_due + walk_ins[:spare]
        made = []
        for r, a in zip(due, free, strict=False):
            r.state = "assigned"
            r.advisor = a.id
            r.assigned_at = now
            a.state = "busy"
            a.request = r.id
            self._touch_r(r)
            self._touch_a(a)
            start = r.created_at if r.slot_at is None else max(r.created_at, r.slot_at)
            event = Assigned(r.id, r.customer, a.id, max(0.0, now - start))
            self.events.append(event)
            made.append(event)
        return made

    # --- checking ------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """AssertionError if the state breaks a rule of the module docstring."""
        holders: dict[str, list[str]] = {}
        customers: dict[str, list[str]] = {}
        for r in self.requests.values():
            if r.active:
                customers.setdefault(r.customer, []).append(r.id)
            if r.state in ("assigned", "in_call"):
                assert r.advisor is not None, r
                holders.setdefault(r.advisor, []).append(r.id)
            elif r.state == "waiting":
                assert r.advisor is None, r
        for c, ids in customers.items():
            assert len(ids) == 1, f"customer {c} has active requests {ids}"
        for adv, ids in holders.items():
            assert len(ids) == 1, f"advisor {adv} holds {ids}"
            a = self.advisors.get(adv)
            assert a is not None and a.state == "busy" and a.request == ids[0], (a, ids)
        for a in self.advisors.values():
            if a.state == "busy":
                assert holders.get(a.id) == [a.request], a
            else:
                assert a.request is None, a


def _order(r: ConsultRequest) -> tuple[int, float, int]:
    if r.slot_at is not None:
        return (0, r.slot_at, r.seq)
    return (1, 0.0, r.seq)
