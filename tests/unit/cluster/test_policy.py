"""The cluster policy on a virtual clock: liveness, origin choice, load spread, exclude."""

from __future__ import annotations

import pytest

from sfu.cluster.policy import (
    MAX_HOPS,
    NODE_TTL,
    ClusterView,
    Leases,
    Redirect,
    Serve,
    least_filled,
    place,
    rehome,
)
from sfu.cluster.types import NodeInfo, NodeInfoError

CASCADE = ("10.0.0.1", 4433)


def node(nid: str, viewers: int = 0, capacity: int = 10, cascade: bool = False,
         beat: int = 1) -> NodeInfo:
    return NodeInfo(node_id=nid, url=f"http://{nid}:8080", cascade=CASCADE if cascade else None,
                    viewers=viewers, sessions=viewers, capacity=capacity, beat=beat)


# --- membership --------------------------------------------------------------------------------


def test_node_dies_when_its_heartbeat_stops_moving_for_the_ttl() -> None:
    view = ClusterView("a")
    t = 100.0
    view.observe([node("a"), node("b")], t)
    for beat in range(2, 5):  # b keeps beating once a second
        t += 1.0
        assert view.observe([node("a", beat=beat), node("b", beat=beat)], t) == []
        assert view.expire(t) == []
    # b's record is still in Redis (its TTL has not run out) but its counter is stuck.
    stuck = t
    while t - stuck < NODE_TTL - 0.5:
        t += 0.5
        view.observe([node("a", beat=int(t)), node("b", beat=4)], t)
        assert view.expire(t) == [] and view.is_alive("b", t)
    t = stuck + NODE_TTL
    view.observe([node("a", beat=int(t)), node("b", beat=4)], t)
    assert [n.node_id for n in view.alive(t)] == ["a"]
    assert view.expire(t) == ["b"]
    assert not view.is_alive("b", t)
    assert view.expire(t + 10) == [], "reported once"


def test_node_whose_record_expired_is_reported_gone_at_once() -> None:
    view = ClusterView("a")
    view.observe([node("a"), node("b"), node("c")], 0.0)
    assert view.observe([node("a", beat=2), node("c", beat=2)], 1.0) == ["b"]
    assert [n.node_id for n in view.alive(1.0)] == ["a", "c"]


def test_self_is_never_expired_by_its_own_view() -> None:
    view = ClusterView("a")
    view.observe([node("a")], 0.0)
    assert view.expire(1000.0) == []
    assert view.observe([], 1000.0) == []
    assert view.is_alive("a", 1000.0)


def test_assigned_viewers_count_until_the_next_heartbeat() -> None:
    view = ClusterView("a")
    view.observe([node("a"), node("b", viewers=3)], 0.0)
    view.note_assigned("b")
    view.note_assigned("b")
    assert {n.node_id: n.viewers for n in view.alive(0.5)}["b"] == 5
    view.observe([node("a", beat=2), node("b", viewers=4, beat=2)], 1.0)
    assert {n.node_id: n.viewers for n in view.alive(1.0)}["b"] == 4


def test_node_record_round_trip_and_bad_records() -> None:
    info = node("n1", viewers=7, cascade=True, beat=42)
    assert NodeInfo.decode(info.encode()) == info
    for raw in ("", "[]", '{"id": "x"}', info.encode().replace('"viewers":7', '"viewers":-1')):
        with pytest.raises(NodeInfoError):
            NodeInfo.decode(raw)


# --- publishers --------------------------------------------------------------------------------


def test_publisher_claims_a_room_without_origin() -> None:
    assert place(role="publisher", me=node("a"), origin_id=None, alive=[node("b")]) == Serve(
        claim=True
    )


def test_new_room_goes_to_the_least_filled_node_when_this_one_is_full() -> None:
    full, b, c = node("a", viewers=10), node("b", viewers=8), node("c", viewers=3)
    assert place(role="publisher", me=full, origin_id=None, alive=[b, c]) == Redirect(c, "load")
    assert place(role="publisher", me=full, origin_id=None, alive=[b, c],
                 hops=MAX_HOPS) == Serve(claim=True)
    assert place(role="publisher", me=full, origin_id=None,
                 alive=[node("b", viewers=10)]) == Serve(claim=True)


def test_publisher_goes_to_the_live_origin() -> None:
    me, b = node("a"), node("b")
    assert place(role="publisher", me=me, origin_id="a", alive=[me, b]) == Serve()
    assert place(role="publisher", me=me, origin_id="b", alive=[me, b]) == Redirect(b, "origin")


def test_publisher_takes_over_a_dead_or_excluded_origin() -> None:
    me, b = node("a"), node("b")
    assert place(role="publisher", me=me, origin_id="dead", alive=[me, b]) == Serve(
        claim=True, replace="dead"
    )
    assert place(role="publisher", me=me, origin_id="b", alive=[me, b],
                 exclude=frozenset({"b"})) == Serve(claim=True, replace="b")


# --- viewers -----------------------------------------------------------------------------------


def test_viewer_without_cascade_goes_to_the_origin_whatever_the_load() -> None:
    me, b = node("a", viewers=0), node("b", viewers=10)
    assert place(role="viewer", me=me, origin_id="b", alive=[b]) == Redirect(b, "origin")
    assert place(role="viewer", me=b, origin_id="b", alive=[me]) == Serve()


def test_viewer_with_cascade_is_served_on_an_edge_with_room() -> None:
    me, origin = node("a", cascade=True), node("o", cascade=True)
    assert place(role="viewer", me=me, origin_id="o", alive=[origin]) == Serve(
        cascade_from=origin
    )


def test_full_edge_sends_viewers_to_the_least_filled_relay() -> None:
    me = node("a", viewers=10, cascade=True)
    origin = node("o", viewers=9, cascade=True)
    b = node("b", viewers=2, capacity=4, cascade=True)  # 50 % full
    c = node("c", viewers=4, capacity=20, cascade=True)  # 20 % full
    plain = node("p", viewers=0)  # no cascade: cannot serve a room it is not origin of
    placed = place(role="viewer", me=me, origin_id="o", alive=[origin, b, c, plain])
    assert placed == Redirect(c, "load")
    # The full origin sheds viewers too.
    assert place(role="viewer", me=node("o", viewers=10, cascade=True), origin_id="o",
                 alive=[b, c]) == Redirect(c, "load")


def test_load_spreads_over_a_burst_of_joins() -> None:
    """Redirects count against their target until its next heartbeat."""
    view = ClusterView("a")
    me = node("a", viewers=10, cascade=True)
    others = [node("o", cascade=True), node("b", cascade=True), node("c", cascade=True)]
    view.observe([me, *others], 0.0)
    sent: dict[str, int] = {}
    for _ in range(30):
        placed = place(role="viewer", me=me, origin_id="o", alive=view.alive(0.1))
        assert isinstance(placed, Redirect)
        view.note_assigned(placed.target.node_id)
        sent[placed.target.node_id] = sent.get(placed.target.node_id, 0) + 1
    assert sent == {"o": 10, "b": 10, "c": 10}


def test_viewer_of_a_room_without_origin_claims_where_it_is_served() -> None:
    assert place(role="viewer", me=node("a"), origin_id=None, alive=[]) == Serve(claim=True)
    full, b = node("a", viewers=10), node("b", viewers=1)
    assert place(role="viewer", me=full, origin_id=None, alive=[b]) == Redirect(b, "load")


def test_exclude_never_sends_a_client_back_to_a_failed_node() -> None:
    me = node("a", viewers=10, cascade=True)
    origin = node("o", viewers=10, cascade=True)
    dying = node("d", viewers=0, cascade=True)  # looks emptiest: its record has not expired
    ok = node("b", viewers=5, cascade=True)
    placed = place(role="viewer", me=me, origin_id="o", alive=[origin, dying, ok],
                   exclude=frozenset({"d"}))
    assert placed == Redirect(ok, "load")
    # Without the cascade: an excluded origin is not a target; the viewer waits here and
    # does not displace the origin while it is alive (only the host may).
    me2 = node("a")
    assert place(role="viewer", me=me2, origin_id="d", alive=[dying],
                 exclude=frozenset({"d"})) == Serve(claim=True)
    assert place(role="viewer", me=me2, origin_id="gone", alive=[dying],
                 exclude=frozenset({"d"})) == Serve(claim=True, replace="gone")


def test_a_node_never_excludes_itself() -> None:
    me = node("a")
    assert place(role="publisher", me=me, origin_id="a", alive=[],
                 exclude=frozenset({"a"})) == Serve()


def test_hops_stop_load_redirects_but_not_origin_redirects() -> None:
    me = node("a", viewers=10, cascade=True)
    origin = node("o", viewers=1, cascade=True)
    assert place(role="viewer", me=me, origin_id="o", alive=[origin],
                 hops=MAX_HOPS) == Serve(cascade_from=origin)
    plain_origin = node("o")
    assert place(role="viewer", me=node("a"), origin_id="o", alive=[plain_origin],
                 hops=MAX_HOPS) == Redirect(plain_origin, "origin")


def test_least_filled_prefers_share_then_count_then_id() -> None:
    assert least_filled([]) is None
    a, b = node("a", viewers=5, capacity=10), node("b", viewers=1, capacity=2)
    assert least_filled([a, b]) == b
    c, d = node("c", viewers=3, capacity=0), node("d", viewers=2, capacity=0)
    assert least_filled([a, c, d]) == d


# --- re-homing waiting clients ----------------------------------------------------------------


def test_rehome_claims_a_room_whose_origin_is_gone() -> None:
    assert rehome(me=node("a"), origin_id=None, alive=[node("b")]) == Serve(claim=True)
    assert rehome(me=node("a"), origin_id="x", alive=[node("b")]) == Serve(
        claim=True, replace="x")


def test_rehome_moves_clients_to_a_live_origin_or_relays_it() -> None:
    b = node("b")
    assert rehome(me=node("a"), origin_id="b", alive=[b]) == Redirect(b, "origin")
    bc = node("b", cascade=True)
    assert rehome(me=node("a", cascade=True), origin_id="b", alive=[bc]) == Serve(
        cascade_from=bc)
    assert rehome(me=node("a"), origin_id="a", alive=[]) == Serve()


# --- leases ------------------------------------------------------------------------------------


def test_lease_lapses_after_the_room_is_absent_for_the_grace() -> None:
    leases = Leases(grace=3.0)
    leases.touch("r1")
    leases.touch("r2")
    assert leases.sweep({"r1", "r2"}, 0.0) == []
    assert leases.sweep({"r2"}, 1.0) == []  # r1 absent since 1.0
    assert leases.sweep({"r2"}, 3.9) == []
    assert leases.sweep({"r1", "r2"}, 4.0) == []  # came back: the clock restarts
    assert leases.sweep({"r2"}, 5.0) == []
    assert leases.sweep({"r2"}, 8.0) == ["r1"]
    assert "r1" not in leases and "r2" in leases
