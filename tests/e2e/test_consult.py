"""1:1 video consultations end to end: the node serves /advisor and /consult; one headless
Chromium (fake camera and microphone, several contexts) runs two advisors and three
customers against a real node.

1. Two advisors go available, three customers ask in turn: customer 1 gets advisor 1,
   customer 2 advisor 2 (longest idle first, customers first come first served), customer
   3 waits at position 1 and, when advisor 1 ends their call, gets advisor 1 (the first
   advisor to become free) while advisor 2 is still busy.
2. Media both ways: advisor 1 and customer 1 each decode the other's camera; advisor 1's
   screen share (getDisplayMedia: Chromium's fake screen picked automatically with
   --use-fake-ui-for-media-stream and --auto-select-desktop-capture-source) reaches the
   customer as a second, separately labelled ("screen") video track. Customer 2 chose audio
   only before joining: advisor 2 hears them and receives no video, customer 2 sends none,
   then customer 2 turns the camera on during the call and advisor 2 decodes it.
3. Advisor 1 pushes a product card; customer 1 adds it to the cart and checks out; the
   order is in the store exactly once (a replay of the same idempotency key included).
4. Screenshots of both pages during the call: test-artifacts/consult-*.png.
Timings in test-artifacts/consult-e2e.json.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sfu.auth import mint_token
from tests.e2e.browser import ARTIFACTS_DIR, CHROMIUM_PATH, PageLog, poll_js, save_artifact
from tests.e2e.web_helpers import WEB_CHROMIUM_ARGS, open_page

QUEUE = "consult"
T = 20.0  # s: bound of every wait
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
SCREEN_ARGS = ["--auto-select-desktop-capture-source=Entire screen"]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM_PATH.exists():
        pytest.skip(f"{CHROMIUM_PATH} not installed (make test installs Debian's chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=str(CHROMIUM_PATH), headless=True,
            args=[*WEB_CHROMIUM_ARGS, *SCREEN_ARGS],
        )
        try:
            yield b
        finally:
            await b.close()


async def customer_state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("() => window.consultPage.state()")
    return state


async def wait_request(page: Any, log: PageLog, pred: Any, describe: str) -> dict[str, Any]:
    state: dict[str, Any] = await poll_js(
        page, "() => window.consultPage.state().request",
        lambda r: bool(r) and pred(r), timeout=T, describe=describe, log=log,
    )
    return state


async def wait_advisor(page: Any, log: PageLog, pred: Any, describe: str) -> dict[str, Any]:
    state: dict[str, Any] = await poll_js(
        page, "() => window.advisorPage.state()", pred, timeout=T, describe=describe, log=log
    )
    return state


def decoded(source: str, kind: str = "video") -> Any:
    return lambda s: any(
        r["kind"] == kind and r["source"] == source and r["framesDecoded"] > 5 for r in s["remote"]
    )


async def wait_stats(page: Any, holder: str, log: PageLog, pred: Any, describe: str) -> Any:
    return await poll_js(page, f"() => window.{holder}.stats()", pred, timeout=T,
                         describe=describe, log=log)


@pytest.mark.browser
async def test_consultation_queue_media_and_commerce(node: Any, browser: Any) -> None:
    base = node.http_url
    s = node.settings
    started = time.monotonic()
    steps: dict[str, float] = {}
    report: dict[str, Any] = {"steps": steps}

    def mark(name: str) -> None:
        steps[name] = round(time.monotonic() - started, 2)

    # The catalogue: products of the queue's room, through the operator API.
    admin = mint_token(api_key=s.api_key, api_secret=s.api_secret, room=QUEUE,
                       identity="ops", grants=["admin"])
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{base}/api/rooms/{QUEUE}/products",
            json={"id": "lamp-1", "name": "Brass desk lamp", "price_cents": 8900,
                  "currency": "EUR", "stock": 12},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert resp.status == 201, await resp.text()

    async with (
        open_page(browser, f"{base}/advisor?identity=advisor-1", "advisor-1", **DESKTOP) as (a1, la1),
        open_page(browser, f"{base}/advisor?identity=advisor-2", "advisor-2", **DESKTOP) as (a2, la2),
        open_page(browser, f"{base}/consult?identity=customer-1", "customer-1", **DESKTOP) as (c1, lc1),
        open_page(browser, f"{base}/consult?identity=customer-2", "customer-2", **DESKTOP) as (c2, lc2),
        open_page(browser, f"{base}/consult?identity=customer-3", "customer-3", **DESKTOP) as (c3, lc3),
    ):
        # --- 1. the queue -------------------------------------------------------------------
        for page, log in ((a1, la1), (a2, la2)):
            await wait_advisor(page, log, lambda st: st["status"] == "idle", "advisor page ready")
            await page.get_by_role("button", name="Go available").click()
            await wait_advisor(page, log, lambda st: st["advisor"] == "free", "advisor available")
        # customer 2 makes the privacy choice before joining: audio only
        await c2.get_by_label("Share my camera (untick for audio only)").uncheck()
        requests = {}
        for name, page, log in (("c1", c1, lc1), ("c2", c2, lc2), ("c3", c3, lc3)):
            await poll_js(page, "() => window.consultPage.state().status", lambda v: v == "idle",
                          timeout=T, describe="customer page ready", log=log)
            await page.get_by_role("button", name="Request a consultation").click()
            requests[name] = await wait_request(page, log, lambda r: r["state"] != "",
                                                "request made")
        r1 = await wait_request(c1, lc1, lambda r: r["state"] == "assigned", "c1 assigned")
        r2 = await wait_request(c2, lc2, lambda r: r["state"] == "assigned", "c2 assigned")
        r3 = await wait_request(c3, lc3, lambda r: r["state"] == "waiting", "c3 waits")
        assert r1["advisor"] == "advisor-1" and r2["advisor"] == "advisor-2", (r1, r2)
        assert r3["position"] == 1 and r3["advisor"] is None, r3
        assert [r1["seq"], r2["seq"], r3["seq"]] == sorted([r1["seq"], r2["seq"], r3["seq"]])
        assert "number 1 in line" in (await customer_state(c3))["queueText"]
        a1_state = await wait_advisor(a1, la1, lambda st: len(st["queue"]) == 1
                                      and st["current"] is not None, "advisor 1 sees the queue")
        assert a1_state["queue"][0]["customer"] == "customer-3"
        assert a1_state["current"]["customer"] == "customer-1"
        mark("queue_assigned")

        # --- 2. media both ways, screen share as a second track -------------------------------
        await a1.get_by_role("button", name="Accept").click()
        await wait_request(c1, lc1, lambda r: r["state"] == "in_call", "c1 in call")
        await c1.get_by_role("button", name="Join call").click()
        await wait_stats(a1, "advisorPage", la1, decoded("camera"), "advisor decodes customer")
        await wait_stats(c1, "consultPage", lc1, decoded("camera"), "customer decodes advisor")
        mark("call_1_media")
        await a1.get_by_role("button", name="Share screen").click()
        stats = await wait_stats(
            c1, "consultPage", lc1,
            lambda st: decoded("screen")(st) and decoded("camera")(st),
            "customer decodes the shared screen",
        )
        videos = [r for r in stats["remote"] if r["kind"] == "video"]
        assert len({r["track_id"] for r in videos}) == 2, stats
        report["customer_1_inbound"] = stats["remote"]
        report["screen_via"] = (await a1.evaluate("() => window.advisorPage.state()"))["screenVia"]
        await poll_js(c1, "() => window.consultPage.state().screenVisible", bool, timeout=T,
                      describe="screen laid out", log=lc1)
        mark("screen_share")

        # --- 3. in-call commerce -------------------------------------------------------------
        await a1.get_by_label("Product", exact=True).select_option("lamp-1")
        await a1.get_by_role("button", name="Show to customer").click()
        card = await poll_js(c1, "() => window.consultPage.state().card", bool, timeout=T,
                             describe="card shown", log=lc1)
        assert card["name"] == "Brass desk lamp", card
        await c1.get_by_role("button", name="Add to cart").click()
        await poll_js(c1, "() => window.consultPage.state().cart", lambda c: len(c) == 1,
                      timeout=T, describe="in the cart", log=lc1)
        await c1.get_by_role("button", name="Checkout").click()
        done = await poll_js(c1, "() => window.consultPage.state()",
                             lambda st: "Order confirmed" in st["result"], timeout=T,
                             describe="order confirmed", log=lc1)
        order = done["orders"][0]
        # replay the same attempt (same idempotency key): the recorded result, no new order
        replay = await c1.evaluate(
            """(o) => window.consultPage.page.call.client.placeOrder({sale_id: o.sale_id,
                 product_id: o.product_id, quantity: 1, idempotency_key: o.key})""",
            {"sale_id": card["product_id"], "product_id": card["product_id"],
             "key": order["idempotency_key"]},
        )
        assert replay["order_id"] == order["order_id"], (replay, order)
        room = r1["room"]
        orders = await node.commerce.store.list_orders(room=room)
        assert [o.order_id for o in orders] == [order["order_id"]], orders
        assert orders[0].viewer == "customer-1" and orders[0].product_id == card["product_id"]
        await wait_advisor(a1, la1, lambda st: bool(st["orders"]) and st["orders"]["count"] == 1,
                           "advisor sees the order")
        mark("order_once")

        # --- 4. screenshots during the call --------------------------------------------------
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        await a1.screenshot(path=str(ARTIFACTS_DIR / "consult-advisor.png"), full_page=True)
        await c1.screenshot(path=str(ARTIFACTS_DIR / "consult-customer.png"), full_page=True)
        mark("screenshots")

        # --- audio-only customer -------------------------------------------------------------
        await a2.get_by_role("button", name="Accept").click()
        await wait_request(c2, lc2, lambda r: r["state"] == "in_call", "c2 in call")
        await c2.get_by_role("button", name="Join call").click()
        await wait_stats(c2, "consultPage", lc2, decoded("camera"), "audio-only customer decodes advisor")
        a2_stats = await wait_stats(
            a2, "advisorPage", la2,
            lambda st: any(r["kind"] == "audio" and r["bytesReceived"] > 2000 for r in st["remote"]),
            "advisor 2 hears the customer",
        )
        assert not [r for r in a2_stats["remote"] if r["kind"] == "video"], a2_stats
        c2_stats = await c2.evaluate("() => window.consultPage.stats()")
        assert not [k for k in c2_stats["sent"] if k.startswith("video")], c2_stats
        assert c2_stats["sent"].get("audio:microphone", 0) > 0, c2_stats
        media_room = node.rooms[r2["room"]]
        c2_tracks = [t for t in media_room.tracks() if t["participant"] == "customer-2"]
        assert [t["kind"] for t in c2_tracks] == ["audio"], c2_tracks
        report["audio_only"] = {"advisor_2": a2_stats, "customer_2": c2_stats}
        mark("audio_only_call")

        # --- the third customer gets the first advisor who becomes free ----------------------
        await a1.get_by_role("button", name="End call").click()
        r3 = await wait_request(c3, lc3, lambda r: r["state"] == "assigned", "c3 assigned")
        assert r3["advisor"] == "advisor-1", r3
        assert (await wait_request(c1, lc1, lambda r: r["state"] == "done", "c1 done"))
        mark("third_customer_assigned")

        # --- the audio-only customer turns the camera on during the call --------------------
        await c2.get_by_role("button", name="Camera on").click()
        await wait_stats(a2, "advisorPage", la2, decoded("camera"), "advisor 2 decodes the camera")
        mark("camera_switched_on")

        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
            metrics = await resp.text()
        for needle in (
            'sfu_consult_queue_length{queue="consult"} 0.0',
            'sfu_consult_calls_in_progress{queue="consult"} 1.0',
            "sfu_consult_wait_seconds_count 3.0",
            "sfu_consult_call_duration_seconds_count 1.0",
        ):
            assert needle in metrics, (needle, [ln for ln in metrics.splitlines() if "consult" in ln])
        report["metrics"] = [ln for ln in metrics.splitlines() if ln.startswith("sfu_consult")]
        mark("metrics")
    report["total_s"] = round(time.monotonic() - started, 2)
    save_artifact("consult-e2e.json", report)
