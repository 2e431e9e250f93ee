"""SDP offers as Chromium writes them, shared by the SDP and negotiation tests."""

from __future__ import annotations

FP = (
    "7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:"
    "DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08"
)


def crlf(text: str) -> str:
    return "\r\n".join(line.strip() for line in text.strip().splitlines()) + "\r\n"


# WHIP publish: audio opus + red, video VP8/VP9/H264 each with rtx.
WHIP_OFFER = crlf(
    f"""
    v=0
    o=- 4611731400430051336 2 IN IP4 127.0.0.1
    s=-
    t=0 0
    a=group:BUNDLE 0 1
    a=extmap-allow-mixed
    a=msid-semantic: WMS stream1
    m=audio 9 UDP/TLS/RTP/SAVPF 111 63
    c=IN IP4 0.0.0.0
    a=rtcp:9 IN IP4 0.0.0.0
    a=ice-ufrag:EsAw
    a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y
    a=ice-options:trickle
    a=fingerprint:sha-256 {FP.lower()}
    a=setup:actpass
    a=mid:0
    a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
    a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
    a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
    a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
    a=sendonly
    a=msid:stream1 audio-track-1
    a=rtcp-mux
    a=rtcp-rsize
    a=rtpmap:111 opus/48000/2
    a=rtcp-fb:111 transport-cc
    a=fmtp:111 minptime=10;useinbandfec=1
    a=rtpmap:63 red/48000/2
    a=fmtp:63 111/111
    a=ssrc:1111 cname:Yq6rDhcU0pGHp8Ub
    a=ssrc:1111 msid:stream1 audio-track-1
    m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 102 103
    c=IN IP4 0.0.0.0
    a=rtcp:9 IN IP4 0.0.0.0
    a=ice-ufrag:EsAw
    a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y
    a=ice-options:trickle
    a=fingerprint:sha-256 {FP.lower()}
    a=setup:actpass
    a=mid:1
    a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
    a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
    a=extmap:13 urn:3gpp:video-orientation
    a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
    a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
    a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
    a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
    a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
    a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
    a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
    a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
    a=sendonly
    a=msid:stream1 video-track-1
    a=rtcp-mux
    a=rtcp-rsize
    a=rtpmap:96 VP8/90000
    a=rtcp-fb:96 goog-remb
    a=rtcp-fb:96 transport-cc
    a=rtcp-fb:96 ccm fir
    a=rtcp-fb:96 nack
    a=rtcp-fb:96 nack pli
    a=rtpmap:97 rtx/90000
    a=fmtp:97 apt=96
    a=rtpmap:98 VP9/90000
    a=rtcp-fb:98 goog-remb
    a=rtcp-fb:98 transport-cc
    a=rtcp-fb:98 ccm fir
    a=rtcp-fb:98 nack
    a=rtcp-fb:98 nack pli
    a=fmtp:98 profile-id=0
    a=rtpmap:99 rtx/90000
    a=fmtp:99 apt=98
    a=rtpmap:102 H264/90000
    a=rtcp-fb:102 goog-remb
    a=rtcp-fb:102 transport-cc
    a=rtcp-fb:102 ccm fir
    a=rtcp-fb:102 nack
    a=rtcp-fb:102 nack pli
    a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
    a=rtpmap:103 rtx/90000
    a=fmtp:103 apt=102
    a=ssrc-group:FID 2222 3333
    a=ssrc:2222 cname:Yq6rDhcU0pGHp8Ub
    a=ssrc:2222 msid:stream1 video-track-1
    a=ssrc:3333 cname:Yq6rDhcU0pGHp8Ub
    a=ssrc:3333 msid:stream1 video-track-1
    """
)

# Chromium simulcast publish (rids instead of SSRC lines).
SIMULCAST_OFFER = crlf(
    f"""
    v=0
    o=- 8077216052447463931 2 IN IP4 127.0.0.1
    s=-
    t=0 0
    a=group:BUNDLE 0
    a=extmap-allow-mixed
    a=msid-semantic: WMS
    m=video 9 UDP/TLS/RTP/SAVPF 96 97
    c=IN IP4 0.0.0.0
    a=rtcp:9 IN IP4 0.0.0.0
    a=ice-ufrag:s1mU
    a=ice-pwd:0123456789abcdefghijklmn
    a=ice-options:trickle
    a=fingerprint:sha-256 {FP}
    a=setup:actpass
    a=mid:0
    a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
    a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
    a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
    a=sendonly
    a=msid:- 5f0e2b4c-track
    a=rtcp-mux
    a=rtcp-rsize
    a=rtpmap:96 VP8/90000
    a=rtcp-fb:96 nack
    a=rtcp-fb:96 nack pli
    a=rtpmap:97 rtx/90000
    a=fmtp:97 apt=96
    a=rid:q send
    a=rid:h send
    a=rid:f send max-width=1280;max-height=720
    a=simulcast:send q;h;f
    """
)

# WHEP play: recvonly audio and video, plus a data channel. Credentials at session level.
WHEP_OFFER = crlf(
    f"""
    v=0
    o=- 1234 2 IN IP4 127.0.0.1
    s=-
    t=0 0
    a=ice-ufrag:pLAy
    a=ice-pwd:playpasswordplaypassword
    a=fingerprint:sha-256 {FP}
    a=setup:actpass
    a=group:BUNDLE 0 1 2
    m=audio 9 UDP/TLS/RTP/SAVPF 111 0
    c=IN IP4 0.0.0.0
    a=mid:0
    a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
    a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
    a=recvonly
    a=rtcp-mux
    a=rtpmap:111 opus/48000/2
    a=fmtp:111 minptime=10;useinbandfec=1
    a=rtpmap:0 PCMU/8000
    m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 104 106 108
    c=IN IP4 0.0.0.0
    a=mid:1
    a=extmap:3 urn:3gpp:video-orientation
    a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
    a=extmap:12 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
    a=recvonly
    a=rtcp-mux
    a=rtpmap:96 VP8/90000
    a=rtcp-fb:* nack
    a=rtcp-fb:96 nack pli
    a=rtpmap:97 rtx/90000
    a=fmtp:97 apt=96
    a=rtpmap:102 H264/90000
    a=rtcp-fb:102 ccm fir
    a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
    a=rtpmap:104 H264/90000
    a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
    a=rtpmap:106 H264/90000
    a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
    a=rtpmap:108 H264/90000
    a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
    m=application 9 UDP/DTLS/SCTP webrtc-datachannel
    c=IN IP4 0.0.0.0
    a=mid:2
    a=sctp-port:5000
    a=max-message-size:262144
    """
)
