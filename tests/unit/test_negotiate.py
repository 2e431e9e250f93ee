"""Offer/answer policy: transport rules, codec/feedback/extension choice, codec matching."""

from __future__ import annotations

import pytest

from sfu.negotiate import (
    EXT_ABS_CAPTURE,
    EXT_ABS_SEND_TIME,
    EXT_AUDIO_LEVEL,
    EXT_MID,
    EXT_PLAYOUT_DELAY,
    EXT_RID,
    EXT_RRID,
    EXT_VIDEO_ORIENTATION,
    check_transport,
    extension_map,
    fec_codecs,
    h264_profile,
    match_codec,
    negotiate_publish,
    negotiate_subscribe,
    primary_codec,
    subscribe_remb_id,
    subscribe_twcc_id,
)
from sfu.sdp import Codec, Extmap, MediaSection, SdpError, parse
from tests.unit.sdp_samples import SIMULCAST_OFFER, WHEP_OFFER, WHIP_OFFER

TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def _h264(pt: int, profile: str | None, mode: str | None = "1") -> Codec:
    fmtp = {"level-asymmetry-allowed": "1"}
    if mode is not None:
        fmtp["packetization-mode"] = mode
    if profile is not None:
        fmtp["profile-level-id"] = profile
    return Codec(pt, "H264", 90000, 1, fmtp, ["nack", "nack pli", "goog-remb"])


def _video(*codecs: Codec, extmaps: list[Extmap] | None = None) -> MediaSection:
    return MediaSection(
        kind="video", port=9, proto="UDP/TLS/RTP/SAVPF",
        formats=[str(c.payload_type) for c in codecs], mid="1", direction="sendonly",
        codecs=list(codecs), extmaps=extmaps or [], rtcp_mux=True,
    )


# --- check_transport ---------------------------------------------------------------------


def test_realistic_offers_pass_transport_check() -> None:
    for text in (WHIP_OFFER, SIMULCAST_OFFER, WHEP_OFFER):
        check_transport(parse(text))


def _whip_without(*needles: str) -> str:
    lines = WHIP_OFFER.split("\r\n")
    return "\r\n".join(line for line in lines if not any(n in line for n in needles))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(_whip_without("a=rtcp-mux"), "rtcp-mux is required", id="no rtcp-mux"),
        pytest.param(_whip_without("a=group:BUNDLE"), "BUNDLE", id="no BUNDLE, two sections"),
        pytest.param(
            WHIP_OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0"), "BUNDLE",
            id="BUNDLE misses a section",
        ),
        pytest.param(_whip_without("a=ice-ufrag"), "ice-ufrag", id="no ice-ufrag"),
        pytest.param(_whip_without("a=ice-pwd"), "ice-pwd", id="no ice-pwd"),
        pytest.param(_whip_without("a=fingerprint"), "fingerprint", id="no fingerprint"),
        pytest.param(
            WHIP_OFFER.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"), "RTP/AVP", id="RTP/AVP"
        ),
        pytest.param(_whip_without("a=mid:"), "a=mid", id="no mid"),
        pytest.param(
            WHIP_OFFER.replace("m=audio 9", "m=audio 0").replace("m=video 9", "m=video 0"),
            "rejected", id="every section port 0",
        ),
    ],
)
def test_check_transport_refuses(text: str, message: str) -> None:
    sdp = parse(text)
    with pytest.raises(SdpError, match=message):
        check_transport(sdp)


def test_missing_ice_in_one_section_only_is_refused() -> None:
    # the audio section keeps its credentials; the video section has none and no session fallback
    lines = WHIP_OFFER.split("\r\n")
    video_at = next(i for i, line in enumerate(lines) if line.startswith("m=video"))
    kept = lines[:video_at] + [line for line in lines[video_at:] if "ice-pwd" not in line]
    with pytest.raises(SdpError, match="ice-pwd"):
        check_transport(parse("\r\n".join(kept)))


def test_single_section_needs_no_bundle() -> None:
    text = SIMULCAST_OFFER.replace("a=group:BUNDLE 0\r\n", "")
    sdp = parse(text)
    assert sdp.bundle == []
    check_transport(sdp)


def test_rejected_section_need_not_be_bundled_or_complete() -> None:
    text = WHIP_OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0").replace(
        "m=video 9", "m=video 0"
    )
    check_transport(parse(text))


# --- negotiate_publish -------------------------------------------------------------------


def test_publish_whip_audio_picks_opus_only() -> None:
    audio = parse(WHIP_OFFER).media[0]
    neg = negotiate_publish(audio)
    assert neg.accepted and neg.reason == ""
    assert neg.section is audio
    assert neg.codecs == [
        Codec(111, "OPUS", 48000, 2, {"minptime": "10", "useinbandfec": "1"}, ["transport-cc"])
    ]
    assert neg.extmaps == [Extmap(1, EXT_AUDIO_LEVEL), Extmap(3, TWCC), Extmap(4, EXT_MID)]


def test_publish_whip_video_picks_vp8_with_allowed_feedback_and_extensions() -> None:
    video = parse(WHIP_OFFER).media[1]
    neg = negotiate_publish(video)
    assert neg.accepted
    # Publishers get transport-cc feedback from the node (sfu.core.twcc); no REMB.
    # ...plus its RTX, and generic NACK now that the node retransmits and NACKs upstream.
    assert neg.codecs == [
        Codec(96, "VP8", 90000, 1, {}, ["transport-cc", "ccm fir", "nack", "nack pli"]),
        Codec(97, "RTX", 90000, 1, {"apt": "96"}, []),
    ]
    assert neg.extmaps == [
        Extmap(13, EXT_VIDEO_ORIENTATION),
        Extmap(3, TWCC),
        Extmap(5, EXT_PLAYOUT_DELAY),
        Extmap(4, EXT_MID),
        Extmap(10, EXT_RID),
        Extmap(11, EXT_RRID),
    ]
    # the answer codec is a copy: the offer is not modified
    assert video.codecs[0].rtcp_fb == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    neg.codecs[0].fmtp["x"] = "1"
    assert video.codecs[0].fmtp == {}


def test_publish_first_supported_in_offer_order() -> None:
    vp9 = Codec(98, "VP9", 90000)
    rtx = Codec(99, "RTX", 90000, 1, {"apt": "98"})
    h264 = _h264(102, "42e01f")
    vp8 = Codec(96, "VP8", 90000)
    neg = negotiate_publish(_video(vp9, rtx, h264, vp8))
    assert [c.payload_type for c in neg.codecs] == [102]  # 99 is VP9's RTX, not H264's
    assert neg.codecs[0].rtcp_fb == ["nack", "nack pli"]
    assert neg.codecs[0].fmtp["profile-level-id"] == "42e01f"


@pytest.mark.parametrize("mode", ["0", None, "2"])
def test_publish_skips_h264_without_packetization_mode_1(mode: str | None) -> None:
    neg = negotiate_publish(_video(_h264(102, "42e01f", mode), Codec(96, "VP8", 90000)))
    assert [c.payload_type for c in neg.codecs] == [96]


def test_publish_prefers_the_mode_1_h264_entry() -> None:
    neg = negotiate_publish(_video(_h264(100, "42e01f", "0"), _h264(102, "42e01f", "1")))
    assert [c.payload_type for c in neg.codecs] == [102]


def test_publish_rejects_when_nothing_supported() -> None:
    neg = negotiate_publish(_video(Codec(98, "VP9", 90000), Codec(45, "AV1", 90000),
                                   _h264(102, "42e01f", "0")))
    assert not neg.accepted
    assert neg.codecs == [] and neg.extmaps == []
    assert neg.reason == (
        "no supported video codec (offered AV1, H264, VP9; supported VP8, H264)"
    )


def test_publish_opus_needs_48k() -> None:
    m = MediaSection("audio", 9, "UDP/TLS/RTP/SAVPF", ["111"], mid="0",
                     codecs=[Codec(111, "OPUS", 16000, 2)])
    neg = negotiate_publish(m)
    assert not neg.accepted
    assert "offered OPUS" in neg.reason


def test_publish_rejected_and_unsupported_kinds() -> None:
    m = _video(Codec(96, "VP8", 90000))
    m.port = 0
    assert (negotiate_publish(m).accepted, negotiate_publish(m).reason) == (False, "rejected")
    app = MediaSection("application", 9, "UDP/DTLS/SCTP", ["webrtc-datachannel"], mid="2")
    assert (negotiate_publish(app).accepted, negotiate_publish(app).reason) == (
        False, "unsupported kind"
    )
    assert negotiate_subscribe(app).reason == "unsupported kind"
    assert negotiate_subscribe(m).reason == "rejected"


def test_publish_simulcast_offer_keeps_rid_extensions() -> None:
    neg = negotiate_publish(parse(SIMULCAST_OFFER).media[0])
    # VP8 and its RTX (apt=96): the node NACKs publishers and takes retransmissions on RTX.
    assert [c.name for c in neg.codecs] == ["VP8", "RTX"]
    assert neg.codecs[1].fmtp == {"apt": "96"}
    assert neg.codecs[0].rtcp_fb == ["nack", "nack pli"]
    assert neg.extmaps == [Extmap(4, EXT_MID), Extmap(10, EXT_RID), Extmap(11, EXT_RRID)]


# --- negotiate_subscribe -----------------------------------------------------------------


def test_subscribe_whep_video_keeps_all_supported_codecs() -> None:
    video = parse(WHEP_OFFER).media[1]
    neg = negotiate_subscribe(video)
    assert neg.accepted
    assert [(c.payload_type, c.name) for c in neg.codecs] == [
        (96, "VP8"), (102, "H264"), (106, "H264"), (108, "H264"), (97, "RTX")
    ]
    assert [c.rtcp_fb for c in neg.codecs] == [["nack", "nack pli"], ["nack", "ccm fir"],
                                               ["nack"], ["nack"], ["nack"]]
    # only end-to-end extensions: mid is hop-by-hop
    assert neg.extmaps == [Extmap(3, EXT_VIDEO_ORIENTATION), Extmap(12, EXT_PLAYOUT_DELAY)]


def test_subscribe_gets_transport_cc_for_the_send_side_estimator() -> None:
    # Viewers get transport-cc (extension + feedback) so the node can estimate their downlink.
    vp8 = Codec(96, "VP8", 90000, 1, {}, ["transport-cc", "nack pli", "goog-remb"])
    m = _video(vp8, extmaps=[Extmap(3, TWCC), Extmap(13, EXT_VIDEO_ORIENTATION)])
    m.direction = "recvonly"
    neg = negotiate_subscribe(m)
    assert neg.codecs[0].rtcp_fb == ["transport-cc", "nack pli"]
    assert neg.extmaps == [Extmap(3, TWCC), Extmap(13, EXT_VIDEO_ORIENTATION)]
    assert subscribe_twcc_id(m) == 3
    # It is never forwarded end to end: the node numbers the viewer's transport itself.
    assert extension_map([Extmap(5, TWCC)], neg.extmaps) == {}


def test_subscribe_without_usable_transport_cc_id_gets_none() -> None:
    # An id the one-byte header cannot carry (> 14): no transport-cc (null estimator).
    vp8 = Codec(96, "VP8", 90000, 1, {}, ["transport-cc", "nack pli"])
    m = _video(vp8, extmaps=[Extmap(15, TWCC), Extmap(13, EXT_VIDEO_ORIENTATION)])
    m.direction = "recvonly"
    neg = negotiate_subscribe(m)
    assert neg.codecs[0].rtcp_fb == ["nack pli"]
    assert neg.extmaps == [Extmap(13, EXT_VIDEO_ORIENTATION)]
    assert subscribe_twcc_id(m) is None


def test_subscribe_without_transport_cc_gets_remb_and_abs_send_time() -> None:
    # aiortc viewers offer abs-send-time + goog-remb and no transport-cc: the REMB fallback.
    vp8 = Codec(96, "VP8", 90000, 1, {}, ["nack", "nack pli", "goog-remb"])
    m = _video(vp8, extmaps=[Extmap(1, "urn:ietf:params:rtp-hdrext:sdes:mid"),
                             Extmap(3, EXT_ABS_SEND_TIME)])
    m.direction = "recvonly"
    off = negotiate_subscribe(m)  # the fallback is the caller's choice (setting bwe_remb)
    assert off.codecs[0].rtcp_fb == ["nack", "nack pli"] and off.extmaps == []
    neg = negotiate_subscribe(m, remb=True)
    assert neg.codecs[0].rtcp_fb == ["nack", "nack pli", "goog-remb"]
    assert neg.extmaps == [Extmap(3, EXT_ABS_SEND_TIME)]
    assert subscribe_twcc_id(m) is None and subscribe_remb_id(m) == 3
    # With transport-cc on offer, transport-cc wins: no REMB, no abs-send-time.
    both = _video(Codec(96, "VP8", 90000, 1, {}, ["transport-cc", "goog-remb"]),
                  extmaps=[Extmap(3, EXT_ABS_SEND_TIME), Extmap(4, TWCC)])
    both.direction = "recvonly"
    neg = negotiate_subscribe(both, remb=True)
    assert neg.codecs[0].rtcp_fb == ["transport-cc"]
    assert neg.extmaps == [Extmap(4, TWCC)]
    # abs-send-time without goog-remb on any codec: nobody would report, no fallback.
    mute = _video(Codec(96, "VP8", 90000, 1, {}, ["nack"]),
                  extmaps=[Extmap(3, EXT_ABS_SEND_TIME)])
    mute.direction = "recvonly"
    assert subscribe_remb_id(mute) is None
    assert negotiate_subscribe(mute, remb=True).extmaps == []


def test_subscribe_whep_audio() -> None:
    audio = parse(WHEP_OFFER).media[0]
    neg = negotiate_subscribe(audio)
    assert neg.codecs == [Codec(111, "OPUS", 48000, 2, {"minptime": "10", "useinbandfec": "1"})]
    assert neg.extmaps == [Extmap(1, EXT_AUDIO_LEVEL)]


def test_subscribe_nothing_supported() -> None:
    neg = negotiate_subscribe(_video(Codec(98, "VP9", 90000)))
    assert not neg.accepted
    assert neg.reason == "no supported video codec"


# --- match_codec -------------------------------------------------------------------------


def test_h264_profile_ignores_level_and_defaults() -> None:
    assert h264_profile(_h264(1, "42E034")) == "42e0"
    assert h264_profile(_h264(1, None)) == "42e0"
    assert h264_profile(_h264(1, "640c1f")) == "640c"


def test_match_vp8() -> None:
    source = Codec(96, "VP8", 90000, 1, {}, ["nack pli"])
    cands = [_h264(102, "42e01f"), Codec(100, "VP8", 90000), Codec(120, "VP8", 90000)]
    assert match_codec(source, cands) is cands[1]
    assert match_codec(source, [_h264(102, "42e01f")]) is None
    assert match_codec(source, [Codec(100, "VP8", 48000)]) is None
    assert match_codec(source, []) is None


def test_match_opus() -> None:
    source = Codec(111, "OPUS", 48000, 2)
    cand = Codec(109, "OPUS", 48000, 2)
    assert match_codec(source, [Codec(0, "PCMU", 8000), cand]) is cand


def test_match_h264_exact_profile_first() -> None:
    cands = [_h264(102, "42001f"), _h264(106, "42e01f"), _h264(108, "4d001f")]
    assert match_codec(_h264(96, "42e01f"), cands) is cands[1]
    assert match_codec(_h264(96, "42e034"), cands) is cands[1]  # level does not matter
    assert match_codec(_h264(96, "42001f"), cands) is cands[0]
    assert match_codec(_h264(96, "4d001f"), cands) is cands[2]


def test_match_h264_same_profile_idc_family() -> None:
    cands = [_h264(108, "4d001f"), _h264(102, "42001f"), _h264(104, "42801f")]
    assert match_codec(_h264(96, "42e01f"), cands) is cands[1]


def test_match_h264_other_family_is_none() -> None:
    assert match_codec(_h264(96, "640c1f"), [_h264(102, "42e01f"), _h264(108, "4d001f")]) is None
    assert match_codec(_h264(96, "42e01f"), [_h264(108, "4d001f")]) is None


def test_match_h264_default_profile_when_fmtp_missing() -> None:
    cands = [_h264(102, "42001f"), _h264(106, None)]
    assert match_codec(_h264(96, "42e01f"), cands) is cands[1]


# --- extension_map -----------------------------------------------------------------------


def test_extension_map_only_forwardable_uris() -> None:
    publisher = [
        Extmap(1, EXT_AUDIO_LEVEL),
        Extmap(4, EXT_MID),
        Extmap(3, TWCC),
        Extmap(10, EXT_RID),
        Extmap(13, EXT_VIDEO_ORIENTATION),
        Extmap(5, EXT_PLAYOUT_DELAY),
        Extmap(7, EXT_ABS_CAPTURE),
    ]
    subscriber = [
        Extmap(9, EXT_MID),
        Extmap(3, TWCC),
        Extmap(11, EXT_RID),
        Extmap(2, EXT_VIDEO_ORIENTATION),
        Extmap(14, EXT_ABS_CAPTURE),
        Extmap(6, EXT_AUDIO_LEVEL),
    ]
    assert extension_map(publisher, subscriber) == {1: 6, 13: 2, 7: 14}


def test_extension_map_empty() -> None:
    assert extension_map([], [Extmap(1, EXT_AUDIO_LEVEL)]) == {}
    assert extension_map([Extmap(1, EXT_AUDIO_LEVEL)], []) == {}


# --- red / ulpfec ------------------------------------------------------------------------

_VP8 = Codec(96, "VP8", 90000, 1, {}, ["nack", "nack pli", "goog-remb"])
_VP8_RTX = Codec(97, "RTX", 90000, 1, {"apt": "96"})
_RED = Codec(116, "RED", 90000)
_RED_RTX = Codec(117, "RTX", 90000, 1, {"apt": "116"})
_ULPFEC = Codec(118, "ULPFEC", 90000)


def _recv(section: MediaSection) -> MediaSection:
    section.direction = "recvonly"
    return section


def test_subscribe_video_answers_red_ulpfec_and_reds_rtx_together() -> None:
    neg = negotiate_subscribe(_recv(_video(_VP8, _VP8_RTX, _RED, _RED_RTX, _ULPFEC)))
    assert [c.payload_type for c in neg.codecs] == [96, 97, 116, 118, 117]
    assert fec_codecs(neg.codecs) == (116, 118, 117)
    # Switched off, or without RED's RTX while RTX is negotiated: none of the three.
    off = negotiate_subscribe(_recv(_video(_VP8, _VP8_RTX, _RED, _RED_RTX, _ULPFEC)),
                              video_fec=False)
    assert [c.payload_type for c in off.codecs] == [96, 97] and fec_codecs(off.codecs) is None
    no_rtx = negotiate_subscribe(_recv(_video(_VP8, _VP8_RTX, _RED, _ULPFEC)))
    assert [c.payload_type for c in no_rtx.codecs] == [96, 97]
    # RED alone (no ULPFEC) is not answered for video: libwebrtc sends neither then.
    assert fec_codecs(negotiate_subscribe(_recv(_video(_VP8, _RED))).codecs) is None
    assert [c.payload_type for c in negotiate_subscribe(_recv(_video(_VP8, _RED, _ULPFEC))
                                                        ).codecs] == [96, 116, 118]


def test_publish_answers_red_and_ulpfec_only_when_switched_on() -> None:
    video = _video(_VP8, _VP8_RTX, _RED, _RED_RTX, _ULPFEC)
    assert [c.payload_type for c in negotiate_publish(video).codecs] == [96, 97]
    neg = negotiate_publish(video, video_fec=True)
    assert [c.payload_type for c in neg.codecs] == [96, 97, 116, 118, 117]
    assert primary_codec(neg.codecs).name == "VP8"


def test_publish_opus_red_goes_before_opus_so_libwebrtc_sends_it() -> None:
    audio = parse(WHIP_OFFER).media[0]
    assert [c.name for c in negotiate_publish(audio).codecs] == ["OPUS"]
    neg = negotiate_publish(audio, audio_red=True)
    assert [(c.payload_type, c.name) for c in neg.codecs] == [(63, "RED"), (111, "OPUS")]
    assert primary_codec(neg.codecs).payload_type == 111
