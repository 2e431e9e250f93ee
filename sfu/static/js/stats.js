// Connection quality from RTCPeerConnection.getStats(): what a host sends (per simulcast
// rid) and what a viewer receives. Rates are computed between two calls of the same sampler.

function rate(now, prev, field) {
  if (!prev || !(now.timestamp > prev.timestamp)) return null;
  const bytes = (now[field] || 0) - (prev[field] || 0);
  return Math.max(0, (bytes * 8 * 1000) / (now.timestamp - prev.timestamp)); // bits/s
}

/** Uplink: per-rid outbound video, audio, and the total bitrate. */
export class OutboundSampler {
  constructor() {
    this._prev = new Map(); // stats id -> report
  }

  /**
   * @param {RTCPeerConnection} pc
   * @param {RTCRtpSender} [videoSender]  to read encodings[i].active (dynacast)
   * @returns {Promise<{bitrate, layers: Array, audioBitrate, availableOutgoingBitrate, rtt}>}
   */
  async sample(pc, videoSender) {
    const out = { bitrate: 0, audioBitrate: 0, layers: [], availableOutgoingBitrate: null, rtt: null };
    if (!pc) return out;
    const active = new Map();
    if (videoSender) {
      for (const e of videoSender.getParameters().encodings || []) {
        if (e.rid) active.set(e.rid, e.active !== false);
      }
    }
    const report = await pc.getStats();
    const seen = new Map();
    report.forEach((s) => {
      if (s.type === 'outbound-rtp') {
        const bps = rate(s, this._prev.get(s.id), 'bytesSent');
        seen.set(s.id, s);
        if (bps !== null) out.bitrate += bps;
        if (s.kind === 'video') {
          out.layers.push({
            rid: s.rid || String(s.ssrc),
            active: s.rid && active.has(s.rid) ? active.get(s.rid) : s.active !== false,
            width: s.frameWidth || 0,
            height: s.frameHeight || 0,
            fps: s.framesPerSecond || 0,
            bitrate: bps ?? 0,
            framesEncoded: s.framesEncoded || 0,
            bytesSent: s.bytesSent || 0,
            limitation: s.qualityLimitationReason || 'none',
          });
        } else if (s.kind === 'audio') {
          out.audioBitrate += bps ?? 0;
        }
      } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        out.availableOutgoingBitrate = s.availableOutgoingBitrate ?? null;
        out.rtt = s.currentRoundTripTime ?? null;
      }
    });
    this._prev = seen;
    const order = { q: 0, h: 1, f: 2 };
    out.layers.sort((a, b) => (order[a.rid] ?? 9) - (order[b.rid] ?? 9) || a.width - b.width);
    return out;
  }
}

/** Downlink: the received video (resolution, frames, bitrate, loss) and audio. */
export class InboundSampler {
  constructor() {
    this._prev = new Map();
  }

  async sample(pc) {
    const out = {
      framesDecoded: 0, frameWidth: 0, frameHeight: 0, fps: 0, bitrate: 0,
      packetsReceived: 0, packetsLost: 0, lossPercent: 0, jitter: 0, audioPackets: 0,
    };
    if (!pc) return out;
    const report = await pc.getStats();
    const seen = new Map();
    let lostDelta = 0;
    let receivedDelta = 0;
    let rated = false; // the first sample has no earlier one to take a rate from
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      const prev = this._prev.get(s.id);
      seen.set(s.id, s);
      const bps = rate(s, prev, 'bytesReceived');
      if (bps !== null) { out.bitrate += bps; rated = true; }
      if (s.kind === 'video') {
        out.framesDecoded += s.framesDecoded || 0;
        if ((s.frameWidth || 0) * (s.frameHeight || 0) > out.frameWidth * out.frameHeight) {
          out.frameWidth = s.frameWidth || 0;
          out.frameHeight = s.frameHeight || 0;
          out.fps = s.framesPerSecond || 0;
        }
        out.packetsReceived += s.packetsReceived || 0;
        out.packetsLost += Math.max(0, s.packetsLost || 0);
        out.jitter = Math.max(out.jitter, s.jitter || 0);
        if (prev) {
          lostDelta += Math.max(0, (s.packetsLost || 0) - (prev.packetsLost || 0));
          receivedDelta += Math.max(0, (s.packetsReceived || 0) - (prev.packetsReceived || 0));
        }
      } else if (s.kind === 'audio') {
        out.audioPackets += s.packetsReceived || 0;
      }
    });
    this._prev = seen;
    if (!rated) out.bitrate = null;
    const total = lostDelta + receivedDelta;
    out.lossPercent = total > 0 ? (100 * lostDelta) / total : 0;
    return out;
  }
}

/** "1.2 Mbit/s" / "350 kbit/s". */
export function formatBitrate(bps) {
  if (bps === null || bps === undefined) return '… kbit/s';
  if (!(bps > 0)) return '0 kbit/s';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
  return `${Math.round(bps / 1e3)} kbit/s`;
}
