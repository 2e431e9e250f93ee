"""The commerce domain: products, sales, orders, carts, clock sync and rate limits.

Everything here is sans-I/O: plain values and pure functions. Nothing imports asyncio,
socket, time or uvloop (a unit test checks); every rule that depends on time takes
``now: float`` (server Unix seconds) from the caller.
"""
