"""RFC 5109 ULPFEC and FlexFEC-03 wire formats and the XOR recovery they share."""

from __future__ import annotations

import random

import pytest

from sfu.wire import flexfec, ulpfec
from sfu.wire.rtp import build_packet, parse_header


def media_group(n: int, base: int = 0xFFFA, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(build_packet(
            payload_type=96, seq=(base + i) & 0xFFFF, timestamp=1234 + 3000 * (i // 3),
            ssrc=0xABC, marker=i % 3 == 2, extensions=[(1, bytes([i]))] if i % 2 else [],
            padding=4 if i == 1 else 0,
            payload=bytes(rng.randrange(256) for _ in range(rng.randrange(20, 200)))))
    return out


def seqs_of(pkts: list[bytes]) -> list[int]:
    return [parse_header(p).seq for p in pkts]


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_every_single_loss_is_recovered_exactly(n: int) -> None:
    pkts = media_group(n)
    fec = ulpfec.xor(pkts, seqs_of(pkts))
    for lost in range(n):
        have = {parse_header(p).seq: p for i, p in enumerate(pkts) if i != lost}
        got = ulpfec.recover(fec, have, ssrc=0xABC)
        assert got == (parse_header(pkts[lost]).seq, pkts[lost]), lost


def test_two_losses_are_not_guessed() -> None:
    pkts = media_group(4)
    fec = ulpfec.xor(pkts, seqs_of(pkts))
    have = {parse_header(p).seq: p for p in pkts[2:]}
    assert ulpfec.recover(fec, have, 0xABC) is None
    assert ulpfec.recover(fec, {parse_header(p).seq: p for p in pkts}, 0xABC) is None


def test_ulpfec_header_layout_short_mask() -> None:
    a = build_packet(payload_type=96, seq=100, timestamp=0x01020304, ssrc=1, payload=b"\x0f\xf0",
                     marker=True)
    b = build_packet(payload_type=96, seq=102, timestamp=0x01020300, ssrc=1, payload=b"\xff")
    payload = ulpfec.encode(ulpfec.xor([a, b], [100, 102]))
    # E=0 L=0 | P X CC xor = 0 | M^0 + PT 96^96 = 0x80 | SN base 100 | TS xor 4 | len 2^1 = 3
    assert payload[:10] == bytes([0x00, 0x80, 0x00, 0x64, 0, 0, 0, 4, 0x00, 0x03])
    # protection length 2, mask bits 0 and 2: 1010 0000 0000 0000
    assert payload[10:14] == bytes([0x00, 0x02, 0xA0, 0x00])
    assert payload[14:] == bytes([0x0F ^ 0xFF, 0xF0])
    dec = ulpfec.decode(payload)
    assert dec.seqs == [100, 102] and dec.length == 3 and dec.bits1 == 0x80


def test_ulpfec_long_mask_and_wrap() -> None:
    pkts = media_group(30, base=0xFFF0)
    fec = ulpfec.xor(pkts[::2], seqs_of(pkts)[::2])
    payload = ulpfec.encode(fec)
    assert payload[0] & 0x40  # L bit: 48-bit mask
    dec = ulpfec.decode(payload)
    assert dec.seqs == seqs_of(pkts)[::2] and dec.payload == fec.payload
    have = {parse_header(p).seq: p for p in pkts[::2] if parse_header(p).seq != 0xFFF4}
    assert ulpfec.recover(dec, have, 0xABC) == (0xFFF4, pkts[4])


def test_ulpfec_rejects_bad_input() -> None:
    with pytest.raises(ulpfec.FecError):
        ulpfec.decode(b"\x00" * 5)
    with pytest.raises(ulpfec.FecError):
        ulpfec.decode(bytes([0x80]) + bytes(13))
    pkts = media_group(50)
    with pytest.raises(ulpfec.FecError):
        ulpfec.encode(ulpfec.xor(pkts, seqs_of(pkts)))


@pytest.mark.parametrize("span", [1, 15, 16, 46, 47, 109])
def test_flexfec_mask_round_trip(span: int) -> None:
    pkts = media_group(span, base=0xFFC0)
    chosen = sorted({0, span - 1, span // 2})
    fec = ulpfec.xor([pkts[i] for i in chosen], [seqs_of(pkts)[i] for i in chosen])
    data = flexfec.packet(fec, media_ssrc=0xABC, fec_ssrc=0xDEF, payload_type=120, seq=7,
                          timestamp=99)
    h = parse_header(data)
    assert (h.ssrc, h.payload_type, h.seq) == (0xDEF, 120, 7)
    mask_bytes = 2 if span <= 15 else 6 if span <= 46 else 14
    assert len(data) == 12 + 18 + mask_bytes + len(fec.payload)
    ssrc, dec = flexfec.parse_packet(data)
    assert ssrc == 0xABC
    assert sorted(dec.seqs) == sorted(fec.seqs)
    assert (dec.bits0, dec.bits1, dec.ts, dec.length, dec.payload) == (
        fec.bits0, fec.bits1, fec.ts, fec.length, fec.payload)


def test_flexfec_rejects_span_beyond_109() -> None:
    pkts = media_group(110)
    with pytest.raises(ulpfec.FecError):
        flexfec.encode(ulpfec.xor([pkts[0], pkts[-1]], [seqs_of(pkts)[0], seqs_of(pkts)[-1]]), 1)
