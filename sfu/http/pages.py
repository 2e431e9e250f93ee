"""Web pages served by the node: the host studio, the viewer page, their static files, and
the development token endpoint.

- ``GET /studio[?room=R]``: the host studio (publish, products, card, sales, counters).
- ``GET /watch/{room}``: the viewer page (video, card overlay, countdown, cart, buy).
- ``GET /static/...``: ``sfu/static`` (ES modules, CSS), no build step.
- ``GET /consult``, ``GET /advisor``: 1:1 consultation pages (docs/consultation.md).
- ``GET /dev/token?room=R&identity=I&role=host|viewer|advisor|customer``: a token for the pages, served only
  when ``Settings.dev_mode`` is true (404 otherwise). In production the operator's backend
  mints tokens (``sfu.auth.mint_token``) and hands them to the page as ``?token=`` or
  ``#token=``; see docs/client.md.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Final

from aiohttp import web

from sfu.auth import mint_token

if TYPE_CHECKING:
    from sfu.node import Node

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "static"
ROLES: Final[dict[str, tuple[str, ...]]] = {
    "host": ("publish", "subscribe", "admin"),
    "viewer": ("subscribe",),
    # Consultations (docs/consultation.md): tokens for the queue's lobby room.
    "advisor": ("publish", "subscribe", "admin"),
    "customer": ("publish", "subscribe"),
}
DEV_TOKEN_TTL: Final = 12 * 3600.0
# Rooms the pages accept: what both the media node and the commerce service accept.
ROOM_RE: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
IDENTITY_RE: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
# The pages are plain files; never let a browser cache a stale module during development.
NO_CACHE: Final = {"Cache-Control": "no-cache"}
PAGE_SECURITY: Final = {
    **NO_CACHE,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a ?token= must not leak to image hosts
}


def _node(request: web.Request) -> Node:
    from sfu.http.app import NODE_KEY

    return request.app[NODE_KEY]  # type: ignore[return-value]


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / name, headers=PAGE_SECURITY)


async def studio(request: web.Request) -> web.StreamResponse:
    return _page("studio.html")


async def watch(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    if not ROOM_RE.match(room):
        raise web.HTTPBadRequest(text="room must be 1-64 of A-Z a-z 0-9 _ . -\n")
    return _page("watch.html")


async def consult(request: web.Request) -> web.StreamResponse:
    return _page("consult.html")


async def advisor(request: web.Request) -> web.StreamResponse:
    return _page("advisor.html")


async def dev_token(request: web.Request) -> web.StreamResponse:
    """A token for the pages; development mode only (404 in production)."""
    settings = _node(request).settings
    if not settings.dev_mode:
        raise web.HTTPNotFound(text="not found\n")
    q = request.query
    room = q.get("room", "")
    role = q.get("role", "viewer")
    identity = q.get("identity") or f"{role}-{secrets.token_hex(4)}"
    if not ROOM_RE.match(room):
        raise web.HTTPBadRequest(text="room must be 1-64 of A-Z a-z 0-9 _ . -\n")
    if role not in ROLES:
        raise web.HTTPBadRequest(text="role must be one of " + ", ".join(ROLES) + "\n")
    if not IDENTITY_RE.match(identity):
        raise web.HTTPBadRequest(text="identity must be 1-64 of A-Z a-z 0-9 _ . : -\n")
    grants = ROLES[role]
    token = mint_token(
        api_key=settings.api_key,
        api_secret=settings.api_secret,
        room=room,
        identity=identity,
        grants=grants,
        ttl=DEV_TOKEN_TTL,
    )
    return web.json_response(
        {"token": token, "room": room, "identity": identity, "grants": list(grants),
         "ttl": DEV_TOKEN_TTL},
        headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/studio", studio)
    r.add_get("/watch/{room}", watch)
    r.add_get("/consult", consult)
    r.add_get("/advisor", advisor)
    r.add_get("/dev/token", dev_token, allow_head=False)
    r.add_static("/static/", STATIC_DIR, append_version=False, follow_symlinks=False)
