"""``python -m bench fec-cost``: the CPU that video FEC costs the node, per viewer and packet.

In process, no network: the pre-encoded ~1 Mbit/s VP8 640x360 30 fps stream of
:func:`bench.rawpeer.encode_stream` goes through a real Receiver and, per viewer, the steps
`sfu.net.peer.Peer._fan_out` takes for a video packet: `DownTrack.forward`, then for a viewer
that negotiated red+ulpfec `UlpfecEncoder.on_packet` + `wrap`, and the History push of what
goes out (FEC packets included). SRTP and the socket cost the same with or without FEC per
packet sent, so they are left out; the FEC packets' own SRTP and send cost is reported as a
count (FEC packets per media packet), to be multiplied by the per-packet send cost that
``python -m bench forwarding`` measures.

Variants, per viewer: ``plain`` (no red/ulpfec negotiated), ``fec-off`` (negotiated, a clean
link: FEC off, packets go out plain), ``red-only`` (every packet in RED with no FEC, what
libwebrtc would send; not what the node does) and ``fec-<loss>`` (RED + ULPFEC at the
protection the policy picks for that loss at RTT 150 ms).
Ingress: ``ingress-red`` (a publisher's RED unwrapped and kept for FEC) and
``ingress-fec-<loss>`` (the same with its ULPFEC at that loss, random losses, recovery).

CPU is `time.process_time` over every packet of the stream, looped to `--packets`, best of
`--repeat` runs (the least disturbed by other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.rawpeer import encode_stream
from sfu.core.downtrack import DownTrack
from sfu.core.fec import FecDecoder, UlpfecEncoder
from sfu.core.receiver import Receiver, TrackInfo
from sfu.sdp import Codec
from sfu.wire import red
from sfu.wire.rtp import build_packet, parse_header

LOSSES = (0.05, 0.2, 0.5)
RTT = 0.15


def _stream(frames: int, total: int) -> list[bytes]:
    """`total` RTP packets of the pre-encoded stream, looped, seqs and timestamps running."""
    stream = encode_stream(frames=frames, audio=False)
    out: list[bytes] = []
    seq = ts = 0
    while len(out) < total:
        for frame in stream.video:
            for i, payload in enumerate(frame):
                out.append(build_packet(payload_type=96, seq=seq & 0xFFFF, timestamp=ts,
                                        ssrc=0xA, marker=i == len(frame) - 1, payload=payload,
                                        extensions=[(3, b"\x00\x01")]))
                seq += 1
            ts = (ts + 90000 // stream.fps) & 0xFFFF_FFFF
    return out[:total]


def _egress(packets: list[bytes], loss: float | None, red_on: bool,
            always_red: bool = False) -> tuple[float, float]:
    """(CPU µs per media packet per viewer, FEC packets per media packet)."""
    r = Receiver(TrackInfo("t", "video", "p", "s", Codec(96, "VP8", 90000)))
    dt = DownTrack(ssrc=0xB, kind="video", mid="1", clock_rate=90000, seq_start=0, ts_start=0)
    dt.bind(r, 100, {}, set(), 0.0)
    dt.resume()
    dt.configure_repair(nack=True, rtx_pt=None, red_pt=None,
                        fec=(116, 118, None) if red_on else None)
    if dt.fec is not None:
        dt.fec.set_rtt(RTT)
        if loss is not None:
            dt.fec.set_loss(loss, 0.0)
    hist = dt.history
    assert hist is not None
    # Headers parsed and key frames found outside the timed loop: the Receiver's work is
    # the same with or without FEC.
    parsed = []
    for p in packets:
        h = parse_header(p)
        parsed.append((p, h, r.on_rtp(p, h, 0.0)))
    fec_out = 0
    now = 0.0
    start = time.process_time()
    for p, h, key in parsed:
        now += 1 / 150
        out = dt.forward(p, h, key, now)
        if out is None:
            continue
        fec = dt.fec
        extra = None
        if fec is not None:
            extra = fec.on_packet(out, now)
            if fec.active or always_red:
                out = fec.wrap(out)
        hist.push((out[2] << 8) | out[3], out, now, h.seq)
        if extra:
            for f in extra:
                hist.push((f[2] << 8) | f[3], f, now)
            fec_out += len(extra)
    cpu = time.process_time() - start
    return cpu / len(packets) * 1e6, fec_out / len(packets)


def _ingress(packets: list[bytes], loss: float | None) -> tuple[float, float]:
    """(CPU µs per packet received, packets recovered per packet lost)."""
    seq = [0]

    def reserve(k: int) -> int:
        first = seq[0]
        seq[0] += k
        return first

    enc = UlpfecEncoder(media_ssrc=0xA, red_pt=116, ulpfec_pt=118, reserve=reserve)
    enc.set_rtt(RTT)
    if loss is not None:
        enc.set_loss(loss, 0.0)
    wire: list[bytes] = []
    for p in packets:
        h = parse_header(p)
        plain = build_packet(payload_type=96, seq=seq[0] & 0xFFFF, timestamp=h.timestamp,
                             ssrc=0xA, marker=h.marker, payload=p[h.payload_start:])
        seq[0] += 1
        wire.append(red.wrap(plain, parse_header(plain), 116))
        wire += enc.on_packet(plain, 0.0)
    rng = random.Random(1)
    kept = [w for w in wire if loss is None or rng.random() >= loss]
    lost = len(wire) - len(kept)
    dec = FecDecoder(0xA)
    start = time.process_time()
    for w in kept:
        dec.on_red(w, 118, 0.0)
    cpu = time.process_time() - start
    return cpu / len(kept) * 1e6, dec.recovered / max(lost, 1)


def _best(fn: Callable[[], tuple[float, float]], repeat: int) -> tuple[float, float]:
    runs = [fn() for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--frames", type=int, default=150, help="frames to encode (default 150)")
    ap.add_argument("--packets", type=int, default=20000,
                    help="media packets per measured run (default 20000, at most 200000)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per variant, best kept (default 3, at most 10)")
    ap.add_argument("--out", type=Path, default=Path("bench-results/fec-cost.json"),
                    help="JSON results (default bench-results/fec-cost.json)")


def main(args: argparse.Namespace) -> int:
    if not (1 <= args.packets <= 200_000 and 1 <= args.repeat <= 10 and args.frames >= 1):
        raise SystemExit("error: --packets in [1, 200000], --repeat in [1, 10], --frames >= 1")
    packets = _stream(args.frames, args.packets)
    sizes = [len(p) for p in packets]
    results: dict[str, Any] = {
        "stream": {"frames_encoded": args.frames,
                   "mean_packet_bytes": round(sum(sizes) / len(sizes), 1)},
        "rtt_s": RTT, "packets_per_run": len(packets),
    }
    rows: list[tuple[str, float, float, str]] = []
    us, _ = _best(lambda: _egress(packets, None, False), args.repeat)
    rows.append(("plain", us, 0.0, "FEC pkts/media pkt"))
    base = us
    us, _ = _best(lambda: _egress(packets, None, True), args.repeat)
    rows.append(("fec-off", us, 0.0, "FEC pkts/media pkt"))
    us, _ = _best(lambda: _egress(packets, None, True, always_red=True), args.repeat)
    rows.append(("red-only", us, 0.0, "FEC pkts/media pkt"))
    for loss in LOSSES:
        us, ratio = _best(lambda loss=loss: _egress(packets, loss, True),  # type: ignore[misc]
                          args.repeat)
        rows.append((f"fec-{round(loss * 100)}%", us, ratio, "FEC pkts/media pkt"))
    us, _ = _best(lambda: _ingress(packets, None), args.repeat)
    rows.append(("ingress-red", us, 0.0, "recovered/lost"))
    for loss in LOSSES:
        us, ratio = _best(lambda loss=loss: _ingress(packets, loss),  # type: ignore[misc]
                          args.repeat)
        rows.append((f"ingress-fec-{round(loss * 100)}%", us, ratio, "recovered/lost"))
    results["variants"] = {name: {"cpu_us_per_packet": round(us, 2),
                                  "extra_over_plain_us": round(us - base, 2)
                                  if not name.startswith("ingress") else None,
                                  "ratio": round(ratio, 3), "ratio_is": what}
                           for name, us, ratio, what in rows}
    print(f"{len(packets)} packets per run, mean {results['stream']['mean_packet_bytes']} B")
    print(f"{'variant':<18}{'CPU µs/pkt':>12}{'over plain':>12}{'ratio':>10}  ratio is")
    for name, us, ratio, what in rows:
        extra = f"{us - base:+.2f}" if not name.startswith("ingress") else ""
        print(f"{name:<18}{us:>12.2f}{extra:>12}{ratio:>10.3f}  {what}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0
