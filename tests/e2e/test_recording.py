"""Recording end to end: headless Chromium publishes for 20 s, the node records the room, and
the file is read back with PyAV (every video frame decodes, duration, audio/video start), the
commerce sidecar places a card pinned mid-recording at its media time. The same with 10 %
loss on the publisher's uplink (bench.proxy.ImpairmentProxy; the page's WHIP answer is
rewritten to the proxy by intercepting the response). Then delete and retention over the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from bench.link import LinkConfig
from bench.loss import Bernoulli
from bench.proxy import ImpairmentProxy, rewrite_candidates
from tests.e2e.browser import PageLog, page_url, save_artifact, wait_page_status
from tests.e2e.commerce_clients import api

PUBLISH_SECONDS = 20.0
CONNECT_TIMEOUT = 20.0


async def _download(url: str, token: str, name: str | None = None) -> tuple[int, bytes]:
    q = f"?file={name}" if name else ""
    async with aiohttp.ClientSession() as http, http.get(
        url + q, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status, await resp.read()


async def _until_started(node: Any, room: str, admin: str, rec_id: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_TIMEOUT
    while True:
        status, meta = await api(node.http_url, "GET",
                                 f"/api/rooms/{room}/recordings/{rec_id}", admin)
        assert status == 200, meta
        kinds = {t["kind"] for t in meta["tracks"] if t.get("started")}
        if meta.get("media_started_at") and kinds >= {"audio", "video"}:
            return meta
        assert loop.time() < deadline, meta
        await asyncio.sleep(0.05)


def _read_back(path: Path) -> dict[str, Any]:
    """Decode every video frame (PyAV raises on a corrupt one); stream facts."""
    with av.open(str(path)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        info = {
            "duration": c.duration / 1e6 if c.duration else None,
            "video_start": float(vs.start_time * vs.time_base),
            "audio_start": float(aus.start_time * aus.time_base),
            "codec": vs.codec_context.name,
        }
        frames = 0
        last = 0.0
        for packet in c.demux(vs):
            for frame in packet.decode():
                frames += 1
                last = float(frame.pts * frame.time_base)
        info["frames"] = frames
        info["last_video"] = last
    return info


async def _record_session(
    node: Any, mint: Callable[..., str], chromium: Any, pages_url: str, tmp_path: Path,
    room: str, *, proxy: ImpairmentProxy | None, pin_card: bool,
) -> tuple[dict[str, Any], dict[str, Any], Path, str]:
    admin = mint(room, "operator", ["admin"])
    url = node.http_url
    if pin_card:
        product = {"id": "mug", "name": "Mug", "price_cents": 900, "currency": "EUR",
                   "stock": 5}
        status, _ = await api(url, "POST", f"/api/rooms/{room}/products", admin, product)
        assert status == 201
    status, started = await api(url, "POST", f"/api/rooms/{room}/recordings", admin, {})
    assert status == 201, started
    rec_id = started["id"]
    status, again = await api(url, "POST", f"/api/rooms/{room}/recordings", admin, {})
    assert status == 409, again

    context = await chromium.new_context()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(context.close)
        page = await context.new_page()
        log = PageLog(page, "publish.html")
        if proxy is not None:
            addr = await proxy.start()
            stack.push_async_callback(proxy.stop)

            async def to_proxy(route: Any) -> None:
                resp = await route.fetch()
                body = await resp.text()
                if resp.status == 201:
                    body = rewrite_candidates(body, addr)
                await route.fulfill(response=resp, body=body)

            await page.route(f"{url}/whip/**", to_proxy)
        await page.goto(page_url(pages_url, "publish.html", node=url, room=room,
                                 token=mint(room, "host", ["publish"]),
                                 width="640", height="360"))
        await wait_page_status(page, "connected", timeout=CONNECT_TIMEOUT, log=log)
        meta = await _until_started(node, room, admin, rec_id)
        t0 = meta["media_started_at"]
        pinned: dict[str, Any] = {}
        if pin_card:
            await asyncio.sleep(max(0.0, t0 + PUBLISH_SECONDS / 2 - time.time()))
            status, pinned = await api(url, "POST", f"/api/rooms/{room}/card", admin,
                                       {"product_id": "mug"})
            assert status == 200, pinned
        await asyncio.sleep(max(0.0, t0 + PUBLISH_SECONDS - time.time()))
        status, done = await api(url, "POST",
                                 f"/api/rooms/{room}/recordings/{rec_id}/stop", admin)
        assert status == 200, done
        await page.evaluate("window.stopPublishing()")
    assert done["state"] == "done", done
    status, data = await _download(f"{url}/api/rooms/{room}/recordings/{rec_id}/download",
                                   admin)
    assert status == 200 and data
    media = tmp_path / [f["name"] for f in done["files"] if f["kind"] == "media"][0]
    media.write_bytes(data)
    done["_pinned"] = pinned
    return done, _read_back(media), media, admin


@pytest.mark.browser
async def test_chromium_publish_is_recorded_in_sync_with_card_timeline(
    node: Any, mint: Callable[..., str], chromium: Any, pages_url: str, tmp_path: Path
) -> None:
    room = "studio-rec"
    t = time.monotonic()
    meta, info, media, admin = await _record_session(
        node, mint, chromium, pages_url, tmp_path, room, proxy=None, pin_card=True)
    save_artifact("recording.json", {"meta": meta, "file": info,
                                     "seconds": time.monotonic() - t})
    assert info["codec"] == "vp8" and media.suffix == ".webm"
    assert abs(info["duration"] - PUBLISH_SECONDS) <= 0.5, info
    assert abs(meta["duration"] - PUBLISH_SECONDS) <= 0.5, meta
    assert abs(info["audio_start"] - info["video_start"]) <= 0.080, info
    assert info["frames"] >= PUBLISH_SECONDS * 15, info  # every frame decoded, none missing
    fps = info["frames"] / info["last_video"]

    url = f"{node.http_url}/api/rooms/{room}/recordings/{meta['id']}/download"
    status, raw = await _download(url, admin, f"{meta['id']}.timeline.jsonl")
    assert status == 200
    events = [json.loads(line) for line in raw.decode().splitlines()]
    cards = [e for e in events if e["type"] == "product.card"]
    assert len(cards) == 1 and cards[0]["data"]["product_id"] == "mug", events
    expected = meta["_pinned"]["pinned_at"] - meta["media_started_at"]
    assert cards[0]["source"] == "rtp"
    save_artifact("recording.json", {"meta": meta, "file": info, "card": cards[0],
                                     "card_expected": expected, "fps": fps})
    assert abs(cards[0]["t"] - expected) <= 1 / fps, (cards[0], expected, fps)
    status, vtt = await _download(url, admin, f"{meta['id']}.cards.vtt")
    assert status == 200 and vtt.startswith(b"WEBVTT") and b"Mug - 9.00 EUR" in vtt

    # list, delete, and then it is gone
    status, listed = await api(node.http_url, "GET", f"/api/rooms/{room}/recordings", admin)
    assert status == 200 and [r["id"] for r in listed["recordings"]] == [meta["id"]]
    rec = listed["recordings"][0]
    assert rec["size"] > 0 and {t["kind"] for t in rec["tracks"]} == {"audio", "video"}
    status, _ = await api(node.http_url, "DELETE",
                          f"/api/rooms/{room}/recordings/{meta['id']}", admin)
    assert status == 200
    status, _ = await _download(url, admin)
    assert status == 404
    assert not (node.recorder.store.root / meta["id"]).exists()


@pytest.mark.browser
async def test_recording_with_uplink_loss_still_decodes(
    node: Any, mint: Callable[..., str], chromium: Any, pages_url: str, tmp_path: Path
) -> None:
    lossy = LinkConfig(loss=Bernoulli(0.10), seed=7)
    proxy = ImpairmentProxy(target=("127.0.0.1", node.udp_port), uplink=lossy, downlink=None)
    meta, info, _, _ = await _record_session(
        node, mint, chromium, pages_url, tmp_path, "lossy-rec", proxy=proxy, pin_card=False)
    save_artifact("recording-loss.json", {"meta": meta, "file": info,
                                          "uplink": proxy.uplink_stats.__dict__})
    assert proxy.uplink_stats.forwarded > 0
    assert info["frames"] >= PUBLISH_SECONDS * 5, info  # decoded without an error
    assert abs(info["duration"] - PUBLISH_SECONDS) <= 1.0, info


async def test_api_auth_delete_and_retention_task(
    node: Any, mint: Callable[..., str]
) -> None:
    """No media needed: a recording of an empty room still has its sidecars and metadata."""
    room, url = "api-rec", node.http_url
    admin = mint(room, "operator", ["admin"])
    base = f"/api/rooms/{room}/recordings"
    assert (await api(url, "POST", base, None, {}))[0] == 401
    assert (await api(url, "POST", base, mint(room, "v", ["subscribe"]), {}))[0] == 403
    assert (await api(url, "POST", base, mint("other", "o", ["admin"]), {}))[0] == 403
    assert (await api(url, "POST", base, admin, {"surprise": 1}))[0] == 400
    status, meta = await api(url, "POST", base, admin, {})
    assert status == 201 and meta["state"] == "recording"
    status, done = await api(url, "POST", f"{base}/{meta['id']}/stop", admin)
    assert status == 200 and done["state"] == "done"
    assert (await api(url, "POST", f"{base}/{meta['id']}/stop", admin))[0] == 409
    assert (await api(url, "GET", f"{base}/nope-nope", admin))[0] == 404
    status, _ = await api(url, "DELETE", f"{base}/{meta['id']}", admin)
    assert status == 200
    assert (await api(url, "GET", f"{base}/{meta['id']}", admin))[0] == 404
    status, _ = await _download(f"{url}{base}/{meta['id']}/download", admin)
    assert status == 404
    assert node.recorder.deleted["api"] == 1

    # auto-record flag round trip
    status, body = await api(url, "PUT", f"/api/rooms/{room}/recording-auto", admin,
                             {"enabled": True})
    assert status == 200 and body["auto"] is True
    assert (await api(url, "GET", base, admin))[1]["auto"] is True
    await api(url, "PUT", f"/api/rooms/{room}/recording-auto", admin, {"enabled": False})

    # retention: the node's periodic task deletes a recording older than the setting
    status, meta = await api(url, "POST", base, admin, {})
    await api(url, "POST", f"{base}/{meta['id']}/stop", admin)
    manager = node.recorder
    manager.retention_interval = 0.1
    manager.retention_days = 0.3 / 86400  # 0.3 s
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    # Done when the recording is gone and the deletion counted (the count follows the
    # store's deletion, which runs in a worker thread, so a GET can see the 404 first).
    while ((await api(url, "GET", f"{base}/{meta['id']}", admin))[0] == 200
           or manager.deleted["retention"] == 0):
        assert loop.time() < deadline, "retention did not delete the recording"
        await asyncio.sleep(0.1)
    assert manager.deleted["retention"] == 1
    assert not (manager.store.root / meta["id"]).exists()


async def test_full_disk_stops_the_recording_cleanly(
    node: Any, mint: Callable[..., str]
) -> None:
    room, url = "full-rec", node.http_url
    admin = mint(room, "operator", ["admin"])
    base = f"/api/rooms/{room}/recordings"
    status, meta = await api(url, "POST", base, admin, {})
    assert status == 201
    node.recorder.min_free_bytes = 1 << 62  # every disk is "full" now
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while room in node.recorder.active:
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    status, stopped = await api(url, "GET", f"{base}/{meta['id']}", admin)
    assert status == 200 and stopped["error"].startswith("disk_full"), stopped
    assert node.recorder.errors["disk_full"] == 1
    status, reason = await api(url, "POST", base, admin, {})
    assert status == 507, reason
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    assert 'sfu_recording_errors_total{reason="disk_full"} 2.0' in text
    assert (await api(url, "GET", "/healthz", None))[0] == 200
