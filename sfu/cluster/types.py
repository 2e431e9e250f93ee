"""Values the cluster layer exchanges, and the cascade interface it drives."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


class Cascade(Protocol):
    """Relays a room's published tracks from its origin node to this (edge) node over QUIC."""

    async def subscribe(self, room: str, origin: tuple[str, int]) -> None:
        """Receive ``room``'s tracks from the origin's QUIC listener at ``origin`` (host,
        cascade port). Idempotent; local viewers then bind as if the host published here."""

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving ``room`` (no local viewer is left)."""


class NodeInfoError(ValueError):
    """A registry record that is not a node description (a foreign or corrupt key)."""


@dataclass(frozen=True)
class NodeInfo:
    """One node as the registry knows it; written by the node itself on every heartbeat."""

    node_id: str
    url: str  # public HTTP(S) base URL, no trailing slash
    cascade: tuple[str, int] | None = None  # QUIC cascade listener; None when off
    viewers: int = 0  # peers that only receive
    sessions: int = 0  # every peer
    capacity: int = 0  # viewer sessions before others are preferred; 0 = no limit
    beat: int = 0  # heartbeat counter: a new value proves the node is still running

    @property
    def spare(self) -> bool:
        return self.capacity == 0 or self.viewers < self.capacity

    @property
    def fill(self) -> float:
        """Share of the capacity in use (0 for a node without a limit)."""
        return self.viewers / self.capacity if self.capacity else 0.0

    def encode(self) -> str:
        return json.dumps(
            {
                "id": self.node_id, "url": self.url,
                "cascade": list(self.cascade) if self.cascade is not None else None,
                "viewers": self.viewers, "sessions": self.sessions,
                "capacity": self.capacity, "beat": self.beat,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: str | bytes) -> NodeInfo:
        try:
            d: Any = json.loads(raw)
            cascade = d["cascade"]
            return cls(
                node_id=_str(d["id"]), url=_str(d["url"]),
                cascade=None if cascade is None else (_str(cascade[0]), _int(cascade[1])),
                viewers=_int(d["viewers"]), sessions=_int(d["sessions"]),
                capacity=_int(d["capacity"]), beat=_int(d["beat"]),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise NodeInfoError(f"not a node record: {exc}") from exc


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise TypeError(f"expected a non-empty string, got {v!r}")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise TypeError(f"expected a non-negative integer, got {v!r}")
    return v
