// RoomClient: a browser client of the media node's room protocol (docs/protocol.md).
//
// One WebSocket (`/ws`) and one RTCPeerConnection per participant. The client:
// - joins with a token, publishes camera + microphone (video as three simulcast layers, rids
//   q/h/f at 1/4, 1/2 and full size) and follows the node's dynacast `layers` messages by
//   switching encodings[i].active;
// - subscribes to the room's tracks (one recvonly transceiver per track, mapped by mid in
//   `subscriptions`) and renegotiates whenever the node sends `tracks`;
// - opens the commerce datachannel on the same peer connection, keeps a CommerceState
//   (snapshot + seq rules) and a ClockSync (server clock) on it;
// - reconnects on WebSocket loss or ICE failure with exponential backoff and jitter: a new
//   socket, join, peer connection, the same published media and subscriptions; the new
//   channel's snapshot restores the commerce state, and orders in flight are re-sent with
//   their idempotency keys. A seq gap the node does not explain is healed by opening a fresh
//   channel (the node greets every channel with a snapshot);
// - in a cluster, follows the node's `redirect` to the node that serves the room, and after a
//   failure reconnects through the other nodes `joined` listed, excluding the failed one
//   (cluster.js).
//
// No build step: served as is from /static/js/ and imported as an ES module.
//
//   import { RoomClient } from '/static/js/client.js';
//   const client = new RoomClient({ token, getToken });
//   client.addEventListener('track', (e) => { video.srcObject = e.detail.stream; });
//   client.commerce.addEventListener('change', render);
//   await client.connect();
//   await client.publish(await navigator.mediaDevices.getUserMedia({ video: true, audio: true }));
//   const result = await client.placeOrder({ sale_id, product_id, quantity: 1 });

import { ClockSync } from './clock-sync.js';
import { CommerceState } from './commerce.js';
import { NodeRoute, socketUrl } from './cluster.js';

export const PROTOCOL_VERSION = 1;
export const COMMERCE_CHANNEL_LABEL = 'commerce';
/** Three simulcast layers, lowest first (the node orders rids q < h < f). */
export const SIMULCAST_ENCODINGS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 200_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 600_000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_800_000 }),
]);

const DEFAULTS = Object.freeze({
  url: undefined, // the node's http(s) origin; default: the page's origin
  token: undefined, // a JWT (publish and/or subscribe, admin for hosts)
  getToken: undefined, // async () => token: called before every (re)connect if given
  subscribe: true, // true, false, or (track) => boolean; never the client's own tracks
  simulcast: true,
  reconnect: true,
  backoffMs: 500, // first retry after 0.5-1x this, doubling per attempt
  maxBackoffMs: 8000,
  requestTimeoutMs: 10000, // a WebSocket request without a reply
  socketTimeoutMs: 2000, // opening a WebSocket (a dead node may never answer)
  connectTimeoutMs: 15000, // from the answer to ICE/DTLS connected
  disconnectedGraceMs: 4000, // ICE 'disconnected' this long counts as lost
  gapGraceMs: 1000, // wait this long for the node to explain a seq gap before a resync
  orderTimeoutMs: 20000,
  iceServers: [],
  clock: undefined, // a ClockSync, or options for one
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** ws(s)://host/ws for an http(s) origin. */
export function roomSocketUrl(base) {
  return socketUrl(base ?? globalThis.location?.origin);
}

export class RoomError extends Error {
  constructor(code, reason) {
    super(`${code}: ${reason}`);
    this.code = code;
    this.reason = reason;
  }
}

export class RoomClient extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.baseUrl = this.options.url ?? globalThis.location?.origin;
    this.token = this.options.token ?? null;
    this.clock = this.options.clock instanceof ClockSync
      ? this.options.clock : new ClockSync(this.options.clock ?? {});
    this.commerce = new CommerceState();
    this.state = 'idle'; // idle, connecting, joined, connected, reconnecting, closed
    this.room = null;
    this.participant = null;
    this.grants = [];
    this.session = null; // the node's peer id of the current connection
    this.tracks = []; // the room's tracks (last `joined`/`tracks`)
    this.pc = null;
    this.ws = null;
    this.channel = null;
    this.reconnects = 0;
    this.route = new NodeRoute(this.baseUrl); // cluster: which node the socket goes to
    this.node = null; // id of the node joined (clusters only)
    this.layers = null; // last dynacast message for our video {track_id, active, paused}
    this.published = {}; // mid -> track_id of our published sections
    this._local = null; // {stream, simulcast, encodings}
    this._extra = new Map(); // source -> {track, stream, simulcast, encodings, transceiver}
    this._videoSender = null;
    this._subs = new Map(); // track_id -> {transceiver, track}
    this._requests = new Map(); // ws request id -> {resolve, reject, timer}
    this._nextId = 1;
    this._dirty = false;
    this._negotiation = null;
    this._closed = false;
    this._generation = 0; // bumps on every teardown; stale callbacks check it
    this._timers = new Set();
    this._detachClock = null;
    this._channels = new Set();
    this._orders = new Map(); // idempotency_key -> {msg, resolve, reject, timer}
    this._cartWaiters = [];
    this._gap = null; // {missingMax, timer}
    this._layerPref = null;
  }

  // --- lifecycle ------------------------------------------------------------------------------

  /** Join and negotiate once; resolves when the answer is applied (media may still connect). */
  async connect() {
    if (this._closed) throw new Error('client is closed');
    this._setState('connecting');
    try {
      await this._session();
    } catch (err) {
      this._teardown();
      if (err instanceof RoomError && ['unauthorized', 'forbidden'].includes(err.code)) {
        this._setState('closed', err.message);
        this._closed = true;
        throw err;
      }
      if (!this.options.reconnect) {
        this._setState('closed', String(err?.message || err));
        throw err;
      }
      this._lost(`connect failed: ${err?.message || err}`);
    }
  }

  /** Leave the room; no reconnection. */
  close() {
    if (this._closed) return;
    this._closed = true;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      try { this.ws.send(JSON.stringify({ type: 'leave' })); } catch { /* closing anyway */ }
    }
    this._teardown();
    for (const o of this._orders.values()) o.reject(new Error('client closed'));
    this._orders.clear();
    this._setState('closed', 'closed by the application');
  }

  _setState(state, reason) {
    if (this.state === state && !reason) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, reason: reason ?? null } }));
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _timer(fn, ms) {
    const gen = this._generation;
    const handle = setTimeout(() => {
      this._timers.delete(handle);
      if (gen === this._generation) fn();
    }, ms);
    this._timers.add(handle);
    return handle;
  }

  async _session(url = this.route.first()) {
    if (this.options.getToken) this.token = await this.options.getToken();
    if (!this.token) throw new RoomError('unauthorized', 'no token');
    let joined;
    for (;;) {
      await this._openSocket(this._generation, url);
      joined = await this._request({ type: 'join', token: this.token });
      if (joined.type !== 'redirect') break;
      // Another node serves this room for us; this one closes the socket.
      const next = this.route.redirect(joined);
      this._teardown();
      if (next === null) throw new RoomError('redirect_loop', 'too many redirects');
      this._emit('redirect', { node: joined.node, url: next, reason: joined.reason });
      url = next;
    }
    const gen = this._generation;
    this.route.joined(joined);
    this.node = this.route.node;
    this.room = joined.room;
    this.participant = joined.participant;
    this.grants = joined.grants;
    this.tracks = joined.tracks || [];
    this._setState('joined');
    this._openPeer(gen);
    if (this._local || this._extra.size) this._addLocalTransceivers();
    await this._negotiate();
    this._timer(() => {
      if (this.pc && this.pc.connectionState !== 'connected') this._lost('connect timeout');
    }, this.options.connectTimeoutMs);
  }

  _openSocket(gen, url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      this.ws = ws;
      const timer = setTimeout(() => {
        reject(new Error(`WebSocket did not open within ${this.options.socketTimeoutMs} ms`));
        try { ws.close(); } catch { /* never opened */ }
      }, this.options.socketTimeoutMs);
      const fail = () => {
        clearTimeout(timer);
        reject(new Error('WebSocket failed to open'));
      };
      ws.addEventListener('error', fail, { once: true });
      ws.addEventListener('open', () => {
        clearTimeout(timer);
        ws.removeEventListener('error', fail);
        resolve();
      }, { once: true });
      ws.addEventListener('message', (e) => { if (gen === this._generation) this._onSocket(e.data); });
      ws.addEventListener('close', (e) => {
        if (gen !== this._generation) return;
        this._failRequests(new Error(`WebSocket closed (${e.code})`));
        this._lost(`WebSocket closed (${e.code})`);
      });
    });
  }

  _openPeer(gen) {
    const pc = new RTCPeerConnection({ iceServers: this.options.iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    let graceTimer = null;
    pc.addEventListener('connectionstatechange', () => {
      if (gen !== this._generation) return;
      const s = pc.connectionState;
      if (s === 'connected') {
        if (graceTimer) clearTimeout(graceTimer);
        graceTimer = null;
        this._setState('connected');
      } else if (s === 'failed') {
        this._lost('ICE/DTLS failed');
      } else if (s === 'disconnected' && !graceTimer) {
        graceTimer = this._timer(() => {
          graceTimer = null;
          if (pc.connectionState !== 'connected') this._lost('ICE disconnected');
        }, this.options.disconnectedGraceMs);
      }
      this._emit('connectionstate', { state: s });
    });
    pc.addEventListener('track', (e) => this._onTrack(e));
    this._openChannel(gen);
  }

  _openChannel(gen) {
    const channel = this.pc.createDataChannel(COMMERCE_CHANNEL_LABEL);
    this._channels.add(channel);
    channel.addEventListener('open', () => {
      if (gen !== this._generation) return;
      if (this.channel === null || this.channel.readyState !== 'open') this._useChannel(channel);
    });
    channel.addEventListener('message', (e) => {
      if (gen === this._generation) this._onChannel(channel, e.data);
    });
    channel.addEventListener('close', () => {
      this._channels.delete(channel);
      if (gen === this._generation && channel === this.channel && !this._closed) {
        this._lost('datachannel closed');
      }
    });
    return channel;
  }

  _useChannel(channel) {
    const old = this.channel;
    this.channel = channel;
    if (this._detachClock) this._detachClock();
    this._detachClock = this.clock.attach(channel);
    if (old && old !== channel) {
      this._channels.delete(old);
      try { old.close(); } catch { /* already closing */ }
    }
    this._emit('channel', { channel });
  }

  /** Tear down the socket and peer connection, keeping published media and state. */
  _teardown() {
    this._generation += 1;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    if (this._gap) this._gap = null;
    if (this._detachClock) this._detachClock();
    this._detachClock = null;
    for (const ch of this._channels) { try { ch.close(); } catch { /* ignore */ } }
    this._channels.clear();
    this.channel = null;
    if (this.pc) { try { this.pc.close(); } catch { /* ignore */ } }
    this.pc = null;
    if (this.ws) { try { this.ws.close(); } catch { /* ignore */ } }
    this.ws = null;
    this._failRequests(new Error('connection reset'));
    for (const [trackId, sub] of this._subs) {
      this._emit('trackended', { track_id: trackId, track: sub.track });
    }
    this._subs.clear();
    this._videoSender = null;
    this.published = {};
    this._negotiation = null;
    this._dirty = false;
    for (const w of this._cartWaiters) w.reject(new Error('connection reset'));
    this._cartWaiters = [];
  }

  _lost(reason) {
    if (this._closed || this.state === 'reconnecting') return;
    this.route.failed(); // a cluster client retries on the other nodes first
    this.node = null;
    this._teardown();
    if (!this.options.reconnect) {
      this._setState('closed', reason);
      this._closed = true;
      return;
    }
    this._setState('reconnecting', reason);
    this._reconnectLoop();
  }

  async _move(msg) {
    if (this._closed || this.state === 'reconnecting') return;
    const url = this.route.redirect(msg);
    this._teardown();
    this._setState('reconnecting', `room moved to node ${msg.node}`);
    this._emit('redirect', { node: msg.node, url, reason: msg.reason });
    try {
      if (url === null) throw new RoomError('redirect_loop', 'too many redirects');
      await this._session(url);
      this.reconnects += 1;
      this._emit('reconnected', { attempts: 0 });
    } catch (err) {
      this._teardown();
      this._setState('connecting', `move failed: ${err?.message || err}`);
      this._lost(`move failed: ${err?.message || err}`);
    }
  }

  async _reconnectLoop() {
    let attempt = 0;
    while (!this._closed) {
      const o = this.options;
      const ceiling = Math.min(o.maxBackoffMs, o.backoffMs * 2 ** attempt);
      const delay = ceiling * (0.5 + Math.random() * 0.5);
      this._emit('reconnecting', { attempt: attempt + 1, delayMs: Math.round(delay) });
      await sleep(delay);
      if (this._closed) return;
      attempt += 1;
      try {
        await this._session(this.route.next(attempt - 1));
        this.reconnects += 1;
        this._emit('reconnected', { attempts: attempt });
        return;
      } catch (err) {
        this._teardown();
        this._emit('error', { code: err?.code || 'reconnect_failed', reason: String(err?.message || err) });
        if (err instanceof RoomError && err.code === 'unauthorized' && !o.getToken) {
          this._closed = true;
          this._setState('closed', err.message);
          return;
        }
      }
    }
  }

  // --- the room protocol ----------------------------------------------------------------------

  _request(msg, timeoutMs) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._requests.delete(id);
        reject(new RoomError('timeout', `no reply to ${msg.type} within ${timeoutMs ?? this.options.requestTimeoutMs} ms`));
      }, timeoutMs ?? this.options.requestTimeoutMs);
      this._requests.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...msg, id }));
    });
  }

  _failRequests(err) {
    for (const r of this._requests.values()) {
      clearTimeout(r.timer);
      r.reject(err);
    }
    this._requests.clear();
  }

  _onSocket(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    const pending = msg.id != null ? this._requests.get(msg.id) : undefined;
    if (pending) {
      this._requests.delete(msg.id);
      clearTimeout(pending.timer);
      if (msg.type === 'error') pending.reject(new RoomError(msg.code, msg.reason));
      else pending.resolve(msg);
      return;
    }
    switch (msg.type) {
      case 'tracks':
        this.tracks = msg.tracks || [];
        this._emit('tracks', { tracks: this.tracks });
        if (this.pc) this._negotiate().catch((err) => this._negotiationFailed(err));
        break;
      case 'layers':
        this._onLayers(msg);
        break;
      case 'redirect':
        // The room moved to another node after we joined (its origin changed).
        this._move(msg);
        break;
      case 'drain':
        // The node is shutting down and has left the cluster: move now if there is
        // another node to go to (a single node's clients stay until it closes).
        if (this.route.nodes.length > 1) this._lost(`node draining (${msg.reason})`);
        break;
      case 'error':
        this._emit('error', { code: msg.code, reason: msg.reason });
        break;
      default:
        break;
    }
  }

  /** Coalesced, serialised renegotiation; resolves when the latest wish is negotiated. */
  _negotiate() {
    this._dirty = true;
    if (!this._negotiation) {
      const gen = this._generation;
      this._negotiation = (async () => {
        try {
          while (this._dirty && gen === this._generation) {
            this._dirty = false;
            await this._negotiateOnce();
          }
        } finally {
          if (gen === this._generation) this._negotiation = null;
        }
      })();
    }
    return this._negotiation;
  }

  _negotiationFailed(err) {
    this._emit('error', { code: err?.code || 'negotiation_failed', reason: String(err?.message || err) });
    if (!(err instanceof RoomError) || err.code === 'timeout') this._lost(`negotiation failed: ${err?.message || err}`);
  }

  _wanted(track) {
    if (track.participant === this.participant) return false;
    const s = this.options.subscribe;
    return typeof s === 'function' ? Boolean(s(track)) : Boolean(s);
  }

  async _negotiateOnce() {
    const pc = this.pc;
    // Subscriptions: one recvonly transceiver per wanted track; stop the ones whose track left.
    const wanted = new Map(this.tracks.filter((t) => this._wanted(t)).map((t) => [t.track_id, t]));
    for (const [trackId, sub] of this._subs) {
      if (!wanted.has(trackId)) {
        try { sub.transceiver.stop(); } catch { /* already stopped */ }
        this._subs.delete(trackId);
        this._emit('trackended', { track_id: trackId, track: sub.track });
      }
    }
    for (const [trackId, info] of wanted) {
      if (this._subs.has(trackId)) this._subs.get(trackId).info = info; // labels may come later
      else {
        const transceiver = pc.addTransceiver(info.kind, { direction: 'recvonly' });
        this._subs.set(trackId, { transceiver, info, track: null });
      }
    }
    await pc.setLocalDescription(await pc.createOffer());
    const subscriptions = {};
    for (const [trackId, sub] of this._subs) {
      if (sub.transceiver.mid) subscriptions[sub.transceiver.mid] = trackId;
    }
    const offer = { type: 'offer', sdp: pc.localDescription.sdp, subscriptions };
    const sources = {}; // labels of tracks published with publishTrack (docs/protocol.md)
    for (const [source, e] of this._extra) if (e.transceiver?.mid) sources[e.transceiver.mid] = source;
    if (Object.keys(sources).length) offer.sources = sources;
    const answer = await this._request(offer);
    if (pc !== this.pc) return;
    this.session = answer.session;
    this.published = answer.published || {};
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    this._emit('negotiated', { published: this.published, subscribed: answer.subscribed || {} });
    if (this._layerPref) this.setLayer(this._layerPref).catch(() => {});
  }

  _onTrack(event) {
    let trackId = null;
    let sub = null;
    for (const [id, s] of this._subs) {
      if (s.transceiver === event.transceiver) { trackId = id; sub = s; break; }
    }
    if (!sub) return;
    sub.track = event.track;
    const stream = event.streams[0] ?? new MediaStream([event.track]);
    this._emit('track', {
      track_id: trackId, kind: event.track.kind, participant: sub.info.participant,
      info: sub.info, source: sub.info.source ?? null, track: event.track, stream, transceiver: event.transceiver,
    });
  }

  // --- publishing -----------------------------------------------------------------------------

  /**
   * Publish a camera/microphone stream (video in three simulcast layers unless
   * `simulcast: false`). Survives reconnects: the same tracks are offered again.
   */
  async publish(stream, { simulcast = this.options.simulcast, encodings = SIMULCAST_ENCODINGS } = {}) {
    this._local = { stream, simulcast, encodings: encodings.map((e) => ({ ...e })) };
    if (this.pc) {
      this._addMainTransceivers();
      await this._negotiate();
    }
  }

  /** Stop publishing (the node removes the tracks from the room). */
  async unpublish() {
    this._local = null;
    this._extra.clear();
    if (!this.pc) return;
    for (const t of this.pc.getTransceivers()) {
      if (t.sender.track && t.direction === 'sendonly') { try { t.stop(); } catch { /* ignore */ } }
    }
    this._videoSender = null;
    await this._negotiate();
  }

  /**
   * Publish one more track, labelled with its `source` ('camera', 'microphone', 'screen'):
   * the room's track list carries the label so subscribers can lay tracks out (a screen
   * share next to the camera). A second call with the same source replaces that track.
   * Without simulcast unless asked. Survives reconnects like `publish`.
   */
  async publishTrack(track, {
    source = track.kind === 'video' ? 'camera' : 'microphone',
    stream = new MediaStream([track]), simulcast = false, encodings = SIMULCAST_ENCODINGS,
  } = {}) {
    const old = this._extra.get(source);
    if (old?.transceiver) { try { old.transceiver.stop(); } catch { /* already stopped */ } }
    const entry = { track, stream, simulcast, encodings: encodings.map((e) => ({ ...e })), transceiver: null };
    this._extra.set(source, entry);
    if (this.pc) {
      this._addExtra(entry);
      await this._negotiate();
    }
  }

  /** Stop publishing the track of `source` (the node removes it from the room). */
  async unpublishTrack(source) {
    const entry = this._extra.get(source);
    if (!entry) return;
    this._extra.delete(source);
    if (entry.transceiver) { try { entry.transceiver.stop(); } catch { /* already stopped */ } }
    if (this.pc) await this._negotiate();
  }

  /** {source: track_id} of the tracks published with publishTrack (once negotiated). */
  get publishedSources() {
    const out = {};
    for (const [source, e] of this._extra) {
      const id = e.transceiver?.mid ? this.published[e.transceiver.mid] : undefined;
      if (id) out[source] = id;
    }
    return out;
  }

  _addExtra(entry) {
    const init = { direction: 'sendonly', streams: [entry.stream] };
    if (entry.simulcast && entry.track.kind === 'video') init.sendEncodings = entry.encodings.map((e) => ({ ...e }));
    entry.transceiver = this.pc.addTransceiver(entry.track, init);
  }

  get localStream() {
    return this._local?.stream ?? null;
  }

  get videoSender() {
    return this._videoSender;
  }

  _addLocalTransceivers() {
    for (const entry of this._extra.values()) this._addExtra(entry);
    if (this._local) this._addMainTransceivers();
  }

  _addMainTransceivers() {
    const { stream, simulcast, encodings } = this._local;
    for (const track of stream.getVideoTracks()) {
      const init = { direction: 'sendonly', streams: [stream] };
      if (simulcast) init.sendEncodings = encodings.map((e) => ({ ...e }));
      const tr = this.pc.addTransceiver(track, init);
      this._videoSender = tr.sender;
    }
    for (const track of stream.getAudioTracks()) {
      this.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    }
  }

  /** The track id the node gave our published video, or null. */
  get publishedVideoTrackId() {
    if (!this.pc || !this._videoSender) return null;
    const tr = this.pc.getTransceivers().find((t) => t.sender === this._videoSender);
    return tr && tr.mid ? this.published[tr.mid] ?? null : null;
  }

  async _onLayers(msg) {
    this._emit('layers', msg);
    if (msg.track_id !== this.publishedVideoTrackId || !this._videoSender) return;
    this.layers = msg;
    const sender = this._videoSender;
    const params = sender.getParameters();
    let changed = false;
    for (const enc of params.encodings || []) {
      if (!enc.rid) continue;
      const active = !(msg.paused || []).includes(enc.rid);
      if (enc.active !== active) { enc.active = active; changed = true; }
    }
    if (changed) {
      try { await sender.setParameters(params); } catch (err) {
        this._emit('error', { code: 'dynacast', reason: String(err?.message || err) });
      }
    }
  }

  // --- subscribing ----------------------------------------------------------------------------

  /** Viewer layer preference: {layer: 'low'|'mid'|'high'} and/or {max_width, max_height}. */
  async setLayer(pref) {
    this._layerPref = pref;
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.session) return null;
    if (![...this._subs.values()].some((s) => s.info.kind === 'video')) return null;
    const reply = await this._request({ type: 'layer', ...pref });
    return reply.applied;
  }

  /** Subscribed tracks: [{track_id, info, track}]. */
  get subscriptions() {
    return [...this._subs].map(([track_id, s]) => ({ track_id, info: s.info, track: s.track }));
  }

  // --- the commerce datachannel ---------------------------------------------------------------

  /** Send one commerce message (`v` is added); false if the channel is not open. */
  send(msg) {
    const ch = this.channel;
    if (!ch || ch.readyState !== 'open') return false;
    ch.send(JSON.stringify({ v: PROTOCOL_VERSION, ...msg }));
    return true;
  }

  _onChannel(channel, data) {
    if (typeof data !== 'string') return;
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (!msg || typeof msg.type !== 'string' || msg.type === 'clock.pong') return; // ClockSync's
    if (msg.type === 'hello') {
      this._emit('hello', msg);
      return;
    }
    const result = this.commerce.apply(msg);
    if (msg.type === 'snapshot') {
      this._clearGap();
      if (channel !== this.channel) this._useChannel(channel); // a resync channel took over
      this._resendOrders();
    } else if (result.gap) {
      this._onGap(msg);
    } else if (msg.type === 'stock.updated' && this._gap && msg.seq > this._gap.missingMax) {
      this._clearGap(); // the skipped seqs were superseded stock updates
    }
    if (msg.type === 'order.result') this._orderResult(msg);
    else if (msg.type === 'cart.updated') this._cartWaiters.shift()?.resolve(msg);
    else if (msg.type === 'error') this._commerceError(msg);
    this._emit('message', msg);
  }

  _onGap(msg) {
    const missingMax = msg.seq - 1;
    if (msg.type === 'stock.updated') return; // coalesced: this is the newer value
    if (this._gap) { this._gap.missingMax = Math.max(this._gap.missingMax, missingMax); return; }
    this._gap = { missingMax, timer: null };
    this._gap.timer = this._timer(() => {
      if (this._gap) this.requestSnapshot('seq gap');
    }, this.options.gapGraceMs);
  }

  _clearGap() {
    if (this._gap?.timer) clearTimeout(this._gap.timer);
    this._gap = null;
  }

  /**
   * Ask for a fresh snapshot: open another commerce channel on the same connection (the node
   * greets every channel with one); it replaces the current channel once its snapshot came.
   */
  requestSnapshot(reason = 'requested') {
    this._clearGap();
    if (!this.pc || this.pc.connectionState === 'closed') return false;
    this._emit('resync', { reason });
    this._openChannel(this._generation);
    return true;
  }

  _commerceError(msg) {
    this._emit('error', { code: msg.code, reason: msg.reason, commerce: true });
    if (['invalid', 'unknown_product', 'not_in_cart', 'cart_full', 'quantity_limit'].includes(msg.code)) {
      this._cartWaiters.shift()?.reject(new RoomError(msg.code, msg.reason));
    }
    if (msg.code === 'order_failed') {
      // The store failed; the outcome is unknown: retry the same attempt with the same key.
      for (const [key, order] of this._orders) {
        if ((msg.reason || '').includes(key)) {
          this._timer(() => this._sendOrder(order), 500);
        }
      }
    }
  }

  /** cart.add; resolves with the `cart.updated` reply. */
  addToCart(product_id, quantity = 1) {
    return this._cart({ type: 'cart.add', product_id, quantity });
  }

  removeFromCart(product_id, quantity = 1) {
    return this._cart({ type: 'cart.remove', product_id, quantity });
  }

  _cart(msg) {
    return new Promise((resolve, reject) => {
      if (!this.send(msg)) { reject(new Error('commerce channel not open')); return; }
      this._cartWaiters.push({ resolve, reject });
    });
  }

  /**
   * order.place with an idempotency key (one per purchase attempt, crypto.randomUUID() by
   * default). Resolves with the `order.result`; re-sent with the same key after a reconnect
   * or an `order_failed` error, so the attempt is decided exactly once.
   */
  placeOrder({ sale_id, product_id, quantity = 1, idempotency_key = crypto.randomUUID() }) {
    const existing = this._orders.get(idempotency_key);
    if (existing) return existing.promise;
    const msg = { type: 'order.place', idempotency_key, sale_id, product_id, quantity };
    const order = { msg, attempts: 0 };
    order.promise = new Promise((resolve, reject) => {
      order.resolve = resolve;
      order.reject = reject;
    });
    order.timer = setTimeout(() => {
      this._orders.delete(idempotency_key);
      order.reject(new RoomError('timeout', 'no order result in time'));
    }, this.options.orderTimeoutMs);
    this._orders.set(idempotency_key, order);
    this._sendOrder(order);
    return order.promise;
  }

  _sendOrder(order) {
    if (this.send(order.msg)) order.attempts += 1; // else: re-sent after the next snapshot
  }

  _resendOrders() {
    for (const order of this._orders.values()) this._sendOrder(order);
  }

  _orderResult(msg) {
    const order = this._orders.get(msg.idempotency_key);
    if (!order) return;
    this._orders.delete(msg.idempotency_key);
    clearTimeout(order.timer);
    order.resolve(msg);
  }

  // Host commands over the datachannel (need the admin grant; the answer is the room message).
  pinCard(product_id, pinned_at_rtp) {
    const msg = { type: 'admin.pin_card', product_id };
    if (pinned_at_rtp != null) msg.pinned_at_rtp = pinned_at_rtp;
    return this.send(msg);
  }

  scheduleSale({ product_id, starts_at, ends_at, sale_id }) {
    const msg = { type: 'admin.schedule_sale', product_id, starts_at, ends_at };
    if (sale_id) msg.sale_id = sale_id;
    return this.send(msg);
  }

  startSale(sale_id) {
    return this.send({ type: 'admin.start_sale', sale_id });
  }

  stopSale(sale_id) {
    return this.send({ type: 'admin.stop_sale', sale_id });
  }

  // --- time -----------------------------------------------------------------------------------

  /** Server Unix time in SECONDS now (null before the first clock sample). */
  serverNow() {
    const ms = this.clock.serverNow();
    return ms === null ? null : ms / 1000;
  }

  /** Milliseconds until server time `serverSeconds` (negative once passed), or null. */
  msUntil(serverSeconds) {
    const local = this.clock.localTimeOf(serverSeconds);
    return local === null ? null : local - this.clock.now();
  }
}
