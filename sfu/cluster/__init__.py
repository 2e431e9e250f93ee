"""Several nodes serving one show: the node registry, the room directory and placement.

- ``types``: what the cluster layer exchanges (``NodeInfo``) and the ``Cascade`` interface
  the origin-to-edge relay implements;
- ``policy``: sans-I/O decisions on a clock passed in (which nodes are alive, which node
  serves a request, which leases lapse);
- ``directory``: the Redis keys and scripts (registry, origin claims);
- ``agent``: the asyncio shell a ``Node`` runs (heartbeat loop, ``place`` for the HTTP and
  WebSocket fronts, metrics).
"""
