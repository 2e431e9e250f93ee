"""The datachannel envelope: every type round-trips, bad input is a MessageError only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalling import messages as m
from signalling.domain.orders import ORDER_STATUSES

SCHEMA_FILE = Path(__file__).parents[3] / "docs" / "commerce-schema.json"

CARD = m.ProductCard(
    product_id="p1",
    name="Sneaker",
    price_cents=12999,
    currency="EUR",
    image_url="https://cdn.example/s.jpg",
    stock=7,
    pinned_at_rtp=90000,
    pinned_at=1700000000.25,
)
SALE_FIELDS: dict[str, Any] = {
    "sale_id": "s1",
    "product_id": "p1",
    "starts_at": 1700000000.0,
    "ends_at": 1700000060.0,
    "stock": 100,
}

CLIENT_EXAMPLES: list[m.Message] = [
    m.CartAdd(product_id="p1", quantity=2, seq=1),
    m.CartRemove(product_id="p1", quantity=1),
    m.OrderPlace(idempotency_key="a1b2-c3", product_id="p1", quantity=10, sale_id="s1"),
    m.ClockPing(id=7, client_time=123456.789),
    m.AdminPinCard(product_id="p1", pinned_at_rtp=4294967295),
    m.AdminScheduleSale(product_id="p1", starts_at=1.0, ends_at=2.0),
    m.AdminScheduleSale(product_id="p1", starts_at=1.0, ends_at=2.0, sale_id="s9"),
    m.AdminStartSale(sale_id="s1"),
    m.AdminStopSale(sale_id="s1"),
]
SERVER_EXAMPLES: list[m.Message] = [
    CARD,
    m.CartUpdated(lines=[m.CartLine(product_id="p1", quantity=2)]),
    m.SaleScheduled(**SALE_FIELDS),
    m.SaleStarted(**SALE_FIELDS),
    m.SaleEnded(**SALE_FIELDS, seq=12),
    m.StockUpdated(product_id="p1", stock=0),
    m.OrderResultMessage(
        idempotency_key="k", status="confirmed", order_id="o_1", quantity=1, remaining=99
    ),
    m.OrderResultMessage(idempotency_key="k", status="rate_limited", quantity=1),
    m.ClockPong(id=7, client_time=-5.5, server_time=1700000000.5),
    m.Snapshot(
        card=CARD,
        sale=m.SaleInfo(
            sale_id="s1", product_id="p1", starts_at=1.0, ends_at=2.0, state="scheduled"
        ),
        stock=3,
        cart=[m.CartLine(product_id="p1", quantity=1)],
    ),
    m.Snapshot(),
    m.Error(code="rate_limited", reason="slow down"),
]


@pytest.mark.parametrize("msg", CLIENT_EXAMPLES, ids=lambda x: type(x).__name__)
def test_client_messages_round_trip(msg: m.Message) -> None:
    wire = m.encode(msg)
    body = json.loads(wire)
    assert body["v"] == 1
    assert body["type"] == type(msg).__struct_config__.tag
    assert m.decode_client_message(wire) == msg
    assert m.decode_client_message(wire.decode()) == msg


@pytest.mark.parametrize("msg", SERVER_EXAMPLES, ids=lambda x: type(x).__name__)
def test_server_messages_round_trip(msg: m.Message) -> None:
    assert m.decode_server_message(m.encode(msg)) == msg


def test_every_type_has_an_example() -> None:
    assert {type(x) for x in CLIENT_EXAMPLES} == set(m.CLIENT_TYPES.values())
    assert {type(x) for x in SERVER_EXAMPLES} == set(m.SERVER_TYPES.values())
    for name, cls in {**m.CLIENT_TYPES, **m.SERVER_TYPES}.items():
        assert cls.__struct_config__.tag == name


def test_order_statuses_match_the_domain() -> None:
    assert set(m.OrderStatus.__args__) == set(ORDER_STATUSES)  # type: ignore[attr-defined]


def order(**override: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "type": "order.place",
        "idempotency_key": "k1",
        "product_id": "p1",
        "quantity": 1,
        "sale_id": "s1",
    }
    body.update(override)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"", "malformed"),
        (b"[1, 2]", "invalid"),
        (b"null", "invalid"),
        (json.dumps(order(v=...)), "invalid"),
        (json.dumps(order(v=2)), "unsupported_version"),
        (json.dumps(order(v="1")), "unsupported_version"),
        (json.dumps(order(v=True)), "unsupported_version"),
        (json.dumps(order(v=1.0)), "unsupported_version"),
        (json.dumps(order(type=...)), "invalid"),
        (json.dumps(order(type=5)), "invalid"),
        (json.dumps(order(type="order.explode")), "unknown_type"),
        # Server-only types are not accepted from clients.
        (json.dumps({"v": 1, "type": "order.result"}), "unknown_type"),
        (json.dumps(order(quantity=0)), "invalid"),
        (json.dumps(order(quantity=11)), "invalid"),
        (json.dumps(order(quantity=1.5)), "invalid"),
        (json.dumps(order(quantity="1")), "invalid"),
        (json.dumps(order(quantity=True)), "invalid"),
        (json.dumps(order(quantity=...)), "invalid"),
        (json.dumps(order(idempotency_key="")), "invalid"),
        (json.dumps(order(idempotency_key="x" * 65)), "invalid"),
        (json.dumps(order(idempotency_key="has space")), "invalid"),
        (json.dumps(order(product_id={"id": "p1"})), "invalid"),
        (json.dumps(order(sale_id=["s1"])), "invalid"),
        (json.dumps(order(extra=1)), "invalid"),
        (json.dumps(order(seq=-1)), "invalid"),
        (json.dumps({"v": 1, "type": "clock.ping", "id": 1}), "invalid"),
        (json.dumps({"v": 1, "type": "clock.ping", "id": 1, "client_time": 1e300}), "invalid"),
        (
            json.dumps(
                {"v": 1, "type": "admin.pin_card", "product_id": "p1", "pinned_at_rtp": 2**32}
            ),
            "invalid",
        ),
        (b'{"v": 1, "type": "cart.add", "product_id": "p1", "quantity": NaN}', "malformed"),
        (b"[" * 5000 + b"]" * 5000, "invalid"),
    ],
)
def test_bad_client_messages(raw: bytes | str, code: str) -> None:
    with pytest.raises(m.MessageError) as info:
        m.decode_client_message(raw)
    assert info.value.code == code, info.value.reason
    echoed = m.decode_server_message(m.encode(info.value.to_message()))
    assert isinstance(echoed, m.Error) and echoed.code == code


def test_size_limit_counts_utf8_bytes() -> None:
    body = json.dumps(order(), ensure_ascii=False)
    assert m.decode_client_message(body, max_bytes=len(body.encode()))
    with pytest.raises(m.MessageError) as info:
        m.decode_client_message(body, max_bytes=len(body.encode()) - 1)
    assert info.value.code == "too_large"
    padded = '{"v":1,"type":"cart.add","product_id":"p1","quantity":1,"x":"' + "é" * 9000 + '"}'
    with pytest.raises(m.MessageError, match="too_large"):
        m.decode_client_message(padded)  # 9,000 characters, 18,000+ bytes


def test_lone_surrogates_in_text_are_malformed() -> None:
    with pytest.raises(m.MessageError) as info:
        m.decode_client_message('{"v": 1, "type": "\ud800"}')
    assert info.value.code == "malformed"


def test_committed_schema_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text() == m.json_schema_text(), (
        "docs/commerce-schema.json is stale: "
        "python -m signalling.messages > docs/commerce-schema.json"
    )
    schema = m.json_schema()
    defs = schema["$defs"]
    for cls in [*m.CLIENT_TYPES.values(), *m.SERVER_TYPES.values()]:
        assert "v" in defs[cls.__name__]["required"]
        assert "type" in defs[cls.__name__]["required"]
    assert defs["OrderPlace"]["properties"]["quantity"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
    }


# --- fuzzing: whatever arrives, the only exception is MessageError ----------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "v",
        "type",
        "seq",
        "product_id",
        "quantity",
        "idempotency_key",
        "sale_id",
        "id",
        "client_time",
        "pinned_at_rtp",
        "starts_at",
        "ends_at",
        "x",
    ]
)
type_names = st.sampled_from([*m.CLIENT_TYPES, *m.SERVER_TYPES, "", "order"])
near_valid = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 0, 2, "1", None, 1.0]), "type": type_names}
).flatmap(
    lambda head: st.dictionaries(field_names, json_values, max_size=6).map(
        lambda rest: {**rest, **head}
    )
)


def decode_or_error(raw: bytes | str) -> None:
    try:
        msg = m.decode_client_message(raw)
    except m.MessageError as exc:
        assert exc.code in {
            "too_large",
            "malformed",
            "unsupported_version",
            "unknown_type",
            "invalid",
        }
        return
    # Anything accepted is a well-formed client message that re-encodes identically.
    assert type(msg) in m.CLIENT_TYPES.values()
    assert m.decode_client_message(m.encode(msg)) == msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    decode_or_error(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(raw: str) -> None:
    decode_or_error(raw)


@settings(max_examples=500, deadline=None)
@given(near_valid)
def test_fuzz_near_valid_objects(body: dict[str, Any]) -> None:
    decode_or_error(json.dumps(body))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(CLIENT_EXAMPLES), st.data())
def test_fuzz_mutated_valid_messages(msg: m.Message, data: st.DataObject) -> None:
    wire = bytearray(m.encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    decode_or_error(bytes(wire))


def test_validation_error_text_is_useful() -> None:
    with pytest.raises(m.MessageError) as info:
        m.decode_client_message(json.dumps(order(quantity=11)))
    assert "quantity" in info.value.reason
    assert isinstance(info.value.__cause__, msgspec.ValidationError)
