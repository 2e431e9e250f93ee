"""A network namespace of the bench's own, reached from the host over a veth pair.

Used to run a peer that refuses loopback (Janus skips loopback interfaces when it gathers ICE
candidates) on this machine without sending a packet anywhere else: the namespace holds one
end of a veth pair, the host the other, both on a private /30 that exists only between them.
Nothing is routed beyond the pair.

Every command is bounded (``ip`` with a timeout); :func:`namespace` deletes the namespace
(which also deletes the veth pair) on exit, also when the body raises. Needs root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Netns", "NetnsError", "create", "destroy", "namespace", "plan"]

IP_TIMEOUT = 10.0
DEFAULT_SUBNET = "10.213.7.0/30"


class NetnsError(RuntimeError):
    pass


@dataclass(frozen=True)
class Netns:
    """A namespace ``name`` with ``ns_if``/``ns_ip`` inside and ``host_if``/``host_ip`` outside."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    prefix: int

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]


def plan(subnet: str = DEFAULT_SUBNET, tag: str | None = None) -> Netns:
    """Names and addresses for a new namespace (pure: creates nothing).

    The host end gets the first usable address of ``subnet``, the namespace end the second.
    Interface names stay within the kernel's 15 characters.
    """
    net = ipaddress.ip_network(subnet, strict=True)
    if not isinstance(net, ipaddress.IPv4Network) or net.num_addresses < 4:
        raise ValueError(f"need an IPv4 subnet of /30 or larger, got {subnet}")
    if not net.is_private:
        raise ValueError(f"refusing a public subnet for a test veth pair: {subnet}")
    tag = tag or secrets.token_hex(3)
    if not tag.isalnum() or len(tag) > 8:
        raise ValueError("tag must be alphanumeric, at most 8 characters")
    hosts = list(net.hosts())
    return Netns(
        name=f"sfubench-{tag}", host_if=f"sfbh{tag}", ns_if=f"sfbn{tag}",
        host_ip=str(hosts[0]), ns_ip=str(hosts[1]), prefix=net.prefixlen,
    )


def _ip(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("ip") is None:
        raise NetnsError("the 'ip' command (iproute2) is not installed")
    try:
        res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT,
                             check=False)
    except subprocess.TimeoutExpired:
        raise NetnsError(f"ip {' '.join(args)}: timed out after {IP_TIMEOUT}s") from None
    if check and res.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {res.stderr.strip() or res.returncode}")
    return res


def create(subnet: str = DEFAULT_SUBNET, tag: str | None = None) -> Netns:
    """Create the namespace and the veth pair, address and bring both ends up.

    On any failure what was created is deleted again before the error propagates.
    """
    ns = plan(subnet, tag)
    _ip(["netns", "add", ns.name])
    try:
        _ip(["link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if])
        _ip(["link", "set", ns.ns_if, "netns", ns.name])
        _ip(["addr", "add", f"{ns.host_ip}/{ns.prefix}", "dev", ns.host_if])
        _ip(["link", "set", ns.host_if, "up"])
        _ip(["-n", ns.name, "addr", "add", f"{ns.ns_ip}/{ns.prefix}", "dev", ns.ns_if])
        _ip(["-n", ns.name, "link", "set", ns.ns_if, "up"])
        _ip(["-n", ns.name, "link", "set", "lo", "up"])
    except BaseException:
        destroy(ns)
        raise
    return ns


def destroy(ns: Netns) -> None:
    """Delete the namespace and the host end of the pair. Never raises; idempotent."""
    with contextlib.suppress(NetnsError, OSError):
        _ip(["netns", "del", ns.name], check=False)
    with contextlib.suppress(NetnsError, OSError):
        # Deleting the namespace deletes its veth end and so the pair; make sure anyway.
        _ip(["link", "del", ns.host_if], check=False)


@contextlib.contextmanager
def namespace(subnet: str = DEFAULT_SUBNET, tag: str | None = None) -> Iterator[Netns]:
    """``with namespace() as ns:`` create, yield, and always destroy."""
    ns = create(subnet, tag)
    try:
        yield ns
    finally:
        destroy(ns)
