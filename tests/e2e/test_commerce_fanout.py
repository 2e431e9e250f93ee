"""The per-channel outbox: pacing on bufferedAmount, coalescing, overflow -> snapshot.

Driven with a fake channel whose ``bufferedAmount`` the test controls, like aiortc's."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signalling.fanout import FanoutStats, Outbox
from signalling.http import OPENAPI


class FakeChannel:
    def __init__(self) -> None:
        self.readyState = "open"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent: list[str] = []
        self.listeners: dict[str, Callable[[], None]] = {}

    def on(self, event: str, fn: Callable[[], None]) -> None:
        self.listeners[event] = fn

    def remove_listener(self, event: str, fn: Any) -> None:
        self.listeners.pop(event, None)

    def send(self, data: str) -> None:
        self.sent.append(data)
        self.bufferedAmount += len(data)

    def drain(self) -> None:
        """aiortc handed everything to SCTP: fire bufferedamountlow."""
        self.bufferedAmount = 0
        self.listeners["bufferedamountlow"]()


def test_writes_pause_at_high_water_and_resume_on_low() -> None:
    ch, stats = FakeChannel(), FanoutStats()
    box = Outbox(ch, stats, high_water=100, low_water=10)
    for i in range(10):
        box.push("product.card", "x" * 40 + str(i))
    assert len(ch.sent) == 3  # 0, 41, 82 bytes buffered before each write; then paused
    assert len(box) == 7
    ch.drain()
    assert len(ch.sent) == 6 and len(box) == 4
    ch.drain()
    ch.drain()
    assert [s[-1] for s in ch.sent] == [str(i) for i in range(10)] and len(box) == 0


def test_stock_coalesces_to_the_latest_and_keeps_delivery_order() -> None:
    ch, stats = FakeChannel(), FanoutStats()
    box = Outbox(ch, stats, high_water=1, low_water=0)
    box.push("product.card", "card1")  # written at once
    for n in range(50):
        box.push("stock.updated", f"stock{n}", coalesce=("stock", "p1"))
    box.push("sale.started", "sale")
    box.push("stock.updated", "stock-final", coalesce=("stock", "p1"))
    assert len(box) == 2 and stats.coalesced["stock.updated"] == 50
    for _ in range(3):
        ch.drain()
    assert ch.sent == ["card1", "sale", "stock-final"]


def test_overflow_drops_room_messages_keeps_replies_and_resyncs() -> None:
    ch, stats = FakeChannel(), FanoutStats()
    snapshots: list[int] = []

    def resync() -> str:
        snapshots.append(1)
        return json.dumps({"type": "snapshot"})

    box = Outbox(ch, stats, resync=resync, high_water=1, low_water=0, max_queue=20)
    box.push("product.card", "first")
    box.push("order.result", "result", droppable=False)
    for n in range(100):
        box.push("product.card", f"card{n}")
    assert len(box) <= 21 and stats.dropped["overflow"] >= 80
    for _ in range(30):
        ch.drain()
    assert ch.sent[0] == "first" and ch.sent[1] == '{"type": "snapshot"}'
    assert "result" in ch.sent and snapshots == [1]
    assert len(ch.sent) < 30


def test_closed_channel_stops_writing() -> None:
    ch, stats = FakeChannel(), FanoutStats()
    box = Outbox(ch, stats)
    ch.readyState = "closed"
    box.push("product.card", "x")
    assert box.closed and ch.sent == [] and box not in stats.outboxes


def test_committed_openapi_document_is_current() -> None:
    path = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(OPENAPI))
