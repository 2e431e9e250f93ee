"""HTTP API of the consultation queue (``/api/consult/{queue}/...``).

Every route needs ``Authorization: Bearer <token>`` for the queue's room (the lobby): a
token with the ``admin`` grant acts as an **advisor**, any other token (``publish`` or
``subscribe``) as a **customer**; the identity is the token's ``sub``. Errors are plain text
``<code>: <reason>`` with the HTTP status (401/403 for tokens, 404, 409, 400, 503).

| method | path | who | |
|---|---|---|---|
| GET | ``/api/consult/{queue}/me`` | both | the caller's view: request + position, or the advisor's state, current request and queue (an advisor's poll is also its heartbeat) |
| POST | ``/api/consult/{queue}/requests`` ``{"slot_at"?: unix_s}`` | customer | ask now, or book a slot |
| POST | ``/api/consult/{queue}/requests/{id}/cancel`` | customer | leave the queue |
| POST | ``/api/consult/{queue}/available`` / ``away`` | advisor | take customers / stop |
| POST | ``/api/consult/{queue}/requests/{id}/accept`` | advisor | start the assigned call |
| POST | ``/api/consult/{queue}/requests/{id}/end`` | both | end the call |
| POST | ``/api/consult/{queue}/requests/{id}/token`` | both | ``{room, token}`` for the call room |
| GET | ``/api/consult/{queue}/products`` | advisor | the catalogue (products of the queue's room) |
| POST | ``/api/consult/{queue}/requests/{id}/card`` ``{"product_id"}`` | advisor | offer a product in the call |
| GET | ``/api/consult/{queue}/requests/{id}/orders`` | both | confirmed orders of the call |
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from sfu.auth import Claims, TokenError
from sfu.http.app import CORS, NODE_KEY, Handler, _auth_refusal, authorize, refuse
from signalling.consult.domain import QueueError
from signalling.consult.service import ConsultService
from signalling.domain.catalog import is_valid_id
from signalling.store import StoreError

if TYPE_CHECKING:
    from sfu.node import Node

# A holder set before the app freezes; the service itself is opened on startup.
CONSULT_KEY: Final = web.AppKey("consult", dict)
MAX_BODY: Final = 4096


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]  # type: ignore[return-value]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={**CORS, "Cache-Control": "no-store"})


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise QueueError(413, "too_large", f"request body over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise QueueError(400, "malformed", "body is not JSON") from exc
    if not isinstance(data, dict):
        raise QueueError(400, "malformed", "body must be a JSON object")
    return data


def _route(role: str | None) -> Any:
    """Authorise for the path's queue (``role``: "advisor", "customer" or None for both),
    run, and map errors to responses. The handler gets (request, service, queue, claims)."""

    def wrap(handler: Any) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            node = _node(request)
            queue = request.match_info["queue"]
            if not is_valid_id(queue) or len(queue) > 48:
                return refuse(node, 400, "queue must be 1-48 of A-Z a-z 0-9 . _ : -")
            try:
                claims = authorize(request, queue, "subscribe")
            except TokenError:
                try:
                    claims = authorize(request, queue, "publish")
                except TokenError as exc:
                    return _auth_refusal(node, exc)
            is_advisor = claims.allows("admin")
            if role == "advisor" and not is_advisor:
                return refuse(node, 403, "forbidden: advisors only (a token with admin)")
            if role == "customer" and is_advisor:
                return refuse(node, 403, "forbidden: customers only")
            service = request.app[CONSULT_KEY].get("service")
            if service is None:
                return refuse(node, 503, "consultation service not running")
            rid = request.match_info.get("request_id")
            if rid is not None and not is_valid_id(rid):
                return refuse(node, 400, "bad request id")
            try:
                response: web.StreamResponse = await handler(request, service, queue, claims)
                return response
            except QueueError as exc:
                return refuse(node, exc.status, f"{exc.code}: {exc.reason}")
            except StoreError as exc:
                return refuse(node, 503, f"store error: {exc}")

        wrapped.__name__ = handler.__name__
        return wrapped

    return wrap


def _is_advisor(claims: Claims) -> bool:
    return claims.allows("admin")


@_route(None)
async def me(request: web.Request, s: ConsultService, queue: str, c: Claims) -> web.Response:
    if _is_advisor(c):
        return _json(await s.advisor_view(queue, c.identity))
    return _json(await s.customer_view(queue, c.identity))


@_route("customer")
async def create_request(
    request: web.Request, s: ConsultService, queue: str, c: Claims
) -> web.Response:
    body = await _body(request)
    slot_at = body.get("slot_at")
    if slot_at is not None and (
        isinstance(slot_at, bool) or not isinstance(slot_at, int | float) or slot_at <= 0
    ):
        raise QueueError(400, "invalid", "slot_at must be Unix seconds")
    await s.request(queue, c.identity, None if slot_at is None else float(slot_at))
    return _json(await s.customer_view(queue, c.identity), status=201)


@_route("customer")
async def cancel(request: web.Request, s: ConsultService, queue: str, c: Claims) -> web.Response:
    await s.cancel(queue, request.match_info["request_id"], c.identity)
    return _json(await s.customer_view(queue, c.identity))


@_route("advisor")
async def available(
    request: web.Request, s: ConsultService, queue: str, c: Claims
) -> web.Response:
    return _json(await s.available(queue, c.identity))


@_route("advisor")
async def away(request: web.Request, s: ConsultService, queue: str, c: Claims) -> web.Response:
    return _json(await s.away(queue, c.identity))


@_route("advisor")
async def accept(request: web.Request, s: ConsultService, queue: str, c: Claims) -> web.Response:
    await s.accept(queue, c.identity, request.match_info["request_id"])
    return _json(await s.advisor_view(queue, c.identity))


@_route(None)
async def end(request: web.Request, s: ConsultService, queue: str, c: Claims) -> web.Response:
    r = await s.end(queue, c.identity, request.match_info["request_id"])
    return _json({"request": r.to_json()})


@_route(None)
async def token(request: web.Request, s: ConsultService, queue: str, c: Claims) -> web.Response:
    return _json(await s.call_token(queue, request.match_info["request_id"], c.identity))


@_route("advisor")
async def products(
    request: web.Request, s: ConsultService, queue: str, c: Claims
) -> web.Response:
    return _json({"products": await s.catalogue(queue)})


@_route("advisor")
async def card(request: web.Request, s: ConsultService, queue: str, c: Claims) -> web.Response:
    body = await _body(request)
    product_id = body.get("product_id")
    if not isinstance(product_id, str) or not is_valid_id(product_id):
        raise QueueError(400, "invalid", "product_id must be a product id")
    rid = request.match_info["request_id"]
    return _json(await s.push_card(queue, rid, c.identity, product_id))


@_route(None)
async def orders(request: web.Request, s: ConsultService, queue: str, c: Claims) -> web.Response:
    return _json(await s.orders(queue, request.match_info["request_id"], c.identity))


async def _start(app: web.Application) -> None:
    node: Node = app[NODE_KEY]  # type: ignore[assignment]
    app[CONSULT_KEY]["service"] = await ConsultService.open(node)


async def _stop(app: web.Application) -> None:
    service = app[CONSULT_KEY].pop("service", None)
    if service is not None:
        await service.close()


BASE = "/api/consult/{queue}"
# (method, path under BASE, handler, summary, who may call it)
ROUTES: list[tuple[str, str, Any, str, str]] = [
    ("GET", "/me", me, "The caller's view of the queue (an advisor's poll is its heartbeat)",
     "advisor or customer"),
    ("POST", "/requests", create_request, "Ask for a consultation now, or book {slot_at}",
     "customer"),
    ("POST", "/requests/{request_id}/cancel", cancel, "Cancel one's own request", "customer"),
    ("POST", "/available", available, "Mark the advisor free for the next customer", "advisor"),
    ("POST", "/away", away, "Take the advisor out of the rotation", "advisor"),
    ("POST", "/requests/{request_id}/accept", accept, "Start the assigned call", "advisor"),
    ("POST", "/requests/{request_id}/end", end, "End the call", "advisor or customer"),
    ("POST", "/requests/{request_id}/token", token, "A token for the call's room",
     "advisor or customer"),
    ("GET", "/products", products, "The catalogue an advisor can push into a call", "advisor"),
    ("POST", "/requests/{request_id}/card", card, "Push a product card into the call",
     "advisor"),
    ("GET", "/requests/{request_id}/orders", orders, "Orders placed in the call",
     "advisor or customer"),
]


def openapi_paths() -> dict[str, dict[str, Any]]:
    """The consultation routes as OpenAPI path items (merged into /api/openapi.json)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, suffix, handler, summary, who in ROUTES:
        path = BASE + suffix
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("queue", "request_id")
            if "{" + name + "}" in path
        ]
        paths.setdefault(path, {})[method.lower()] = {
            "operationId": "consult_" + handler.__name__,
            "summary": f"{summary} ({who}; a token for the queue's lobby room, admin = advisor)",
            "security": [{"bearer": []}],
            "parameters": params,
            "responses": {
                "200": {"description": "OK",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": {"description": "Invalid body or parameter (text/plain reason)"},
                "401": {"description": "Missing or invalid token"},
                "403": {"description": "Not allowed for this caller"},
                "404": {"description": "Unknown request"},
                "409": {"description": "Not possible in the request's current state"},
            },
        }
    return paths


def add_routes(app: web.Application) -> None:
    """The routes, and the service's start/stop with the app (``build_app`` calls this)."""
    app[CONSULT_KEY] = {}
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    r = app.router
    for method, suffix, handler, *_ in ROUTES:
        if method == "GET":
            r.add_get(BASE + suffix, handler, allow_head=False)
        else:
            r.add_post(BASE + suffix, handler)
