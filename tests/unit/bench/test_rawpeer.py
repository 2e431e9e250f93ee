"""The pure parts of the bench's raw WebRTC peer: VP8 packetizer and SDP offer."""

from __future__ import annotations

import struct

import pytest

from bench.rawpeer import (
    MAX_PAYLOAD,
    EncodedStream,
    RawPublisher,
    build_offer,
    packetize_vp8,
    read_answer,
    set_picture_id,
    vp8_picture_id,
)
from sfu.negotiate import check_transport, negotiate_publish, negotiate_subscribe
from sfu.sdp import parse
from sfu.wire.codec import vp8_is_keyframe

FP = ("sha-256", ":".join(["AB"] * 32))


def test_packetize_sets_s_bit_on_first_packet_only_and_respects_mtu() -> None:
    frame = bytes(range(256)) * 20  # 5120 bytes
    payloads = packetize_vp8(frame)
    assert len(payloads) == 5
    assert all(len(p) <= MAX_PAYLOAD for p in payloads)
    assert payloads[0][0] & 0x10
    assert not any(p[0] & 0x10 for p in payloads[1:])
    assert all(p[0] & 0x07 == 0 for p in payloads)  # PID 0
    assert b"".join(p[4:] for p in payloads) == frame


def test_small_frame_is_one_packet_and_keyframe_detected() -> None:
    keyframe = b"\x10\x02\x00\x9d\x01\x2a" + b"\x00" * 50  # P bit 0: key frame
    [payload] = packetize_vp8(keyframe, max_payload=100)
    assert vp8_is_keyframe(payload)
    assert not vp8_is_keyframe(packetize_vp8(b"\x11" + b"\x00" * 50)[0])


def test_packetize_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        packetize_vp8(b"")
    with pytest.raises(ValueError):
        packetize_vp8(b"x", max_payload=4)


def test_picture_id_round_trip() -> None:
    payload = packetize_vp8(b"\x00" * 10)[0]
    pkt = bytearray(struct.pack("!BBHII", 0x80, 96, 1, 2, 3) + payload)
    set_picture_id(pkt, 12, 0x1234)
    assert vp8_picture_id(bytes(pkt)) == 0x1234
    set_picture_id(pkt, 12, 0x8001)  # wraps to 15 bits
    assert vp8_picture_id(bytes(pkt)) == 1


def _publisher(frames: list[bytes]) -> tuple[RawPublisher, list[bytes]]:
    from aiortc.rtcdtlstransport import RTCCertificate

    stream = EncodedStream(
        video=[packetize_vp8(f) for f in frames], keyframes=[True] + [False] * (len(frames) - 1),
        fps=30, width=64, height=64, audio=[b"\xfc" * 20],
    )
    pub = RawPublisher(RTCCertificate.generateCertificate(), stream)
    sent: list[bytes] = []
    pub.send_rtp = sent.append  # type: ignore[method-assign]
    return pub, sent


def test_publisher_marker_on_last_packet_and_continuous_seq_ts() -> None:
    pub, sent = _publisher([b"\x10" + b"\x00" * 3000, b"\x11" + b"\x00" * 100])
    for _ in range(3):  # wraps around the loop
        pub.send_frame()
    hdrs = [struct.unpack_from("!BBHII", p) for p in sent]
    markers = [bool(h[1] & 0x80) for h in hdrs]
    assert markers == [False, False, True, True, False, False, True]
    seqs = [h[2] for h in hdrs]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    ts = sorted({h[3] for h in hdrs}, key=lambda t: (t - hdrs[0][3]) & 0xFFFFFFFF)
    assert [(t - ts[0]) & 0xFFFFFFFF for t in ts] == [0, 3000, 6000]
    assert all(len(p) <= 12 + MAX_PAYLOAD for p in sent)


def test_publisher_restarts_at_keyframe_after_pli() -> None:
    from sfu.wire import rtcp

    pub, sent = _publisher([b"\x10" + b"\x00" * 10, b"\x11" + b"\x00" * 10, b"\x11" * 5])
    pub.send_frame()
    pub.send_frame()
    pub._rtcp([rtcp.Pli(sender_ssrc=1, media_ssrc=pub.video_ssrc)])
    pub.send_frame()
    assert pub.plis == 1 and pub.restarts == 1
    assert vp8_is_keyframe(sent[-1][12:])


@pytest.mark.parametrize("publish", [True, False])
@pytest.mark.parametrize("audio", [True, False])
def test_offer_is_accepted_by_the_node_parser(publish: bool, audio: bool) -> None:
    text = build_offer(
        ufrag="abcd", pwd="p" * 24, fingerprint=FP, publish=publish,
        video_ssrc=1111, audio_ssrc=2222, audio=audio, candidate=("127.0.0.1", 5000),
    )
    offer = parse(text)
    check_transport(offer)
    assert [m.kind for m in offer.media] == (["video", "audio"] if audio else ["video"])
    assert offer.bundle == [m.mid for m in offer.media]
    for m in offer.media:
        assert m.rtcp_mux
        assert offer.ice_credentials(m) == ("abcd", "p" * 24)
        assert offer.dtls(m) == ([FP], "active")
        neg = (negotiate_publish if publish else negotiate_subscribe)(m)
        assert neg.accepted, neg.reason
        assert m.direction == ("sendonly" if publish else "recvonly")
    if publish:
        assert list(offer.media[0].ssrcs) == [1111]


def test_publishing_offer_needs_ssrcs() -> None:
    with pytest.raises(ValueError):
        build_offer(ufrag="a", pwd="b", fingerprint=FP, publish=True)


def test_read_answer_takes_candidate_and_ssrcs() -> None:
    answer = (
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n"
        "a=group:BUNDLE 0\r\nm=video 4000 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\n"
        "a=mid:0\r\na=ice-ufrag:srv\r\na=ice-pwd:secretsecretsecret\r\n"
        f"a=fingerprint:{FP[0]} {FP[1]}\r\na=setup:passive\r\n"
        "a=candidate:1 1 udp 2130706430 127.0.0.2 4001 typ host\r\n"
        "a=sendonly\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=ssrc:42 cname:x\r\n"
    )
    ans = read_answer(answer)
    assert (ans.ufrag, ans.pwd) == ("srv", "secretsecretsecret")
    assert ans.address == ("127.0.0.2", 4001)
    assert ans.ssrc_kinds == {42: "video"}
