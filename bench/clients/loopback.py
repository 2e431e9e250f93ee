"""Keep aiortc/aioice ICE on loopback.

aioice gathers host candidates on every interface *except* 127.0.0.1, and asks a STUN
server only if one is configured. Tests and the local bench must keep all traffic on
127.0.0.0/8, so ``restrict_ice_to_loopback()`` replaces ``aioice.ice.get_host_addresses``
(looked up as a module global by ``Connection.gather_candidates``) with one that returns
only ``127.0.0.1``. Remember to also pass ``RTCConfiguration(iceServers=[])`` so no STUN
server is asked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import aioice.ice

LOOPBACK_ADDRESSES = ["127.0.0.1"]


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return list(LOOPBACK_ADDRESSES) if use_ipv4 else []


def restrict_ice_to_loopback() -> Callable[[], None]:
    """Patch aioice host-candidate gathering to 127.0.0.1 only; return an undo callable.

    Undo is idempotent and restores whatever function was installed before this call.
    """
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = _loopback_host_addresses
    undone = False

    def undo() -> None:
        nonlocal undone
        if not undone:
            undone = True
            aioice.ice.get_host_addresses = original

    return undo


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """Context-manager form of :func:`restrict_ice_to_loopback`."""
    undo = restrict_ice_to_loopback()
    try:
        yield
    finally:
        undo()
