"""Retention on a virtual clock; deletion removes files and metadata."""

from __future__ import annotations

from pathlib import Path

from sfu.recording.retention import DAY, expired
from sfu.recording.storage import LocalStore, RecordingMeta
from sfu.recording.timeline import TimelineEvent, event_line, webvtt


def meta(rec_id: str, ended: float | None, state: str = "done", started: float = 0.0) -> RecordingMeta:
    return RecordingMeta(id=rec_id, room="r", state=state, started_at=started, ended_at=ended)


def test_retention_policy_on_a_virtual_clock() -> None:
    recs = [meta("old-one", 0.0), meta("new-one", 5 * DAY), meta("live-one", None, "recording"),
            meta("dead-one", None, "failed", started=1 * DAY)]
    assert expired(recs, now=6 * DAY, days=0) == []  # disabled
    assert expired(recs, now=6 * DAY, days=7) == []
    assert expired(recs, now=7 * DAY, days=7) == ["old-one"]
    assert expired(recs, now=8 * DAY, days=7) == ["old-one", "dead-one"]
    assert expired(recs, now=100 * DAY, days=7) == ["old-one", "new-one", "dead-one"]


def test_local_store_lists_serves_and_deletes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "rec")
    m = meta("abc123", 1.0)
    d = store.workdir(m.id)
    (d / "abc123.webm").write_bytes(b"x" * 10)
    m.files = [{"name": "abc123.webm", "size": 10, "kind": "media"}]
    store.commit(m)
    assert [x.id for x in store.list("r")] == ["abc123"] and store.list("other") == []
    assert store.path("abc123", "abc123.webm") == d / "abc123.webm"
    assert store.path("abc123", "../meta.json") is None
    assert store.free_bytes() is not None
    assert store.delete("abc123") and not d.exists()
    assert store.get("abc123") is None and store.path("abc123", "abc123.webm") is None
    assert not store.delete("abc123")


def test_timeline_lines_and_webvtt() -> None:
    card = {"product_id": "p1", "name": "Mug", "price_cents": 900, "currency": "EUR"}
    events = [TimelineEvent(1.5, "product.card", 10.0, card, "rtp"),
              TimelineEvent(2.0, "stock.updated", 10.5, {"product_id": "p1", "stock": 3}, "clock"),
              TimelineEvent(4.25, "product.card", 13.0, {**card, "product_id": "p2"}, "rtp")]
    assert event_line(events[0]).startswith('{"at":10.0,"data":')
    vtt = webvtt(events, end=10.0)
    assert vtt.startswith("WEBVTT\n\ncard-1-p1\n00:00:01.500 --> 00:00:04.250\nMug - 9.00 EUR\n")
    assert "card-2-p2\n00:00:04.250 --> 00:00:10.000" in vtt
