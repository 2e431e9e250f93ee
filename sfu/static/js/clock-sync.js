// Server-clock sync over the commerce datachannel (`clock.ping` -> `clock.pong`), NTP style.
//
// Same algorithm as signalling/domain/clock.py + signalling/client.py: one ping/pong gives
//
//     offset = server_time - (client_send + client_recv) / 2,   delay = client_recv - client_send
//
// and the estimate is the offset of the smallest-delay sample of the current burst (queueing
// only ever adds delay, so that sample is the least spoiled by asymmetric jitter; its error
// is at most delay / 2, reported as `uncertainty`). A burst is `samples` pings `intervalMs`
// apart; a new burst starts `resyncMs` after the previous one started, and replaces its
// samples. Pongs are matched by `id` against this object's own record of send times, so a
// node that echoes `client_time` and one that does not both work; unknown, duplicate and
// stale pongs are ignored.
//
// UNITS: everything this class takes or returns is MILLISECONDS on the client clock
// (`now()`, by default performance.timeOrigin + performance.now(), i.e. Unix-epoch ms that
// never jumps; Date.now() where `performance` is missing), EXCEPT the wire field
// `server_time`, which is server Unix time in SECONDS (a float), and `localTimeOf()`'s
// argument, which is a server timestamp from a message (sale `starts_at` etc.), also in
// SECONDS. `offset` is (server - client) in ms, so serverNow() is server Unix time in ms.
//
// Usage:
//     const sync = new ClockSync();
//     const channel = pc.createDataChannel(CLOCK_CHANNEL_LABEL, CLOCK_CHANNEL_OPTIONS);
//     const detach = sync.attach(channel);           // pings now, then every 30 s
//     const msLeft = sync.localTimeOf(sale.starts_at) - sync.now();   // countdown
//
// No build step: this file is served as is and imported as an ES module.

export const CLOCK_CHANNEL_LABEL = 'clock';
/** Unordered and never retransmitted: a late pong is worthless, the next ping replaces it. */
export const CLOCK_CHANNEL_OPTIONS = Object.freeze({ ordered: false, maxRetransmits: 0 });

const MAX_PENDING = 64; // pings remembered while unanswered
const PENDING_TTL_MS = 10000; // a pong later than this is not a useful sample
const MAX_PING_ID = Number.MAX_SAFE_INTEGER;
const TIMER_SLACK_MS = 2;

/** Client clock in Unix-epoch milliseconds, monotonic where `performance` exists. */
export function defaultNow() {
  const perf = globalThis.performance;
  if (perf && typeof perf.now === 'function' && typeof perf.timeOrigin === 'number') {
    return perf.timeOrigin + perf.now();
  }
  return Date.now();
}

/** Create the dedicated clock channel on an RTCPeerConnection. */
export function openClockChannel(pc, label = CLOCK_CHANNEL_LABEL) {
  return pc.createDataChannel(label, { ...CLOCK_CHANNEL_OPTIONS });
}

export class ClockSync {
  /**
   * @param {object} [options]
   * @param {number} [options.samples=8]  pongs per burst (also the estimator's window)
   * @param {number} [options.resyncMs=30000]  from one burst's start to the next
   * @param {number} [options.intervalMs=100]  between the pings of a burst
   * @param {number} [options.maxPings]  pings per burst at most (lost ones are replaced);
   *     default 2 * samples
   * @param {number} [options.lostAfterMs=1000]  unanswered this long, a ping is replaced
   * @param {() => number} [options.now]  the client clock, ms
   * @param {{setTimeout: Function, clearTimeout: Function}} [options.timers]  what
   *     attach() arms its timer with (tests pass a virtual scheduler); default globalThis
   */
  constructor({
    samples = 8,
    resyncMs = 30000,
    intervalMs = 100,
    maxPings,
    lostAfterMs = 1000,
    now,
    timers,
  } = {}) {
    if (!(Number.isInteger(samples) && samples >= 1)) throw new RangeError('samples must be >= 1');
    if (!(resyncMs > 0)) throw new RangeError('resyncMs must be positive');
    if (!(intervalMs >= 0 && Number.isFinite(intervalMs))) {
      throw new RangeError('intervalMs must be finite and >= 0');
    }
    this.samples = samples;
    this.resyncMs = resyncMs;
    this.intervalMs = intervalMs;
    this.maxPings = maxPings ?? 2 * samples;
    if (this.maxPings < samples) throw new RangeError('maxPings must be >= samples');
    this.lostAfterMs = lostAfterMs;
    this.now = now ?? defaultNow;
    this.timers = timers ?? {
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (handle) => globalThis.clearTimeout(handle),
    };
    this.pongsIgnored = 0;
    this._nextId = 1;
    this._pending = new Map(); // id -> client send time (ms); Map keeps insertion order
    this._samples = []; // {offset, delay, at} in ms, the last `samples` ones
    this._best = null;
    this._roundStarted = null;
    this._roundSent = 0;
    this._roundReceived = 0;
    this._lastPing = null;
  }

  // --- sending ------------------------------------------------------------------------------

  /** A `clock.ping` message to send now; `client_time` is this clock, in ms. */
  ping(nowMs) {
    const t = nowMs ?? this.now();
    if (this._roundStarted === null || this._roundComplete()) this._startRound(t);
    const id = this._nextId;
    this._nextId = id < MAX_PING_ID ? id + 1 : 1;
    this._pending.set(id, t);
    while (this._pending.size > MAX_PENDING) {
      this._pending.delete(this._pending.keys().next().value);
    }
    this._roundSent += 1;
    this._lastPing = t;
    return { v: 1, type: 'clock.ping', id, client_time: t };
  }

  _startRound(t) {
    this._pending.clear(); // an earlier burst's unanswered pings are given up
    this._roundStarted = t;
    this._roundSent = 0;
    this._roundReceived = 0;
  }

  _roundComplete() {
    return this._roundReceived >= this.samples || this._roundSent >= this.maxPings;
  }

  /**
   * Client time (ms) at which the next ping is due; -Infinity before the first one. A burst
   * sends `samples` pings `intervalMs` apart; if pongs are still missing after that, a ping
   * unanswered for `lostAfterMs` is presumed lost and replaced (up to `maxPings`). A pong
   * that is merely slow still counts when it arrives.
   */
  nextPingAt() {
    if (this._roundStarted === null) return -Infinity;
    if (this._roundComplete()) return this._roundStarted + this.resyncMs;
    const paced = this._lastPing + this.intervalMs;
    if (this._roundSent < this.samples) return paced;
    const missing = this.samples - this._roundReceived;
    const inFlight = [...this._pending.values()].sort((a, b) => a - b);
    if (inFlight.length < missing) return paced;
    return Math.max(paced, inFlight[inFlight.length - missing] + this.lostAfterMs);
  }

  /** Whether a ping should go out at `nowMs`. */
  due(nowMs) {
    return (nowMs ?? this.now()) >= this.nextPingAt();
  }

  /** True once the current burst has its samples (or gave up on more pings). */
  get burstDone() {
    return this._roundStarted !== null && this._roundComplete();
  }

  get pending() {
    return this._pending.size;
  }

  // --- receiving ----------------------------------------------------------------------------

  /** Take a decoded `clock.pong`; true if it became a sample, false if ignored. */
  onPong(msg, nowMs) {
    const t = nowMs ?? this.now();
    const id = msg?.id;
    const serverTime = msg?.server_time;
    if (
      msg?.type !== 'clock.pong' ||
      !Number.isInteger(id) ||
      typeof serverTime !== 'number' ||
      !Number.isFinite(serverTime)
    ) {
      this.pongsIgnored += 1;
      return false;
    }
    const sent = this._pending.get(id);
    this._pending.delete(id);
    if (sent === undefined || t - sent > PENDING_TTL_MS || t < sent) {
      this.pongsIgnored += 1; // unknown, duplicate, too late, or the clock went backwards
      return false;
    }
    const delay = t - sent;
    const sample = { offset: serverTime * 1000 - (sent + t) / 2, delay, at: t };
    this._samples.push(sample);
    if (this._samples.length > this.samples) this._samples.shift();
    let best = this._samples[0];
    for (const s of this._samples) if (s.delay < best.delay) best = s;
    this._best = best;
    this._roundReceived += 1;
    return true;
  }

  /** Raw datachannel data: true if it was a pong taken as a sample; anything else ignored. */
  onMessage(data, nowMs) {
    const t = nowMs ?? this.now(); // before parsing: decoding is not network delay
    if (typeof data !== 'string') return false;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return false;
    }
    if (msg === null || typeof msg !== 'object' || msg.type !== 'clock.pong') return false;
    return this.onPong(msg, t);
  }

  // --- the estimate -------------------------------------------------------------------------

  /** (server - client) in ms, or null before the first sample. */
  get offset() {
    return this._best === null ? null : this._best.offset;
  }

  /** Hard bound on the offset's error, ms (half the best round trip), or null. */
  get uncertainty() {
    return this._best === null ? null : this._best.delay / 2;
  }

  get synced() {
    return this._best !== null;
  }

  /** Samples of the current window, oldest first: [{offset, delay, at}] in ms. */
  get sampleList() {
    return this._samples.slice();
  }

  /** Server Unix time in ms at client time `clientNowMs` (default now); null before sync. */
  serverNow(clientNowMs) {
    if (this._best === null) return null;
    return (clientNowMs ?? this.now()) + this._best.offset;
  }

  /** Client-clock ms at which the server clock reads `serverTimeSeconds` (Unix SECONDS,
   * as in sale messages); null before sync. */
  localTimeOf(serverTimeSeconds) {
    if (this._best === null) return null;
    return serverTimeSeconds * 1000 - this._best.offset;
  }

  // --- driving a channel --------------------------------------------------------------------

  /**
   * Ping over `dataChannel` (an RTCDataChannel or anything with send/readyState/
   * addEventListener) as `due()` says, and take its pongs; starts when the channel opens.
   * Other messages on the channel are left alone. Returns a function that detaches.
   */
  attach(dataChannel) {
    let timer = null;
    let attached = true;
    const schedule = () => {
      if (timer !== null) this.timers.clearTimeout(timer);
      timer = null;
      if (!attached || dataChannel.readyState !== 'open') return;
      const wait = Math.max(0, this.nextPingAt() - this.now());
      timer = this.timers.setTimeout(tick, wait);
    };
    const tick = () => {
      timer = null;
      if (!attached || dataChannel.readyState !== 'open') return;
      const t = this.now();
      // Timers may fire a millisecond early; `t` (not the due time) is what the ping carries.
      if (this.due(t + TIMER_SLACK_MS)) dataChannel.send(JSON.stringify(this.ping(t)));
      schedule();
    };
    const onMessage = (event) => {
      const t = this.now();
      if (this.onMessage(event.data, t)) schedule(); // a burst may just have completed
    };
    const onOpen = () => tick();
    const onClose = () => {
      if (timer !== null) this.timers.clearTimeout(timer);
      timer = null;
    };
    dataChannel.addEventListener('message', onMessage);
    dataChannel.addEventListener('open', onOpen);
    dataChannel.addEventListener('close', onClose);
    if (dataChannel.readyState === 'open') tick();
    return () => {
      attached = false;
      onClose();
      dataChannel.removeEventListener('message', onMessage);
      dataChannel.removeEventListener('open', onOpen);
      dataChannel.removeEventListener('close', onClose);
    };
  }
}
