"""Two real nodes in one process sharing a real redis-server: registry, expiry, redirects,
commerce fan-out across nodes and orders placed on both nodes at once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bench.clients.media import SyntheticVideoTrack
from bench.clients.whip import whep_play, whip_publish
from tests.e2e.commerce_clients import api, close_viewers, connect_viewers, setup_sale
from tests.integration.conftest import RedisServer

ROOM = "show"
CASCADE_PORT = 4433


class RecordingCascade:
    """Stands in for the QUIC cascade: records what the cluster layer asks of it."""

    def __init__(self) -> None:
        self.subscribed: list[tuple[str, tuple[str, int]]] = []
        self.unsubscribed: list[str] = []

    async def subscribe(self, room: str, origin: tuple[str, int]) -> None:
        self.subscribed.append((room, origin))

    async def unsubscribe(self, room: str) -> None:
        self.unsubscribed.append(room)

    # What the node itself calls on its cascade (sfu.cascade.Cascade): nothing to do here.
    async def stop(self) -> None:
        pass

    def tracks_changed(self, room: Any) -> None:
        pass

    def on_sender_report(self, receiver: Any, sr: Any) -> None:
        pass

    def relayed(self, track: Any) -> bool:
        return False


async def start_node(settings: Any, node_id: str, cascade: bool) -> Any:
    from sfu.node import Node

    data_dir = settings.data_dir.parent / node_id
    data_dir.mkdir()
    node = Node(dataclasses.replace(
        settings, data_dir=data_dir, node_id=node_id,
        cascade_port=CASCADE_PORT if cascade else 0,
    ))
    if cascade:
        node.cascade = RecordingCascade()
    await asyncio.wait_for(node.start(), 15)
    return node


@pytest.fixture
def cluster_settings(node_settings: Any, redis_server: RedisServer) -> Any:
    return dataclasses.replace(
        node_settings, cluster_redis_url=redis_server.url, store_url=redis_server.url
    )


@pytest.fixture
async def plain_pair(cluster_settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    n1 = await start_node(cluster_settings, "n1", False)
    n2 = await start_node(cluster_settings, "n2", False)
    try:
        await n1.cluster.heartbeat()
        await n2.cluster.heartbeat()
        yield n1, n2
    finally:
        for n in (n2, n1):
            await asyncio.wait_for(n.stop(), 30)


@pytest.fixture
async def cascade_pair(cluster_settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    n1 = await start_node(cluster_settings, "n1", True)
    n2 = await start_node(cluster_settings, "n2", True)
    try:
        await n1.cluster.heartbeat()
        await n2.cluster.heartbeat()
        yield n1, n2
    finally:
        for n in (n2, n1):
            await asyncio.wait_for(n.stop(), 30)


async def post(url: str, token: str, body: bytes = b"v=0\r\n") -> aiohttp.ClientResponse:
    """One POST without following redirects; the response is read and returned."""
    async with aiohttp.ClientSession() as http, http.post(
        url, data=body, allow_redirects=False,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"},
    ) as resp:
        await resp.read()
        return resp


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> None:  # noqa: ASYNC109
    """Poll ``predicate`` every 50 ms until true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


async def metric(node: Any, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(node.http_url + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- registry ----------------------------------------------------------------------------------


async def test_nodes_register_and_see_each_other(plain_pair: tuple[Any, Any]) -> None:
    n1, n2 = plain_pair
    assert n1.cluster.node_urls() == [n1.http_url, n2.http_url]
    assert n2.cluster.node_urls() == [n2.http_url, n1.http_url]
    assert await metric(n1, "sfu_cluster_nodes ") == 2
    async with aiohttp.ClientSession() as http, http.get(n2.http_url + "/healthz") as resp:
        assert (await resp.json())["node"] == "n2"
        assert resp.headers["X-SFU-Node"] == "n2"


async def test_node_that_stops_heartbeating_expires_and_its_rooms_are_released(
    plain_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = plain_pair
    assert await n2.cluster.directory.claim(ROOM, "n2") == "n2"
    # n2 hangs: no more heartbeats, but its record is still in Redis until the TTL.
    n2.cluster._task.cancel()
    await until(lambda: "n2" not in [n.node_id for n in n1.cluster.view.alive(n1.now())],
                10, "n1 forgets n2")
    await until(lambda: n1.cluster.released_dead["n2"] == 1, 5, "n2's room released")
    assert await n1.cluster.directory.origin(ROOM) is None
    assert n1.cluster.node_urls() == [n1.http_url]
    # The next publisher claims the room on a live node.
    resp = await post(f"{n1.http_url}/whip/{ROOM}", mint(ROOM, "host", "publish"))
    assert resp.status == 400  # the body is no SDP, but the claim was made first
    assert await n1.cluster.directory.origin(ROOM) == "n1"


async def test_draining_node_leaves_the_registry_and_its_rooms(
    plain_pair: tuple[Any, Any],
) -> None:
    n1, n2 = plain_pair
    assert await n2.cluster.directory.claim(ROOM, "n2") == "n2"
    n2.drain()
    for _ in range(100):  # leaving is two round trips, started by drain()
        if await n1.cluster.directory.origin(ROOM) is None:
            break
        await asyncio.sleep(0.05)
    await n1.cluster.heartbeat()
    assert "n2" not in [n.node_id for n in await n1.cluster.directory.nodes()]
    assert n1.cluster.node_urls() == [n1.http_url]
    assert await n1.cluster.directory.origin(ROOM) is None


async def test_node_refuses_to_start_without_its_cluster_redis(node_settings: Any) -> None:
    from bench.ports import free_port
    from sfu.cluster.agent import ClusterUnavailable
    from sfu.node import Node

    node = Node(dataclasses.replace(
        node_settings, cluster_redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        with pytest.raises(ClusterUnavailable, match="cannot reach the cluster Redis"):
            await node.start()
    finally:
        await node.stop()


# --- redirects ---------------------------------------------------------------------------------


async def test_whip_and_whep_redirect_to_the_origin_without_cascade(
    plain_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = plain_pair
    host = mint(ROOM, "host", ["publish"])
    publisher = await whip_publish(
        n2.http_url, ROOM, host, [SyntheticVideoTrack(width=160, height=120, fps=15)]
    )
    try:
        assert publisher.location.startswith(n2.http_url + "/whip/")
        assert await n1.cluster.directory.origin(ROOM) == "n2"
        # A second publisher request on n1: 307 to the origin, same path.
        resp = await post(f"{n1.http_url}/whip/{ROOM}", host)
        assert resp.status == 307
        assert resp.headers["Location"] == f"{n2.http_url}/whip/{ROOM}?hops=1"
        assert resp.headers["X-SFU-Node"] == "n1"
        # A viewer on n1 is sent to the origin and plays there.
        viewer = mint(ROOM, "v1", ["subscribe"])
        resp = await post(f"{n1.http_url}/whep/{ROOM}?layer=low", viewer)
        assert resp.status == 307
        assert resp.headers["Location"] == f"{n2.http_url}/whep/{ROOM}?layer=low&hops=1"
        player = await whep_play(n1.http_url, ROOM, viewer, audio=False)
        try:
            assert player.location.startswith(n2.http_url + "/whep/")
            await player.wait_for_frames(3, timeout=15)
        finally:
            await player.close()
    finally:
        await publisher.close()
    assert await metric(n1, 'sfu_cluster_redirects_total{kind="whip",reason="origin"}') == 1
    assert await metric(n1, 'sfu_cluster_redirects_total{kind="whep",reason="origin"}') == 2


async def test_exclude_keeps_clients_off_a_node_that_failed(
    plain_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = plain_pair
    assert await n2.cluster.directory.claim(ROOM, "n2") == "n2"
    viewer, host = mint(ROOM, "v1", ["subscribe"]), mint(ROOM, "host", ["publish"])
    # A viewer that saw n2 fail waits on n1; it does not displace the (registered) origin.
    resp = await post(f"{n1.http_url}/whep/{ROOM}?exclude=n2", viewer)
    assert resp.status == 400 and resp.headers["X-SFU-Node"] == "n1"
    assert await n1.cluster.directory.origin(ROOM) == "n2"
    # The host reconnecting after n2 failed takes the room over at once.
    resp = await post(f"{n1.http_url}/whip/{ROOM}?exclude=n2", host)
    assert resp.status == 400 and resp.headers["X-SFU-Node"] == "n1"
    assert await n1.cluster.directory.origin(ROOM) == "n1"
    # Now n2 sends both kinds to n1, and keeps the exclusion in the redirect.
    resp = await post(f"{n2.http_url}/whep/{ROOM}?exclude=n9", viewer)
    assert resp.status == 307
    assert resp.headers["Location"] == f"{n1.http_url}/whep/{ROOM}?exclude=n9&hops=1"


async def test_room_socket_gets_a_redirect_message(
    plain_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = plain_pair
    assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(n2.http_url + "/ws?exclude=n7") as ws:
            await ws.send_str(json.dumps(
                {"type": "join", "id": 1, "token": mint(ROOM, "v", ["subscribe"])}))
            msg = json.loads(await ws.receive_str(timeout=10))
            assert msg == {
                "v": 1, "type": "redirect", "id": 1, "node": "n1", "reason": "origin",
                "url": n1.http_url.replace("http", "ws", 1) + "/ws?hops=1&exclude=n7",
                "node_url": n1.http_url,
            }
            closed = await ws.receive(timeout=10)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        async with http.ws_connect(n1.http_url + "/ws") as ws:
            await ws.send_str(json.dumps(
                {"type": "join", "id": 1, "token": mint(ROOM, "v", ["subscribe"])}))
            joined = json.loads(await ws.receive_str(timeout=10))
            assert joined["type"] == "joined"
            assert joined["node"] == "n1" and joined["nodes"] == [n1.http_url, n2.http_url]
    assert await metric(n2, 'sfu_cluster_redirects_total{kind="ws",reason="origin"}') == 1


async def test_viewer_on_an_edge_with_cascade_is_served_there(
    cascade_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = cascade_pair
    assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
    resp = await post(f"{n2.http_url}/whep/{ROOM}", mint(ROOM, "v", ["subscribe"]))
    assert resp.status == 400 and resp.headers["X-SFU-Node"] == "n2"
    assert n2.cascade.subscribed == [(ROOM, ("127.0.0.1", CASCADE_PORT))]
    # Publishers still go to the origin.
    resp = await post(f"{n2.http_url}/whip/{ROOM}", mint(ROOM, "h", ["publish"]))
    assert resp.status == 307 and resp.headers["Location"].startswith(n1.http_url)


async def test_full_node_sends_viewers_to_the_least_filled_node(
    cluster_settings: Any, mint: Callable[..., str],
) -> None:
    nodes = [await start_node(dataclasses.replace(cluster_settings, node_capacity=cap), nid, True)
             for nid, cap in (("n1", 1), ("n2", 0), ("n3", 10))]
    try:
        n1, n2, n3 = nodes
        for n in nodes:
            await n.cluster.heartbeat()
        assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
        # One viewer fills n1 (capacity 1).
        first = await connect_viewers(n1.http_url, ROOM, ["v0"], lambda n: mint(ROOM, n, "subscribe"))
        try:
            viewer = mint(ROOM, "v1", ["subscribe"])
            resp = await post(f"{n1.http_url}/whep/{ROOM}", viewer)
            # n2 (no limit) and n3 (empty) tie on fill and viewers: the id decides.
            assert resp.status == 307 and resp.headers["Location"].startswith(n2.http_url)
            resp = await post(f"{n1.http_url}/whep/{ROOM}?exclude=n2", viewer)
            assert resp.status == 307 and resp.headers["Location"].startswith(n3.http_url)
            assert "exclude=n2" in resp.headers["Location"]
            assert await metric(n1, 'sfu_cluster_redirects_total{kind="whep",reason="load"}') == 2
        finally:
            await close_viewers(first)
    finally:
        for n in reversed(nodes):
            await asyncio.wait_for(n.stop(), 30)


# --- commerce across nodes ---------------------------------------------------------------------


async def test_admin_action_on_either_node_reaches_viewers_on_both_with_one_seq(
    cascade_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = cascade_pair
    admin = mint(ROOM, "host", ["admin", "publish"])
    await setup_sale(n1.http_url, ROOM, admin, product="p1", sale="s1", stock=50)
    assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
    v1 = await connect_viewers(n1.http_url, ROOM, ["a"], lambda n: mint(ROOM, n, "subscribe"))
    v2 = await connect_viewers(n2.http_url, ROOM, ["b"], lambda n: mint(ROOM, n, "subscribe"))
    try:
        viewers = v1 + v2
        assert n2.cascade.subscribed, "the viewer on n2 is served over the cascade"
        assert {v.of_type("snapshot")[0]["seq"] for v in viewers} == {
            v1[0].of_type("snapshot")[0]["seq"]}
        status, body = await api(n1.http_url, "POST", f"/api/rooms/{ROOM}/card", admin,
                                 {"product_id": "p1"})
        assert status == 200, body
        cards = [await v.next_of("product.card", 0) for v in viewers]
        assert [c["seq"] for c in cards] == [body["seq"], body["seq"]]
        # An admin action on the other node: the next seq, on both nodes.
        status, body = await api(n2.http_url, "POST", f"/api/rooms/{ROOM}/sales/s1/stop",
                                 admin)
        assert status == 200, body
        ends = [await v.next_of("sale.ended", 0) for v in viewers]
        assert [e["seq"] for e in ends] == [cards[0]["seq"] + 1] * 2
        # A node that loads the room later agrees on the seq and the pinned card.
        status, state = await api(n2.http_url, "GET", f"/api/rooms/{ROOM}/state", admin)
        assert status == 200 and state["seq"] == ends[0]["seq"] and state["card"] == "p1"
    finally:
        await close_viewers(viewers)


async def test_orders_on_two_nodes_never_oversell(
    cascade_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = cascade_pair
    stock, per_node, keys = 7, 4, 3
    admin = mint(ROOM, "host", ["admin"])
    await setup_sale(n2.http_url, ROOM, admin, product="drop", sale="flash", stock=stock)
    assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
    groups = [
        await connect_viewers(n.http_url, ROOM, [f"{n.node_id}-{i}" for i in range(per_node)],
                              lambda name: mint(ROOM, name, "subscribe"))
        for n in (n1, n2)
    ]
    viewers = [v for g in groups for v in g]
    try:
        for v in viewers:
            for k in range(keys):
                v.order(f"k{k}", "drop", "flash")
        await asyncio.gather(*(
            v.wait_for(lambda v: len(v.results) == keys, 30) for v in viewers))
        statuses = Counter(r[0]["status"] for v in viewers for r in v.results.values())
        assert statuses == {"confirmed": stock, "sold_out": len(viewers) * keys - stock}
        confirmed_by_node = Counter(
            v.name.split("-")[0] for v in viewers for r in v.results.values()
            if r[0]["status"] == "confirmed")
        status, orders = await api(n1.http_url, "GET", f"/api/rooms/{ROOM}/orders", admin)
        assert status == 200 and orders["count"] == stock, orders
        assert sum(confirmed_by_node.values()) == stock
        # A viewer that fails over to the other node and re-sends its orders with the same
        # keys (as client.js does) gets the recorded results, never a second decision.
        [moved] = await connect_viewers(n2.http_url, ROOM, ["n1-0"],
                                        lambda name: mint(ROOM, name, "subscribe"))
        viewers.append(moved)
        for k in range(keys):
            moved.order(f"k{k}", "drop", "flash")
        await moved.wait_for(lambda v: len(v.results) == keys, 30)
        first = next(v for v in groups[0] if v.name == "n1-0")
        assert {k: r[0] for k, r in moved.results.items()} == {
            k: r[0] for k, r in first.results.items()}
        # Every viewer, on either node, ends on stock 0 with increasing seqs.
        for v in viewers:
            await v.wait_for(lambda v: any(m.get("stock") == 0 for m in v.of_type(
                "stock.updated")), 10)
            seqs = [m["seq"] for m in v.inbox if m.get("seq") is not None]
            assert seqs == sorted(seqs), v.name
    finally:
        await close_viewers(viewers)


# --- re-homing ---------------------------------------------------------------------------------


async def join(http: aiohttp.ClientSession, url: str, token: str) -> Any:
    ws = await http.ws_connect(url)
    await ws.send_str(json.dumps({"type": "join", "id": 1, "token": token}))
    joined = json.loads(await ws.receive_str(timeout=10))
    assert joined["type"] == "joined", joined
    return ws


async def test_waiting_viewer_is_moved_to_the_origin_it_excluded_by_mistake(
    plain_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = plain_pair
    assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
    async with aiohttp.ClientSession() as http:
        # The viewer believes n1 failed: it waits on n2, which does not displace n1.
        ws = await join(http, n2.http_url + "/ws?exclude=n1", mint(ROOM, "v", ["subscribe"]))
        assert await n2.cluster.directory.origin(ROOM) == "n1"
        # n1 keeps beating, so n2's next heartbeat sends the viewer there.
        await n1.cluster.heartbeat()
        await n2.cluster.heartbeat()
        msg = json.loads(await ws.receive_str(timeout=10))
        assert msg["type"] == "redirect" and msg["node"] == "n1", msg
        assert msg["url"] == n1.http_url.replace("http", "ws", 1) + "/ws?hops=1"
        await ws.close()
    # (The background heartbeat may have told it too before the socket closed.)
    assert await metric(n2, 'sfu_cluster_redirects_total{kind="moved",reason="origin"}') >= 1


async def test_waiting_viewer_keeps_the_room_when_the_origin_dies(
    plain_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = plain_pair
    assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
    async with aiohttp.ClientSession() as http:
        ws = await join(http, n2.http_url + "/ws?exclude=n1", mint(ROOM, "v", ["subscribe"]))
        # n1 dies: its record is gone by the next registry read.
        n1.cluster._task.cancel()
        await n1.cluster.directory.deregister("n1")
        await n2.cluster.heartbeat()
        assert await n2.cluster.directory.origin(ROOM) == "n2"
        assert ROOM in n2.cluster.origins
        # The host that comes back is sent to the viewer's node.
        resp = await post(f"{n2.http_url}/whip/{ROOM}", mint(ROOM, "h", ["publish"]))
        assert resp.status == 400 and resp.headers["X-SFU-Node"] == "n2"
        assert not ws.closed
        await ws.close()


async def test_timed_sale_start_is_announced_once_across_nodes(
    cascade_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    """Both nodes hold the room and fire the sale timer; the feed publishes one of them."""
    n1, n2 = cascade_pair
    admin = mint(ROOM, "host", ["admin"])
    await setup_sale(n1.http_url, ROOM, admin, product="p1", sale="s1", stock=5,
                     starts_in=1.5, duration=60)
    assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
    viewers = [
        *await connect_viewers(n1.http_url, ROOM, ["a"], lambda n: mint(ROOM, n, "subscribe")),
        *await connect_viewers(n2.http_url, ROOM, ["b"], lambda n: mint(ROOM, n, "subscribe")),
    ]
    try:
        started = [await v.next_of("sale.started", 0, timeout=15) for v in viewers]
        assert started[0]["seq"] == started[1]["seq"]
        feeds = [n.commerce.stats.feed for n in (n1, n2)]
        await until(lambda: sum(f["deduplicated"] for f in feeds) == 1, 10,
                    "the second node's announcement is dropped")
        # Both timers have fired and one was dropped: no second sale.started can come.
        assert [len(v.of_type("sale.started")) for v in viewers] == [1, 1]
    finally:
        await close_viewers(viewers)


async def test_stalled_origin_takes_its_rooms_back_or_yields_them(
    plain_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = plain_pair
    async with aiohttp.ClientSession() as http:
        ws = await join(http, n1.http_url + "/ws", mint(ROOM, "v", ["subscribe"]))
        other = "other-room"
        ws2 = await join(http, n1.http_url + "/ws", mint(other, "v", ["subscribe"]))
        assert await n1.cluster.directory.origin(ROOM) == "n1"
        assert await n1.cluster.directory.origin(other) == "n1"
        # n2 thought n1 dead (n1's loop stalled) and released its rooms; then a host took
        # `other` on n2.
        assert set(await n2.cluster.directory.release_node("n1")) == {ROOM, other}
        assert await n2.cluster.directory.claim(other, "n2") == "n2"
        await n2.cluster.heartbeat()
        await n1.cluster.heartbeat()
        assert await n1.cluster.directory.origin(ROOM) == "n1"  # taken back
        assert ROOM in n1.cluster.origins and other not in n1.cluster.origins
        # The viewer of the room n2 holds now is sent there; the other one stays.
        msg = json.loads(await ws2.receive_str(timeout=10))
        assert msg["type"] == "redirect" and msg["node"] == "n2", msg
        assert not ws.closed
        await ws.close()
        await ws2.close()


async def test_lost_feed_subscription_resyncs_viewers_with_a_snapshot(
    plain_pair: tuple[Any, Any], mint: Callable[..., str], redis_server: RedisServer,
) -> None:
    n1, _ = plain_pair
    admin = mint(ROOM, "host", ["admin"])
    await setup_sale(n1.http_url, ROOM, admin, product="p1", sale="s1", stock=5)
    [viewer] = await connect_viewers(n1.http_url, ROOM, ["a"], lambda n: mint(ROOM, n, "subscribe"))
    try:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_server.url)
        try:
            killed = await client.client_kill_filter(_type="pubsub")
        finally:
            await client.aclose()
        assert killed >= 2  # both nodes' feeds
        # The card pinned while the feed is down would be missed; the snapshot after the
        # reconnect carries it.
        status, body = await api(n1.http_url, "POST", f"/api/rooms/{ROOM}/card", admin,
                                 {"product_id": "p1"})
        assert status == 200, body
        await viewer.wait_for(lambda v: len(v.of_type("snapshot")) >= 2, 10)
        await viewer.wait_for(
            lambda v: v.of_type("snapshot")[-1]["card"] is not None
            or v.of_type("product.card"), 10)
        assert n1.commerce.bus.feed_errors >= 1
    finally:
        await close_viewers([viewer])


async def test_studio_counters_add_up_viewers_and_carts_of_every_node(
    cascade_pair: tuple[Any, Any], mint: Callable[..., str],
) -> None:
    n1, n2 = cascade_pair
    admin = mint(ROOM, "host", ["admin"])
    await setup_sale(n1.http_url, ROOM, admin, product="p1", sale="s1", stock=5)
    assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
    viewers = [
        *await connect_viewers(n1.http_url, ROOM, ["a"], lambda n: mint(ROOM, n, "subscribe")),
        *await connect_viewers(n2.http_url, ROOM, ["b", "c"],
                               lambda n: mint(ROOM, n, "subscribe")),
    ]
    try:
        viewers[2].send({"v": 1, "type": "cart.add", "product_id": "p1", "quantity": 1})
        await viewers[2].wait_for(lambda v: v.of_type("cart.updated"), 10)
        for node in (n1, n2):  # what the once-a-second presence loop does
            await node.commerce.report_presence()
        for node in (n1, n2):
            status, state = await api(node.http_url, "GET", f"/api/rooms/{ROOM}/state", admin)
            assert status == 200
            assert (state["viewers"], state["carts"]) == (3, 1), (node.node_id, state)
    finally:
        await close_viewers(viewers)


async def test_edge_follows_the_room_to_its_new_origin(
    cluster_settings: Any, mint: Callable[..., str],
) -> None:
    nodes = [await start_node(cluster_settings, nid, True) for nid in ("n1", "n2", "n3")]
    try:
        n1, n2, n3 = nodes
        for n in nodes:
            await n.cluster.heartbeat()
        assert await n1.cluster.directory.claim(ROOM, "n1") == "n1"
        viewers = await connect_viewers(n2.http_url, ROOM, ["v"],
                                        lambda n: mint(ROOM, n, "subscribe"))
        try:
            assert len(n2.cascade.subscribed) == 1 and n2.cluster.relay_from[ROOM] == "n1"
            await n2.cluster.heartbeat()
            assert len(n2.cascade.subscribed) == 1, "relaying from the live origin: no change"
            # n1 dies and the host re-publishes on n3, which takes the room over.
            n1.cluster._task.cancel()
            await n1.cluster.directory.deregister("n1")
            assert await n3.cluster.directory.claim(ROOM, "n3", replace="n1") == "n3"
            await n3.cluster.heartbeat()
            await n2.cluster.heartbeat()
            assert n2.cluster.relay_from[ROOM] == "n3"
            assert len(n2.cascade.subscribed) == 2
            # Then n3 dies too, and nobody holds the room: the edge with viewers takes it.
            n3.cluster._task.cancel()
            await n3.cluster.directory.deregister("n3")
            await n2.cluster.heartbeat()
            assert await n2.cluster.directory.origin(ROOM) == "n2"
            assert n2.cascade.unsubscribed == [ROOM] and ROOM not in n2.cluster.relay_from
        finally:
            await close_viewers(viewers)
    finally:
        for n in reversed(nodes):
            await asyncio.wait_for(n.stop(), 30)
