"""Janus 1.1.2 (Debian package ``janus``, videoroom plugin) as the side-by-side peer.

- :func:`ensure_installed`: ``apt-get install -y janus`` when the binary is missing.
- :func:`config_files`: the whole configuration, generated (pure): ``janus.jcfg`` with ICE
  lite, only the namespace's veth for ICE, no IPv6, a private RTP port range;
  ``janus.transport.http.jcfg`` (plain HTTP on the namespace address, no admin API) and an
  empty ``janus.plugin.videoroom.jcfg``. :func:`write_config` writes them with plugin and
  transport folders holding only symlinks to the videoroom plugin and the HTTP transport,
  so nothing else loads.
- :class:`JanusProcess`: runs Janus inside a network namespace of the bench's own
  (:mod:`bench.netns`; Janus skips loopback interfaces when it gathers ICE candidates),
  waits for ``GET /janus/info``, reads its CPU from /proc/<pid>/stat, stops it by PID.
- The JSON API over HTTP (sessions, handles, ``message`` with JSEP, long-poll events,
  keepalives): the ``msg_*`` / ``*_body`` builders are pure; :class:`JanusSession` is the
  client; :func:`publish` and :func:`subscribe` drive a :class:`~bench.rawpeer.RawPublisher`
  (offer -> ``configure`` -> answer) and a subscribing :class:`~bench.rawpeer.RawPeer` (``join``
  as subscriber -> Janus's offer -> the peer's answer -> ``start``) over the same ICE/DTLS/SRTP
  code that the node's load test uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.netns import Netns
from bench.rawpeer import RawPeer, RawPublisher

__all__ = [
    "JanusError",
    "JanusProcess",
    "JanusSession",
    "config_files",
    "ensure_installed",
    "janus_version",
    "msg_attach",
    "msg_create",
    "msg_keepalive",
    "msg_message",
    "msg_trickle",
    "publish",
    "publisher_configure_body",
    "publisher_join_body",
    "room_create_body",
    "start_body",
    "subscribe",
    "subscriber_join_body",
    "write_config",
]

PLUGIN = "janus.plugin.videoroom"
LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
HTTP_PORT = 8088
RTP_PORT_RANGE = (30000, 39999)
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
REQUEST_TIMEOUT = 15.0
EVENT_TIMEOUT = 20.0
KEEPALIVE_INTERVAL = 20.0  # session_timeout is 60 s
APT_TIMEOUT = 900.0


class JanusError(RuntimeError):
    pass


# --- install and configure -------------------------------------------------------------------


def janus_version(binary: str = "janus") -> str:
    """``1.1.2`` from ``janus --version``, or "" when it cannot be run."""
    path = shutil.which(binary)
    if path is None:
        return ""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in out.splitlines():
        if line.startswith("Janus version:") and "(" in line:
            return line.rsplit("(", 1)[1].rstrip(")").strip()
    return ""


def ensure_installed() -> str:
    """Install the Debian package when ``janus`` is missing; returns the version."""
    if shutil.which("janus") is None:
        print("janus not found: apt-get install -y janus")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "janus"]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=APT_TIMEOUT,
                                 env=env, check=False)
            if res.returncode != 0:  # stale package lists: update once, retry once
                subprocess.run(["apt-get", "update"], capture_output=True, timeout=APT_TIMEOUT,
                               env=env, check=False)
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=APT_TIMEOUT,
                                     env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise JanusError(f"apt-get install janus failed: {exc}") from None
        if res.returncode != 0 or shutil.which("janus") is None:
            raise JanusError(f"apt-get install janus failed: {res.stderr.strip()[-300:]}")
    return janus_version()


def _jcfg(sections: dict[str, dict[str, Any]]) -> str:
    """libconfig text (Janus's .jcfg) from {section: {key: value}}."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    out: list[str] = []
    for name, items in sections.items():
        out.append(f"{name}: {{")
        out += [f"\t{k} = {value(v)}" for k, v in items.items()]
        out.append("}")
    return "\n".join(out) + "\n"


def config_files(
    workdir: Path,
    *,
    http_ip: str,
    http_port: int = HTTP_PORT,
    ice_interface: str,
    rtp_ports: tuple[int, int] = RTP_PORT_RANGE,
    debug_level: int = 3,
) -> dict[str, str]:
    """The generated configuration: file name (relative to ``workdir``) -> text. Pure."""
    janus = _jcfg({
        "general": {
            "configs_folder": str(workdir),
            "plugins_folder": str(workdir / "plugins"),
            "transports_folder": str(workdir / "transports"),
            "events_folder": str(workdir / "events"),
            "loggers_folder": str(workdir / "loggers"),
            "debug_level": debug_level,
            "session_timeout": 60,
            "server_name": "sfu-bench-janus",
            "hide_dependencies": True,
        },
        "certificates": {},
        "media": {
            "ipv6": False,
            "rtp_port_range": f"{rtp_ports[0]}-{rtp_ports[1]}",
            "dtls_timeout": 500,
        },
        "nat": {
            "nice_debug": debug_level >= 7,
            "ice_lite": True,
            "full_trickle": False,
            "ice_enforce_list": ice_interface,
            "ignore_mdns": True,
        },
        "plugins": {},
        "transports": {},
        "loggers": {},
        "events": {"broadcast": False},
    })
    http = _jcfg({
        "general": {
            "json": "compact",
            "base_path": "/janus",
            "http": True,
            "port": http_port,
            "ip": http_ip,
            "https": False,
        },
        "admin": {"admin_http": False, "admin_https": False},
        "cors": {},
    })
    videoroom = _jcfg({"general": {"string_ids": False}})
    return {
        "janus.jcfg": janus,
        "janus.transport.http.jcfg": http,
        "janus.plugin.videoroom.jcfg": videoroom,
    }


def write_config(workdir: Path, files: dict[str, str], lib_dir: Path = LIB_DIR) -> Path:
    """Write ``files`` and link only the videoroom plugin and the HTTP transport."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (workdir / name).write_text(text)
    for folder in ("plugins", "transports", "events", "loggers"):
        (workdir / folder).mkdir(exist_ok=True)
    for folder, lib in (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_http.so")):
        src = lib_dir / folder / lib
        if not src.exists():
            raise JanusError(f"{src} missing: is the janus package installed?")
        link = workdir / folder / lib
        if not link.exists():
            link.symlink_to(src)
    return workdir / "janus.jcfg"


class JanusProcess:
    """Janus as a child process inside ``netns``; its HTTP API at ``self.url``."""

    def __init__(self, workdir: Path, netns: Netns, *, debug_level: int = 3) -> None:
        self.workdir = workdir
        self.netns = netns
        self.url = f"http://{netns.ns_ip}:{HTTP_PORT}/janus"
        self.log_path = workdir / "janus.log"
        self.config = write_config(workdir, config_files(
            workdir, http_ip=netns.ns_ip, ice_interface=netns.ns_if, debug_level=debug_level))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        # `ip netns exec` enters the namespace and execs janus: the child PID is Janus's.
        cmd = [*self.netns.exec_prefix(), "janus", "-C", str(self.config),
               "-F", str(self.workdir), "-o"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    async def wait_ready(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise JanusError(f"janus exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(self.url + "/info",
                                    timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        info: dict[str, Any] = await resp.json(content_type=None)
                        if PLUGIN not in info.get("plugins", {}):
                            raise JanusError(f"janus runs without {PLUGIN}: {self.log_tail()}")
                        return info
            await asyncio.sleep(0.2)
        raise JanusError(f"janus not ready in {START_TIMEOUT}s: {self.log_tail()}")

    def cpu_seconds(self) -> float:
        from bench.forwarding import proc_cpu_seconds

        return proc_cpu_seconds(self.pid)

    def threads(self) -> int:
        with contextlib.suppress(OSError):
            return len(os.listdir(f"/proc/{self.pid}/task"))
        return 0

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else None
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)  # Janus shuts down cleanly on SIGINT
        try:
            return proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            return proc.wait(STOP_TIMEOUT)


# --- the JSON API: message builders (pure) ---------------------------------------------------


def transaction() -> str:
    return secrets.token_hex(8)


def msg_create(tx: str) -> dict[str, Any]:
    return {"janus": "create", "transaction": tx}


def msg_attach(tx: str, plugin: str = PLUGIN) -> dict[str, Any]:
    return {"janus": "attach", "plugin": plugin, "transaction": tx}


def msg_keepalive(tx: str) -> dict[str, Any]:
    return {"janus": "keepalive", "transaction": tx}


def msg_message(tx: str, body: dict[str, Any], jsep: dict[str, str] | None = None
                ) -> dict[str, Any]:
    msg: dict[str, Any] = {"janus": "message", "transaction": tx, "body": body}
    if jsep is not None:
        msg["jsep"] = jsep
    return msg


def msg_trickle(tx: str, candidate: dict[str, Any]) -> dict[str, Any]:
    return {"janus": "trickle", "transaction": tx, "candidate": candidate}


def trickle_candidate(local: tuple[str, int], mid: str = "0") -> dict[str, Any]:
    """The trickle form of the peer's single host candidate (BUNDLE: on the first mid)."""
    return {"candidate": f"candidate:1 1 udp 2130706431 {local[0]} {local[1]} typ host",
            "sdpMid": mid, "sdpMLineIndex": 0}


def room_create_body(room: int, *, publishers: int = 1, description: str = "bench"
                     ) -> dict[str, Any]:
    """A temporary VP8/Opus room without periodic keyframe requests or a bitrate cap."""
    return {"request": "create", "room": room, "description": description,
            "publishers": publishers, "permanent": False, "is_private": False,
            "audiocodec": "opus", "videocodec": "vp8", "bitrate": 0, "fir_freq": 0,
            "notify_joining": False}


def publisher_join_body(room: int, display: str = "pub") -> dict[str, Any]:
    return {"request": "join", "ptype": "publisher", "room": room, "display": display}


def publisher_configure_body() -> dict[str, Any]:
    return {"request": "configure", "audio": True, "video": True}


def subscriber_join_body(room: int, feed: int) -> dict[str, Any]:
    return {"request": "join", "ptype": "subscriber", "room": room,
            "streams": [{"feed": feed}]}


def start_body() -> dict[str, Any]:
    return {"request": "start"}


def jsep(kind: str, sdp: str) -> dict[str, str]:
    return {"type": kind, "sdp": sdp}


def plugin_data(reply: dict[str, Any]) -> dict[str, Any]:
    """The plugin's answer inside a reply or event; raises on Janus or plugin errors."""
    if reply.get("janus") == "error":
        err = reply.get("error", {})
        raise JanusError(f"janus error {err.get('code')}: {err.get('reason')}")
    data: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
    if "error_code" in data or "error" in data:
        raise JanusError(f"{PLUGIN} error {data.get('error_code')}: {data.get('error')}")
    return data


# --- the JSON API: client ---------------------------------------------------------------------


class JanusSession:
    """One Janus session: attach handles, send messages, receive events by long poll.

    Asynchronous plugin requests are acknowledged (``ack``) and answered later by an event
    with the same transaction; the long-poll task resolves the waiting future. A keepalive
    goes out every :data:`KEEPALIVE_INTERVAL`.
    """

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.session_id: int | None = None
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.events = 0
        self.hangups = 0
        self.closed = False

    async def _post(self, path: str, msg: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.url + path, json=msg,
                                  timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as resp:
            if resp.status != 200:
                raise JanusError(f"POST {path}: HTTP {resp.status}")
            reply: dict[str, Any] = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            plugin_data(reply)
        return reply

    async def create(self) -> int:
        reply = await self._post("", msg_create(transaction()))
        self.session_id = int(reply["data"]["id"])
        self._tasks = [asyncio.ensure_future(self._poll()),
                       asyncio.ensure_future(self._keepalive())]
        return self.session_id

    async def attach(self) -> int:
        reply = await self._post(f"/{self.session_id}", msg_attach(transaction()))
        return int(reply["data"]["id"])

    async def request(self, handle: int, body: dict[str, Any],
                      jsep_: dict[str, str] | None = None) -> tuple[dict[str, Any],
                                                                   dict[str, Any] | None]:
        """Send a plugin message; returns (plugin data, jsep) of its answer or its event."""
        tx = transaction()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[tx] = fut
        try:
            reply = await self._post(f"/{self.session_id}/{handle}", msg_message(tx, body, jsep_))
            if reply.get("janus") != "ack":  # synchronous request: answered here
                return plugin_data(reply), reply.get("jsep")
            event = await asyncio.wait_for(fut, EVENT_TIMEOUT)
        finally:
            self._waiters.pop(tx, None)
        return plugin_data(event), event.get("jsep")

    async def trickle(self, handle: int, local: tuple[str, int] | None) -> None:
        """Trickle the peer's one host candidate, then end-of-candidates (Janus waits for
        it when the SDP announced trickle)."""
        if local is not None:
            await self._post(f"/{self.session_id}/{handle}",
                             msg_trickle(transaction(), trickle_candidate(local)))
        await self._post(f"/{self.session_id}/{handle}",
                         msg_trickle(transaction(), {"completed": True}))

    async def _poll(self) -> None:
        url = f"{self.url}/{self.session_id}?maxev=20"
        while not self.closed:
            try:
                async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=40)) as resp:
                    got = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                if self.closed:
                    return
                await asyncio.sleep(0.5)
                continue
            for ev in got if isinstance(got, list) else [got]:
                self.events += 1
                if ev.get("janus") == "hangup":
                    self.hangups += 1
                fut = self._waiters.get(ev.get("transaction", ""))
                if fut is not None and not fut.done() and ev.get("janus") in ("event", "error"):
                    fut.set_result(ev)

    async def _keepalive(self) -> None:
        while not self.closed:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, JanusError):
                await self._post(f"/{self.session_id}", msg_keepalive(transaction()))

    async def destroy(self) -> None:
        """Destroy the session on Janus (hangs up every handle) and stop the tasks."""
        if self.closed:
            return
        self.closed = True
        if self.session_id is not None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, JanusError):
                await self._post(f"/{self.session_id}",
                                 {"janus": "destroy", "transaction": transaction()})
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def create_room(session: JanusSession, room: int, publishers: int = 1) -> int:
    handle = await session.attach()
    data, _ = await session.request(handle, room_create_body(room, publishers=publishers))
    if data.get("videoroom") != "created":
        raise JanusError(f"room create: unexpected answer {data}")
    return room


async def publish(session: JanusSession, pub: RawPublisher, room: int, bind_host: str) -> int:
    """Join ``room`` as publisher, configure with the peer's offer, then ICE/DTLS with
    Janus's answer. Returns the publisher's feed id."""
    handle = await session.attach()
    data, _ = await session.request(handle, publisher_join_body(room, pub.name))
    if data.get("videoroom") != "joined":
        raise JanusError(f"publisher join: unexpected answer {data}")
    feed = int(data["id"])
    await pub.open(bind_host)
    data, answer = await session.request(handle, publisher_configure_body(),
                                         jsep("offer", pub.offer()))
    if answer is None or answer.get("type") != "answer":
        raise JanusError(f"publisher configure: no JSEP answer ({data})")
    await session.trickle(handle, pub.local)
    await pub.start_media(answer["sdp"], session_host(session))
    return feed


async def subscribe(session: JanusSession, peer: RawPeer, room: int, feed: int,
                    bind_host: str) -> None:
    """Join as subscriber to ``feed``: answer Janus's offer with the peer, ``start``, then
    ICE/DTLS."""
    handle = await session.attach()
    data, offer = await session.request(handle, subscriber_join_body(room, feed))
    if data.get("videoroom") != "attached" or offer is None:
        raise JanusError(f"subscriber join: unexpected answer {data}")
    await peer.open(bind_host)
    answer = peer.answer_offer(offer["sdp"])
    data, _ = await session.request(handle, start_body(), jsep("answer", answer))
    if data.get("started") != "ok":
        raise JanusError(f"subscriber start: unexpected answer {data}")
    await session.trickle(handle, peer.local)
    await peer.start_media(offer["sdp"], session_host(session))


def session_host(session: JanusSession) -> str:
    from urllib.parse import urlsplit

    return urlsplit(session.url).hostname or "127.0.0.1"
