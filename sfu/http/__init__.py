"""HTTP front: WHIP, WHEP, the WebSocket room protocol, health and metrics."""
