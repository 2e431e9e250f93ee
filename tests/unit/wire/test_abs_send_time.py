"""abs-send-time: the element put first in the block, stamped in place at send time."""

import pytest

from sfu.wire import abs_send_time as ast
from sfu.wire.rtp import ONE_BYTE_PROFILE, build_packet, iter_extensions, parse_header, rewrite


def test_value_is_6_18_fixed_point_wrapping_every_64_s() -> None:
    assert ast.value(1.0) == 1 << 18
    assert ast.value(0.5) == 1 << 17
    assert ast.value(64.0 + 0.25) == ast.value(0.25)


@pytest.mark.parametrize("profile", [ONE_BYTE_PROFILE, 0x1000])
def test_element_first_then_stamped_at_send(profile: int) -> None:
    original = build_packet(payload_type=96, seq=7, timestamp=9, ssrc=5, payload=b"abc",
                            extensions=[(2, b"\x01\x02")])
    hdr = parse_header(original)
    body = original[hdr.ext_start:hdr.ext_end]
    if profile != ONE_BYTE_PROFILE:
        body = bytes((2, 2, 1, 2))  # the same element in the two-byte form
    ext = ast.add_abs_send_time((profile, body), 3)
    pkt = rewrite(original, hdr, payload_type=96, seq=8, timestamp=9, ssrc=5, extensions=ext)
    assert ast.read(pkt, 3) == 0
    out = ast.stamp(pkt, 2.5)
    assert ast.read(out, 3) == ast.value(2.5)
    elements = dict(iter_extensions(out, parse_header(out)))
    assert elements[3] == ast.value(2.5).to_bytes(3, "big")
    assert elements[2] == b"\x01\x02"  # the rest of the block is untouched
    assert parse_header(out).payload_start == len(out) - 3 and out.endswith(b"abc")
    assert ast.read(out, 4) is None  # another id in front: not ours


def test_no_block_nothing_stamped_and_bad_ids_rejected() -> None:
    plain = build_packet(payload_type=96, seq=1, timestamp=0, ssrc=1, payload=b"x")
    assert ast.stamp(plain, 1.0) == plain
    with pytest.raises(ValueError):
        ast.add_abs_send_time((ONE_BYTE_PROFILE, b""), 15)
    with pytest.raises(ValueError):
        ast.add_abs_send_time((0x1000, b""), 0)
