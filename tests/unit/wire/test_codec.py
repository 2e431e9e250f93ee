"""Keyframe detection: VP8 payload descriptor (RFC 7741) and H.264 NAL headers (RFC 6184)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.wire.codec import (
    h264_is_keyframe,
    is_keyframe,
    vp8_descriptor_size,
    vp8_is_keyframe,
)

# --- VP8 ---------------------------------------------------------------------------------
# Descriptor byte 0: X R N S R PID(3). Extension byte: I L T K RSV(4).
# The first payload-header byte has P (inverse key frame flag) in bit 0.


@pytest.mark.parametrize(
    ("payload", "size"),
    [
        pytest.param("10", 1, id="no X"),
        pytest.param("9000", 2, id="X, no optional fields"),
        pytest.param("908005", 3, id="I, 7-bit picture id"),
        pytest.param("90808123", 4, id="I, 15-bit picture id"),
        pytest.param("904007", 3, id="L"),
        pytest.param("902040", 3, id="T"),
        pytest.param("901040", 3, id="K"),
        pytest.param("903040", 3, id="T and K share one byte"),
        pytest.param("90f0812307c0", 6, id="I(15) L T K"),
        pytest.param("90d0050740", 5, id="I(7) L K"),
    ],
)
def test_vp8_descriptor_size(payload: str, size: int) -> None:
    assert vp8_descriptor_size(bytes.fromhex(payload)) == size
    assert vp8_descriptor_size(memoryview(bytes.fromhex(payload + "00"))) == size


@pytest.mark.parametrize(
    "payload",
    ["", "90", "9080", "908081", "9040", "9020", "9010", "90f0812307"],
)
def test_vp8_descriptor_size_truncated(payload: str) -> None:
    assert vp8_descriptor_size(bytes.fromhex(payload)) == -1


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        pytest.param("1000", True, id="S, PID 0, P=0"),
        pytest.param("109d012a", False, id="P=1 delta frame"),
        pytest.param("1050", True, id="P=0 with other header bits set"),
        pytest.param("0000", False, id="S=0: continuation"),
        pytest.param("1100", False, id="PID=1"),
        pytest.param("1400", False, id="PID=4"),
        pytest.param("3000", True, id="N bit set is still a keyframe"),
        pytest.param("900000", True, id="X with empty extension"),
        pytest.param("90800500", True, id="I 7-bit"),
        pytest.param("90800501", False, id="I 7-bit, delta"),
        pytest.param("9080812300", True, id="I 15-bit (0x23 would read as P=1)"),
        pytest.param("9080812201", False, id="I 15-bit delta (0x22 would read as P=0)"),
        pytest.param("90400700", True, id="L"),
        pytest.param("90400701", False, id="L delta"),
        pytest.param("90204000", True, id="T"),
        pytest.param("90104000", True, id="K"),
        pytest.param("90f0812307c000", True, id="I(15) L T K"),
        pytest.param("90f0812307c001", False, id="I(15) L T K delta"),
        pytest.param("80f0812307c000", False, id="all fields but S=0"),
        pytest.param("91f0812307c000", False, id="all fields but PID=1"),
    ],
)
def test_vp8_is_keyframe(payload: str, key: bool) -> None:
    data = bytes.fromhex(payload)
    assert vp8_is_keyframe(data) is key
    assert vp8_is_keyframe(memoryview(data)) is key
    assert is_keyframe("VP8", data) is key


@pytest.mark.parametrize(
    "payload",
    ["", "10", "90", "9080", "908005", "90808123", "90f0812307c0"],
)
def test_vp8_truncated_is_not_keyframe(payload: str) -> None:
    assert vp8_is_keyframe(bytes.fromhex(payload)) is False


# --- H.264 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        pytest.param("6588840021", True, id="IDR slice (type 5)"),
        pytest.param("25888400", True, id="IDR with NRI 1"),
        pytest.param("6742c01f", True, id="SPS (type 7)"),
        pytest.param("68ce3c80", False, id="PPS (type 8)"),
        pytest.param("419a2000", False, id="non-IDR slice (type 1)"),
        pytest.param("0605ff", False, id="SEI (type 6)"),
        pytest.param("09f0", False, id="AUD (type 9)"),
        pytest.param("00", False, id="type 0"),
        # STAP-A: indicator 0x78 (type 24), then 16-bit size + NAL, repeated
        pytest.param("78" "00026742" "000268ce" "0003658884", True, id="STAP-A SPS PPS IDR"),
        pytest.param("78" "000268ce" "0003658884", True, id="STAP-A PPS IDR"),
        pytest.param("78" "000268ce" "0002419a", False, id="STAP-A PPS non-IDR"),
        pytest.param("78" "0002419a", False, id="STAP-A single non-IDR"),
        # FU-A: indicator 0x7c (type 28), FU header S E R type
        pytest.param("7c85888400", True, id="FU-A start of IDR"),
        pytest.param("7c05888400", False, id="FU-A continuation of IDR"),
        pytest.param("7c45888400", False, id="FU-A end of IDR"),
        pytest.param("7c819a2000", False, id="FU-A start of non-IDR"),
        pytest.param("7c87", True, id="FU-A start of SPS"),
        pytest.param("790000", False, id="STAP-B (type 25) not handled"),
        pytest.param("7d85", False, id="FU-B (type 29) not handled"),
        pytest.param("7f85", False, id="type 31"),
    ],
)
def test_h264_is_keyframe(payload: str, key: bool) -> None:
    data = bytes.fromhex(payload)
    assert h264_is_keyframe(data) is key
    assert h264_is_keyframe(memoryview(data)) is key
    assert is_keyframe("H264", data) is key


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("", id="empty"),
        pytest.param("7c", id="FU-A without FU header"),
        pytest.param("78", id="STAP-A without size"),
        pytest.param("7800", id="STAP-A half size"),
        pytest.param("780005", id="STAP-A size only"),
        pytest.param("7800056588", id="STAP-A NAL shorter than size"),
        pytest.param("78000065", id="STAP-A zero size"),
        pytest.param("78" "000268ce" "00096588", id="STAP-A second NAL truncated"),
    ],
)
def test_h264_truncated_is_not_keyframe(payload: str) -> None:
    assert h264_is_keyframe(bytes.fromhex(payload)) is False


def test_is_keyframe_other_codecs_false() -> None:
    assert is_keyframe("OPUS", b"\x10\x00") is False
    assert is_keyframe("VP9", b"\x10\x00") is False
    assert is_keyframe("vp8", b"\x10\x00") is False  # names are upper-case, as in SDP


@given(st.binary(max_size=32))
def test_random_payloads_never_raise(data: bytes) -> None:
    assert isinstance(vp8_is_keyframe(data), bool)
    assert isinstance(h264_is_keyframe(data), bool)
    assert -1 <= vp8_descriptor_size(data) <= len(data)
