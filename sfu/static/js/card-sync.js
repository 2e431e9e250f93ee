// Show a pinned product card on the video frame it was pinned at (docs/protocol.md,
// "Frame-accurate cards"): the card carries `pinned_at_rtp`, the RTP timestamp (90 kHz) of
// the host's video at the pin, already translated by the node into the timeline of the video
// this viewer receives. requestVideoFrameCallback gives each presented frame's
// `rtpTimestamp`; the card is shown on the first frame at or past it, compared modulo 2^32.
// Without rVFC, without `pinned_at_rtp`, or if no such frame is presented within
// `timeoutMs` (video paused or absent), the card is shown at once.

/** True if RTP timestamp `ts` is at or after `target`, modulo 2^32 (wrap-safe). */
export function rtpReached(ts, target) {
  return ((ts - target) >>> 0) < 0x80000000;
}

export class FrameCardScheduler {
  /**
   * @param {HTMLVideoElement} video
   * @param {(card: object|null, how: {via: string, rtpTimestamp: number|null}) => void} onShow
   * @param {{timeoutMs?: number}} [options]
   */
  constructor(video, onShow, { timeoutMs = 1500 } = {}) {
    this.video = video;
    this.onShow = onShow;
    this.timeoutMs = timeoutMs;
    this.pending = null;
    this.shown = null;
    this._timer = null;
    this._watching = false;
    this.supported = typeof video.requestVideoFrameCallback === 'function';
    this.lastFrameRtp = null;
  }

  /** Schedule `card` (a product.card message, or null to hide). */
  show(card) {
    clearTimeout(this._timer);
    this.pending = null;
    if (!card) {
      this._show(null, 'hidden', null);
      return;
    }
    if (this.shown && this.shown.product_id === card.product_id &&
        this.shown.pinned_at === card.pinned_at) {
      this._show(card, this.shownVia ?? 'same', null); // same pin (e.g. replayed snapshot)
      return;
    }
    if (!this.supported || typeof card.pinned_at_rtp !== 'number') {
      this._show(card, this.supported ? 'no-rtp' : 'unsupported', null);
      return;
    }
    this.pending = card;
    this._timer = setTimeout(() => {
      if (this.pending === card) {
        this.pending = null;
        this._show(card, 'timeout', null);
      }
    }, this.timeoutMs);
    this._watch();
  }

  _watch() {
    if (this._watching || !this.supported) return;
    this._watching = true;
    const onFrame = (_now, meta) => {
      const ts = typeof meta.rtpTimestamp === 'number' ? meta.rtpTimestamp : null;
      if (ts !== null) this.lastFrameRtp = ts;
      const card = this.pending;
      if (card && ts !== null && rtpReached(ts, card.pinned_at_rtp)) {
        this.pending = null;
        clearTimeout(this._timer);
        this._show(card, 'frame', ts);
      }
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  _show(card, via, rtpTimestamp) {
    this.shown = card;
    this.shownVia = via;
    this.onShow(card, { via, rtpTimestamp });
  }
}
