"""Commerce signalling over WebRTC datachannels."""
