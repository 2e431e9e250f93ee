"""asyncio shells: the UDP socket, DTLS/SCTP glue, per-peer sessions."""
