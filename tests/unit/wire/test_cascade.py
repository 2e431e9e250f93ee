"""Cascade framing: the DATAGRAM header and the control-stream lines."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.wire.cascade import (
    EDGE_MESSAGES,
    MAX_LINE,
    MEDIA,
    ORIGIN_MESSAGES,
    REPAIR,
    CascadeWireError,
    LayerSpec,
    LineReader,
    TrackSpec,
    decode,
    encode,
    pack_header,
    parse_datagram,
    parse_track,
)
from sfu.wire.rtp import build_packet

RTP = build_packet(payload_type=96, seq=7, timestamp=9, ssrc=0x1234, payload=b"\x10\x00abc")


def track() -> TrackSpec:
    return TrackSpec(
        track_id="host-0-abc", kind="video", participant="host", stream_id="s",
        codec={"payload_type": 96, "name": "VP8", "clock_rate": 90000, "channels": 1,
               "fmtp": {}, "rtcp_fb": ["nack", "nack pli"]},
        extmaps=[(4, "urn:ietf:params:rtp-hdrext:sdes:mid")],
        layers=[LayerSpec(0, 0, "q"), LayerSpec(1, 1, "h")], source="camera",
    )


def test_datagram_round_trip() -> None:
    for kind in (MEDIA, REPAIR):
        data = pack_header(kind, 513) + RTP
        assert parse_datagram(data) == (kind, 513, RTP)


@pytest.mark.parametrize("data", [b"", b"\x01\x00", b"\x01\x00\x01" + RTP[:11],
                                  b"\x07\x00\x01" + RTP])
def test_bad_datagrams_raise(data: bytes) -> None:
    with pytest.raises(CascadeWireError):
        parse_datagram(data)


def test_header_refuses_out_of_range() -> None:
    with pytest.raises(CascadeWireError):
        pack_header(MEDIA, 0x10000)
    with pytest.raises(CascadeWireError):
        pack_header(9, 0)


def test_line_reader_splits_chunks_and_reports_bad_lines() -> None:
    reader = LineReader(EDGE_MESSAGES)
    wire = encode({"t": "ping", "ts": 1.5}) + b"not json\n" + encode({"t": "keyframe", "ch": 3})
    out = reader.feed(wire[:5]) + reader.feed(wire[5:30]) + reader.feed(wire[30:])
    assert out[0] == {"t": "ping", "ts": 1.5}
    assert isinstance(out[1], CascadeWireError)
    assert out[2] == {"t": "keyframe", "ch": 3}
    assert len(out) == 3


def test_line_reader_bounds_an_endless_line() -> None:
    reader = LineReader(EDGE_MESSAGES)
    out = reader.feed(b"x" * (MAX_LINE + 1))
    assert len(out) == 1 and isinstance(out[0], CascadeWireError)
    # and it recovers for the next message
    assert reader.feed(encode({"t": "bye"})) == [{"t": "bye"}]


@pytest.mark.parametrize("message", [
    {"t": "tracks", "tracks": []},  # origin-only type from an edge
    {"t": "nack", "ch": 1, "seqs": []},
    {"t": "nack", "ch": 1, "seqs": [70000]},
    {"t": "nack", "ch": 1, "seqs": [True]},
    {"t": "nack", "ch": -1, "seqs": [1]},
    {"t": "keyframe"},
    {"t": "hello", "v": 2, "room": "r", "node": "n", "nonce": "00" * 16},
    {"t": "hello", "v": 1, "room": "r", "node": "n", "nonce": "00"},
    {"t": "hello", "v": 1, "room": "", "node": "n", "nonce": "00" * 16},
    {"t": "auth", "proof": "zz" * 32},
    ["not", "an", "object"],
])
def test_edge_messages_are_validated(message: object) -> None:
    with pytest.raises(CascadeWireError):
        decode(json.dumps(message).encode(), EDGE_MESSAGES)


def test_track_spec_round_trip() -> None:
    spec = track()
    line = encode({"t": "tracks", "tracks": [spec.to_json()]})
    message = decode(line[:-1], ORIGIN_MESSAGES)
    assert parse_track(message["tracks"][0]) == spec


@pytest.mark.parametrize("field,value", [
    ("kind", "data"), ("layers", []), ("extmaps", [[0, "x"]]), ("codec", {"name": "VP8"}),
    ("source", 3),
])
def test_bad_track_specs_raise(field: str, value: object) -> None:
    raw = track().to_json()
    raw[field] = value
    with pytest.raises(CascadeWireError):
        parse_track(raw)


@given(st.lists(st.binary(max_size=300), max_size=20))
@settings(max_examples=200, deadline=None)
def test_any_bytes_on_the_control_stream_give_messages_or_errors(chunks: list[bytes]) -> None:
    reader = LineReader(EDGE_MESSAGES | ORIGIN_MESSAGES)
    for chunk in chunks:
        for item in reader.feed(chunk):
            assert isinstance(item, (dict, CascadeWireError))


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_any_datagram_parses_or_raises_the_wire_error(data: bytes) -> None:
    try:
        kind, channel, rtp = parse_datagram(data)
    except CascadeWireError:
        return
    assert kind in (MEDIA, REPAIR) and 0 <= channel <= 0xFFFF and len(rtp) >= 12


@given(st.dictionaries(st.sampled_from(["t", "ch", "seqs", "tracks", "nonce", "proof", "v",
                                        "room", "node", "ts", "code", "message"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                 st.lists(st.integers(), max_size=3),
                                 st.sampled_from(sorted(EDGE_MESSAGES | ORIGIN_MESSAGES)))))
@settings(max_examples=300, deadline=None)
def test_arbitrary_json_objects_are_validated_not_crashed_on(message: dict[str, object]) -> None:
    try:
        decode(json.dumps(message).encode(), EDGE_MESSAGES | ORIGIN_MESSAGES)
    except CascadeWireError:
        pass
