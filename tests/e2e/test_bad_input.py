"""Hostile and broken input: every refusal is a clear 4xx or a counted drop, never collateral.

One real Node and one healthy publisher + WHEP player pair are shared by the whole module (one
event loop for the module). Each test throws one family of bad input at the node, checks the
refusal (HTTP status and a reason naming the problem) or the counted drop
(``sfu_drops_total{reason=...}`` parsed from GET /metrics), and then checks that the healthy
player kept decoding through and after the abuse and that /healthz stayed 200.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pylibsrtp
import pytest
import pytest_asyncio
from aioice import stun

from bench.clients.loopback import restrict_ice_to_loopback
from bench.clients.whip import whep_play
from sfu.auth import mint_token
from tests.conftest import TEST_API_KEY, TEST_API_SECRET
from tests.e2e.healthy import (
    HTTP_TIMEOUT,
    HealthyPair,
    UdpProbe,
    drop_counts,
    expect_drop,
    healthz_status,
    loop_errors,
    wait_drops,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOM = "abuse"
LAB_ROOM = "sdp-lab"  # bad offers go here, away from the healthy pair's room
NO_REPLY_WAIT = 0.3  # how long a refused STUN check must stay unanswered


def _mint(room: str, identity: str, grants: Sequence[str], **kw: Any) -> str:
    """A token for the node under test; ``kw`` overrides mint_token arguments (ttl, now, ...)."""
    args: dict[str, Any] = {"api_key": TEST_API_KEY, "api_secret": TEST_API_SECRET}
    args.update(kw)
    return mint_token(room=room, identity=identity, grants=list(grants), **args)


@dataclass(eq=False)
class Env:
    node: Any
    pair: HealthyPair

    @staticmethod
    def mint(room: str, identity: str, grants: Sequence[str], **kw: Any) -> str:
        return _mint(room, identity, grants, **kw)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    from sfu.config import Settings
    from sfu.node import Node

    data_dir: Path = tmp_path_factory.mktemp("sfu-data")
    settings = Settings(
        host="127.0.0.1",
        http_port=0,
        udp_port=0,
        data_dir=data_dir,
        api_key=TEST_API_KEY,
        api_secret=TEST_API_SECRET,
    )
    # The per-test autouse loopback_ice fixture is function-scoped; the pair gathers now.
    undo = restrict_ice_to_loopback()
    node = Node(settings)
    await asyncio.wait_for(node.start(), 15)
    try:
        pair = await HealthyPair.start(
            node, ROOM, _mint(ROOM, "host", ["publish"]), _mint(ROOM, "viewer", ["subscribe"])
        )
        try:
            yield Env(node, pair)
        finally:
            await pair.close()
    finally:
        undo()
        await asyncio.wait_for(node.stop(), 15)


# --- HTTP helpers ------------------------------------------------------------------------------


async def _request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: bytes = b"",
    content_type: str | None = "application/sdp",
    authorization: str | None = None,
) -> tuple[int, str, dict[str, str]]:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if authorization is not None:
        headers["Authorization"] = authorization
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
        http.request(method, url, data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


def _assert_refused(got: tuple[int, str, dict[str, str]], status: int, *needles: str) -> None:
    code, text, _ = got
    assert code == status, f"want {status}, got {code}: {text!r}"
    assert text.strip(), f"{status} without a reason"
    for needle in needles:
        assert needle.lower() in text.lower(), f"{needle!r} not in reason {text!r}"


# --- SDP offers --------------------------------------------------------------------------------

FINGERPRINT = "sha-256 " + ":".join(f"{b:02X}" for b in bytes(range(32)))


def _section(kind: str, mid: str, direction: str, rtpmaps: Iterable[str]) -> list[str]:
    maps = list(rtpmaps)
    pts = " ".join(m.split(" ", 1)[0] for m in maps)
    lines = [
        f"m={kind} 9 UDP/TLS/RTP/SAVPF {pts}",
        "c=IN IP4 0.0.0.0",
        f"a=mid:{mid}",
        f"a={direction}",
        "a=rtcp-mux",
        "a=ice-ufrag:Ab12",
        "a=ice-pwd:0123456789abcdefghijklmn",
        f"a=fingerprint:{FINGERPRINT}",
        "a=setup:actpass",
    ]
    lines += [f"a=rtpmap:{m}" for m in maps]
    if direction == "sendonly":
        ssrc = 1000 + int(mid)
        lines += [f"a=ssrc:{ssrc} cname:bad-input", f"a=msid:s {kind}{mid}"]
    return lines


def _offer(
    direction: str = "recvonly",
    *,
    audio: Sequence[str] | None = ("111 opus/48000/2",),
    video: Sequence[str] | None = ("96 VP8/90000",),
    drop: Callable[[str], bool] = lambda line: False,
) -> str:
    sections: list[list[str]] = []
    if audio is not None:
        sections.append(_section("audio", str(len(sections)), direction, audio))
    if video is not None:
        sections.append(_section("video", str(len(sections)), direction, video))
    lines = [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE " + " ".join(str(i) for i in range(len(sections))),
    ]
    for s in sections:
        lines += s
    return "\r\n".join(line for line in lines if not drop(line)) + "\r\n"


async def test_valid_template_offer_is_accepted(env: Env) -> None:
    """Control: the offer template the SDP cases mutate is itself acceptable."""
    token = env.mint(LAB_ROOM, "lab", ["subscribe"])
    got = await _request(
        "POST", f"{env.node.http_url}/whep/{LAB_ROOM}", token=token, body=_offer().encode()
    )
    assert got[0] == 201, got[1]
    location = got[2]["Location"]
    deleted = await _request("DELETE", env.node.http_url + location, token=token)
    assert deleted[0] == 200, deleted


def _truncate_at(text: str, marker: str, keep: int) -> str:
    i = text.index(marker)
    return text[: i + keep]


BAD_OFFERS: list[tuple[str, str, str, tuple[str, ...]]] = [
    # (id, endpoint, body, needles in the reason)
    ("not-sdp", "whep", "hello, I am not SDP\r\n", ("bad offer", "not an SDP body")),
    ("empty", "whep", "", ("bad offer", "not an SDP body")),
    ("json", "whep", json.dumps({"sdp": "v=0", "type": "offer"}), ("bad offer", "not an SDP")),
    (
        "truncated-before-media",
        "whep",
        _truncate_at(_offer(), "m=audio", 0),
        ("bad offer", "no m= sections"),
    ),
    (
        "truncated-in-m-line",
        "whep",
        _truncate_at(_offer(), "m=audio", len("m=audio 9")),
        ("bad offer", "malformed m= line"),
    ),
    (
        "truncated-in-rtpmap",
        "whep",
        _truncate_at(_offer(), "a=rtpmap:111", len("a=rtpmap:11")),
        ("bad offer", "malformed a=rtpmap"),
    ),
    (
        "bad-m-line",
        "whep",
        _offer().replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video nine UDP/TLS/RTP/SAVPF 96"),
        ("bad offer", "malformed m= line", "m=video nine"),
    ),
    (
        "rtpmap-pt-not-a-number",
        "whep",
        _offer(video=("VP VP8/90000",)),
        ("bad offer", "payload type is not a number", "'VP'"),
    ),
    (
        "rtpmap-pt-out-of-range",
        "whep",
        _offer(video=("300 VP8/90000",)),
        ("bad offer", "payload type 300 out of range"),
    ),
    (
        "not-a-type-value-line",
        "whep",
        _offer().replace("s=-", "garbage line"),
        ("bad offer", "not a type=value line"),
    ),
    (
        "no-ice-credentials",
        "whep",
        _offer(drop=lambda ln: ln.startswith("a=ice-")),
        ("bad offer", "ice-ufrag"),
    ),
    (
        "no-ice-pwd",
        "whip",
        _offer("sendonly", drop=lambda ln: ln.startswith("a=ice-pwd")),
        ("bad offer", "ice-pwd"),
    ),
    (
        "no-fingerprint",
        "whep",
        _offer(drop=lambda ln: ln.startswith("a=fingerprint")),
        ("bad offer", "fingerprint"),
    ),
    (
        "no-rtcp-mux",
        "whip",
        _offer("sendonly", drop=lambda ln: ln == "a=rtcp-mux"),
        ("bad offer", "rtcp-mux is required"),
    ),
    (
        "plain-rtp-profile",
        "whep",
        _offer().replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"),
        ("bad offer", "RTP/AVP"),
    ),
    (
        "only-g722-audio",
        "whip",
        _offer("sendonly", audio=("9 G722/8000",), video=None),
        ("bad offer", "no supported audio codec", "G722"),
    ),
    (
        "only-av1-video",
        "whep",
        _offer(audio=None, video=("45 AV1/90000",)),
        ("bad offer", "no supported video codec"),
    ),
    (
        "only-av1-video-publish",
        "whip",
        _offer("sendonly", audio=None, video=("45 AV1/90000",)),
        ("bad offer", "no supported video codec", "AV1"),
    ),
]


async def test_bad_sdp_offers_are_400_with_a_reason(env: Env) -> None:
    node, pair = env.node, env.pair
    before = pair.mark()
    tokens = {
        "whip": env.mint(LAB_ROOM, "lab-pub", ["publish"]),
        "whep": env.mint(LAB_ROOM, "lab-sub", ["subscribe"]),
    }
    sessions = len(node.peers)
    failures = []
    for case_id, endpoint, body, needles in BAD_OFFERS:
        got = await _request(
            "POST",
            f"{node.http_url}/{endpoint}/{LAB_ROOM}",
            token=tokens[endpoint],
            body=body.encode(),
        )
        try:
            _assert_refused(got, 400, *needles)
        except AssertionError as exc:
            failures.append(f"{case_id}: {exc}")
    # Not UTF-8 at all.
    got = await _request(
        "POST",
        f"{node.http_url}/whep/{LAB_ROOM}",
        token=tokens["whep"],
        body=b"v=0\r\n\xff\xfe\xfd",
    )
    try:
        _assert_refused(got, 400, "not UTF-8")
    except AssertionError as exc:
        failures.append(f"not-utf8: {exc}")
    assert not failures, "\n".join(failures)
    assert len(node.peers) == sessions, "a refused offer left a session behind"
    await pair.assert_unaffected(before)


async def test_wrong_content_type_is_415(env: Env) -> None:
    node, pair = env.node, env.pair
    before = pair.mark()
    token = env.mint(LAB_ROOM, "lab-sub", ["subscribe"])
    url = f"{node.http_url}/whep/{LAB_ROOM}"
    for ctype in ("text/plain", "application/json", "application/sdpx", None):
        got = await _request("POST", url, token=token, body=_offer().encode(), content_type=ctype)
        _assert_refused(got, 415, "Content-Type must be application/sdp")
    await pair.assert_unaffected(before)


async def test_oversized_body_is_413(env: Env) -> None:
    node, pair = env.node, env.pair
    before = pair.mark()
    limit = node.settings.max_request_bytes
    assert limit == 64 * 1024
    # A real offer padded with an unknown attribute past the limit.
    padding = "".join(f"a=x-pad:{'p' * 100}\r\n" for _ in range(limit // 100 + 10))
    body = (_offer() + padding).encode()
    assert len(body) > limit
    token = env.mint(LAB_ROOM, "lab-sub", ["subscribe"])
    got = await _request("POST", f"{node.http_url}/whep/{LAB_ROOM}", token=token, body=body)
    _assert_refused(got, 413, f"request body over {limit} bytes")
    await pair.assert_unaffected(before)


# --- tokens ------------------------------------------------------------------------------------


def _forged(alg: str) -> str:
    """An unsigned token with an attacker-chosen header."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {
        "iss": TEST_API_KEY,
        "sub": "v",
        "room": LAB_ROOM,
        "grants": ["subscribe"],
        "exp": int(time.time()) + 600,
    }
    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}.c2ln"


async def test_bad_tokens_are_401_or_403(env: Env) -> None:
    node, pair = env.node, env.pair
    before = pair.mark()
    room = LAB_ROOM
    whip = f"{node.http_url}/whip/{room}"
    whep = f"{node.http_url}/whep/{room}"
    body = _offer().encode()
    past = time.time() - 3600
    cases: list[tuple[str, str, dict[str, Any], int, tuple[str, ...]]] = [
        ("missing", whep, {}, 401, ("unauthorized", "missing token")),
        ("empty bearer", whep, {"authorization": "Bearer"}, 401, ("missing token",)),
        ("not a jwt", whep, {"token": "not-a-token"}, 401, ("malformed token",)),
        ("three garbage parts", whep, {"token": "a.b.c"}, 401, ("malformed token",)),
        (
            "basic scheme",
            whep,
            {"authorization": "Basic dXNlcjpwYXNz"},
            401,
            ("malformed authorization header",),
        ),
        (
            "expired",
            whep,
            {"token": env.mint(room, "v", ["subscribe"], ttl=60, now=past)},
            401,
            ("expired",),
        ),
        (
            "wrong secret",
            whep,
            {"token": env.mint(room, "v", ["subscribe"], api_secret="y" * 40)},
            401,
            ("bad signature",),
        ),
        (
            "alg from the unverified header",
            whep,
            {"token": _forged(alg="grant-room")},
            401,
            ("unsupported algorithm",),
        ),
        ("alg none", whep, {"token": _forged(alg="none")}, 401, ("unsupported algorithm",)),
        (
            "wrong issuer",
            whep,
            {"token": env.mint(room, "v", ["subscribe"], api_key="other-key")},
            401,
            ("wrong issuer",),
        ),
        (
            "subscribe token on WHIP",
            whip,
            {"token": env.mint(room, "v", ["subscribe"])},
            403,
            ("lacks the 'publish' grant",),
        ),
        (
            "publish token on WHEP",
            whep,
            {"token": env.mint(room, "v", ["publish"])},
            403,
            ("lacks the 'subscribe' grant",),
        ),
        (
            "token for another room",
            whep,
            {"token": env.mint(ROOM, "v", ["subscribe"])},
            403,
            (f"token is for room {ROOM!r}",),
        ),
    ]
    sessions = len(node.peers)
    failures = []
    for name, url, auth, status, needles in cases:
        got = await _request("POST", url, body=body, **auth)
        try:
            _assert_refused(got, status, *needles)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)
    assert len(node.peers) == sessions
    await pair.assert_unaffected(before)


async def test_delete_someone_elses_or_unknown_session(env: Env) -> None:
    node, pair = env.node, env.pair
    before = pair.mark()
    victim = pair.player.location  # the healthy player, identity "viewer"
    intruder = env.mint(ROOM, "intruder", ["subscribe"])
    _assert_refused(
        await _request("DELETE", victim, token=intruder),
        403,
        "session belongs to another participant",
    )
    # A publisher of the room may not delete a player (grant), nor may another room's viewer.
    host = env.mint(ROOM, "host", ["publish"])
    _assert_refused(
        await _request("DELETE", victim, token=host), 403, "lacks the 'subscribe' grant"
    )
    elsewhere = env.mint(LAB_ROOM, "viewer", ["subscribe"])
    _assert_refused(
        await _request("DELETE", victim, token=elsewhere), 403, f"token is for room {LAB_ROOM!r}"
    )
    expired = env.mint(ROOM, "viewer", ["subscribe"], ttl=60, now=time.time() - 3600)
    _assert_refused(await _request("DELETE", victim, token=expired), 401, "expired")
    # No token at all.
    _assert_refused(await _request("DELETE", victim), 401, "missing token")
    # The publisher's resource with a token signed by another secret.
    forged = env.mint(ROOM, "host", ["publish"], api_secret="z" * 40)
    _assert_refused(
        await _request("DELETE", pair.publisher.location, token=forged), 401, "bad signature"
    )
    # Unknown sessions, and a real session id under the wrong room or kind.
    sid = pair.player.session_id
    for url in (
        f"{node.http_url}/whep/{ROOM}/no-such-session",
        f"{node.http_url}/whep/{LAB_ROOM}/{sid}",
        f"{node.http_url}/whip/{ROOM}/{sid}",
    ):
        _assert_refused(await _request("DELETE", url, token=intruder), 404, "no such session")
    assert sid in node.peers and pair.publisher.session_id in node.peers
    await pair.assert_unaffected(before)


# --- UDP from strangers ------------------------------------------------------------------------


def _ice_attr(sdp: str, name: str) -> str:
    for line in sdp.splitlines():
        if line.startswith(f"a={name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no a={name} in SDP")


def _binding_request(username: str | None, key: bytes | None, **attrs: Any) -> bytes:
    msg = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    if username is not None:
        msg.attributes["USERNAME"] = username
    msg.attributes["PRIORITY"] = 1853824767
    msg.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
    msg.attributes.update(attrs)
    if key is not None:
        msg.add_message_integrity(key)
    else:
        msg.add_fingerprint()
    return bytes(msg)


async def test_udp_garbage_and_strangers_are_counted_drops(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    node, pair = env.node, env.pair
    before = pair.mark()
    port = node.udp_port
    probe = await UdpProbe.open()
    try:
        garbage: list[tuple[str, bytes]] = [
            (f"first byte {first}", bytes([first]) + os.urandom(size))
            for first, size in ((64, 1), (65, 40), (100, 200), (127, 1200), (4, 30), (19, 30))
        ] + [(f"single byte {b!r}", b) for b in (b"\x00", b"\x16", b"\x80", b"\xff")]
        for label, data in garbage:
            await expect_drop(node.http_url, "garbage", lambda d=data: probe.send(d, port), label)
        # A burst of random garbage (first byte 64..127) while the pair plays.
        counts = await drop_counts(node.http_url)
        for i in range(200):
            probe.send(bytes([64 + i % 64]) + os.urandom(1 + i * 7 % 300), port)
            if i % 50 == 49:
                await asyncio.sleep(0.02)
        await wait_drops(node.http_url, "garbage", counts["garbage"] + 200)

        # RTP-, RTCP- and DTLS-looking bytes from an address no session has: unknown peer.
        strangers = [
            ("RTP", struct.pack("!BBHII", 0x80, 96, 1, 1234, 0xDEADBEEF) + os.urandom(100)),
            ("RTCP", struct.pack("!BBHI", 0x80, 200, 6, 0xDEADBEEF) + os.urandom(24)),
            ("2-byte RTP", b"\x80\x60"),
            ("DTLS ClientHello-ish", b"\x16\xfe\xfd" + os.urandom(40)),
        ]
        for label, data in strangers:
            await expect_drop(
                node.http_url, "unknown_peer", lambda d=data: probe.send(d, port), label
            )
        assert await probe.receive(0.05) is None, "the node answered a stranger"
    finally:
        probe.close()
    assert loop_errors(caplog.records) == []
    await pair.assert_unaffected(before)


async def test_stun_bad_integrity_unknown_user_and_malformed(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    node, pair = env.node, env.pair
    before = pair.mark()
    player = pair.player
    assert player.pc.remoteDescription is not None and player.pc.localDescription is not None
    answer, offer = player.pc.remoteDescription.sdp, player.pc.localDescription.sdp
    node_ufrag, node_pwd = _ice_attr(answer, "ice-ufrag"), _ice_attr(answer, "ice-pwd")
    client_ufrag = _ice_attr(offer, "ice-ufrag")
    peer = node.peers[player.session_id]
    assert (peer.local_ufrag, peer.remote_ufrag) == (node_ufrag, client_ufrag)
    player_addr = peer.addr
    username = f"{node_ufrag}:{client_ufrag}"

    probe = await UdpProbe.open()
    try:
        # Control: the right password from a new address is answered (so silence means refusal).
        probe.send(_binding_request(username, node_pwd.encode()), node.udp_port)
        reply = await probe.receive(5.0)
        assert reply is not None, "a valid check got no response"
        assert stun.parse_message(reply).message_class == stun.Class.RESPONSE

        base = await drop_counts(node.http_url)
        # Right user, wrong password: counted, never answered, the session does not move.
        for key in (b"wrong-password", node_pwd.encode()[:-1], b""):
            probe.send(_binding_request(username, key or None), node.udp_port)
        use_candidate = _binding_request(username, b"x" * 24, **{"USE-CANDIDATE": None})
        probe.send(use_candidate, node.udp_port)
        await wait_drops(node.http_url, "stun_integrity", base["stun_integrity"] + 4)
        assert await probe.receive(NO_REPLY_WAIT) is None, "a check with bad integrity got a reply"
        assert peer.addr == player_addr, "a forged check moved the session"

        # Unknown users: a ufrag no session has, and ours with someone else's remote ufrag.
        # Malformed STUN: the first byte says STUN but the message is not well formed.
        good = _binding_request(username, node_pwd.encode())
        bad_length = good[:2] + struct.pack("!H", len(good) - 20 + 40) + good[4:]
        # A PRIORITY attribute of 2 bytes (it must be 4), with the message length fixed up.
        bad_priority = bytearray(
            bytes(
                stun.Message(
                    stun.Method.BINDING, stun.Class.REQUEST, attributes={"USERNAME": username}
                )
            )
        )
        bad_priority += struct.pack("!HH", 0x0024, 2) + b"\x00\x01\x00\x00"
        bad_priority[2:4] = struct.pack("!H", len(bad_priority) - 20)
        # An ICE-CONTROLLING attribute of 4 bytes (it must be 8).
        bad_tiebreak = bytearray(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)))
        bad_tiebreak += struct.pack("!HH", 0x802A, 4) + b"\x00\x00\x00\x01"
        bad_tiebreak[2:4] = struct.pack("!H", len(bad_tiebreak) - 20)
        # An XOR-MAPPED-ADDRESS of 3 bytes.
        bad_xor = bytearray(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)))
        bad_xor += struct.pack("!HH", 0x0020, 3) + b"\x00\x01\x02\x00"
        bad_xor[2:4] = struct.pack("!H", len(bad_xor) - 20)
        cases: list[tuple[str, bytes, str]] = [
            (
                "unknown ufrag",
                _binding_request("nosuchufrag:whoever", b"k" * 16),
                "stun_unknown_user",
            ),
            (
                "wrong remote ufrag",
                _binding_request(f"{node_ufrag}:impostor", b"k" * 16),
                "stun_unknown_user",
            ),
            ("bad length field", bad_length, "stun_malformed"),
            ("shorter than a header", good[:19], "stun_malformed"),
            (
                "length far past the datagram",
                b"\x00\x01\xff\xff" + os.urandom(40),
                "stun_malformed",
            ),
            ("unknown method", b"\x00\x0f" + good[2:], "stun_malformed"),
            ("no USERNAME", _binding_request(None, None), "stun_malformed"),
            ("USERNAME without a colon", _binding_request("nocolon", b"k" * 16), "stun_malformed"),
            ("unsolicited response", bytes(_binding_response(username)), "stun_malformed"),
            ("2-byte PRIORITY", bytes(bad_priority), "stun_malformed"),
            ("4-byte ICE-CONTROLLING", bytes(bad_tiebreak), "stun_malformed"),
            ("3-byte XOR-MAPPED-ADDRESS", bytes(bad_xor), "stun_malformed"),
        ]
        for label, data, reason in cases:
            counts = await drop_counts(node.http_url)
            probe.send(data, node.udp_port)
            try:
                await wait_drops(node.http_url, reason, counts[reason] + 1, timeout=2.0)
            except AssertionError as exc:
                raise AssertionError(f"{label}: {exc}") from None
        assert await probe.receive(NO_REPLY_WAIT) is None, "a refused check got a reply"
        assert peer.addr == player_addr
    finally:
        probe.close()
    assert loop_errors(caplog.records) == []
    await pair.assert_unaffected(before)


def _binding_response(username: str) -> stun.Message:
    """A Binding *response* sent to the server unsolicited (not a request: malformed for us)."""
    msg = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE)
    msg.attributes["USERNAME"] = username
    return msg


# --- inside an established session -------------------------------------------------------------


def _rtp(ssrc: int, pt: int = 77, seq: int = 1, *, b0: int = 0x80, payload: bytes = b"") -> bytes:
    return struct.pack("!BBHII", b0, pt, seq, 90000, ssrc) + payload


async def test_bad_packets_inside_an_established_session(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """SRTP-protected junk sent by the publisher's own DTLS/ICE transport (the real 5-tuple)."""
    node, pair = env.node, env.pair
    before = pair.mark()
    dtls = pair.publisher.pc.getSenders()[0].transport
    assert dtls is not None and dtls.state == "connected"
    peer = node.peers[pair.publisher.session_id]
    known = set(peer.receivers_by_ssrc)
    # Fresh SSRCs only: reusing the real ones would desynchronise their SRTP replay windows.
    fresh = (s for s in range(0x5EED0000, 0x5EED1000) if s not in known)
    url = node.http_url

    # Truncated RTP. A header claiming an extension (or CSRCs) past the end cannot even be
    # protected: libsrtp parses the header first, on both sides, so a client cannot deliver
    # one, and a forged one fails authentication (srtp_unprotect, below).
    overrun = _rtp(next(fresh), b0=0x90) + struct.pack("!HH", 0xBEDE, 10) + b"ab"
    with pytest.raises(pylibsrtp.Error):
        dtls._tx_srtp.protect(overrun)
    # What does get through SRTP and is still malformed RTP: a bad padding count.
    for label, tail in (
        ("padding count 0", b"\x00"),
        ("padding count 255", b"\xff"),
        ("padding count 64 in a 16-byte packet", b"\x40"),
    ):
        pkt = _rtp(next(fresh), b0=0xA0, payload=b"abc" + tail)
        await expect_drop(url, "rtp_malformed", lambda p=pkt: dtls._send_rtp(p), label)

    # Well-formed RTP with an SSRC nobody declared and a payload type nobody negotiated.
    for pt in (77, 0, 127):
        pkt = _rtp(next(fresh), pt=pt, payload=os.urandom(50))
        await expect_drop(
            url, "unknown_ssrc", lambda p=pkt: dtls._send_rtp(p), f"unknown SSRC, PT {pt}"
        )

    # Truncated RTCP: an SR claiming 6 words after the header with only a few bytes; an RR
    # announcing one report block but carrying none; a valid RR followed by a bad version.
    rr = struct.pack("!BBHI", 0x80, 201, 1, next(fresh))
    rtcp_cases = [
        ("truncated SR", struct.pack("!BBHI", 0x80, 200, 6, next(fresh)) + b"xy"),
        ("RR missing its block", struct.pack("!BBHI", 0x81, 201, 1, next(fresh))),
        ("compound with bad version", rr + b"\x40\xc9\x00\x00"),
    ]
    for label, pkt in rtcp_cases:
        await expect_drop(url, "rtcp_malformed", lambda p=pkt: dtls._send_rtp(p), label)

    # SRTP whose auth tag was tampered with, on the real 5-tuple.
    sealed = bytearray(dtls._tx_srtp.protect(_rtp(next(fresh), payload=os.urandom(40))))
    sealed[-1] ^= 0xFF
    await expect_drop(
        url, "srtp_unprotect", lambda: dtls.transport._send(bytes(sealed)), "tampered SRTP"
    )

    assert node.peers.get(pair.publisher.session_id) is peer and peer.state == "connected"
    assert loop_errors(caplog.records) == []
    await pair.assert_unaffected(before)


# --- datachannel -------------------------------------------------------------------------------


async def test_datachannel_bad_messages_get_error_envelopes(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    node, pair = env.node, env.pair
    before = pair.mark()
    token = env.mint(ROOM, "dc-viewer", ["subscribe"])
    player = await whep_play(node.http_url, ROOM, token, video=False, audio=False, datachannel=True)
    try:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def on_message(message: str | bytes) -> None:
            inbox.put_nowait(json.loads(message))

        channel = await player.wait_channel_open(timeout=15)
        channel.on("message", on_message)

        async def next_message(timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
            # The greeting (and the commerce snapshot that follows it) may arrive before or
            # after our listener was attached: skip them.
            for _ in range(3):
                msg = await asyncio.wait_for(inbox.get(), timeout)
                if msg.get("type") not in ("hello", "snapshot"):
                    return msg
            raise AssertionError("only hello messages")

        bad: list[tuple[str | bytes, str]] = [
            ("{not json", "malformed"),
            ("", "malformed"),
            (b"\xff\xfe\x00binary", "malformed"),
            ("[1, 2, 3]", "malformed"),
            ('"just a string"', "malformed"),
            ("42", "malformed"),
            ('{"v": 1}', "malformed"),
            ('{"type": 7}', "malformed"),
            ('{"v": 1, "type": "no.such.type"}', "unknown_type"),
            ("[" * 10_000, "malformed"),  # nesting deeper than the JSON decoder recurses
            ('{"a":' * 2500 + "1" + "}" * 2500, "malformed"),
            (json.dumps({"type": "x", "pad": "p" * 20_000}), "too_large"),
            # Under the limit in characters, over it in bytes (3-byte UTF-8 each).
            (json.dumps({"type": "x", "pad": "\u20ac" * 6_000}, ensure_ascii=False), "too_large"),
            (b"\x00" * 20_000, "too_large"),
        ]
        for message, code in bad:
            channel.send(message)
            reply = await next_message()
            assert reply.get("v") == 1 and reply.get("type") == "error", (message[:40], reply)
            assert reply.get("code") == code, (message[:40], reply)
            assert reply.get("reason"), reply
            assert channel.readyState == "open"
        channel.send(json.dumps({"type": "clock.ping", "id": 1}))
        pong = await next_message()
        assert pong["type"] == "clock.pong" and pong["id"] == 1, pong
        assert isinstance(pong["server_time"], float)
        assert channel.readyState == "open"
        assert player.pc.connectionState == "connected"
        # The node's side of the association survived too (an exception escaping the message
        # handler would end aiortc's DTLS receive loop and with it every channel).
        peer = node.peers[player.session_id]
        assert peer._dtls.state == "connected", peer._dtls.state
        assert not [
            r
            for r in caplog.records
            if r.name.startswith("aiortc.rtcdtlstransport") and r.levelno >= logging.WARNING
        ]
        assert loop_errors(caplog.records) == []
    finally:
        await player.close()
    await pair.assert_unaffected(before)


async def _refused_in(env: Env, room: str, endpoint: str, body: str, needle: str) -> None:
    token = env.mint(room, "lab", ["publish" if endpoint == "whip" else "subscribe"])
    got = await _request(
        "POST", f"{env.node.http_url}/{endpoint}/{room}", token=token, body=body.encode()
    )
    _assert_refused(got, 400, needle)


async def test_refused_offer_leaves_no_empty_room(env: Env) -> None:
    node = env.node
    ghost = "ghost-codec"
    await _refused_in(
        env,
        ghost,
        "whip",
        _offer("sendonly", audio=("9 G722/8000",), video=None),
        "no supported audio codec",
    )
    try:
        assert ghost not in node.rooms, "a refused offer left an empty room"
    finally:
        node.rooms.pop(ghost, None)  # keep the module's node tidy either way


async def test_bad_setup_offer_leaves_no_empty_room(env: Env) -> None:
    node = env.node
    ghost = "ghost-setup"
    await _refused_in(
        env,
        ghost,
        "whep",
        _offer().replace("a=setup:actpass", "a=setup:holdconn"),
        "a=setup:holdconn is not valid",
    )
    try:
        assert ghost not in node.rooms, "a refused offer left an empty room"
    finally:
        node.rooms.pop(ghost, None)


async def test_node_still_healthy_at_the_end(env: Env) -> None:
    node = env.node
    assert await healthz_status(node.http_url) == 200
    await env.pair.assert_unaffected(env.pair.mark(), video=15, audio=15)
    # The healthy pair is the only thing left in its room.
    assert set(node.peers) == {env.pair.publisher.session_id, env.pair.player.session_id}
