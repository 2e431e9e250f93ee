"""Room commerce messages across nodes: one Redis sequence and one pub/sub feed per room.

With a Redis commerce store, every room message (``product.card``, ``sale.*``,
``stock.updated``) is published through ``RoomBus.publish`` instead of being sent straight
to the local viewers. One Lua script increments the room's sequence and publishes the
message with it, so:

- the ``seq`` is one counter per room shared by every node, and
- every node receives the messages in ``seq`` order (Redis runs scripts one at a time and
  delivers a channel's messages in publish order),

and every node, the sender included, hands them to its viewers from the feed. The script
also keeps the last ``product.card`` (so a node that loads the room later knows the pinned
card) and can de-duplicate: timed sale transitions fire on every node that has the room,
and only the first one's announcement is published.

Pub/sub is at-most-once: if the feed's connection breaks, the node reloads each room and
sends its viewers a snapshot when the feed is back (``on_resync``).

Keys and channels (under the store's prefix, default ``cs:``)::

    room:<room>:seq        int     last seq used
    room:<room>:card       string  "<seq> <product.card JSON>" of the last pinned card
    room:<room>:presence:<node>  "<viewers> <open carts>" on that node (expires)
    room:<room>:members    set     nodes that reported presence (pruned when expired)
    once:<key>             string  de-duplication marker (expires)
    bus:<room>             channel "<seq> <type> <JSON without seq>"
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("signalling.bus")

ONCE_TTL_MS: Final = 60_000  # how long a de-duplication marker lives
RECONNECT_DELAY: Final = 0.5

_PUBLISH: Final = """
if ARGV[4] ~= '0' then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) then return 0 end
end
local seq = redis.call('INCR', KEYS[1])
if ARGV[2] == 'product.card' then redis.call('SET', KEYS[2], seq .. ' ' .. ARGV[3]) end
redis.call('PUBLISH', ARGV[1], seq .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return seq
"""

# (room, seq, type, JSON text without seq)
EventHandler = Callable[[str, int, str, str], None]


class BusError(Exception):
    """A feed message that is not ``<seq> <type> <json>`` (counted and dropped)."""


def parse_event(channel: str, data: str, prefix: str) -> tuple[str, int, str, str]:
    room = channel[len(prefix) + len("bus:"):]
    seq_text, _, rest = data.partition(" ")
    type_, _, payload = rest.partition(" ")
    if not room or not seq_text.isdigit() or not type_ or not payload:
        raise BusError(f"malformed feed message on {channel!r}")
    return room, int(seq_text), type_, payload


class RoomBus:
    """Publishes room messages with a shared seq and feeds every node's messages back."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cs:",
        on_event: EventHandler,
        on_resync: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.on_event = on_event
        self.on_resync = on_resync
        self.malformed = 0  # feed messages dropped
        self.feed_errors = 0  # feed connection losses
        self._redis: aioredis.Redis | None = None
        self._publish: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _r(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("bus is not open")
        return self._redis

    async def open(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url, decode_responses=True)
        self._publish = self._redis.register_script(_PUBLISH)
        self._reader = asyncio.ensure_future(self._read_loop())
        # Subscribed before anyone reads a seq: no message after that read is missed.
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._redis is not None:
            client, self._redis = self._redis, None
            await client.aclose()

    async def publish(self, room: str, type_: str, payload: str, *, once: str | None = None) -> int:
        """Publish one message (JSON without seq); its seq, or 0 if ``once`` was seen."""
        seq = await self._publish(
            keys=[self._k("room", room, "seq"), self._k("room", room, "card"),
                  self._k("once", once or "")],
            args=[self._k("bus", room), type_, payload, str(ONCE_TTL_MS) if once else "0"],
        )
        return int(seq)

    async def seq(self, room: str) -> int:
        value = await self._r().get(self._k("room", room, "seq"))
        return int(value) if value is not None else 0

    async def card(self, room: str) -> tuple[int, str] | None:
        """The last pinned card: (its seq, JSON without seq)."""
        value = await self._r().get(self._k("room", room, "card"))
        if value is None:
            return None
        seq_text, _, payload = str(value).partition(" ")
        return int(seq_text), payload

    # --- presence: viewers and open carts per node, summed for the operator API ------------

    async def report(self, room: str, member: str, viewers: int, carts: int, ttl: float) -> None:
        """This node's counts for ``room``; they vanish ``ttl`` seconds after the last report
        (a node that dies stops being counted)."""
        async with self._r().pipeline(transaction=False) as pipe:
            pipe.set(self._k("room", room, "presence", member), f"{viewers} {carts}",
                     px=int(ttl * 1000))
            pipe.sadd(self._k("room", room, "members"), member)
            await pipe.execute()

    async def totals(self, room: str, *, skip: str = "") -> tuple[int, int]:
        """(viewers, open carts) reported for ``room`` by every node except ``skip``."""
        r = self._r()
        members = sorted(str(m) for m in await r.smembers(self._k("room", room, "members")))
        members = [m for m in members if m != skip]
        if not members:
            return 0, 0
        values = await r.mget([self._k("room", room, "presence", m) for m in members])
        viewers = carts = 0
        gone = []
        for member, value in zip(members, values, strict=True):
            if value is None:
                gone.append(member)
                continue
            v, _, c = str(value).partition(" ")
            if v.isdigit() and c.isdigit():
                viewers += int(v)
                carts += int(c)
        if gone:
            await r.srem(self._k("room", room, "members"), *gone)
        return viewers, carts

    async def _read_loop(self) -> None:
        first = True
        while True:
            pubsub = self._r().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self._k("bus", "*"))
                self._subscribed.set()
                if not first and self.on_resync is not None:
                    self.on_resync()
                first = False
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    try:
                        event = parse_event(message["channel"], message["data"], self.prefix)
                    except BusError:
                        self.malformed += 1
                        continue
                    try:
                        self.on_event(*event)
                    except Exception:
                        log.exception("commerce feed handler failed")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.feed_errors += 1
                log.warning("commerce feed lost; reconnecting", extra={"error": repr(exc)})
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(RECONNECT_DELAY)
