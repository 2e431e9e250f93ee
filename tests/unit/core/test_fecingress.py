"""FecIngress on a Chromium-like RED+ULPFEC stream: what is forwarded, what is skipped, and
what the NACK generator is left asking for, on a virtual clock."""

from __future__ import annotations

from sfu.core.fec import UlpfecEncoder
from sfu.core.fecingress import FecIngress, Forward, Skip
from sfu.core.nack import NackGenerator
from sfu.core.receiver import Receiver, TrackInfo
from sfu.sdp import Codec
from sfu.wire.rtp import build_packet, parse_header

SSRC = 0x51
RED, ULPFEC = 116, 118


def _vp8(pid: int, first: bool, key: bool) -> bytes:
    """A VP8 payload: descriptor with a 15-bit picture ID, then a payload header byte."""
    b0 = 0x80 | (0x10 if first else 0)
    return bytes((b0, 0x80, 0x80 | (pid >> 8), pid & 0xFF, 0x00 if key else 0x01)) + b"v" * 40


def _stream() -> tuple[list[bytes], list[bytes]]:
    """(wire packets, the plain media packets): 4 frames of 2 packets, each frame followed
    by its ULPFEC packet (protection 0.5), as Chromium sends them."""
    seq = [1000]

    def reserve(n: int) -> int:
        first = seq[0]
        seq[0] += n
        return first

    enc = UlpfecEncoder(media_ssrc=SSRC, red_pt=RED, ulpfec_pt=ULPFEC, reserve=reserve,
                        rtt=0.2)
    enc.set_loss(0.25, 0.0)
    wire, plain = [], []
    for f in range(4):
        for i in range(2):
            p = build_packet(payload_type=96, seq=seq[0], timestamp=3000 * f, ssrc=SSRC,
                             marker=i == 1, payload=_vp8(7 + f, i == 0, f == 0))
            seq[0] += 1
            plain.append(p)
            wire.append(enc.wrap(p))
            wire += enc.on_packet(p, 0.0)
    return wire, plain


def _run(wire: list[bytes], lost: set[int]) -> tuple[list[Forward | Skip], NackGenerator]:
    r = Receiver(TrackInfo("t", "video", "p", "s", Codec(96, "VP8", 90000)))
    ing = FecIngress(SSRC, ULPFEC)
    gen = NackGenerator()
    steps: list[Forward | Skip] = []
    for i, w in enumerate(wire):
        if i in lost:
            continue
        h = parse_header(w)
        steps += ing.on_packet(w, h, False, i / 100, inspect=r, nack=gen).steps
    return steps, gen


def test_wire_layout_media_then_its_fec() -> None:
    wire, _ = _stream()
    assert [parse_header(w).seq for w in wire] == list(range(1000, 1012))
    assert [w[parse_header(w).payload_start] for w in wire] == [96, 96, ULPFEC] * 4


def test_no_loss_forwards_every_media_packet_and_skips_every_fec_seq() -> None:
    wire, plain = _stream()
    steps, gen = _run(wire, set())
    assert [s.data for s in steps if isinstance(s, Forward)] == plain
    assert [s.seqs[0][0] for s in steps if isinstance(s, Skip)] == [1002, 1005, 1008, 1011]
    assert [s.keyframe for s in steps if isinstance(s, Forward)] == [True] + [False] * 7
    assert gen.get_timer() is None  # nothing missing


def test_lost_media_is_rebuilt_and_a_lost_fec_seq_is_found_not_nacked() -> None:
    wire, plain = _stream()
    # 1004 (frame 2's last packet) and 1008 (frame 3's FEC packet) lost on the uplink.
    steps, gen = _run(wire, {4, 8})
    forwarded = [s for s in steps if isinstance(s, Forward)]
    assert sorted(s.data for s in forwarded) == sorted(plain)
    rebuilt = [s for s in forwarded if s.recovered]
    assert [s.hdr.seq for s in rebuilt] == [1004] and not rebuilt[0].keyframe
    skips = [s for s in steps if isinstance(s, Skip)]
    # The lost FEC seq is skipped (lost=1) before frame 4's first packet goes out.
    lost_skip = next(s for s in skips if s.lost)
    assert lost_skip.seqs == [(1008, 6000)]
    assert steps.index(lost_skip) < steps.index(next(s for s in forwarded if s.hdr.seq == 1009))
    assert gen.get_timer() is None  # neither seq is left for the NACK generator
