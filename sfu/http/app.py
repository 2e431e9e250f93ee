"""HTTP front of the node: WHIP (RFC 9725), WHEP, the room WebSocket, health and metrics.

Every refusal is a 4xx with a plain-text reason and is counted by status in /metrics.
CORS is open so that browser players served from another origin can use WHIP/WHEP.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from sfu.auth import Claims, TokenError, bearer_token, verify_token
from sfu.core.layers import parse_rank
from sfu.sdp import SdpError

if TYPE_CHECKING:
    from sfu.node import Node

log = logging.getLogger("sfu.http")
NODE_KEY = web.AppKey("node", object)
ROOM_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS, GET",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag, X-SFU-Node",
}
NODE_HEADER = "X-SFU-Node"  # the cluster id of the node that answered

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]  # type: ignore[return-value]


def refuse(node: Node, status: int, reason: str) -> web.Response:
    node.metrics.http_errors[str(status)] += 1
    return web.Response(status=status, text=reason + "\n", headers=CORS)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = _node(request)
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return refuse(node, 413, f"request body over {node.settings.max_request_bytes} bytes")
    except web.HTTPException as exc:
        if exc.status >= 400:
            node.metrics.http_errors[str(exc.status)] += 1
        exc.headers.update(CORS)
        raise


class Forbidden(TokenError):
    """A valid token that does not cover this room or grant: 403, where a bad token is 401."""


def _auth_refusal(node: Node, exc: TokenError) -> web.Response:
    status = 403 if isinstance(exc, Forbidden) else 401
    return refuse(node, status, f"unauthorized: {exc.reason}")


def authorize(request: web.Request, room: str, grant: str) -> Claims:
    node = _node(request)
    s = node.settings
    token = bearer_token(request.headers.get("Authorization"))
    claims = verify_token(token, api_key=s.api_key, api_secret=s.api_secret)
    if claims.room != room:
        raise Forbidden(f"token is for room {claims.room!r}, not {room!r}")
    if not claims.allows(grant):
        raise Forbidden(f"token lacks the {grant!r} grant")
    return claims


async def _offer(request: web.Request, kind: str) -> web.StreamResponse:
    node = _node(request)
    room = request.match_info["room"]
    if not ROOM_RE.match(room):
        return refuse(node, 400, "room name must be 1-128 of A-Z a-z 0-9 _ . -")
    grant = "publish" if kind == "whip" else "subscribe"
    try:
        claims = authorize(request, room, grant)
    except TokenError as exc:
        return _auth_refusal(node, exc)
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/sdp":
        return refuse(node, 415, "Content-Type must be application/sdp")
    if node.draining:
        return refuse(node, 503, "node is draining; try another node")
    if node.cluster is not None:
        redirect = await _placement(request, node, room, kind)
        if redirect is not None:
            return redirect
    body = await request.read()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return refuse(node, 400, "SDP is not UTF-8")
    layer_rank = None
    if kind == "whep" and "layer" in request.query:
        try:
            layer_rank = parse_rank(request.query["layer"])
        except ValueError as exc:
            return refuse(node, 400, str(exc))
    try:
        answered = node.open_session(
            kind=kind,
            room_name=room,
            participant=claims.identity,
            offer_sdp=text,
            publish=kind == "whip",
            subscribe=kind == "whep",
            grants=claims.grants,
            layer_rank=layer_rank,
        )
    except SdpError as exc:
        return refuse(node, 400, f"bad offer: {exc}")
    location = f"/{kind}/{room}/{answered.peer.id}"
    headers = {**CORS, "Location": location, "ETag": f'"{answered.peer.local_ufrag}"'}
    if kind == "whep":
        # Layer selection for players that cannot renegotiate (docs/protocol.md).
        headers["Link"] = f'<{location}/layer>; rel="urn:ietf:params:whep:ext:core:layer"'
    return web.Response(
        status=201, body=answered.sdp.encode(), content_type="application/sdp", headers=headers
    )


async def _placement(
    request: web.Request, node: Node, room: str, kind: str
) -> web.Response | None:
    """In a cluster: None to serve here, else the 307 to the node that serves this request."""
    from sfu.cluster.agent import parse_exclude, redirect_url
    from sfu.cluster.policy import Redirect

    cluster = node.cluster
    assert cluster is not None
    try:
        hops = max(0, int(request.query.get("hops", "0")))
    except ValueError:
        return refuse(node, 400, "hops must be an integer")
    exclude = parse_exclude(request.query.getall("exclude", []))
    placed = await cluster.place(
        room, "publisher" if kind == "whip" else "viewer", exclude=exclude, hops=hops
    )
    if not isinstance(placed, Redirect):
        return None
    cluster.count_redirect(kind, placed)
    query = {k: v for k, v in request.query.items() if k not in ("hops", "exclude")}
    if exclude:
        query["exclude"] = ",".join(sorted(exclude))
    query["hops"] = str(hops + 1)
    location = redirect_url(placed.target.url, request.path, query)
    # 307 keeps the method and the body; the client re-sends its Authorization header.
    return web.Response(
        status=307, text=f"room {room} is served by node {placed.target.node_id}\n",
        headers={**CORS, "Location": location},
    )


async def whip_post(request: web.Request) -> web.StreamResponse:
    return await _offer(request, "whip")


async def whep_post(request: web.Request) -> web.StreamResponse:
    return await _offer(request, "whep")


async def resource_delete(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    kind = request.path.split("/")[1]
    room = request.match_info["room"]
    peer = node.peers.get(request.match_info["session"])
    if peer is None or peer.room.name != room or peer.kind != kind:
        return refuse(node, 404, "no such session")
    try:
        claims = authorize(request, room, "publish" if kind == "whip" else "subscribe")
    except TokenError as exc:
        return _auth_refusal(node, exc)
    if claims.identity != peer.participant and not claims.allows("admin"):
        return refuse(node, 403, "session belongs to another participant")
    node.close_peer(peer, "deleted")
    return web.Response(status=200, headers=CORS)


async def whep_layer(request: web.Request) -> web.StreamResponse:
    """`POST {location}/layer` {"layer": "low|mid|high"} and/or {"max_width", "max_height"}."""
    node = _node(request)
    room = request.match_info["room"]
    peer = node.peers.get(request.match_info["session"])
    if peer is None or peer.room.name != room or peer.kind != "whep":
        return refuse(node, 404, "no such session")
    try:
        claims = authorize(request, room, "subscribe")
    except TokenError as exc:
        return _auth_refusal(node, exc)
    if claims.identity != peer.participant and not claims.allows("admin"):
        return refuse(node, 403, "session belongs to another participant")
    try:
        body = await request.json()
    except ValueError:
        return refuse(node, 400, "body must be JSON")
    if not isinstance(body, dict):
        return refuse(node, 400, "body must be a JSON object")
    try:
        rank, size = layer_request(body)
    except ValueError as exc:
        return refuse(node, 400, str(exc))
    changed = node.set_layer_preference(peer, body.get("mid"), rank=rank, max_size=size)
    if not changed:
        return refuse(node, 404, "no video track to apply it to")
    return web.json_response({"applied": changed}, headers=CORS)


def layer_request(body: dict[str, object]) -> tuple[int | None, tuple[int, int] | None]:
    """Validate a layer/size request body; ValueError with the reason."""
    rank = size = None
    layer = body.get("layer")
    if layer is not None:
        if not isinstance(layer, str):
            raise ValueError("'layer' must be low, mid or high")
        rank = parse_rank(layer)
    width, height = body.get("max_width"), body.get("max_height")
    if width is not None or height is not None:
        if not (isinstance(width, int) and isinstance(height, int)) or not (
            0 < width <= 16384 and 0 < height <= 16384
        ):
            raise ValueError("'max_width' and 'max_height' must be positive integers")
        size = (width, height)
    if rank is None and size is None:
        raise ValueError("give 'layer' or 'max_width' and 'max_height'")
    return rank, size


async def resource_patch(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    # The node is ICE-lite and lists its candidates in the answer; trickle is not needed.
    node.metrics.http_errors["405"] += 1
    return web.Response(
        status=405, text="trickle ICE and ICE restart are not supported: the answer "
        "carries all candidates\n", headers={**CORS, "Allow": "DELETE"},
    )


async def options(request: web.Request) -> web.StreamResponse:
    headers = dict(CORS)
    if request.path.startswith(("/whip/", "/whep/")):
        headers["Accept-Post"] = "application/sdp"
    return web.Response(status=204, headers=headers)


async def healthz(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    # Not ready while starting (the HTTP site is up before the cascade listener and the
    # cluster registration: placement would be wrong) or draining.
    state = "draining" if node.draining else "ok" if node.ready else "starting"
    status = 200 if state == "ok" else 503
    body: dict[str, object] = {
        "status": state, "rooms": len(node.rooms),
        "sessions": len(node.peers),
    }
    if node.cluster is not None:
        body["node"] = node.cluster.node_id
    return web.json_response(body, status=status)


async def metrics(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    return web.Response(body=node.metrics.render(), content_type="text/plain", charset="utf-8")


def build_app(node: Node) -> web.Application:
    app = web.Application(
        client_max_size=node.settings.max_request_bytes, middlewares=[errors]
    )
    app[NODE_KEY] = node

    async def node_header(request: web.Request, response: web.StreamResponse) -> None:
        if node.cluster is not None:
            response.headers[NODE_HEADER] = node.cluster.node_id

    app.on_response_prepare.append(node_header)
    r = app.router
    r.add_post("/whip/{room}", whip_post)
    r.add_post("/whep/{room}", whep_post)
    r.add_post("/whep/{room}/{session}/layer", whep_layer)
    for kind in ("whip", "whep"):
        r.add_delete(f"/{kind}/{{room}}/{{session}}", resource_delete)
        r.add_patch(f"/{kind}/{{room}}/{{session}}", resource_patch)
    r.add_route("OPTIONS", "/{tail:.*}", options)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    from sfu.http.ws import add_routes

    add_routes(app)
    from signalling.http import add_routes as add_commerce_routes

    add_commerce_routes(app)
    from sfu.recording.http import add_routes as add_recording_routes

    add_recording_routes(app)
    from signalling.consult.http import add_routes as add_consult_routes

    add_consult_routes(app)
    from sfu.http.pages import add_routes as add_page_routes

    add_page_routes(app)
    return app
