"""Pure parts of bench/load.py, bench/janus.py, bench/netns.py and the rawpeer answer mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import janus
from bench.load import Search, auto_client_procs, passes, per_core, split
from bench.netns import plan
from bench.rawpeer import build_answer, read_answer


def run_search(search: Search, capacity: int) -> Search:
    """Drive the search with a fake measure: passes up to ``capacity``."""
    for _ in range(100):
        n = search.next()
        if n is None:
            break
        search.record(n, n <= capacity)
    return search


@pytest.mark.parametrize("capacity", [1, 7, 33, 100, 237, 639])
def test_search_finds_capacity_within_resolution(capacity: int) -> None:
    s = run_search(Search(start=10, limit=640, resolution=5, rel_resolution=0.1,
                          max_steps=30), capacity)
    assert s.best <= capacity
    assert capacity - s.best <= max(5, int(0.1 * s.best), 1)
    assert s.first_fail is None or s.first_fail > capacity


def test_search_doubles_then_bisects() -> None:
    s = run_search(Search(start=10, limit=1000, resolution=1, rel_resolution=0, max_steps=30),
                   50)
    assert [n for n, _ in s.steps][:4] == [10, 20, 40, 80]
    assert s.steps[4] == (60, False)
    assert s.best == 50 and s.first_fail == 51


def test_search_stops_at_limit_and_step_bound() -> None:
    s = run_search(Search(start=10, limit=100, max_steps=30), 10_000)
    assert s.best == 100 and s.first_fail is None and s.steps[-1] == (100, True)
    s = run_search(Search(start=10, limit=10_000, resolution=1, rel_resolution=0,
                          max_steps=3), 10_000)
    assert len(s.steps) == 3 and s.done


def test_search_when_start_fails() -> None:
    s = run_search(Search(start=40, limit=640, resolution=1, rel_resolution=0,
                          max_steps=30), 3)
    assert s.best == 3


def test_search_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Search(start=0)
    with pytest.raises(ValueError):
        Search(start=20, limit=10)


def test_passes() -> None:
    ok = {"subscribers": 10, "connected": 10, "latency_ms": {"p99": 12.0},
          "loss_percent": 0.1, "error": ""}
    assert passes(ok) == (True, "ok")
    assert not passes({**ok, "latency_ms": {"p99": 50.0}})[0]
    assert not passes({**ok, "loss_percent": 0.5})[0]
    assert not passes({**ok, "connected": 9})[0]
    assert not passes({**ok, "latency_ms": {}})[0]
    assert not passes({**ok, "error": "2 subscribers got no video"})[0]


def test_client_split_and_auto_procs() -> None:
    assert split(list(range(5)), 2) == [[0, 2, 4], [1, 3]]
    assert split([1], 3) == [[1], [], []]
    assert auto_client_procs(10, cpus=2) == 1
    assert auto_client_procs(400, cpus=2) == 2
    assert auto_client_procs(400, cpus=8) == 3


def test_per_core() -> None:
    assert per_core(43.0, 173.0) == 134
    assert per_core(None, 173.0) is None


# --- Janus configuration and JSON API ------------------------------------------------------


def test_janus_config_files(tmp_path: Path) -> None:
    files = janus.config_files(tmp_path, http_ip="10.213.7.2", ice_interface="sfbnabc")
    assert set(files) == {"janus.jcfg", "janus.transport.http.jcfg",
                          "janus.plugin.videoroom.jcfg"}
    main = files["janus.jcfg"]
    assert "ice_lite = true" in main
    assert 'ice_enforce_list = "sfbnabc"' in main
    assert "ipv6 = false" in main
    assert f'plugins_folder = "{tmp_path / "plugins"}"' in main
    http = files["janus.transport.http.jcfg"]
    assert 'ip = "10.213.7.2"' in http and "port = 8088" in http
    assert "admin_http = false" in http
    for text in files.values():  # balanced libconfig sections
        assert text.count("{") == text.count("}")


def test_janus_write_config_links_only_what_is_needed(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    for folder, name in (("plugins", "libjanus_videoroom.so"),
                         ("plugins", "libjanus_sip.so"),
                         ("transports", "libjanus_http.so")):
        (lib / folder).mkdir(parents=True, exist_ok=True)
        (lib / folder / name).write_text("")
    conf = tmp_path / "conf"
    path = janus.write_config(conf, janus.config_files(
        conf, http_ip="10.0.0.2", ice_interface="x"), lib_dir=lib)
    assert path == conf / "janus.jcfg" and path.exists()
    assert sorted(p.name for p in (conf / "plugins").iterdir()) == ["libjanus_videoroom.so"]
    assert sorted(p.name for p in (conf / "transports").iterdir()) == ["libjanus_http.so"]


def test_janus_messages() -> None:
    assert janus.msg_create("t1") == {"janus": "create", "transaction": "t1"}
    assert janus.msg_attach("t2") == {"janus": "attach", "plugin": "janus.plugin.videoroom",
                                      "transaction": "t2"}
    assert janus.msg_keepalive("t3") == {"janus": "keepalive", "transaction": "t3"}
    m = janus.msg_message("t4", janus.publisher_join_body(7, "pub"),
                          janus.jsep("offer", "v=0\r\n"))
    assert m == {"janus": "message", "transaction": "t4",
                 "body": {"request": "join", "ptype": "publisher", "room": 7, "display": "pub"},
                 "jsep": {"type": "offer", "sdp": "v=0\r\n"}}
    assert "jsep" not in janus.msg_message("t5", janus.start_body())
    assert janus.subscriber_join_body(7, 99) == {"request": "join", "ptype": "subscriber",
                                                  "room": 7, "streams": [{"feed": 99}]}
    room = janus.room_create_body(7)
    assert room["request"] == "create" and room["videocodec"] == "vp8"
    assert room["fir_freq"] == 0 and room["permanent"] is False
    t = janus.msg_trickle("t6", janus.trickle_candidate(("10.0.0.1", 5000)))
    assert t["candidate"]["candidate"] == "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host"
    assert janus.msg_trickle("t7", {"completed": True})["candidate"] == {"completed": True}


def test_janus_plugin_data_errors() -> None:
    ok = {"janus": "event", "plugindata": {"data": {"videoroom": "joined", "id": 5}}}
    assert janus.plugin_data(ok)["id"] == 5
    with pytest.raises(janus.JanusError, match="458"):
        janus.plugin_data({"janus": "error", "error": {"code": 458, "reason": "no session"}})
    with pytest.raises(janus.JanusError, match="426"):
        janus.plugin_data({"janus": "event", "plugindata": {"data": {
            "videoroom": "event", "error_code": 426, "error": "No such room"}}})


# --- netns naming ------------------------------------------------------------------------------


def test_netns_plan() -> None:
    ns = plan("10.213.7.0/30", tag="abc123")
    assert ns.name == "sfubench-abc123"
    assert (ns.host_ip, ns.ns_ip, ns.prefix) == ("10.213.7.1", "10.213.7.2", 30)
    assert len(ns.host_if) <= 15 and len(ns.ns_if) <= 15
    assert ns.exec_prefix() == ["ip", "netns", "exec", "sfubench-abc123"]
    with pytest.raises(ValueError):
        plan("8.8.8.0/30")
    with pytest.raises(ValueError):
        plan("10.0.0.0/31")
    with pytest.raises(ValueError):
        plan("10.0.0.0/30", tag="bad-tag!")


# --- rawpeer answer mode ----------------------------------------------------------------------

JANUS_OFFER = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=VideoRoom 1", "t=0 0", "a=group:BUNDLE 0 1",
    "a=ice-lite", "a=fingerprint:sha-256 AA:BB",
    "m=video 9 UDP/TLS/RTP/SAVPF 100 101", "c=IN IP4 127.0.0.1", "a=sendonly", "a=mid:0",
    "a=rtcp-mux", "a=ice-ufrag:jx", "a=ice-pwd:jpwdjpwdjpwdjpwdjpwdjp", "a=setup:actpass",
    "a=rtpmap:100 VP8/90000", "a=rtpmap:101 rtx/90000", "a=fmtp:101 apt=100",
    "a=ssrc:1111 cname:janus",
    "a=candidate:1 1 udp 2015363327 10.213.7.2 30001 typ host",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 127.0.0.1", "a=sendonly", "a=mid:1",
    "a=rtcp-mux", "a=ice-ufrag:jx", "a=ice-pwd:jpwdjpwdjpwdjpwdjpwdjp", "a=setup:actpass",
    "a=rtpmap:111 opus/48000/2", "a=ssrc:2222 cname:janus",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:2",
]) + "\r\n"


def test_build_answer_to_a_janus_offer() -> None:
    ans = build_answer(JANUS_OFFER, ufrag="uf", pwd="p" * 22, fingerprint=("sha-256", "CC:DD"),
                       candidate=("10.213.7.1", 40000))
    assert "a=group:BUNDLE 0 1\r\n" in ans
    assert "m=video 40000 UDP/TLS/RTP/SAVPF 100\r\n" in ans
    assert "a=rtpmap:100 VP8/90000" in ans and "a=rtcp-fb:100 nack pli" in ans
    assert "m=audio 40000 UDP/TLS/RTP/SAVPF 111\r\n" in ans
    assert "a=rtpmap:111 opus/48000/2" in ans
    assert "m=application 0 " in ans  # no datachannel: rejected
    assert ans.count("a=setup:active") == 2 and ans.count("a=recvonly") == 2
    assert ans.count("a=candidate:") == 1
    # What the peer then reads from the offer to run ICE/DTLS towards Janus.
    remote = read_answer(JANUS_OFFER)
    assert remote.address == ("10.213.7.2", 30001)
    assert remote.ssrc_kinds == {1111: "video", 2222: "audio"}


def test_build_answer_rejects_offer_without_media() -> None:
    offer = "v=0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n"
    with pytest.raises(ValueError):
        build_answer(offer, ufrag="u", pwd="p", fingerprint=("sha-256", "AA"))
