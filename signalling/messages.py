"""The commerce datachannel protocol: one versioned JSON envelope, a Struct per message type.

This module owns the wire shape of every commerce message and nothing else: no state, no
I/O. Every message is a JSON object ``{"v": 1, "type": "<name>", "seq"?: int, ...fields}``.
``v`` is the protocol version (only 1 exists), ``type`` selects the Struct, ``seq`` is an
optional per-sender counter the other side may echo or use to detect gaps.

Directions:

- viewer -> node: ``cart.add``, ``cart.remove``, ``order.place``, ``clock.ping``;
- host/admin -> node: ``admin.pin_card``, ``admin.schedule_sale``, ``admin.start_sale``,
  ``admin.stop_sale`` (decoded by the same function; the service checks the grant);
- node -> clients: ``product.card``, ``cart.updated``, ``sale.scheduled``, ``sale.started``,
  ``sale.ended``, ``stock.updated``, ``order.result``, ``clock.pong``, ``snapshot``,
  ``error``.

Times are server Unix seconds (floats) except ``clock.ping.client_time``, which is whatever
clock the client uses and is echoed back untouched. Prices are integer minor units
(``price_cents``) so that no float ever rounds money.

``decode_client_message`` is the only entry point for untrusted bytes: it raises
``MessageError`` and never anything else, whatever the input (a hypothesis fuzz test holds it
to that). ``encode`` turns any Struct back into bytes. ``json_schema()`` generates the
document committed as ``docs/commerce-schema.json`` (regenerate with
``python -m signalling.messages > docs/commerce-schema.json``).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Final, Literal

import msgspec

PROTOCOL_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 16384

# Identifiers are opaque to the node but end up in SQL rows and Redis key names, so they are
# kept short and printable.
_ID_PATTERN = r"^[A-Za-z0-9._:\-]+$"
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_ID_PATTERN)]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_ID_PATTERN)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
Url = Annotated[str, msgspec.Meta(max_length=2048)]
Count = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
Cents = Annotated[int, msgspec.Meta(ge=0, le=10_000_000_000)]
# Server timestamps: Unix seconds; the upper bound (year ~2286) only keeps garbage out.
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=10_000_000_000)]
OrderQuantity = Annotated[int, msgspec.Meta(ge=1, le=10)]
CartQuantity = Annotated[int, msgspec.Meta(ge=1, le=99)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
RtpTimestamp = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
PingId = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
ErrorCode = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Reason = Annotated[str, msgspec.Meta(max_length=500)]

OrderStatus = Literal[
    "confirmed", "sold_out", "sale_not_open", "sale_ended", "invalid", "rate_limited"
]
SaleState = Literal["scheduled", "open", "ended"]


class Message(
    msgspec.Struct,
    kw_only=True,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="type",
    omit_defaults=False,
):
    """Envelope fields shared by every message."""

    v: Literal[1] = 1
    seq: Seq | None = None


# --- nested values (not messages) -------------------------------------------------------


class CartLine(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    product_id: Id
    quantity: CartQuantity


class SaleInfo(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A sale as a viewer sees it in a snapshot."""

    sale_id: Id
    product_id: Id
    starts_at: Timestamp
    ends_at: Timestamp
    state: SaleState


# --- node -> clients ----------------------------------------------------------------------


class ProductCard(Message, frozen=True, kw_only=True, tag="product.card"):
    """The product the host has pinned. ``pinned_at_rtp`` lets a player show the card at the
    video frame where the host pinned it; ``pinned_at`` is the server time of the pin."""

    product_id: Id
    name: Name
    price_cents: Cents
    currency: Currency
    image_url: Url
    stock: Count
    pinned_at_rtp: RtpTimestamp | None = None
    pinned_at: Timestamp


class CartUpdated(Message, frozen=True, kw_only=True, tag="cart.updated"):
    lines: list[CartLine]


class _SaleEvent(Message, frozen=True, kw_only=True):
    sale_id: Id
    product_id: Id
    starts_at: Timestamp
    ends_at: Timestamp
    stock: Count


class SaleScheduled(_SaleEvent, frozen=True, kw_only=True, tag="sale.scheduled"):
    pass


class SaleStarted(_SaleEvent, frozen=True, kw_only=True, tag="sale.started"):
    pass


class SaleEnded(_SaleEvent, frozen=True, kw_only=True, tag="sale.ended"):
    pass


class StockUpdated(Message, frozen=True, kw_only=True, tag="stock.updated"):
    product_id: Id
    stock: Count


class OrderResultMessage(Message, frozen=True, kw_only=True, tag="order.result"):
    idempotency_key: IdempotencyKey
    status: OrderStatus
    order_id: str | None = None
    quantity: int
    remaining: Count | None = None


class ClockPong(Message, frozen=True, kw_only=True, tag="clock.pong"):
    id: PingId
    client_time: float
    server_time: Timestamp


class Snapshot(Message, frozen=True, kw_only=True, tag="snapshot"):
    """Everything a (re)joining viewer needs at once, so it never renders a stale card."""

    card: ProductCard | None = None
    sale: SaleInfo | None = None
    stock: Count | None = None
    cart: list[CartLine] = msgspec.field(default_factory=list)


class Error(Message, frozen=True, kw_only=True, tag="error"):
    code: ErrorCode
    reason: Reason


# --- viewer -> node -----------------------------------------------------------------------


class CartAdd(Message, frozen=True, kw_only=True, tag="cart.add"):
    product_id: Id
    quantity: CartQuantity


class CartRemove(Message, frozen=True, kw_only=True, tag="cart.remove"):
    product_id: Id
    quantity: CartQuantity


class OrderPlace(Message, frozen=True, kw_only=True, tag="order.place"):
    idempotency_key: IdempotencyKey
    product_id: Id
    quantity: OrderQuantity
    sale_id: Id


class ClockPing(Message, frozen=True, kw_only=True, tag="clock.ping"):
    id: PingId
    # Any finite number: the client's own clock, echoed back untouched.
    client_time: Annotated[float, msgspec.Meta(ge=-1e15, le=1e15)]


# --- host/admin -> node -------------------------------------------------------------------


class AdminPinCard(Message, frozen=True, kw_only=True, tag="admin.pin_card"):
    product_id: Id
    pinned_at_rtp: RtpTimestamp | None = None


class AdminScheduleSale(Message, frozen=True, kw_only=True, tag="admin.schedule_sale"):
    """``sale_id`` may be omitted: the node then assigns one."""

    product_id: Id
    starts_at: Timestamp
    ends_at: Timestamp
    sale_id: Id | None = None


class AdminStartSale(Message, frozen=True, kw_only=True, tag="admin.start_sale"):
    sale_id: Id


class AdminStopSale(Message, frozen=True, kw_only=True, tag="admin.stop_sale"):
    sale_id: Id


ViewerMessage = CartAdd | CartRemove | OrderPlace | ClockPing
AdminMessage = AdminPinCard | AdminScheduleSale | AdminStartSale | AdminStopSale
ClientMessage = ViewerMessage | AdminMessage
ServerMessage = (
    ProductCard
    | CartUpdated
    | SaleScheduled
    | SaleStarted
    | SaleEnded
    | StockUpdated
    | OrderResultMessage
    | ClockPong
    | Snapshot
    | Error
)

VIEWER_TYPES: Final[dict[str, type[Message]]] = {
    "cart.add": CartAdd,
    "cart.remove": CartRemove,
    "order.place": OrderPlace,
    "clock.ping": ClockPing,
}
ADMIN_TYPES: Final[dict[str, type[Message]]] = {
    "admin.pin_card": AdminPinCard,
    "admin.schedule_sale": AdminScheduleSale,
    "admin.start_sale": AdminStartSale,
    "admin.stop_sale": AdminStopSale,
}
CLIENT_TYPES: Final[dict[str, type[Message]]] = {**VIEWER_TYPES, **ADMIN_TYPES}
SERVER_TYPES: Final[dict[str, type[Message]]] = {
    "product.card": ProductCard,
    "cart.updated": CartUpdated,
    "sale.scheduled": SaleScheduled,
    "sale.started": SaleStarted,
    "sale.ended": SaleEnded,
    "stock.updated": StockUpdated,
    "order.result": OrderResultMessage,
    "clock.pong": ClockPong,
    "snapshot": Snapshot,
    "error": Error,
}


class MessageError(Exception):
    """An incoming message was rejected. ``code`` is stable and machine-readable:
    ``too_large``, ``malformed``, ``unsupported_version``, ``unknown_type``, ``invalid``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason

    def to_message(self) -> Error:
        """The ``error`` message to send back to the client that sent the bad input."""
        return Error(code=self.code, reason=self.reason[:500])


class _Header(msgspec.Struct):
    # Read first and leniently (unknown fields ignored), so that version and type errors get
    # their own codes before the strict per-type decode.
    v: Any = None
    type: Any = None


_header_decoder: Final = msgspec.json.Decoder(_Header)
_decoders: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    name: msgspec.json.Decoder(cls) for name, cls in CLIENT_TYPES.items()
}
_encoder: Final = msgspec.json.Encoder()


def decode_client_message(raw: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES) -> ClientMessage:
    """Parse one datachannel message from a viewer or host; raise ``MessageError`` on any
    problem. The caller still has to check that a sender may use an ``admin.*`` type."""
    if isinstance(raw, str):
        # A datachannel string message is UTF-8 on the wire; measure it the same way.
        try:
            data = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MessageError("malformed", "text is not valid UTF-8") from exc
    elif isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
    else:
        raise MessageError("malformed", f"expected bytes or str, got {type(raw).__name__}")
    if len(data) > max_bytes:
        raise MessageError("too_large", f"message is {len(data)} bytes, limit {max_bytes}")
    try:
        header = _header_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise MessageError("invalid", f"expected a JSON object: {exc}") from exc
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise MessageError("malformed", f"not JSON: {exc}") from exc
    if header.v is None:
        raise MessageError("invalid", "missing protocol version `v`")
    if type(header.v) is not int or header.v != PROTOCOL_VERSION:
        raise MessageError("unsupported_version", f"protocol version must be {PROTOCOL_VERSION}")
    if not isinstance(header.type, str):
        raise MessageError("invalid", "`type` must be a string")
    decoder = _decoders.get(header.type)
    if decoder is None:
        raise MessageError("unknown_type", f"unknown message type {header.type[:64]!r}")
    try:
        message: ClientMessage = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise MessageError("invalid", str(exc)) from exc
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise MessageError("malformed", f"not JSON: {exc}") from exc
    return message


def decode_server_message(raw: bytes | str) -> ServerMessage:
    """Parse a node -> client message (for Python clients, the bench and tests).

    Raises ``MessageError`` like ``decode_client_message``."""
    try:
        msg: ServerMessage = msgspec.json.decode(raw, type=ServerMessage)
    except msgspec.ValidationError as exc:
        raise MessageError("invalid", str(exc)) from exc
    except (msgspec.DecodeError, UnicodeError, RecursionError) as exc:
        raise MessageError("malformed", f"not JSON: {exc}") from exc
    return msg


def encode(message: Message) -> bytes:
    """Serialise any message (the ``type`` tag and ``v`` included) to compact JSON."""
    return _encoder.encode(message)


def json_schema() -> dict[str, Any]:
    """A JSON Schema (2020-12) document describing every message type, in both directions."""
    client = list(CLIENT_TYPES.values())
    server = list(SERVER_TYPES.values())
    schemas, components = msgspec.json.schema_components(
        client + server, ref_template="#/$defs/{name}"
    )
    client_refs = schemas[: len(client)]
    server_refs = schemas[len(client) :]
    # ``v`` has a default so that Python code can build messages without repeating it, but
    # on the wire it is required: decode_client_message rejects a message without it.
    for cls in client + server:
        definition = components[cls.__name__]
        definition["required"] = ["v", *definition.get("required", [])]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://commerce-sfu.invalid/schemas/commerce-v1.json",
        "title": "Commerce datachannel messages, protocol version 1",
        "description": (
            "Every message is a JSON object with v=1 and a type. Client messages are sent "
            "by viewers (cart.*, order.place, clock.ping) or hosts (admin.*); server messages "
            "are sent by the node. Times are server Unix seconds unless stated otherwise."
        ),
        "oneOf": [
            {"title": "ClientMessage", "oneOf": client_refs},
            {"title": "ServerMessage", "oneOf": server_refs},
        ],
        "$defs": dict(sorted(components.items())),
    }


def json_schema_text() -> str:
    """The schema as the exact text committed to ``docs/commerce-schema.json``."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(json_schema_text())
