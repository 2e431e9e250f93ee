"""Real-peer WebRTC clients (aiortc) for WHIP/WHEP: shared by the e2e tests and the bench."""
