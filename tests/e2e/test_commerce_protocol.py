"""Commerce over real datachannels and the operator API: snapshot, seq, cards, sales, time,
bad input, authorisation and the OpenAPI document."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from signalling.http import OPENAPI
from tests.e2e.commerce_clients import Viewer, api, close_viewers, connect_viewers, setup_sale

ROOM = "shop"


async def _viewers(
    node: Any, mint: Callable[..., str], names: list[str], grants: list[str] | None = None
) -> list[Viewer]:
    return await connect_viewers(
        node.http_url, ROOM, names, lambda name: mint(ROOM, name, grants or ["subscribe"])
    )


async def test_openapi_lists_every_route(node: Any) -> None:
    app = node._runner.app
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/api/")
    }
    assert len(routes) >= 10
    for method, path in routes:
        assert method in OPENAPI["paths"].get(path, {}), (method, path)
    status, doc = await api(node.http_url, "GET", "/api/openapi.json", None)
    assert status == 200 and doc["openapi"].startswith("3.")
    assert doc["paths"].keys() == OPENAPI["paths"].keys()


async def test_operator_api_auth_and_validation(node: Any, mint: Callable[..., str]) -> None:
    url = node.http_url
    path = f"/api/rooms/{ROOM}/products"
    product = {"id": "p1", "name": "Mug", "price_cents": 900, "currency": "EUR", "stock": 5}
    status, reason = await api(url, "POST", path, None, product)
    assert status == 401 and "unauthorized" in reason
    status, reason = await api(url, "POST", path, "not-a-jwt", product)
    assert status == 401
    status, reason = await api(url, "POST", path, mint(ROOM, "v", ["subscribe"]), product)
    assert status == 403 and "admin" in reason
    status, reason = await api(url, "POST", path, mint("other", "h", ["admin"]), product)
    assert status == 403 and "other" in reason
    admin = mint(ROOM, "host", ["admin"])
    for bad, needle in [
        ({**product, "price_cents": -1}, "price_cents"),
        ({**product, "currency": "euro"}, "currency"),
        ({**product, "surprise": 1}, "surprise"),
        ({k: v for k, v in product.items() if k != "name"}, "name"),
        ({**product, "image_url": "javascript:alert(1)"}, "image_url"),
    ]:
        status, reason = await api(url, "POST", path, admin, bad)
        assert status == 400 and needle in reason, (bad, status, reason)
    status, reason = await api(url, "POST", path, admin, raw=b"{nope")
    assert status == 400 and "JSON" in reason
    status, reason = await api(url, "POST", path, admin, product, content_type="text/plain")
    assert status == 415
    status, body = await api(url, "POST", path, admin, product)
    assert status == 201 and body["stock"] == 5
    status, reason = await api(url, "POST", path, admin, product)
    assert status == 409
    status, reason = await api(url, "POST", f"/api/rooms/{ROOM}/card", admin, {"product_id": "nope"})
    assert status == 404
    status, reason = await api(url, "POST", f"/api/rooms/{ROOM}/sales/nope/start", admin)
    assert status == 404
    now = time.time()
    status, reason = await api(url, "POST", f"/api/rooms/{ROOM}/sales", admin, {
        "product_id": "p1", "starts_at": now + 10, "ends_at": now})
    assert status == 400 and "ends_at" in reason
    status, listing = await api(url, "GET", path, admin)
    assert status == 200 and [p["id"] for p in listing["products"]] == ["p1"]


async def test_snapshot_seq_card_and_sale_lifecycle(node: Any, mint: Callable[..., str]) -> None:
    url = node.http_url
    admin = mint(ROOM, "host", ["admin"])
    await setup_sale(url, ROOM, admin, product="tee", sale="s1", stock=7, starts_in=3600)
    [a, b] = await _viewers(node, mint, ["a", "b"])
    try:
        snap = a.of_type("snapshot")[0]
        assert snap["sale"]["sale_id"] == "s1" and snap["sale"]["state"] == "scheduled"
        assert snap["stock"] == 7 and snap["card"] is None and snap["cart"] == []
        mark = len(a.inbox)
        status, pinned = await api(url, "POST", f"/api/rooms/{ROOM}/card", admin, {"product_id": "tee"})
        assert status == 200
        card = await a.next_of("product.card", mark)
        assert card["product_id"] == "tee" and card["stock"] == 7 and card["seq"] == pinned["seq"]
        assert abs(card["pinned_at"] - time.time()) < 5
        # Sale: start now, an order, stop; the server decides open/closed.
        a.order("o1", "tee", "s1")
        result = await a.wait_for(lambda v: v.results.get("o1"))
        assert result[0]["status"] == "sale_not_open"
        mark = len(a.inbox)
        status, sale = await api(url, "POST", f"/api/rooms/{ROOM}/sales/s1/start", admin)
        assert status == 200 and sale["state"] == "open"
        started = await a.next_of("sale.started", mark)
        assert started["starts_at"] <= time.time() < started["ends_at"]
        a.order("o2", "tee", "s1", quantity=2)
        result = await a.wait_for(lambda v: v.results.get("o2"))
        assert result[0]["status"] == "confirmed" and result[0]["remaining"] == 5
        stock = await b.wait_for(
            lambda v: next((m for m in v.of_type("stock.updated") if m["stock"] == 5), None)
        )
        assert stock["product_id"] == "tee"
        mark = len(a.inbox)
        status, sale = await api(url, "POST", f"/api/rooms/{ROOM}/sales/s1/stop", admin)
        assert status == 200 and sale["state"] == "ended"
        await a.next_of("sale.ended", mark)
        a.order("o3", "tee", "s1")
        result = await a.wait_for(lambda v: v.results.get("o3"))
        assert result[0]["status"] == "sale_ended"
        status, reason = await api(url, "POST", f"/api/rooms/{ROOM}/sales/s1/start", admin)
        assert status == 409
        for v in (a, b):
            seqs = [m["seq"] for m in v.inbox if m.get("seq") is not None]
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), seqs
        # Cart survives a reconnect (same identity): the new channel's snapshot carries it.
        a.send({"v": 1, "type": "cart.add", "product_id": "tee", "quantity": 2})
        updated = await a.wait_for(lambda v: v.of_type("cart.updated"))
        assert updated[-1]["lines"] == [{"product_id": "tee", "quantity": 2}]
        await close_viewers([a])
        [a2] = await _viewers(node, mint, ["a"])
        snap = a2.of_type("snapshot")[0]
        assert snap["cart"] == [{"product_id": "tee", "quantity": 2}]
        assert snap["card"]["product_id"] == "tee" and snap["sale"]["state"] == "ended"
        assert snap["seq"] >= max(m["seq"] for m in b.inbox if m.get("seq") is not None)
        await close_viewers([a2])
    finally:
        await close_viewers([a, b])


async def test_clock_ping_answered_in_both_forms(node: Any, mint: Callable[..., str]) -> None:
    [v] = await _viewers(node, mint, ["clock"])
    try:
        before = time.time()
        v.send({"v": 1, "type": "clock.ping", "id": 7, "client_time": 123.5})
        v.send({"type": "clock.ping", "id": 8})
        pongs = await v.wait_for(lambda v: len(v.of_type("clock.pong")) >= 2 and v.of_type("clock.pong"))
        first, second = pongs
        assert first["id"] == 7 and first["client_time"] == 123.5
        assert before <= first["server_time"] <= time.time()
        assert second["id"] == 8 and "client_time" not in second
    finally:
        await close_viewers([v])


async def test_admin_over_datachannel_needs_the_grant(node: Any, mint: Callable[..., str]) -> None:
    url = node.http_url
    admin = mint(ROOM, "host", ["admin"])
    await setup_sale(url, ROOM, admin, product="hat", sale="s2", stock=3)
    [host] = await _viewers(node, mint, ["host"], ["subscribe", "admin"])
    [viewer] = await _viewers(node, mint, ["viewer"])
    try:
        mark = len(viewer.inbox)
        viewer.send({"v": 1, "type": "admin.pin_card", "product_id": "hat"})
        err = await viewer.next_of("error", mark)
        assert err["code"] == "forbidden"
        host.send({"v": 1, "type": "admin.pin_card", "product_id": "hat", "pinned_at_rtp": 4242})
        card = await viewer.next_of("product.card", mark)
        assert card["product_id"] == "hat" and card["pinned_at_rtp"] == 4242
        mark = len(viewer.inbox)
        host.send({"v": 1, "type": "admin.stop_sale", "sale_id": "s2"})
        await viewer.next_of("sale.ended", mark)
        host.send({"v": 1, "type": "admin.start_sale", "sale_id": "s2"})
        err = await host.next_of("error", 0)
        assert err["code"] == "conflict"
    finally:
        await close_viewers([host, viewer])


async def test_bad_commerce_input_gets_errors_and_hurts_nobody(
    node: Any, mint: Callable[..., str]
) -> None:
    url = node.http_url
    admin = mint(ROOM, "host", ["admin"])
    await setup_sale(url, ROOM, admin, product="bag", sale="s3", stock=50)
    [bad, good] = await _viewers(node, mint, ["mallory", "alice"])
    try:
        cases: list[tuple[str | bytes, str]] = [
            (json.dumps({"v": 1, "type": "admin.schedule_sale", "product_id": "bag",
                         "starts_at": 1, "ends_at": 2}), "forbidden"),
            (json.dumps({"v": 1, "type": "admin.start_sale", "sale_id": "s3"}), "forbidden"),
            (json.dumps({"v": 1, "type": "order.cancel_everything"}), "unknown_type"),
            ("{not json", "malformed"),
            (json.dumps({"v": 2, "type": "cart.add", "product_id": "bag", "quantity": 1}),
             "unsupported_version"),
            (json.dumps({"v": 1, "type": "order.place", "idempotency_key": "x y",
                         "product_id": "bag", "sale_id": "s3", "quantity": 1}), "invalid"),
            (json.dumps({"v": 1, "type": "order.place", "idempotency_key": "k",
                         "product_id": "bag", "sale_id": "s3", "quantity": 1000}), "invalid"),
            (json.dumps({"v": 1, "type": "cart.add", "product_id": "bag", "quantity": 1,
                         "admin": True}), "invalid"),
            (json.dumps({"v": 1, "type": "cart.add", "product_id": "ghost", "quantity": 1}),
             "unknown_product"),
            (json.dumps({"v": 1, "type": "cart.add", "pad": "p" * 20_000}), "too_large"),
        ]
        for raw, code in cases:
            mark = len(bad.inbox)
            bad.peer.send(raw if isinstance(raw, str) else raw.decode())
            err = await bad.next_of("error", mark)
            assert err["code"] == code, (raw[:60], err)
            assert err["reason"]
        # Cart spam: 10 per second allowed, the rest refused with rate_limited.
        mark = len(bad.inbox)
        for _ in range(40):
            bad.send({"v": 1, "type": "cart.add", "product_id": "bag", "quantity": 1})
        await bad.wait_for(lambda v: any(
            m.get("code") == "rate_limited" for m in v.inbox[mark:] if m["type"] == "error"))
        # Order spam: beyond the burst, rate_limited results that are never stored.
        for i in range(30):
            bad.order(f"spam{i}", "bag", "s3")
        await bad.wait_for(lambda v: len([k for k in v.results if k.startswith("spam")]) == 30, 15)
        limited = [k for k, r in bad.results.items() if r[0]["status"] == "rate_limited"]
        confirmed = [k for k, r in bad.results.items() if r[0]["status"] == "confirmed"]
        assert len(limited) >= 15 and len(confirmed) + len(limited) == 30
        assert bad.peer.channel is not None and bad.peer.channel.readyState == "open"
        # The other viewer is unaffected and keeps receiving room messages.
        mark = len(good.inbox)
        status, _ = await api(url, "POST", f"/api/rooms/{ROOM}/card", admin, {"product_id": "bag"})
        assert status == 200
        await good.next_of("product.card", mark)
        await bad.next_of("product.card", mark)
        assert not [m for m in good.inbox if m["type"] == "error"]
        # Nothing written by the bad input: only the confirmed spam orders exist.
        status, orders = await api(url, "GET", f"/api/rooms/{ROOM}/orders", admin)
        assert orders["count"] == len(confirmed)
        status, sales = await api(url, "GET", f"/api/rooms/{ROOM}/sales", admin)
        assert [s["sale_id"] for s in sales["sales"]] == ["s3"]
        metrics = await _metrics(url)
        assert 'sfu_commerce_errors_total{code="forbidden"} 2.0' in metrics
        assert 'sfu_commerce_orders_total{status="rate_limited"}' in metrics
        assert "sfu_commerce_order_latency_seconds_count" in metrics
        assert 'sfu_commerce_messages_sent_total{type="product.card"}' in metrics
    finally:
        await close_viewers([bad, good])


async def test_pinned_card_carries_the_host_video_rtp_timestamp(
    node: Any, mint: Callable[..., str]
) -> None:
    from bench.clients.media import SyntheticVideoTrack
    from bench.clients.whip import whep_play, whip_publish

    admin_host = mint(ROOM, "host", ["publish", "admin"])
    status, _ = await api(node.http_url, "POST", f"/api/rooms/{ROOM}/products", admin_host, {
        "id": "cam", "name": "Camera", "price_cents": 100, "currency": "EUR", "stock": 1})
    assert status == 201
    pub = await whip_publish(node.http_url, ROOM, admin_host, [SyntheticVideoTrack()])
    player = await whep_play(node.http_url, ROOM, mint(ROOM, "p", ["subscribe"]), audio=False,
                             datachannel=True)
    try:
        await player.wait_for_frames(video=5, timeout=20)
        channel = await player.wait_channel_open(timeout=10)
        assert channel is not None
        receiver = next(r for r in node.rooms[ROOM].receivers.values() if r.info.kind == "video")
        expected = receiver.rtp_timestamp_at(node.now())
        status, pinned = await api(node.http_url, "POST", f"/api/rooms/{ROOM}/card",
                                   admin_host, {"product_id": "cam"})
        assert status == 200 and pinned["pinned_at_rtp"] is not None
        # Within 1 s of video (90 kHz) of the receiver's estimate just before the pin.
        assert (pinned["pinned_at_rtp"] - expected) % 2**32 < 90_000
        # The player gets it in its own (rewritten) timeline: the down-track's translation.
        deadline = time.monotonic() + 10
        card = None
        while card is None and time.monotonic() < deadline:
            for raw in player.channel_messages:
                msg = json.loads(raw)
                if msg.get("type") == "product.card":
                    card = msg
            if card is None:
                await player.wait_for_frames(video=player.video_frames + 1, timeout=5)
        assert card is not None
        peer = node.peers[player.session_id]
        dt = next(s.downtrack for s in peer.slots if s.downtrack.receiver is receiver)
        assert card["pinned_at_rtp"] == dt.munger.translate_ts(pinned["pinned_at_rtp"])
    finally:
        await player.close()
        await pub.close()


async def _metrics(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        return await resp.text()
