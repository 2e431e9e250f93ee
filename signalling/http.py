"""Operator HTTP API for commerce: products, cards, sales and orders of a room.

Every route needs ``Authorization: Bearer <token>`` for the room with the ``admin`` grant
(401 for a missing or bad token, 403 for another room or a missing grant, with the reason,
exactly like the WHIP/WHEP handlers). JSON bodies are validated with msgspec (400 with the
reason). ``GET /api/openapi.json`` serves the OpenAPI 3 description of these routes
(``OPENAPI``, also committed as ``docs/openapi.json``: ``python -m signalling.http``).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web

from sfu.auth import TokenError
from sfu.http.app import CORS, NODE_KEY, Handler, _auth_refusal, authorize, refuse
from signalling import messages as m
from signalling.domain.catalog import CatalogError, Product, is_valid_id
from signalling.service import AdminError
from signalling.store import StoreError

if TYPE_CHECKING:
    from sfu.node import Node
    from signalling.service import CommerceService

MAX_BODY: Final = 16 * 1024


# --- request bodies -------------------------------------------------------------------------


class ProductCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: m.Id
    name: m.Name
    price_cents: m.Cents
    currency: m.Currency
    stock: m.Count
    image_url: m.Url = ""


class CardPin(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    product_id: m.Id
    pinned_at_rtp: m.RtpTimestamp | None = None


class SaleCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    product_id: m.Id
    starts_at: m.Timestamp
    ends_at: m.Timestamp
    sale_id: m.Id | None = None


class Empty(msgspec.Struct, forbid_unknown_fields=True):
    pass


# --- helpers --------------------------------------------------------------------------------


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]  # type: ignore[return-value]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=CORS)


async def _body(request: web.Request, cls: type[Any]) -> Any:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise AdminError(413, "too_large", f"request body over {MAX_BODY} bytes")
    if cls is Empty and not raw.strip():
        return Empty()
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise AdminError(415, "unsupported", "Content-Type must be application/json")
    try:
        return msgspec.json.decode(raw, type=cls)
    except msgspec.ValidationError as exc:
        raise AdminError(400, "invalid", f"invalid body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise AdminError(400, "malformed", f"body is not JSON: {exc}") from exc


def _admin(handler: Handler) -> Handler:
    """Authorise (admin grant for the path's room), run, and map errors to responses."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        node = _node(request)
        room = request.match_info["room"]
        try:
            authorize(request, room, "admin")
        except TokenError as exc:
            return _auth_refusal(node, exc)
        if node.commerce is None:
            return refuse(node, 503, "commerce service not running")
        for name in ("room", "sale_id"):
            value = request.match_info.get(name)
            if value is not None and not is_valid_id(value):
                return refuse(node, 400, f"{name} must be 1-64 of A-Z a-z 0-9 . _ : -")
        try:
            return await handler(request)
        except AdminError as exc:
            return refuse(node, exc.status, f"{exc.code}: {exc.reason}")
        except StoreError as exc:
            return refuse(node, 503, f"store error: {exc}")

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _service(request: web.Request) -> CommerceService:
    service: CommerceService | None = _node(request).commerce
    assert service is not None
    return service


# --- handlers -------------------------------------------------------------------------------


@_admin
async def list_products(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    return _json({"products": await _service(request).admin_list_products(room)})


@_admin
async def create_product(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    body: ProductCreate = await _body(request, ProductCreate)
    try:
        product = Product(
            id=body.id,
            room=room,
            name=body.name,
            price_cents=body.price_cents,
            currency=body.currency,
            image_url=body.image_url,
            initial_stock=body.stock,
        )
    except CatalogError as exc:
        raise AdminError(400, "invalid", str(exc)) from exc
    return _json(await _service(request).admin_create_product(room, product), status=201)


@_admin
async def pin_card(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    body: CardPin = await _body(request, CardPin)
    result = await _service(request).admin_pin_card(
        room, body.product_id, pinned_at_rtp=body.pinned_at_rtp
    )
    return _json(result)


@_admin
async def list_sales(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    return _json({"sales": await _service(request).admin_list_sales(room)})


@_admin
async def schedule_sale(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    body: SaleCreate = await _body(request, SaleCreate)
    result = await _service(request).admin_schedule_sale(
        room, body.product_id, body.starts_at, body.ends_at, sale_id=body.sale_id
    )
    return _json(result, status=201)


@_admin
async def start_sale(request: web.Request) -> web.StreamResponse:
    await _body(request, Empty)
    room, sale_id = request.match_info["room"], request.match_info["sale_id"]
    return _json(await _service(request).admin_start_sale(room, sale_id))


@_admin
async def stop_sale(request: web.Request) -> web.StreamResponse:
    await _body(request, Empty)
    room, sale_id = request.match_info["room"], request.match_info["sale_id"]
    return _json(await _service(request).admin_stop_sale(room, sale_id))


@_admin
async def list_orders(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    sale_id = request.query.get("sale_id")
    if sale_id is not None and not is_valid_id(sale_id):
        raise AdminError(400, "invalid", "sale_id must be 1-64 of A-Z a-z 0-9 . _ : -")
    return _json(await _service(request).admin_list_orders(room, sale_id))


@_admin
async def room_state(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    return _json(await _service(request).admin_state(room))


async def openapi(request: web.Request) -> web.StreamResponse:
    return _json(OPENAPI)


# (method, path, handler, summary, request body schema or None, success status)
ROUTES: Final[list[tuple[str, str, Handler, str, type[Any] | None, int]]] = [
    ("GET", "/api/rooms/{room}/products", list_products, "List the room's products", None, 200),
    ("POST", "/api/rooms/{room}/products", create_product, "Create a product", ProductCreate,
     201),
    ("POST", "/api/rooms/{room}/card", pin_card, "Pin a product card (broadcast)", CardPin, 200),
    ("GET", "/api/rooms/{room}/sales", list_sales, "List the room's sales", None, 200),
    ("POST", "/api/rooms/{room}/sales", schedule_sale, "Schedule (or replace) a sale",
     SaleCreate, 201),
    ("POST", "/api/rooms/{room}/sales/{sale_id}/start", start_sale, "Open a sale now", None,
     200),
    ("POST", "/api/rooms/{room}/sales/{sale_id}/stop", stop_sale, "End a sale now", None, 200),
    ("GET", "/api/rooms/{room}/orders", list_orders, "Confirmed orders (optional ?sale_id=)",
     None, 200),
    ("GET", "/api/rooms/{room}/state", room_state, "Commerce state: seq, card, sale, stock",
     None, 200),
]


def _openapi() -> dict[str, Any]:
    bodies = [cls for *_, cls, _ in ROUTES if cls is not None]
    schemas, components = msgspec.json.schema_components(
        bodies, ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(bodies, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler, summary, body, status in ROUTES:
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("room", "sale_id")
            if "{" + name + "}" in path
        ]
        if handler is list_orders:
            params.append(
                {"name": "sale_id", "in": "query", "required": False, "schema": {"type": "string"}}
            )
        op: dict[str, Any] = {
            "operationId": handler.__name__,
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": params,
            "responses": {
                str(status): {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": {"description": "Invalid body or parameter (text/plain reason)"},
                "401": {"description": "Missing or invalid token"},
                "403": {"description": "Token for another room or without the admin grant"},
                "404": {"description": "Unknown product or sale"},
                "409": {"description": "Duplicate product, or a sale transition not allowed"},
            },
        }
        if body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[body]}},
            }
        paths.setdefault(path, {})[method.lower()] = op
    from sfu.recording.http import openapi_paths  # the node's recording routes

    recording_paths, recording_schemas = openapi_paths()
    paths.update(recording_paths)
    components.update(recording_schemas)
    from signalling.consult.http import openapi_paths as consult_paths

    paths.update(consult_paths())
    paths["/api/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3 document"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Commerce operator API",
            "version": "1",
            "description": (
                "Products, product cards, timed sales, orders and recordings of a room. Every operation "
                "needs a Bearer token for the room with the admin grant. Times are server "
                "Unix seconds; prices are integer minor units."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }


OPENAPI: Final = _openapi()


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/openapi.json", openapi, allow_head=False)
    for method, path, handler, *_ in ROUTES:
        r.add_route(method, path, handler)


if __name__ == "__main__":
    sys.stdout.write(json.dumps(OPENAPI, indent=2, sort_keys=True) + "\n")
