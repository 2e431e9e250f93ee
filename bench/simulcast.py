"""``python -m bench simulcast``: what simulcast costs: switch time and CPU per packet.

Two measurements against a node subprocess (:class:`bench.forwarding.NodeProcess`):

1. **Switch time.** A :class:`~bench.rawpeer.RawSimulcastPublisher` sends three VP8 layers
   (q 320x180, h 640x360, f 1280x720, pre-encoded) by RID simulcast. An aiortc WHEP player
   (decoding) starts on ``?layer=low``, then asks for another layer with
   ``POST {location}/layer`` about 20 times. A sample is the time from just before the POST
   to the first decoded frame with the new layer's width. The player also reports the longest
   gap between decoded frames around each switch, and aiortc's "failed to decode" warnings.

2. **CPU per forwarded packet, simulcast against plain.** The same N non-decoding
   :class:`~bench.rawpeer.RawPeer` subscribers watch either a plain publisher (one SSRC, the
   640x360 stream) or the simulcast publisher, all of them on the ``mid`` layer: the very same
   640x360 packets, so both forward the same packets and the difference is what simulcast
   adds: receiving and parsing two more layers, and the per-packet layer gating and VP8
   picture-id/TL0PICIDX rewrite. Plain and simulcast rounds alternate; the ratio is the
   median of per-round ratios. A "spread" scenario (subscribers split over the three layers)
   is reported too, for information.

The machinery (node process, tokens, metrics, subscriber connection) comes from
:mod:`bench.forwarding`. Every phase is bounded; the node is stopped by PID in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import statistics
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription
from aiortc.rtcdtlstransport import RTCCertificate

from bench import runner
from bench.clients.whip import (
    HTTP_TIMEOUT,
    WhepSession,
    WhipError,
    _wait_gathering_complete,
    new_peer_connection,
)
from bench.forwarding import (
    SETTLE,
    NodeProcess,
    _connect_all,
    _delta,
    _percentiles,
    _token,
    machine_info,
    wait_first_video,
)
from bench.rawpeer import (
    EncodedStream,
    RawPeer,
    RawPublisher,
    RawSimulcastPublisher,
    encode_stream,
    relabel_layered,
)

LAYER_WIDTHS = {"low": 320, "mid": 640, "high": 1280}
# (rid, layer name, width, height, bit rate): Chromium's defaults for a 1280x720 camera.
LAYER_SPECS = (
    ("q", "low", 320, 180, 200_000),
    ("h", "mid", 640, 360, 1_000_000),
    ("f", "high", 1280, 720, 2_500_000),
)
SWITCH_TIMEOUT = 3.0  # one switch: POST to the first frame of the new layer
SWITCH_GAP = (0.8, 1.2)  # pause between switches (> the node's 0.5 s PLI throttle per layer)
SWITCH_SEQUENCE = ("high", "low", "mid", "high", "mid", "low")
FIRST_VIDEO_TIMEOUT = 15.0
CONNECT_TIMEOUT = 60.0


# --- clients ----------------------------------------------------------------------------------


async def whep_play_layer(
    http_url: str,
    room: str,
    token: str,
    layer: str | None = None,
    *,
    audio: bool = True,
) -> WhepSession:
    """:func:`bench.clients.whip.whep_play` with the node's ``?layer=low|mid|high``.

    The player decodes everything it receives (frame sizes and times in the session).
    Raises WhipError on a non-201 answer; the peer connection is closed then.
    """
    pc = new_peer_connection()
    session = WhepSession(pc=pc, location="", token=token)
    pc.on("track", session._on_track)
    try:
        if audio:
            pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        await _wait_gathering_complete(pc, HTTP_TIMEOUT)
        local = pc.localDescription
        assert local is not None
        url = f"{http_url.rstrip('/')}/whep/{urllib.parse.quote(room, safe='')}"
        if layer is not None:
            url += "?" + urllib.parse.urlencode({"layer": layer})
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)) as http,
            http.post(url, data=local.sdp.encode(), headers=headers) as resp,
        ):
            body = await resp.text()
            if resp.status != 201:
                raise WhipError(resp.status, body.strip())
            location = resp.headers.get("Location")
            if not location:
                raise WhipError(resp.status, "201 answer without a Location header")
        session.location = urllib.parse.urljoin(url, location)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    except BaseException:
        await session._stop_background()
        await pc.close()
        raise
    return session


async def post_layer(
    http: aiohttp.ClientSession, location: str, token: str, body: dict[str, Any]
) -> tuple[int, str]:
    """``POST {location}/layer`` with a JSON body; (status, response text)."""
    async with http.post(
        location.rstrip("/") + "/layer", json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
    ) as resp:
        return resp.status, await resp.text()


class DecodeErrors(logging.Handler):
    """Counts aiortc's "failed to decode" warnings (logged from its decoder threads)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: list[float] = []
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "failed to decode" in msg:
            self.times.append(time.monotonic())
            self.messages.append(msg[:200])


# --- media ------------------------------------------------------------------------------------


def encode_layers() -> list[tuple[str, EncodedStream]]:
    """The three layers, each re-packetized with the temporal-layer descriptor; the middle
    one is :func:`bench.rawpeer.encode_stream`'s default stream (the plain publisher's)."""
    out: list[tuple[str, EncodedStream]] = []
    for rid, _name, width, height, bitrate in LAYER_SPECS:
        stream = encode_stream(width=width, height=height, bitrate=bitrate, audio=rid == "q")
        out.append((rid, relabel_layered(stream)))
    return out


def plain_stream(layers: list[tuple[str, EncodedStream]]) -> EncodedStream:
    """The mid layer with the low layer's audio: what the plain publisher sends."""
    mid = layers[1][1]
    return EncodedStream(mid.video, mid.keyframes, mid.fps, mid.width, mid.height,
                         layers[0][1].audio)


# --- switch time ------------------------------------------------------------------------------


@dataclass
class SwitchSample:
    target: str
    source: str
    ms: float | None  # None: no frame of the target layer within SWITCH_TIMEOUT
    max_gap_ms: float  # longest gap between decoded frames from the POST to 0.5 s after
    status: int


def _widths_since(player: WhepSession, index: int) -> list[tuple[int, float]]:
    return [(w, t) for (w, _h), t in zip(player.video_frame_sizes[index:],
                                          player.video_frame_times[index:], strict=False)]


async def measure_switches(
    node: NodeProcess,
    http: aiohttp.ClientSession,
    cert: RTCCertificate,
    layers: list[tuple[str, EncodedStream]],
    switches: int,
) -> dict[str, Any]:
    from bench.clients.loopback import restrict_ice_to_loopback

    room = f"sim-switch-{secrets.token_hex(3)}"
    pub = RawSimulcastPublisher(cert, layers, name="pub")
    undo = restrict_ice_to_loopback()
    errors = DecodeErrors()
    aiortc_log = logging.getLogger("aiortc.rtcrtpreceiver")
    aiortc_log.addHandler(errors)
    samples: list[SwitchSample] = []
    player: WhepSession | None = None
    rng = secrets.SystemRandom()
    try:
        await asyncio.wait_for(pub.connect(http, node.url, room, _token(room, "pub", "publish")),
                               30)
        pub.start(switches * (SWITCH_TIMEOUT + SWITCH_GAP[1] + 1) + 60)
        await asyncio.sleep(1.0)
        token = _token(room, "viewer", "subscribe")
        player = await asyncio.wait_for(whep_play_layer(node.url, room, token, "low"), 20)
        await player.wait_for_frames(video=10, timeout=FIRST_VIDEO_TIMEOUT)
        first_error_cut = time.monotonic()
        current = "low"
        if player.last_video_size is None or player.last_video_size[0] != LAYER_WIDTHS["low"]:
            raise RuntimeError(f"player started at {player.last_video_size}, not the low layer")
        for i in range(switches):
            target = SWITCH_SEQUENCE[i % len(SWITCH_SEQUENCE)]
            index = len(player.video_frame_sizes)
            t0 = time.monotonic()
            status, _ = await post_layer(http, player.location, token, {"layer": target})
            got: float | None = None
            deadline = t0 + SWITCH_TIMEOUT
            while time.monotonic() < deadline and got is None:
                for w, t in _widths_since(player, index):
                    if w == LAYER_WIDTHS[target]:
                        got = t
                        break
                if got is None:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.5)
            times = [t0] + [t for _, t in _widths_since(player, index)]
            gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
            samples.append(SwitchSample(
                target=target, source=current,
                ms=round((got - t0) * 1000, 1) if got is not None else None,
                max_gap_ms=round(gap * 1000, 1), status=status,
            ))
            current = target
            await asyncio.sleep(rng.uniform(*SWITCH_GAP))
    finally:
        aiortc_log.removeHandler(errors)
        undo()
        if player is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(player.close(), 10)
        await pub.close(http, _token(room, "pub", "publish"))
    ok = [s.ms for s in samples if s.ms is not None]
    by_direction: dict[str, list[float]] = {}
    for s in samples:
        if s.ms is not None:
            by_direction.setdefault(f"{s.source}->{s.target}", []).append(s.ms)
    return {
        "switches": len(samples),
        "ok": len(ok),
        "switch_ms": _percentiles(ok, (50, 95)),
        "by_direction_p50_ms": {k: round(statistics.median(v), 1)
                                for k, v in sorted(by_direction.items())},
        "max_frame_gap_ms": max((s.max_gap_ms for s in samples), default=0.0),
        "decode_errors_after_first_frame": sum(1 for t in errors.times if t > first_error_cut),
        "decode_error_messages": errors.messages[:5],
        "publisher_keyframes": {la.rid: la.keyframes_sent for la in pub.layers},
        "samples": [s.__dict__ for s in samples],
    }


# --- CPU per forwarded packet -----------------------------------------------------------------


@dataclass
class CpuRun:
    mode: str  # plain, simulcast (everyone on mid) or spread (subscribers over the layers)
    subscribers: int
    connected: int = 0
    window_seconds: float = 0.0
    node_cpu_seconds: float = 0.0
    node_packets_in: float = 0.0
    forwarded: float = 0.0
    us_per_forwarded_packet: float = 0.0
    received: int = 0
    expected: int = 0
    loss_percent: float = 0.0
    layer_switches_requested: float = 0.0
    error: str = ""


async def cpu_run(
    node: NodeProcess,
    http: aiohttp.ClientSession,
    cert: RTCCertificate,
    mode: str,
    layers: list[tuple[str, EncodedStream]],
    n: int,
    *,
    warmup: float,
    duration: float,
) -> CpuRun:
    room = f"sim-{mode}-{n}-{secrets.token_hex(3)}"
    res = CpuRun(mode=mode, subscribers=n)
    pub: RawPublisher
    if mode == "plain":
        pub = RawPublisher(cert, plain_stream(layers), name="pub")
    else:
        pub = RawSimulcastPublisher(cert, layers, name="pub")
    subs = [RawPeer(cert, publish=False, audio=True, name=f"sub{i}") for i in range(n)]
    wanted = ["mid"] * n if mode != "spread" else [("low", "mid", "high")[i % 3] for i in range(n)]
    try:
        await asyncio.wait_for(pub.connect(http, node.url, room, _token(room, "pub", "publish")),
                               30)
        pub.start(warmup + duration + CONNECT_TIMEOUT + FIRST_VIDEO_TIMEOUT + 30)
        await asyncio.sleep(0.5)
        res.connected = await asyncio.wait_for(
            _connect_all(subs, http, node.url, room), CONNECT_TIMEOUT
        )
        live = [s for s in subs if s._rx is not None and not s.closed]
        if mode != "plain":
            for s, name in zip(subs, wanted, strict=True):
                if s in live and s.location:
                    status, text = await post_layer(
                        http, s.location, _token(room, s.name, "subscribe"), {"layer": name}
                    )
                    if status != 200:
                        res.error = f"layer POST: {status} {text.strip()}"
        waiting = await wait_first_video(live)
        if waiting:
            res.error = f"{waiting} subscribers got no video in {FIRST_VIDEO_TIMEOUT}s"
        await asyncio.sleep(warmup)

        pub.paused = True
        await asyncio.sleep(SETTLE)
        m0 = await node.metrics(http)
        cpu0 = node.cpu_seconds()
        sent0 = _sent_by_layer(pub)
        recv0 = [s.packets["video"] + s.packets["audio"] for s in live]
        w0 = time.monotonic()
        pub.paused = False
        await asyncio.sleep(duration)
        pub.paused = True
        w1 = time.monotonic()
        await asyncio.sleep(SETTLE)
        cpu1 = node.cpu_seconds()
        sent1 = _sent_by_layer(pub)
        recv1 = [s.packets["video"] + s.packets["audio"] for s in live]
        m1 = await node.metrics(http)
        pub.paused = False

        res.window_seconds = round(w1 - w0, 3)
        res.node_cpu_seconds = round(cpu1 - cpu0, 3)
        res.node_packets_in = sum(
            _delta(m1, m0, f'sfu_packets_in_total{{kind="{k}"}}') for k in ("video", "audio")
        )
        res.forwarded = sum(
            _delta(m1, m0, f'sfu_packets_out_total{{kind="{k}"}}') for k in ("video", "audio")
        )
        res.layer_switches_requested = _delta(m1, m0, "sfu_layer_switch_requests_total")
        if res.forwarded:
            res.us_per_forwarded_packet = round((cpu1 - cpu0) / res.forwarded * 1e6, 2)
        sent = {k: sent1[k] - sent0[k] for k in sent1}
        rid_of = {name: rid for rid, name, *_ in LAYER_SPECS}
        for s, name in zip(subs, wanted, strict=True):
            if s in live:
                video = sent["video"] if mode == "plain" else sent[rid_of[name]]
                res.expected += video + sent["audio"]
        res.received = sum(b - a for a, b in zip(recv0, recv1, strict=True))
        if res.expected:
            res.loss_percent = round(100 * (1 - res.received / res.expected), 3)
    finally:
        await asyncio.gather(*(s.close(http, _token(room, s.name, "subscribe")) for s in subs),
                             return_exceptions=True)
        await pub.close(http, _token(room, "pub", "publish"))
    return res


def _sent_by_layer(pub: RawPublisher) -> dict[str, int]:
    out = dict(pub.sent)
    if isinstance(pub, RawSimulcastPublisher):
        out.update({la.rid: la.sent_packets for la in pub.layers})
    return out


# --- the whole run ----------------------------------------------------------------------------


@dataclass
class Options:
    subscribers: list[int]
    switches: int = 20
    rounds: int = 3
    duration: float = 10.0
    warmup: float = 3.0
    spread: bool = True
    out: Path = Path("bench-results/simulcast.json")


async def _run(opts: Options) -> dict[str, Any]:
    started = time.monotonic()
    print(f"encoding three VP8 layers (320x180, 640x360, 1280x720) + Opus, {machine_info()}")
    layers = encode_layers()
    cert = RTCCertificate.generateCertificate()
    results: dict[str, Any] = {
        **runner.header(),
        "layers": {
            rid: {"size": f"{s.width}x{s.height}", "fps": s.fps,
                  "video_bitrate_bps": round(s.video_bitrate),
                  "video_packets_per_second": round(s.video_packets_per_second, 1)}
            for rid, s in layers
        },
        "options": {"subscribers": opts.subscribers, "switches": opts.switches,
                    "rounds": opts.rounds, "duration": opts.duration, "warmup": opts.warmup},
    }
    runs: list[CpuRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        node = NodeProcess(Path(tmp))
        async with aiohttp.ClientSession() as http:
            try:
                node.spawn()
                await node.wait_ready(http)
                print(f"node pid {node.pid} on {node.url}, udp {node.udp_port}")
                if opts.switches:
                    print(f"switch time: {opts.switches} switches of one aiortc WHEP player")
                    sw = await measure_switches(node, http, cert, layers, opts.switches)
                    results["switch"] = sw
                    print(f"  {_switch_line(sw)}")
                for n in opts.subscribers:
                    modes = ["plain", "simulcast"]
                    for r in range(opts.rounds):
                        for mode in modes if r % 2 == 0 else modes[::-1]:
                            run = await cpu_run(node, http, cert, mode, layers, n,
                                                warmup=opts.warmup, duration=opts.duration)
                            runs.append(run)
                            print(f"  {_run_line(run)}")
                            await asyncio.sleep(1.0)
                    if opts.spread:
                        run = await cpu_run(node, http, cert, "spread", layers, n,
                                            warmup=opts.warmup, duration=opts.duration)
                        runs.append(run)
                        print(f"  {_run_line(run)}")
                        await asyncio.sleep(1.0)
            finally:
                results["node_exit_code"] = node.stop()
                results["node_log_tail"] = node.log_tail(5)
    results["cpu_runs"] = [r.__dict__ for r in runs]
    results["cpu_ratio"] = _ratios(runs)
    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return results


def _ratios(runs: list[CpuRun]) -> dict[str, Any]:
    """Per N: simulcast µs/pkt over plain µs/pkt, paired by round, and their median."""
    out: dict[str, Any] = {}
    for n in sorted({r.subscribers for r in runs}):
        plain = [r.us_per_forwarded_packet for r in runs if r.subscribers == n
                 and r.mode == "plain" and r.us_per_forwarded_packet]
        sim = [r.us_per_forwarded_packet for r in runs if r.subscribers == n
               and r.mode == "simulcast" and r.us_per_forwarded_packet]
        spread = [r.us_per_forwarded_packet for r in runs if r.subscribers == n
                  and r.mode == "spread" and r.us_per_forwarded_packet]
        pairs = [s / p for p, s in zip(plain, sim, strict=False) if p]
        if not pairs:
            continue
        out[str(n)] = {
            "plain_us": plain,
            "simulcast_us": sim,
            "per_round": [round(x, 3) for x in pairs],
            "ratio": round(statistics.median(pairs), 3),
            "spread_us": spread,
            "spread_ratio": round(statistics.median(spread) / statistics.median(plain), 3)
            if spread else None,
        }
    return out


def _switch_line(sw: dict[str, Any]) -> str:
    ms = sw["switch_ms"]
    return (
        f"{sw['ok']}/{sw['switches']} switches: p50 {ms.get('p50')} ms, p95 {ms.get('p95')} ms, "
        f"max {ms.get('max')} ms; longest frame gap {sw['max_frame_gap_ms']} ms; "
        f"decode errors {sw['decode_errors_after_first_frame']}"
    )


def _run_line(r: CpuRun) -> str:
    return (
        f"{r.mode:>9} N={r.subscribers}: {r.forwarded / max(r.window_seconds, 1e-9):.0f} fwd "
        f"pkt/s, {r.us_per_forwarded_packet} µs/pkt, loss {r.loss_percent}%"
        + (f" [{r.error}]" if r.error else "")
    )


def format_summary(results: dict[str, Any]) -> str:
    lines = []
    sw = results.get("switch")
    if sw:
        lines.append("switch time (POST to first decoded frame of the new layer): "
                     + _switch_line(sw))
        lines.append(f"  p50 by direction: {sw['by_direction_p50_ms']}")
    for n, r in results.get("cpu_ratio", {}).items():
        lines.append(
            f"N={n}: plain {r['plain_us']} µs/pkt, simulcast (all on mid) {r['simulcast_us']} "
            f"µs/pkt -> ratio {r['ratio']} (per round {r['per_round']}); spread "
            f"{r['spread_us']} µs/pkt -> {r['spread_ratio']}"
        )
    return "\n".join(lines)


def main(opts: Options) -> int:
    results = runner.run(_run(opts))
    runner.write_json(results, opts.out)
    print()
    print(format_summary(results))
    print(f"\nwrote {opts.out} in {results['elapsed_seconds']} s")
    return 0
