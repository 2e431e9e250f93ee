"""RTP header codec: RFC 3550 fixed header, RFC 8285 extensions, rewrite, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire.rtp import (
    ONE_BYTE_PROFILE,
    TWO_BYTE_PROFILE,
    RtpError,
    build_packet,
    get_extension,
    iter_extensions,
    pack_extensions,
    parse_header,
    remap_extensions,
    rewrite,
    seq_newer,
)

# V=2 P=0 X=0 CC=0 | M=1 PT=96 | seq 0x1234 | ts 0xDEADBEEF | SSRC 0x11223344 | payload 01 02 03
SIMPLE = bytes.fromhex("80e01234deadbeef11223344" "010203")

# CC=2, M=0 PT=96, seq 1, ts 2, SSRC 3, CSRCs 0x0A0B0C0D 0x01020304, payload AA BB
WITH_CSRCS = bytes.fromhex("82600001" "00000002" "00000003" "0a0b0c0d" "01020304" "aabb")

# P=1, PT=111: payload "AB" then 3 bytes of padding whose last byte is the count
PADDED = bytes.fromhex("a06f0005" "00000010" "00000020" "4142" "000003")

# X=1, one-byte block (0xBEDE, 3 words):
#   10 aa          id 1, len 1
#   00 00          padding between elements
#   32 01 02 03    id 3, len 3
#   00             padding
#   51 bb cc       id 5, len 2
# payload ff
ONE_BYTE = bytes.fromhex(
    "90600007" "00000064" "cafebabe" "bede0003" "10aa0000" "32010203" "0051bbcc" "ff"
)

# one-byte block where id 15 stops parsing: 10 aa | f0 99 | 20 01 (ignored) | 00 00
ONE_BYTE_ID15 = bytes.fromhex("90600007" "00000064" "cafebabe" "bede0002" "10aaf099" "20010000" "ff")

# X=1, two-byte block with app bits (0x1005, 3 words):
#   0f 01 ab        id 15 (legal in two-byte form), len 1
#   00              padding
#   02 00           id 2, len 0
#   20 03 01 02 03  id 32, len 3
#   00              padding
# payload ee ee
TWO_BYTE = bytes.fromhex(
    "90600008" "00000065" "cafebabe" "10050003" "0f01ab00" "02002003" "01020300" "eeee"
)


def test_parse_simple_header() -> None:
    h = parse_header(SIMPLE)
    assert (h.marker, h.payload_type, h.seq, h.timestamp, h.ssrc) == (
        True, 96, 0x1234, 0xDEADBEEF, 0x11223344
    )
    assert (h.csrc_end, h.ext_profile, h.ext_start, h.ext_end) == (12, 0, 0, 0)
    assert (h.payload_start, h.payload_end, h.payload_size) == (12, 15, 3)
    assert iter_extensions(SIMPLE, h) == []
    assert get_extension(SIMPLE, h, 1) is None


def test_parse_csrcs() -> None:
    h = parse_header(WITH_CSRCS)
    assert (h.marker, h.payload_type, h.seq, h.timestamp, h.ssrc) == (False, 96, 1, 2, 3)
    assert h.csrc_end == 20
    assert h.payload_start == 20
    assert WITH_CSRCS[h.payload_start : h.payload_end] == b"\xaa\xbb"


def test_parse_padding() -> None:
    h = parse_header(PADDED)
    assert h.payload_type == 111
    assert (h.payload_start, h.payload_end) == (12, 14)
    assert PADDED[h.payload_start : h.payload_end] == b"AB"


def test_padding_may_fill_the_whole_payload() -> None:
    data = bytes.fromhex("a0600001" "00000000" "00000001" "00000004")
    h = parse_header(data)
    assert (h.payload_start, h.payload_end) == (12, 12)


def test_parse_one_byte_extensions_with_padding_between_elements() -> None:
    h = parse_header(ONE_BYTE)
    assert h.ext_profile == ONE_BYTE_PROFILE
    assert (h.ext_start, h.ext_end, h.payload_start, h.payload_end) == (16, 28, 28, 29)
    assert iter_extensions(ONE_BYTE, h) == [
        (1, b"\xaa"),
        (3, b"\x01\x02\x03"),
        (5, b"\xbb\xcc"),
    ]
    assert get_extension(ONE_BYTE, h, 3) == b"\x01\x02\x03"
    assert get_extension(ONE_BYTE, h, 5) == b"\xbb\xcc"
    assert get_extension(ONE_BYTE, h, 2) is None


def test_one_byte_id_15_stops_parsing() -> None:
    h = parse_header(ONE_BYTE_ID15)
    assert iter_extensions(ONE_BYTE_ID15, h) == [(1, b"\xaa")]
    assert get_extension(ONE_BYTE_ID15, h, 2) is None


def test_parse_two_byte_extensions() -> None:
    h = parse_header(TWO_BYTE)
    assert h.ext_profile == 0x1005
    assert (h.ext_start, h.ext_end, h.payload_start) == (16, 28, 28)
    assert iter_extensions(TWO_BYTE, h) == [(15, b"\xab"), (2, b""), (32, b"\x01\x02\x03")]
    assert get_extension(TWO_BYTE, h, 2) == b""
    assert get_extension(TWO_BYTE, h, 32) == b"\x01\x02\x03"
    assert TWO_BYTE[h.payload_start : h.payload_end] == b"\xee\xee"


def test_unknown_extension_profile_yields_no_elements() -> None:
    data = bytes.fromhex("90600001" "00000000" "00000001" "abcd0001" "10aa0000" "ff")
    h = parse_header(data)
    assert h.ext_profile == 0xABCD
    assert h.payload_start == 20
    assert iter_extensions(data, h) == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(SIMPLE[:11], id="11 bytes"),
        pytest.param(bytes.fromhex("40e01234deadbeef11223344"), id="version 1"),
        pytest.param(bytes.fromhex("00e01234deadbeef11223344"), id="version 0"),
        pytest.param(bytes.fromhex("c0e01234deadbeef11223344"), id="version 3"),
        pytest.param(bytes.fromhex("81600001000000000000000101"), id="csrc beyond end"),
        pytest.param(
            bytes.fromhex("8f600001" "00000000" "00000001") + bytes(56), id="15 csrcs, 14 present"
        ),
        pytest.param(bytes.fromhex("90600001" "00000000" "00000001" "bede"), id="ext header cut"),
        pytest.param(
            bytes.fromhex("90600001" "00000000" "00000001" "bede0002" "10aa0000"),
            id="ext length beyond end",
        ),
        pytest.param(
            bytes.fromhex("a0600001" "00000000" "00000001" "414200"), id="padding length 0"
        ),
        pytest.param(
            bytes.fromhex("a0600001" "00000000" "00000001" "414204"), id="padding too big"
        ),
        pytest.param(
            bytes.fromhex("b0600001" "00000000" "00000001" "bede0001" "10aa0002"),
            id="padding reaches into extension block",
        ),
        pytest.param(
            bytes.fromhex("a0600001" "00000000" "00000001"), id="padding bit, no room"
        ),
    ],
)
def test_malformed_headers_raise(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_header(data)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param("bede0001" "13010203", id="one-byte value past block"),
        pytest.param("10000001" "00000005", id="two-byte header truncated"),
        pytest.param("10000001" "0105aabb", id="two-byte value past block"),
    ],
)
def test_malformed_extension_elements_raise(block: str) -> None:
    data = bytes.fromhex("90600001" "00000000" "00000001" + block + "ff")
    h = parse_header(data)
    with pytest.raises(RtpError):
        iter_extensions(data, h)
    with pytest.raises(RtpError):
        get_extension(data, h, 1)


def test_rtp_error_is_a_value_error() -> None:
    assert issubclass(RtpError, ValueError)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_only_raise_rtp_error(data: bytes) -> None:
    try:
        h = parse_header(data)
    except RtpError:
        return
    assert 12 <= h.csrc_end <= h.payload_start <= h.payload_end <= len(data)
    try:
        for ext_id, value in iter_extensions(data, h):
            assert 1 <= ext_id <= 255
            assert len(value) <= 255
    except RtpError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 0x3F),
    st.sampled_from([b"", b"\xbe\xde", b"\x10\x00", b"\x10\x0f"]),
    st.binary(max_size=40),
)
def test_random_bytes_after_valid_header_only_raise_rtp_error(
    flags: int, profile: bytes, tail: bytes
) -> None:
    # Version 2 always and a real extension profile, so the deeper checks are exercised.
    data = bytes([0x80 | flags]) + bytes(11) + profile + tail
    try:
        h = parse_header(data)
        iter_extensions(data, h)
    except RtpError:
        pass


# --- pack_extensions ---------------------------------------------------------------------


def test_pack_empty_means_no_block() -> None:
    assert pack_extensions([]) == (0, b"")


def test_pack_one_byte_form_padded_to_32_bits() -> None:
    profile, body = pack_extensions([(1, b"\xaa"), (3, b"\x01\x02")])
    assert profile == ONE_BYTE_PROFILE == 0xBEDE
    assert body == bytes.fromhex("10aa3101" "02000000")


def test_pack_one_byte_already_aligned_gets_no_padding() -> None:
    assert pack_extensions([(1, b"\x01\x02\x03")]) == (0xBEDE, bytes.fromhex("12010203"))


def test_pack_one_byte_max_length_16() -> None:
    value = bytes(range(16))
    profile, body = pack_extensions([(14, value)])
    assert profile == 0xBEDE
    assert body == b"\xef" + value + b"\x00\x00\x00"


def test_pack_id_15_forces_two_byte_form() -> None:
    assert pack_extensions([(15, b"\x01")]) == (TWO_BYTE_PROFILE, bytes.fromhex("0f010100"))
    assert TWO_BYTE_PROFILE == 0x1000


def test_pack_id_above_14_forces_two_byte_for_all_elements() -> None:
    profile, body = pack_extensions([(1, b"\xaa"), (20, b"\xbb\xcc")])
    assert profile == 0x1000
    assert body == bytes.fromhex("0101aa14" "02bbcc00")


def test_pack_length_17_forces_two_byte_form() -> None:
    value = bytes(range(17))
    profile, body = pack_extensions([(2, value)])
    assert profile == 0x1000
    assert body == b"\x02\x11" + value + b"\x00"
    assert len(body) == 20


def test_pack_empty_value_forces_two_byte_form() -> None:
    assert pack_extensions([(4, b"")]) == (0x1000, bytes.fromhex("04000000"))


@pytest.mark.parametrize(
    "elements",
    [[(0, b"\x01")], [(256, b"\x01")], [(1, bytes(256))]],
    ids=["id 0", "id 256", "length 256"],
)
def test_pack_out_of_range_raises(elements: list[tuple[int, bytes]]) -> None:
    with pytest.raises(ValueError):
        pack_extensions(elements)


# --- remap_extensions --------------------------------------------------------------------


def test_remap_renumbers_and_drops_ids() -> None:
    h = parse_header(ONE_BYTE)
    # keep 3 -> 7 and 5 -> 1, drop 1; output keeps the packet's element order
    assert remap_extensions(ONE_BYTE, h, {3: 7, 5: 1}) == (
        0xBEDE,
        bytes.fromhex("72010203" "11bbcc00"),
    )


def test_remap_to_id_above_14_switches_to_two_byte() -> None:
    h = parse_header(ONE_BYTE)
    assert remap_extensions(ONE_BYTE, h, {1: 20}) == (0x1000, bytes.fromhex("1401aa00"))


def test_remap_from_two_byte_to_one_byte() -> None:
    h = parse_header(TWO_BYTE)
    assert remap_extensions(TWO_BYTE, h, {15: 2, 32: 3}) == (
        0xBEDE,
        bytes.fromhex("20ab3201" "0203" "0000"),
    )


def test_remap_with_nothing_kept_gives_no_block() -> None:
    h = parse_header(ONE_BYTE)
    assert remap_extensions(ONE_BYTE, h, {9: 1}) == (0, b"")
    assert remap_extensions(ONE_BYTE, h, {}) == (0, b"")
    s = parse_header(SIMPLE)
    assert remap_extensions(SIMPLE, s, {1: 1}) == (0, b"")


# --- rewrite -----------------------------------------------------------------------------

# M=1, PT=96, CC=1 (CSRC 0x01020304), one-byte ext [(1, aa)], payload "hello", 2 bytes padding
FULL = bytes.fromhex(
    "b1e00064" "00001000" "00000abc" "01020304" "bede0001" "10aa0000" "68656c6c6f" "0002"
)


def test_full_vector_parses() -> None:
    h = parse_header(FULL)
    assert (h.marker, h.payload_type, h.seq, h.timestamp, h.ssrc) == (True, 96, 100, 4096, 0xABC)
    assert (h.csrc_end, h.ext_start, h.ext_end, h.payload_start, h.payload_end) == (
        16, 20, 24, 24, 29
    )
    assert iter_extensions(FULL, h) == [(1, b"\xaa")]


def test_rewrite_keeps_everything_but_pt_seq_ts_ssrc() -> None:
    h = parse_header(FULL)
    out = rewrite(FULL, h, payload_type=100, seq=0xFFFF, timestamp=0xFFFFFFFF, ssrc=0x55667788)
    assert isinstance(out, bytes)  # SRTP takes bytes: no extra copy on the hot path
    assert bytes(out) == bytes.fromhex(
        "b1e4ffff" "ffffffff" "55667788" "01020304" "bede0001" "10aa0000" "68656c6c6f" "0002"
    )
    n = parse_header(bytes(out))
    assert (n.marker, n.payload_type, n.seq, n.timestamp, n.ssrc) == (
        True, 100, 0xFFFF, 0xFFFFFFFF, 0x55667788
    )
    assert FULL == bytes.fromhex(
        "b1e00064" "00001000" "00000abc" "01020304" "bede0001" "10aa0000" "68656c6c6f" "0002"
    ), "input must not be modified"


def test_rewrite_clears_marker_only_when_input_had_none() -> None:
    h = parse_header(WITH_CSRCS)
    out = rewrite(WITH_CSRCS, h, payload_type=127, seq=2, timestamp=3, ssrc=4)
    assert out[:2] == bytes.fromhex("827f")


def test_rewrite_with_new_extension_block() -> None:
    h = parse_header(FULL)
    ext = pack_extensions([(3, b"\x01\x02"), (20, b"\x09")])  # two-byte form
    out = bytes(rewrite(FULL, h, payload_type=97, seq=7, timestamp=8, ssrc=9, extensions=ext))
    assert out == bytes.fromhex(
        "b1e10007" "00000008" "00000009" "01020304"
        "10000002" "03020102" "14010900"
        "68656c6c6f" "0002"
    )
    n = parse_header(out)
    assert n.ext_profile == 0x1000
    assert iter_extensions(out, n) == [(3, b"\x01\x02"), (20, b"\x09")]
    assert out[n.payload_start : n.payload_end] == b"hello"
    assert n.marker


def test_rewrite_removes_extension_block() -> None:
    h = parse_header(FULL)
    out = bytes(rewrite(FULL, h, payload_type=96, seq=1, timestamp=2, ssrc=3, extensions=(0, b"")))
    assert out == bytes.fromhex("a1e00001" "00000002" "00000003" "01020304" "68656c6c6f" "0002")
    n = parse_header(out)
    assert n.ext_profile == 0
    assert out[n.payload_start : n.payload_end] == b"hello"


def test_rewrite_adds_block_to_packet_without_one() -> None:
    h = parse_header(PADDED)
    out = bytes(
        rewrite(PADDED, h, payload_type=111, seq=5, timestamp=16, ssrc=32,
                extensions=pack_extensions([(1, b"\x7f")]))
    )
    assert out == bytes.fromhex(
        "b06f0005" "00000010" "00000020" "bede0001" "107f0000" "4142" "000003"
    )


def test_rewrite_with_remapped_block() -> None:
    h = parse_header(ONE_BYTE)
    ext = remap_extensions(ONE_BYTE, h, {5: 2})
    out = bytes(rewrite(ONE_BYTE, h, payload_type=100, seq=1, timestamp=2, ssrc=3, extensions=ext))
    n = parse_header(out)
    assert iter_extensions(out, n) == [(2, b"\xbb\xcc")]
    assert out[n.payload_start :] == b"\xff"
    assert out[:12] == bytes.fromhex("90640001" "00000002" "00000003")


# --- build_packet ------------------------------------------------------------------------


def test_build_packet_matches_hand_built_vector() -> None:
    built = build_packet(
        payload_type=96, seq=100, timestamp=4096, ssrc=0xABC, payload=b"hello", marker=True,
        extensions=[(1, b"\xaa")], csrcs=[0x01020304], padding=2,
    )
    assert built == FULL


def test_build_packet_simple_matches_vector() -> None:
    assert build_packet(
        payload_type=96, seq=0x1234, timestamp=0xDEADBEEF, ssrc=0x11223344,
        payload=b"\x01\x02\x03", marker=True,
    ) == SIMPLE


@pytest.mark.parametrize("padding", [0, 1, 4, 255])
@pytest.mark.parametrize(
    "extensions",
    [[], [(1, b"\x01")], [(2, b"ab"), (14, bytes(16))], [(15, b"x"), (200, bytes(30))]],
)
def test_build_packet_round_trips(padding: int, extensions: list[tuple[int, bytes]]) -> None:
    data = build_packet(
        payload_type=111, seq=65535, timestamp=2**32 - 1, ssrc=2**32 - 1, payload=b"payload",
        extensions=extensions, csrcs=[1, 2, 3], padding=padding,
    )
    h = parse_header(data)
    assert (h.marker, h.payload_type, h.seq, h.timestamp, h.ssrc) == (
        False, 111, 65535, 2**32 - 1, 2**32 - 1
    )
    assert h.csrc_end == 24
    assert data[h.payload_start : h.payload_end] == b"payload"
    assert len(data) - h.payload_end == padding
    assert iter_extensions(data, h) == extensions
    assert (h.ext_end - h.ext_start) % 4 == 0


# --- seq_newer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "newer"),
    [
        (1, 0, True),
        (0, 1, False),
        (5, 5, False),
        (0, 65535, True),
        (65535, 0, False),
        (3, 65530, True),
        (65530, 3, False),
        (0x7FFF, 0, True),
        (0x8000, 0, False),
        (0, 0x8000, False),
        (0x8001, 0, False),
        (0, 0x8001, True),
    ],
)
def test_seq_newer(a: int, b: int, newer: bool) -> None:
    assert seq_newer(a, b) is newer
