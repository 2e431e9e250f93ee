"""A real-time user-space UDP impairment proxy (the kernel here has no netem).

Clients send to the proxy's listening address; for each distinct client address the proxy
opens its own upstream socket connected to ``target`` (like a NAT), so the target sees one
peer per client and answers it there. Client -> target datagrams cross that client's
uplink :class:`~bench.link.Link`, target -> client datagrams its downlink Link. Each Link is
driven by exactly one ``loop.call_at`` timer re-armed from ``Link.get_timer()``: no
per-packet sleeps, no polling loop.

Each client gets its own pair of links (its own access network): the configured
``LinkConfig`` is copied per client with ``seed + n`` for the n-th client (n from 0) and
the loss model re-seeded with that too, so runs are repeatable and clients independent.
Sizes charged to the capacity trace include ``overhead`` bytes of IPv4 + UDP headers (28).

Only loopback targets are allowed (127.0.0.0/8, ::1): this tool impairs a local node, it
is not a relay. :func:`rewrite_candidates` points the host candidates of an SDP answer at
the proxy so that a client's media goes through it.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from bench.link import Link, LinkConfig

__all__ = ["DirectionStats", "ImpairmentProxy", "rewrite_candidates"]

_BUFFER = 1 << 22  # socket buffers: a burst must not be lost in the kernel before the Link
_MAX_DATAGRAM = 65535
_READ_BATCH = 512


def _check_loopback(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"target must be a loopback IP address, got {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"target {host} is not loopback (127.0.0.0/8 or ::1): refused")
    return host


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


@dataclass
class DirectionStats:
    """Counters of one direction, over all clients."""

    received: int = 0  # datagrams read from the sending side
    received_bytes: int = 0
    forwarded: int = 0  # datagrams written to the receiving side
    forwarded_bytes: int = 0
    dropped_queue: int = 0
    dropped_loss: int = 0
    send_errors: int = 0  # sendto failed (buffer full, peer gone): lost as in UDP


class _Pipe:
    """One Link plus its timer: accepts datagrams, writes them out when they arrive."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: LinkConfig | None,
        write: Callable[[bytes], None],
        stats: DirectionStats,
        overhead: int,
    ) -> None:
        self._loop = loop
        self.link: Link[bytes] | None = Link(config, loop.time()) if config else None
        self._write = write
        self._stats = stats
        self._overhead = overhead
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def push(self, data: bytes) -> None:
        self._stats.received += 1
        self._stats.received_bytes += len(data)
        if self.link is None:
            self._emit(data)
            return
        before = (self.link.stats.dropped_queue, self.link.stats.dropped_loss)
        if not self.link.send(data, len(data) + self._overhead, self._loop.time()):
            self._stats.dropped_queue += self.link.stats.dropped_queue - before[0]
            self._stats.dropped_loss += self.link.stats.dropped_loss - before[1]
        self._arm()

    def _emit(self, data: bytes) -> None:
        try:
            self._write(data)
        except OSError:  # EAGAIN, ECONNREFUSED: a datagram lost, as on a real network
            self._stats.send_errors += 1
            return
        self._stats.forwarded += 1
        self._stats.forwarded_bytes += len(data)

    def _arm(self) -> None:
        assert self.link is not None
        when = self.link.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        assert self.link is not None
        self._timer = None
        self._timer_at = None
        for _, data in self.link.poll(self._loop.time()):
            self._emit(data)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None


class _Flow:
    """One client: its upstream socket towards the target and its two pipes."""

    def __init__(self, proxy: ImpairmentProxy, client: tuple[str, int], index: int) -> None:
        loop = proxy._loop
        assert loop is not None and proxy._listen is not None
        self.client = client
        self.sock = socket.socket(_family(proxy.target[0]), socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            _set_buffers(self.sock)
            self.sock.connect(proxy.target)  # UDP connect: immediate; filters the replies
        except OSError:
            self.sock.close()
            raise
        listen = proxy._listen

        upstream = self.sock

        def to_client(data: bytes) -> None:
            listen.sendto(data, client)

        def to_target(data: bytes) -> None:
            upstream.send(data)

        up_cfg = _per_client(proxy.uplink, index)
        down_cfg = _per_client(proxy.downlink, index)
        self.up = _Pipe(loop, up_cfg, to_target, proxy.uplink_stats, proxy.overhead)
        self.down = _Pipe(loop, down_cfg, to_client, proxy.downlink_stats, proxy.overhead)
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(_READ_BATCH):
            try:
                data = self.sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable from the target: keep going
                continue
            self.down.push(data)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        self.up.close()
        self.down.close()
        loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _set_buffers(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, _BUFFER)
        except OSError:
            pass


def _per_client(config: LinkConfig | None, index: int) -> LinkConfig | None:
    if config is None:
        return None
    cfg = copy.deepcopy(config)
    cfg.seed = config.seed + index
    cfg.loss.reseed(cfg.seed)
    return cfg


class ImpairmentProxy:
    """Impairs UDP between loopback clients and a loopback ``target`` (see module docstring)."""

    def __init__(
        self,
        target: tuple[str, int],
        uplink: LinkConfig | None,
        downlink: LinkConfig | None,
        listen_host: str = "127.0.0.1",
        *,
        overhead: int = 28,
        max_clients: int = 1024,
    ) -> None:
        self.target = (_check_loopback(target[0]), int(target[1]))
        self.uplink = uplink
        self.downlink = downlink
        self.listen_host = listen_host
        self.overhead = overhead
        self.max_clients = max_clients
        self.uplink_stats = DirectionStats()
        self.downlink_stats = DirectionStats()
        self.refused_clients = 0  # datagrams from new clients beyond max_clients
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listen: socket.socket | None = None
        self._flows: dict[tuple[str, int], _Flow] = {}
        self.address: tuple[str, int] | None = None

    @property
    def flows(self) -> dict[tuple[str, int], _Flow]:
        """Client address -> flow (its ``up.link`` / ``down.link`` carry per-link stats)."""
        return self._flows

    async def start(self) -> tuple[str, int]:
        """Bind the listening socket; returns the address clients should send to."""
        if self._listen is not None:
            raise RuntimeError("proxy already started")
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(_family(self.listen_host), socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            _set_buffers(sock)
            sock.bind((self.listen_host, 0))
        except OSError:
            sock.close()
            raise
        self._listen = sock
        self._loop.add_reader(sock.fileno(), self._readable)
        host, port = sock.getsockname()[:2]
        self.address = (host, port)
        return self.address

    def _readable(self) -> None:
        assert self._listen is not None
        for _ in range(_READ_BATCH):
            try:
                data, addr = self._listen.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            client = (addr[0], addr[1])
            flow = self._flows.get(client)
            if flow is None:
                if len(self._flows) >= self.max_clients:
                    self.refused_clients += 1
                    continue
                flow = self._flows[client] = _Flow(self, client, len(self._flows))
            flow.up.push(data)

    async def stop(self) -> None:
        """Close every socket and cancel every timer; datagrams still in flight are lost."""
        loop = self._loop
        if loop is None:
            return
        for flow in self._flows.values():
            flow.close(loop)
        self._flows.clear()
        if self._listen is not None:
            loop.remove_reader(self._listen.fileno())
            self._listen.close()
            self._listen = None

    async def __aenter__(self) -> ImpairmentProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def rewrite_candidates(answer_sdp: str, proxy_addr: tuple[str, int]) -> str:
    """Point an SDP answer at the proxy: what a client does with the answer it receives.

    Every UDP candidate's address and port become the proxy's (duplicates then dropped,
    per media section); non-UDP candidates are dropped, since they would bypass the proxy;
    ``c=`` lines and the ports of ``m=`` lines (except rejected ones, port 0) and of
    ``a=rtcp:`` follow. Line endings are kept.
    """
    host, port = proxy_addr
    ip_ver = "IP6" if ":" in host else "IP4"
    newline = "\r\n" if "\r\n" in answer_sdp else "\n"
    lines = answer_sdp.splitlines()
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    rejected = False
    for line in lines:
        if line.startswith("m="):
            seen = set()
            parts = line.split(" ")
            rejected = len(parts) > 1 and parts[1] == "0"
            if not rejected and len(parts) > 1:
                parts[1] = str(port)
                line = " ".join(parts)
        elif line.startswith("c=") and not rejected:
            parts = line.split(" ")
            if len(parts) >= 3:
                line = f"{parts[0]} {ip_ver} {host}"
        elif line.startswith("a=rtcp:") and not rejected:
            line = f"a=rtcp:{port} IN {ip_ver} {host}"
        elif line.startswith("a=candidate:"):
            fields = line.split(" ")
            # foundation component transport priority address port "typ" type ...
            if len(fields) < 8 or fields[2].lower() != "udp":
                continue
            fields[4], fields[5] = host, str(port)
            # Drop raddr/rport (they would name the node) and keep the rest.
            rest: list[str] = []
            i = 8
            while i < len(fields):
                if fields[i] in ("raddr", "rport") and i + 1 < len(fields):
                    i += 2
                    continue
                rest.append(fields[i])
                i += 1
            fields = [*fields[:7], "host", *rest]
            key = (fields[1], fields[4])
            if key in seen:
                continue
            seen.add(key)
            line = " ".join(fields)
        out.append(line)
    return newline.join(out) + (newline if answer_sdp.endswith(("\n", "\r")) else "")
