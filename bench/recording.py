"""``python -m bench record``: node CPU for recording one stream, against forwarding it to one
viewer.

One node subprocess (:class:`bench.forwarding.NodeProcess`, so its CPU is the node's alone,
writer thread included). A :class:`~bench.rawpeer.RawPublisher` replays pre-encoded VP8
640x360 ~1 Mbit/s 30 fps plus Opus. Three measured windows, each on a fresh room:

- ``baseline``: the publisher alone (receive, SRTP unprotect, NACK/TWCC bookkeeping);
- ``forward``: plus one :class:`~bench.rawpeer.RawPeer` viewer;
- ``record``: plus a recording of the room (operator API), no viewer.

Cost per stream = window CPU minus baseline CPU; the ratio record/forward is the answer.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc.rtcdtlstransport import RTCCertificate

from bench import runner
from bench.forwarding import API_KEY, API_SECRET, NodeProcess
from bench.rawpeer import EncodedStream, RawPeer, RawPublisher, encode_stream

START_TIMEOUT = 20.0  # a recording's video starts on the stream's next key frame (<= 10 s)


def _token(room: str, identity: str, grant: str) -> str:
    from sfu.auth import mint_token

    return mint_token(api_key=API_KEY, api_secret=API_SECRET, room=room, identity=identity,
                      grants=[grant], ttl=3600)


async def _api(http: aiohttp.ClientSession, node: NodeProcess, method: str, path: str,
               room: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {_token(room, 'bench', 'admin')}",
               "Content-Type": "application/json"}
    async with http.request(method, node.url + path, headers=headers, data=b"{}") as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def _window(
    mode: str, node: NodeProcess, http: aiohttp.ClientSession, stream: EncodedStream,
    cert: RTCCertificate, *, warmup: float, duration: float,
) -> dict[str, Any]:
    room = f"rec-{mode}-{secrets.token_hex(3)}"
    pub = RawPublisher(cert, stream, name="pub")
    viewer: RawPeer | None = None
    out: dict[str, Any] = {"mode": mode}
    rec_id = None
    try:
        await asyncio.wait_for(pub.connect(http, node.url, room, _token(room, "pub", "publish")),
                               30)
        pub.start(warmup + duration + START_TIMEOUT + 30)
        if mode == "forward":
            viewer = RawPeer(cert, publish=False, audio=bool(stream.audio), name="viewer")
            await viewer.connect(http, node.url, room, _token(room, "viewer", "subscribe"))
            for _ in range(int(START_TIMEOUT / 0.1)):
                if viewer.first_video_at is not None:
                    break
                await asyncio.sleep(0.1)
        elif mode == "record":
            status, meta = await _api(http, node, "POST", f"/api/rooms/{room}/recordings", room)
            assert status == 201, meta
            rec_id = meta["id"]
            for _ in range(int(START_TIMEOUT / 0.1)):
                _, meta = await _api(http, node, "GET",
                                     f"/api/rooms/{room}/recordings/{rec_id}", room)
                if any(t.get("started") and t["kind"] == "video" for t in meta["tracks"]):
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(warmup)
        cpu0, t0 = node.cpu_seconds(), time.monotonic()
        await asyncio.sleep(duration)
        cpu1, t1 = node.cpu_seconds(), time.monotonic()
        out["cpu_percent"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 2)
        if rec_id is not None:
            status, meta = await _api(http, node, "POST",
                                      f"/api/rooms/{room}/recordings/{rec_id}/stop", room)
            out["recording"] = {k: meta.get(k) for k in ("duration", "size", "dropped_frames",
                                                         "state")}
            out["recording"]["tracks"] = [
                {k: t.get(k) for k in ("kind", "frames", "skipped_frames")}
                for t in meta.get("tracks", [])
            ]
        if viewer is not None:
            out["viewer_packets"] = dict(viewer.packets)
    finally:
        if viewer is not None:
            await viewer.close(http, _token(room, "viewer", "subscribe"))
        await pub.close(http, _token(room, "pub", "publish"))
    return out


async def _run(warmup: float, duration: float, repeats: int) -> dict[str, Any]:
    print("encoding the stream (VP8 640x360 30 fps ~1 Mbit/s + Opus)")
    stream = encode_stream()
    cert = RTCCertificate.generateCertificate()
    windows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        node = NodeProcess(Path(tmp))
        async with aiohttp.ClientSession() as http:
            try:
                node.spawn()
                await node.wait_ready(http)
                for r in range(repeats):
                    for mode in ("baseline", "forward", "record"):
                        w = await _window(mode, node, http, stream, cert, warmup=warmup,
                                          duration=duration)
                        w["repeat"] = r
                        print(f"  {mode:8s} node CPU {w['cpu_percent']:6.2f} %")
                        windows.append(w)
            finally:
                node.stop()

    def mean(mode: str) -> float:
        values = [w["cpu_percent"] for w in windows if w["mode"] == mode]
        return sum(values) / len(values)

    base, fwd, rec = mean("baseline"), mean("forward"), mean("record")
    forward_cost, record_cost = fwd - base, rec - base
    return {
        **runner.header(),
        "stream": {"size": f"{stream.width}x{stream.height}", "fps": stream.fps,
                   "video_bitrate_bps": round(stream.video_bitrate)},
        "options": {"warmup": warmup, "duration": duration, "repeats": repeats},
        "windows": windows,
        "cpu_percent": {"baseline": round(base, 2), "forward_1_viewer": round(fwd, 2),
                        "record": round(rec, 2)},
        "cost_percent": {"forward_1_viewer": round(forward_cost, 2),
                         "record": round(record_cost, 2)},
        "record_to_forward_ratio": round(record_cost / forward_cost, 2)
        if forward_cost > 0 else None,
    }


def main(*, warmup: float, duration: float, repeats: int, out: Path) -> int:
    results = asyncio.run(_run(warmup, duration, repeats))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    c = results["cost_percent"]
    print(f"per stream: forwarding to one viewer {c['forward_1_viewer']} % of a core, "
          f"recording {c['record']} %; ratio {results['record_to_forward_ratio']}")
    print(f"wrote {out}")
    return 0
