"""The queue stores: durable, atomic assignment against real SQLite (and Redis when
redis-server is installed), including several store instances racing on one database
like several nodes would."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalling.consult.domain import Queue, QueueError
from signalling.consult.store import ConsultStore, open_consult_store
from signalling.store import StoreError

REDIS = "/usr/bin/redis-server"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if not os.access(REDIS, os.X_OK):
        pytest.skip("redis-server not installed")
    from tests.integration.conftest import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
async def store_url(request: Any, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/commerce.db"
    else:
        yield request.getfixturevalue("redis_url")


async def test_roundtrip_and_durability(store_url: str) -> None:
    store = await open_consult_store(store_url)
    try:
        await store.transact("desk", lambda q: q.available("a1", 1.0))
        r, events, state = await store.transact("desk", lambda q: q.request("c1", "r1", 2.0))
        assert r.state == "assigned" and r.advisor == "a1"
        assert [type(e).__name__ for e in events] == ["Assigned"]
        assert state.advisors["a1"].state == "busy"
        with pytest.raises(QueueError):
            await store.transact("desk", lambda q: q.accept("a2", "r1", 3.0))
    finally:
        await store.close()
    # a fresh store (a restarted node) sees the committed state
    store = await open_consult_store(store_url)
    try:
        q = await store.snapshot("desk")
        assert q.requests["r1"].advisor == "a1" and q.next_seq == 2
        await store.transact("desk", lambda q: q.accept("a1", "r1", 4.0))
        await store.transact("desk", lambda q: q.end("r1", 5.0, by="c1"))
        done = await store.get_request("desk", "r1")
        assert done is not None and done.state == "done" and done.ended_at == 5.0
        assert "r1" not in (await store.snapshot("desk")).requests
        latest = await store.latest_for("desk", "c1")
        assert latest is not None and latest.id == "r1"
        assert await store.latest_for("desk", "nobody") is None
        # queues are separate
        assert (await store.snapshot("other")).advisors == {}
    finally:
        await store.close()


async def test_refused_operation_changes_nothing(store_url: str) -> None:
    store = await open_consult_store(store_url)
    try:
        await store.transact("desk", lambda q: q.request("c1", "r1", 1.0))

        def half_then_fail(q: Queue) -> None:
            q.available("a1", 2.0)  # would assign r1...
            raise QueueError(409, "conflict", "changed my mind")

        with pytest.raises(QueueError):
            await store.transact("desk", half_then_fail)
        q = await store.snapshot("desk")
        assert q.requests["r1"].state == "waiting" and "a1" not in q.advisors
    finally:
        await store.close()


async def test_racing_nodes_never_double_assign(store_url: str) -> None:
    """Four store instances (four "nodes") on one database; 12 customers and 6 advisors
    arrive concurrently, then every call ends concurrently. At no commit does an advisor
    hold two customers or a customer two advisors, and everybody is served once."""
    stores = [await open_consult_store(store_url) for _ in range(4)]
    try:
        ops = []
        for i in range(12):
            ops.append((f"c{i}", lambda q, i=i: q.request(f"c{i}", f"r{i}", float(i))))
        for i in range(6):
            ops.append((f"a{i}", lambda q, i=i: q.available(f"a{i}", float(i))))
        assignments: list[tuple[str, str]] = []

        async def run(k: int, fn: Any) -> None:
            _, events, state = await stores[k % 4].transact("desk", fn)
            state.check_invariants()
            assignments.extend((e.request, e.advisor) for e in events if type(e).__name__ == "Assigned")

        await asyncio.gather(*(run(k, fn) for k, (_, fn) in enumerate(ops)))
        q = await stores[0].snapshot("desk")
        q.check_invariants()
        assert len(assignments) == 6
        assert len({r for r, _ in assignments}) == 6 and len({a for _, a in assignments}) == 6
        # end every call concurrently; the waiting six get the freed advisors
        held = [(r.id, r.customer) for r in q.requests.values() if r.state == "assigned"]
        await asyncio.gather(*(
            run(k, lambda q, rid=rid, c=c: q.end(rid, 100.0, by=c))
            for k, (rid, c) in enumerate(held)
        ))
        q = await stores[1].snapshot("desk")
        q.check_invariants()
        assert len(assignments) == 12
        assert len({r for r, _ in assignments}) == 12
        assert sorted(r.id for r in q.requests.values()) == sorted(
            {f"r{i}" for i in range(12)} - {rid for rid, _ in held}
        )
    finally:
        for s in stores:
            await s.close()


async def test_closed_store_refuses(tmp_path: Path) -> None:
    store = await open_consult_store(f"sqlite:///{tmp_path}/c.db")
    await store.close()
    with pytest.raises(StoreError):
        await store.transact("desk", lambda q: None)
    with pytest.raises(ValueError):
        await open_consult_store("sqlite:///:memory:")


# --- the SQLite store follows the pure model step by step ------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["request", "book", "available", "away", "accept", "end", "tick"]),
        st.integers(0, 4),
        st.floats(0, 50),
    ),
    max_size=40,
)


def _apply(q: Queue, op: str, i: int, now: float, n: int) -> Any:
    if op == "request":
        return q.request(f"c{i}", f"r{n}", now)
    if op == "book":
        return q.request(f"c{i}", f"r{n}", now, slot_at=now + 30)
    if op == "available":
        return q.available(f"a{i % 3}", now)
    if op == "away":
        return q.away(f"a{i % 3}", now)
    active = sorted((r for r in q.requests.values() if r.active), key=lambda r: r.seq)
    if op == "accept":
        assigned = [r for r in active if r.state == "assigned"]
        if assigned:
            r = assigned[i % len(assigned)]
            assert r.advisor is not None
            return q.accept(r.advisor, r.id, now)
        return None
    if op == "end" and active:
        r = active[i % len(active)]
        return q.end(r.id, now, by=r.customer)
    q.assign(now)
    return None


def _state(q: Queue) -> tuple[Any, ...]:
    return (
        sorted((r.id, r.state, r.advisor, r.customer) for r in q.requests.values() if r.active),
        sorted((a.id, a.state, a.request) for a in q.advisors.values()),
        q.next_seq,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_sqlite_store_matches_the_model(ops: list[tuple[str, int, float]], tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / f"model-{os.getpid()}-{id(ops)}.db"
        store: ConsultStore = await open_consult_store(f"sqlite:///{path}")
        model = Queue()
        now = 0.0
        try:
            for n, (op, i, dt) in enumerate(ops):
                now += dt
                try:
                    _apply(model, op, i, now, n)
                    model_error = None
                except QueueError as exc:
                    model_error = exc.code
                try:
                    await store.transact("q", lambda q, op=op, i=i, now=now, n=n: _apply(q, op, i, now, n))
                    store_error = None
                except QueueError as exc:
                    store_error = exc.code
                assert model_error == store_error
                snap = await store.snapshot("q")
                snap.check_invariants()
                assert _state(snap) == _state(model)
        finally:
            await store.close()
            path.unlink(missing_ok=True)

    asyncio.run(main())
