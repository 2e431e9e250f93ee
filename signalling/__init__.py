"""Commerce signalling over WebRTC datachannels.

- ``messages``: the versioned JSON protocol (msgspec Structs, JSON Schema export);
- ``domain``: sans-I/O rules (catalogue, sale windows, order decisions, carts, clock
  offset estimation, rate limits);
- ``convert``: domain values <-> wire messages;
- ``store``: durable products, sales, stock and orders (SQLite default, Redis shared),
  opened with ``store.open_store(url)``.
"""
