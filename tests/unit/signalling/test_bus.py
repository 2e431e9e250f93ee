"""The cross-node feed's message framing (signalling.bus)."""

from __future__ import annotations

import pytest

from signalling.bus import BusError, parse_event


def test_parse_event_splits_room_seq_type_and_payload() -> None:
    assert parse_event("cs:bus:show-1", '42 stock.updated {"v":1,"a":"b c"}', "cs:") == (
        "show-1", 42, "stock.updated", '{"v":1,"a":"b c"}')


@pytest.mark.parametrize(
    ("channel", "data"),
    [("cs:bus:", '1 t {}'), ("cs:bus:r", 'x t {}'), ("cs:bus:r", '1 t'), ("cs:bus:r", ''),
     ("cs:bus:r", '-1 t {}')],
)
def test_parse_event_refuses_malformed_messages(channel: str, data: str) -> None:
    with pytest.raises(BusError):
        parse_event(channel, data, "cs:")
