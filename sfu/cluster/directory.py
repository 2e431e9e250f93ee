"""The node registry and room directory in Redis (redis-py asyncio).

Keys, under ``prefix`` (default ``sfu:cluster:``; one Redis, not Redis Cluster, because the
claim script reads a key it is not passed)::

    node:<id>          string  NodeInfo JSON, written every heartbeat with a TTL
    nodes              set     ids of nodes that registered (pruned when their key is gone)
    origin:<room>      string  id of the room's origin node
    rooms:<id>         set     rooms node <id> claimed (to release them when it dies)

Claims are one Lua script each, so two nodes racing for a room agree on one origin.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import redis.asyncio as aioredis

from sfu.cluster.types import NodeInfo, NodeInfoError

log = logging.getLogger("sfu.cluster")

# KEYS: origin:<room>, rooms:<me>. ARGV: me, displaceable id or "", node key prefix, room.
# The origin is taken if there is none, if it is the displaceable one, or if its node has
# no registry record any more. Returns the origin after the call.
_CLAIM: Final = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return cur end
if cur and cur ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. cur) == 1 then return cur end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[4])
if cur then redis.call('SREM', ARGV[5] .. cur, ARGV[4]) end
return ARGV[1]
"""

# KEYS: origin:<room>, rooms:<me>. ARGV: me, room. Deletes the claim only if it is ours.
_RELEASE: Final = """
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: rooms:<dead>. ARGV: dead id, origin key prefix. Releases every room the dead node
# still holds; returns them.
_RELEASE_NODE: Final = """
local rooms = redis.call('SMEMBERS', KEYS[1])
local released = {}
for _, room in ipairs(rooms) do
  local key = ARGV[2] .. room
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    table.insert(released, room)
  end
end
redis.call('DEL', KEYS[1])
return released
"""


# KEYS: rooms:<me>. ARGV: me, origin key prefix, room... Re-takes the rooms this node holds
# whose claim has gone (another node released them while this node's heartbeat stalled);
# returns the rooms another node holds now.
_REASSERT: Final = """
local taken = {}
for i = 3, #ARGV do
  local key = ARGV[2] .. ARGV[i]
  local cur = redis.call('GET', key)
  if not cur then
    redis.call('SET', key, ARGV[1])
    redis.call('SADD', KEYS[1], ARGV[i])
  elseif cur ~= ARGV[1] then
    table.insert(taken, ARGV[i])
  end
end
return taken
"""


class RedisDirectory:
    """Registry and origin claims; every method is one or two round trips."""

    def __init__(self, url: str, *, prefix: str = "sfu:cluster:") -> None:
        self.url = url
        self.prefix = prefix
        self._redis: aioredis.Redis | None = None
        self._claim: Any = None
        self._release: Any = None
        self._release_node: Any = None
        self._reassert: Any = None

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("directory is not open")
        return self._redis

    async def open(self) -> None:
        if self._redis is not None:
            return
        # Short timeouts: a request waiting on the directory is a client waiting for media.
        client = aioredis.Redis.from_url(
            self.url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._redis = client
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._release_node = client.register_script(_RELEASE_NODE)
        self._reassert = client.register_script(_REASSERT)

    async def close(self) -> None:
        if self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()

    # --- registry ------------------------------------------------------------------------------

    async def heartbeat(self, info: NodeInfo, ttl: float) -> None:
        async with self._r().pipeline(transaction=True) as pipe:
            pipe.set(self._k("node", info.node_id), info.encode(), px=int(ttl * 1000))
            pipe.sadd(self._k("nodes"), info.node_id)
            await pipe.execute()

    async def nodes(self) -> list[NodeInfo]:
        """Every node with a registry record; ids whose record expired are pruned."""
        r = self._r()
        ids = sorted(str(i) for i in await r.smembers(self._k("nodes")))
        if not ids:
            return []
        raws = await r.mget([self._k("node", i) for i in ids])
        out: list[NodeInfo] = []
        gone: list[str] = []
        for nid, raw in zip(ids, raws, strict=True):
            if raw is None:
                gone.append(nid)
                continue
            try:
                out.append(NodeInfo.decode(raw))
            except NodeInfoError as exc:
                log.warning("ignoring registry record", extra={"node": nid, "error": str(exc)})
        if gone:
            await r.srem(self._k("nodes"), *gone)
        return out

    async def deregister(self, node_id: str) -> None:
        async with self._r().pipeline(transaction=True) as pipe:
            pipe.delete(self._k("node", node_id))
            pipe.srem(self._k("nodes"), node_id)
            await pipe.execute()

    # --- room directory ------------------------------------------------------------------------

    async def origin(self, room: str) -> str | None:
        value = await self._r().get(self._k("origin", room))
        return None if value is None else str(value)

    async def origins(self, rooms: list[str]) -> dict[str, str | None]:
        """The origin of each room (None: unclaimed), in one round trip."""
        if not rooms:
            return {}
        values = await self._r().mget([self._k("origin", r) for r in rooms])
        return {r: None if v is None else str(v) for r, v in zip(rooms, values, strict=True)}

    async def claim(self, room: str, node_id: str, *, replace: str | None = None) -> str:
        """Make ``node_id`` the room's origin unless a live one holds it; return the origin."""
        result = await self._claim(
            keys=[self._k("origin", room), self._k("rooms", node_id)],
            args=[node_id, replace or "", self._k("node", ""), room, self._k("rooms", "")],
        )
        return str(result)

    async def release(self, room: str, node_id: str) -> bool:
        result = await self._release(
            keys=[self._k("origin", room), self._k("rooms", node_id)], args=[node_id, room]
        )
        return bool(result)

    async def release_node(self, node_id: str) -> list[str]:
        """Release the rooms a dead (or leaving) node is still origin of."""
        result = await self._release_node(
            keys=[self._k("rooms", node_id)], args=[node_id, self._k("origin", "")]
        )
        return [str(r) for r in result]

    async def reassert(self, rooms: list[str], node_id: str) -> list[str]:
        """Claim again the ``rooms`` this node holds whose claim was released; return the
        ones another node holds now."""
        if not rooms:
            return []
        result = await self._reassert(
            keys=[self._k("rooms", node_id)], args=[node_id, self._k("origin", ""), *rooms]
        )
        return [str(r) for r in result]
