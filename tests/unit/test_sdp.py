"""SDP parsing of Chromium offers, malformed input, and the answer writer."""

from __future__ import annotations

import pytest

from sfu.negotiate import check_transport
from sfu.sdp import (
    AnswerMedia,
    AnswerTransport,
    Codec,
    Extmap,
    Rid,
    SdpError,
    parse,
    write_answer,
)
from tests.unit.sdp_samples import FP, SIMULCAST_OFFER, WHEP_OFFER, WHIP_OFFER


def test_whip_offer_session_level() -> None:
    sdp = parse(WHIP_OFFER)
    assert sdp.bundle == ["0", "1"]
    assert sdp.ice_ufrag is None and sdp.ice_pwd is None
    assert sdp.fingerprints == []
    assert sdp.setup is None
    assert sdp.ice_lite is False
    assert [m.kind for m in sdp.media] == ["audio", "video"]


def test_whip_offer_audio_section() -> None:
    a = parse(WHIP_OFFER).media[0]
    assert (a.kind, a.port, a.proto, a.formats) == ("audio", 9, "UDP/TLS/RTP/SAVPF", ["111", "63"])
    assert a.mid == "0"
    assert a.direction == "sendonly"
    assert a.rtcp_mux is True
    assert (a.ice_ufrag, a.ice_pwd) == ("EsAw", "bP+XJMM09aR8AiX1jdukzR6Y")
    assert a.fingerprints == [("sha-256", FP)]  # upper-cased
    assert a.setup == "actpass"
    assert a.msid == "stream1 audio-track-1"
    assert a.codecs == [
        Codec(111, "OPUS", 48000, 2, {"minptime": "10", "useinbandfec": "1"}, ["transport-cc"]),
        Codec(63, "RED", 48000, 2, {"111/111": ""}, []),
    ]
    assert a.codecs[0].name_for_sdp() == "opus"
    assert a.codecs[1].name_for_sdp() == "red"
    assert a.extmaps == [
        Extmap(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        Extmap(2, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        Extmap(3, "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"),
        Extmap(4, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    ]
    assert a.extmap_id("urn:ietf:params:rtp-hdrext:sdes:mid") == 4
    assert a.extmap_id("urn:nope") is None
    assert a.ssrcs == {1111: {"cname": "Yq6rDhcU0pGHp8Ub", "msid": "stream1 audio-track-1"}}
    assert a.ssrc_groups == []
    assert a.rids == [] and a.simulcast is None
    assert a.sctp_port is None and a.max_message_size is None


def test_whip_offer_video_section() -> None:
    sdp = parse(WHIP_OFFER)
    v = sdp.media[1]
    assert (v.kind, v.port, v.mid, v.direction) == ("video", 9, "1", "sendonly")
    assert v.formats == ["96", "97", "98", "99", "102", "103"]
    assert [(c.payload_type, c.name, c.clock_rate, c.channels) for c in v.codecs] == [
        (96, "VP8", 90000, 1),
        (97, "RTX", 90000, 1),
        (98, "VP9", 90000, 1),
        (99, "RTX", 90000, 1),
        (102, "H264", 90000, 1),
        (103, "RTX", 90000, 1),
    ]
    fb = ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    assert v.codec(96) is not None and v.codec(96).rtcp_fb == fb  # type: ignore[union-attr]
    h264 = v.codec(102)
    assert h264 is not None
    assert h264.rtcp_fb == fb
    assert h264.fmtp == {
        "level-asymmetry-allowed": "1",
        "packetization-mode": "1",
        "profile-level-id": "42001f",
    }
    assert h264.fmtp_line() == "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"
    assert [c.apt for c in v.codecs] == [None, 96, None, 98, None, 102]
    assert v.codec(98).fmtp == {"profile-id": "0"}  # type: ignore[union-attr]
    assert v.codec(97).rtcp_fb == []  # type: ignore[union-attr]
    assert v.codec(100) is None
    assert [(e.id, e.uri.rsplit("/", 1)[-1].rsplit(":", 1)[-1]) for e in v.extmaps] == [
        (14, "toffset"),
        (2, "abs-send-time"),
        (13, "video-orientation"),
        (3, "draft-holmer-rmcat-transport-wide-cc-extensions-01"),
        (5, "playout-delay"),
        (6, "video-content-type"),
        (7, "video-timing"),
        (8, "color-space"),
        (4, "mid"),
        (10, "rtp-stream-id"),
        (11, "repaired-rtp-stream-id"),
    ]
    assert v.ssrc_groups == [("FID", [2222, 3333])]
    assert v.ssrcs == {
        2222: {"cname": "Yq6rDhcU0pGHp8Ub", "msid": "stream1 video-track-1"},
        3333: {"cname": "Yq6rDhcU0pGHp8Ub", "msid": "stream1 video-track-1"},
    }
    assert sdp.ice_credentials(v) == ("EsAw", "bP+XJMM09aR8AiX1jdukzR6Y")
    assert sdp.dtls(v) == ([("sha-256", FP)], "actpass")


def test_simulcast_offer() -> None:
    sdp = parse(SIMULCAST_OFFER)
    assert sdp.bundle == ["0"]
    (v,) = sdp.media
    assert v.rids == [
        Rid("q", "send", ""),
        Rid("h", "send", ""),
        Rid("f", "send", "max-width=1280;max-height=720"),
    ]
    assert v.simulcast == "send q;h;f"
    assert v.ssrcs == {} and v.ssrc_groups == []
    assert v.msid == "- 5f0e2b4c-track"
    assert [c.name for c in v.codecs] == ["VP8", "RTX"]
    assert v.codecs[0].rtcp_fb == ["nack", "nack pli"]
    assert v.fingerprints == [("sha-256", FP)]
    check_transport(sdp)


def test_whep_offer_with_datachannel_and_session_level_transport() -> None:
    sdp = parse(WHEP_OFFER)
    assert sdp.bundle == ["0", "1", "2"]
    assert (sdp.ice_ufrag, sdp.ice_pwd) == ("pLAy", "playpasswordplaypassword")
    assert sdp.fingerprints == [("sha-256", FP)]
    assert sdp.setup == "actpass"
    audio, video, app = sdp.media
    assert (audio.direction, video.direction) == ("recvonly", "recvonly")
    assert audio.ice_ufrag is None and audio.fingerprints == []
    assert sdp.ice_credentials(audio) == ("pLAy", "playpasswordplaypassword")
    assert sdp.dtls(video) == ([("sha-256", FP)], "actpass")
    assert [(c.payload_type, c.name, c.clock_rate, c.channels) for c in audio.codecs] == [
        (111, "OPUS", 48000, 2),
        (0, "PCMU", 8000, 1),
    ]
    # "a=rtcp-fb:* nack" applies to every codec of the section, in line order
    assert video.codec(96).rtcp_fb == ["nack", "nack pli"]  # type: ignore[union-attr]
    assert video.codec(97).rtcp_fb == ["nack"]  # type: ignore[union-attr]
    assert video.codec(102).rtcp_fb == ["nack", "ccm fir"]  # type: ignore[union-attr]
    assert (app.kind, app.port, app.proto, app.formats) == (
        "application", 9, "UDP/DTLS/SCTP", ["webrtc-datachannel"]
    )
    assert app.mid == "2"
    assert app.sctp_port == 5000
    assert app.max_message_size == 262144
    assert app.codecs == []
    assert app.rtcp_mux is False
    check_transport(sdp)


def test_extmap_with_direction_and_attributes() -> None:
    sdp = parse(
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=extmap:7/sendonly urn:3gpp:video-orientation\r\n"
        "a=extmap:15 urn:ietf:params:rtp-hdrext:encrypt extra-attr\r\n"
    )
    assert sdp.media[0].extmaps == [
        Extmap(7, "urn:3gpp:video-orientation"),
        Extmap(15, "urn:ietf:params:rtp-hdrext:encrypt"),
    ]


def test_fmtp_for_unknown_payload_type_is_ignored() -> None:
    sdp = parse("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fmtp:112 x=1\r\n"
                "a=rtpmap:111 opus/48000/2\r\n")
    assert sdp.media[0].codecs == [Codec(111, "OPUS", 48000, 2)]


def test_fmtp_before_rtpmap_still_applies() -> None:
    sdp = parse("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fmtp:111 stereo=1\r\n"
                "a=rtcp-fb:111 nack\r\na=rtpmap:111 opus/48000/2\r\n")
    assert sdp.media[0].codecs == [Codec(111, "OPUS", 48000, 2, {"stereo": "1"}, ["nack"])]


def test_lf_only_line_endings_and_blank_lines() -> None:
    sdp = parse("v=0\n\nm=audio 9 UDP/TLS/RTP/SAVPF 111\na=mid:a\n")
    assert sdp.media[0].mid == "a"


# --- malformed input ---------------------------------------------------------------------

HEAD = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("body", "lineno", "fragment"),
    [
        pytest.param("m=video nine UDP/TLS/RTP/SAVPF 96", 5, "malformed m= line", id="bad port"),
        pytest.param("m=video", 5, "malformed m= line", id="m= without fields"),
        pytest.param(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:abc VP8/90000", 6, "payload type",
            id="non-numeric rtpmap PT",
        ),
        pytest.param(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:200 VP8/90000", 6, "out of range",
            id="rtpmap PT 200",
        ),
        pytest.param(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8", 6, "rtpmap", id="no clock rate"
        ),
        pytest.param(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/fast", 6, "clock rate",
            id="non-numeric clock rate",
        ),
        pytest.param(
            "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/two", 6, "channels",
            id="non-numeric channels",
        ),
        pytest.param(
            "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=fingerprint:sha-256", 6, "fingerprint",
            id="malformed media fingerprint",
        ),
        pytest.param("a=fingerprint:sha-256AB:CD", 5, "fingerprint", id="malformed session fp"),
        pytest.param(
            "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=fmtp:x minptime=10", 6, "fmtp payload type",
            id="non-numeric fmtp PT",
        ),
        pytest.param(
            "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:0 urn:x", 6, "extmap", id="extmap id 0"
        ),
        pytest.param(
            "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:256 urn:x", 6, "extmap",
            id="extmap id 256",
        ),
        pytest.param(
            "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:3", 6, "extmap", id="extmap without uri"
        ),
        pytest.param(
            "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=ssrc:abc cname:x", 6, "ssrc",
            id="non-numeric ssrc",
        ),
        pytest.param(
            "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=ssrc:4294967296 cname:x", 6, "ssrc",
            id="ssrc too big",
        ),
        pytest.param(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ssrc-group:FID", 6, "ssrc-group",
            id="empty ssrc-group",
        ),
        pytest.param(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rid:q sideways", 6, "rid", id="bad rid direction"
        ),
        pytest.param(
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:x", 6, "sctp-port",
            id="non-numeric sctp-port",
        ),
        pytest.param("m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nbogus", 6, "not a type=value",
                     id="not type=value"),
    ],
)
def test_malformed_lines_raise_with_line_number(body: str, lineno: int, fragment: str) -> None:
    with pytest.raises(SdpError) as exc:
        parse(HEAD + body + "\r\n")
    message = str(exc.value)
    assert message.startswith(f"line {lineno}:"), message
    assert fragment in message


@pytest.mark.parametrize(
    "text",
    ["", "   ", "o=- 1 2 IN IP4 127.0.0.1\r\nv=0\r\n", "v=1\r\nm=audio 9 RTP/AVP 0\r\n"],
    ids=["empty", "blank", "v= not first", "version 1"],
)
def test_missing_v0_raises(text: str) -> None:
    with pytest.raises(SdpError, match="v=0"):
        parse(text)


def test_no_media_sections_raises() -> None:
    with pytest.raises(SdpError, match="no m= sections"):
        parse(HEAD + "a=group:BUNDLE 0\r\n")


def test_sdp_error_is_a_value_error() -> None:
    assert issubclass(SdpError, ValueError)


# --- answers -----------------------------------------------------------------------------

TRANSPORT = AnswerTransport(
    ice_ufrag="locU",
    ice_pwd="localpasswordlocalpassword",
    fingerprint=("sha-256", FP),
    setup="passive",
    candidates=[("192.0.2.10", 40000), ("198.51.100.7", 40000)],
)


def _answer_media() -> list[AnswerMedia]:
    opus = Codec(111, "OPUS", 48000, 2, {"minptime": "10", "useinbandfec": "1"})
    vp8 = Codec(96, "VP8", 90000, 1, {}, ["nack pli", "ccm fir"])
    return [
        AnswerMedia(
            "audio", "0", "UDP/TLS/RTP/SAVPF", direction="recvonly", codecs=[opus],
            extmaps=[Extmap(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level")],
        ),
        AnswerMedia(
            "video", "1", "UDP/TLS/RTP/SAVPF", direction="sendonly", codecs=[vp8],
            extmaps=[Extmap(13, "urn:3gpp:video-orientation")],
            ssrcs=[(123456, "sfu-room")], msid="room-alice 123456",
        ),
        AnswerMedia(
            "video", "2", "UDP/TLS/RTP/SAVPF", rejected=True, formats=["98", "99"],
        ),
        AnswerMedia(
            "application", "3", "UDP/DTLS/SCTP", formats=["webrtc-datachannel"],
            sctp_port=5000, max_message_size=262144,
        ),
    ]


def _sections(answer: str) -> list[list[str]]:
    lines = answer.split("\r\n")
    out: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_write_answer_session_part() -> None:
    answer = write_answer(42, TRANSPORT, _answer_media(), version=3)
    assert answer.endswith("\r\n")
    assert "\n" not in answer.replace("\r\n", "")
    head = answer.split("\r\nm=")[0].split("\r\n")
    assert head == [
        "v=0",
        "o=- 42 3 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=ice-lite",
        "a=msid-semantic: WMS *",
        "a=group:BUNDLE 0 1 3",
    ]


def test_write_answer_sections() -> None:
    answer = write_answer(42, TRANSPORT, _answer_media())
    audio, video, rejected, app = _sections(answer)
    candidates = [
        "a=candidate:1 1 udp 2130706430 192.0.2.10 40000 typ host",
        "a=candidate:2 1 udp 2130706429 198.51.100.7 40000 typ host",
        "a=end-of-candidates",
    ]
    transport = [
        "a=ice-ufrag:locU",
        "a=ice-pwd:localpasswordlocalpassword",
        f"a=fingerprint:sha-256 {FP}",
        "a=setup:passive",
    ]
    assert audio == [
        "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 192.0.2.10",
        "a=mid:0",
        *transport,
        *candidates,
        "a=recvonly",
        "a=rtcp-mux",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
    ]
    assert video == [
        "m=video 40000 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 192.0.2.10",
        "a=mid:1",
        *transport,
        *candidates,
        "a=sendonly",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=extmap:13 urn:3gpp:video-orientation",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 ccm fir",
        "a=msid:room-alice 123456",
        "a=ssrc:123456 cname:sfu-room",
        "a=ssrc:123456 msid:room-alice 123456",
    ]
    assert rejected == ["m=video 0 UDP/TLS/RTP/SAVPF 98 99", "c=IN IP4 0.0.0.0", "a=mid:2"]
    assert app[:3] == [
        "m=application 40000 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 192.0.2.10",
        "a=mid:3",
    ]
    assert app[-3:] == ["a=sctp-port:5000", "a=max-message-size:262144", ""]
    assert candidates[0] in app


def test_every_non_rejected_section_has_candidates_and_rtcp_mux() -> None:
    answer = write_answer(1, TRANSPORT, _answer_media())
    for sec in _sections(answer):
        rejected = sec[0].split()[1] == "0"
        assert (sum(line.startswith("a=candidate:") for line in sec) == 2) is not rejected
        if sec[0].startswith(("m=audio", "m=video")):
            assert ("a=rtcp-mux" in sec) is not rejected


def test_answer_reparses() -> None:
    answer = write_answer(7, TRANSPORT, _answer_media())
    sdp = parse(answer)
    assert sdp.ice_lite is True
    assert sdp.bundle == ["0", "1", "3"]
    assert [(m.kind, m.port, m.mid) for m in sdp.media] == [
        ("audio", 40000, "0"), ("video", 40000, "1"), ("video", 0, "2"), ("application", 40000, "3")
    ]
    audio, video, rejected, app = sdp.media
    assert audio.codecs == [
        Codec(111, "OPUS", 48000, 2, {"minptime": "10", "useinbandfec": "1"})
    ]
    assert video.codecs == [Codec(96, "VP8", 90000, 1, {}, ["nack pli", "ccm fir"])]
    assert video.ssrcs == {123456: {"cname": "sfu-room", "msid": "room-alice 123456"}}
    assert video.msid == "room-alice 123456"
    assert (audio.direction, video.direction) == ("recvonly", "sendonly")
    assert audio.rtcp_mux and video.rtcp_mux
    assert rejected.formats == ["98", "99"] and rejected.codecs == []
    assert (app.sctp_port, app.max_message_size) == (5000, 262144)
    for m in (audio, video, app):
        assert sdp.ice_credentials(m) == ("locU", "localpasswordlocalpassword")
        assert sdp.dtls(m) == ([("sha-256", FP)], "passive")
    check_transport(sdp)  # an answer meets the same transport rules as an offer


def test_answer_without_candidates_uses_discard_port() -> None:
    t = AnswerTransport("u", "p" * 24, ("sha-256", FP), "active", [])
    media = [AnswerMedia("audio", "0", "UDP/TLS/RTP/SAVPF", direction="recvonly",
                         codecs=[Codec(111, "OPUS", 48000, 2)])]
    answer = write_answer(1, t, media)
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n" in answer
    assert "a=candidate" not in answer
    assert "a=setup:active" in answer
    assert parse(answer).media[0].port == 9


def test_all_rejected_answer_has_no_bundle_group() -> None:
    media = [AnswerMedia("video", "0", "UDP/TLS/RTP/SAVPF", rejected=True, formats=["96"])]
    answer = write_answer(1, TRANSPORT, media)
    assert "a=group:BUNDLE" not in answer
    assert "\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n" in answer
    assert parse(answer).bundle == []
