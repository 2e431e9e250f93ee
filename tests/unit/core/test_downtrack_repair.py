"""A down-track's repair set-up from what the viewer negotiated: video in RED with ULPFEC
and RTX of RED, a publisher's Opus RED passed through, and publisher FEC seqs skipped."""

from __future__ import annotations

from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver
from sfu.core.room import Room
from sfu.sdp import Codec
from sfu.wire import red, rtx
from sfu.wire.rtp import build_packet, parse_header
from tests.unit.core.test_forwarding import (
    FRAME,
    OPUS,
    feed,
    receiver,
    slot,
    video_packet,
)

VIEWER_VIDEO = [Codec(100, "VP8", 90000, 1, {}, ["nack", "nack pli"]),
                Codec(101, "RTX", 90000, 1, {"apt": "100"}),
                Codec(116, "RED", 90000), Codec(118, "ULPFEC", 90000),
                Codec(117, "RTX", 90000, 1, {"apt": "116"})]


def _bound_video(codecs: list[Codec]) -> tuple[Room, Receiver, DownTrack]:
    room = Room("room")
    r = receiver("alice-v", "alice")
    room.add_receiver(r, 0.0)
    s = slot("bob", codecs=codecs)
    s.downtrack.rtx_ssrc = 0x7777
    assert room.add_slot(s, 0.0)
    return room, r, s.downtrack


def test_red_ulpfec_viewer_gets_red_media_fec_after_the_frame_and_rtx_of_red() -> None:
    _, r, dt = _bound_video(VIEWER_VIDEO)
    assert dt.fec is not None and dt.responder is not None and dt.history is not None
    assert dt.responder.rtx is not None
    assert dt.responder.rtx.payload_type_for(116) == 117
    dt.fec.set_rtt(0.15)
    dt.fec.set_loss(0.2, 0.0)
    sent = []
    for i in range(3):
        got = feed(r, dt, video_packet(500 + i, 9000, key=i == 0), 0.01 * i)
        assert got is not None
        plain, h = got
        assert h.payload_type == 100
        fec = dt.fec.on_packet(plain, 0.0)
        wire = dt.fec.wrap(plain)
        dt.history.push(parse_header(wire).seq, wire, 0.0, 500 + i)
        sent += [wire, *fec]
    hs = [parse_header(p) for p in sent]
    # Each one-packet frame (the marker is set on all) gets its FEC packet right after it.
    assert [h.seq for h in hs] == [1000, 1001, 1002, 1003, 1004, 1005]
    assert all(h.payload_type == 116 for h in hs)
    assert [p[h.payload_start] for p, h in zip(sent, hs, strict=True)] == [100, 118] * 3
    # The next packet continues after the FEC packets.
    got = feed(r, dt, video_packet(503, 9000 + FRAME, key=False), 0.1)
    assert got is not None and got[1].seq == 1006
    # A NACK for a media seq is answered with the RED packet on the RTX of RED.
    answers = dt.responder.on_nack([1000], 0.2)
    assert answers and answers[0].data is not None
    osn, original = rtx.unwrap(answers[0].data, media_ssrc=dt.ssrc, media_pt=116)
    assert parse_header(answers[0].data).payload_type == 117 and osn == 1000
    assert original == sent[0]


def test_with_fec_off_media_goes_plain_and_its_retransmission_on_vp8s_rtx() -> None:
    _, r, dt = _bound_video(VIEWER_VIDEO)
    assert dt.fec is not None and dt.responder is not None and dt.history is not None
    got = feed(r, dt, video_packet(500, 9000, key=True), 0.0)
    assert got is not None
    plain, h = got
    assert dt.fec.on_packet(plain, 0.0) == [] and not dt.fec.active  # no loss reported
    dt.history.push(h.seq, plain, 0.0, 500)
    answers = dt.responder.on_nack([h.seq], 0.1)
    assert answers and answers[0].data is not None
    assert parse_header(answers[0].data).payload_type == 101  # apt=VP8, not RED's RTX


def test_viewer_without_ulpfec_gets_plain_vp8() -> None:
    _, _, dt = _bound_video(VIEWER_VIDEO[:2])
    assert dt.fec is None and dt.responder is not None and dt.responder.rtx is not None
    assert dt.responder.rtx.payload_type == 101


def test_publisher_red_passes_through_with_the_viewers_payload_types() -> None:
    room = Room("room")
    r = receiver("alice-a", "alice", kind="audio", codec=OPUS)
    r.enable_red(63, None, None)
    room.add_receiver(r, 0.0)
    s = slot("bob", kind="audio", codecs=[Codec(109, "OPUS", 48000, 2),
                                          Codec(120, "RED", 48000, 2, {"109/109": ""})])
    assert room.add_slot(s, 0.0)
    dt = s.downtrack
    assert dt.red is not None and dt.red.red_pt == 120
    payload = red.encode(111, b"new", [red.RedBlock(111, 960, b"old")])
    pkt = build_packet(payload_type=63, seq=9, timestamp=1920, ssrc=1, payload=payload)
    out = dt.forward(pkt, parse_header(pkt), False, 0.0)
    assert out is not None
    wire = dt.red_passthrough(out)
    h = parse_header(wire)
    assert h.payload_type == 120
    blocks, primary = red.decode(wire[h.payload_start:])
    assert [b.payload_type for b in blocks] == [109] and primary.payload_type == 109
    assert (blocks[0].data, primary.data, blocks[0].timestamp_offset) == (b"old", b"new", 960)
    assert dt.red.distance_in_use == 1 and dt.red.passed_through == 1


def test_skipped_publisher_fec_seq_closes_ahead_and_is_padded_behind() -> None:
    _, r, dt = _bound_video(VIEWER_VIDEO[:2])
    feed(r, dt, video_packet(10, 0, key=True), 0.0)
    assert dt.skip(11, 0, 0.0) is None  # ahead: closed
    got = feed(r, dt, video_packet(13, FRAME, key=False), 0.0)
    # 12 is missing, so its slot (1001) stays reserved in case it arrives late.
    assert got is not None and got[1].seq == 1002
    fill = dt.skip(12, 0, 0.1)  # it was FEC after all
    assert fill is not None
    h = parse_header(fill)
    assert (h.seq, h.payload_type, h.payload_size, h.ssrc) == (1001, 100, 0, 0x5151)
    assert dt.skip(12, 0, 0.2) is None  # its slot is filled
