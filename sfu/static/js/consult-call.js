// Shared pieces of the consultation pages (/consult, /advisor): the queue API and one 1:1
// call on RoomClient. The queue API is /api/consult/{queue}/... (docs/consultation.md); the
// call room and its token come from POST .../requests/{id}/token.

import { RoomClient } from './client.js';

export class ConsultApi {
  constructor(queue, token) {
    this.queue = queue;
    this.token = token;
  }

  async call(method, path, body) {
    const init = { method, headers: { Authorization: `Bearer ${this.token}` }, cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(`/api/consult/${encodeURIComponent(this.queue)}${path}`, init);
    const text = await resp.text();
    if (!resp.ok) throw new Error(text.trim() || `HTTP ${resp.status}`);
    return text ? JSON.parse(text) : null;
  }

  get(path) { return this.call('GET', path); }
  post(path, body) { return this.call('POST', path, body ?? {}); }
}

/**
 * One consultation call: joins the call room, publishes the local camera/mic (each its own
 * labelled track, so the camera can be switched off and on without touching the mic),
 * subscribes to the other party, and keeps `remote` (track_id -> {kind, source, track,
 * stream}) for the page's layout. Events: `change` (remote tracks or their labels changed),
 * `state` (the RoomClient's).
 */
export class ConsultCall extends EventTarget {
  constructor(api, requestId) {
    super();
    this.api = api;
    this.requestId = requestId;
    this.client = null;
    this.room = null;
    this.remote = new Map();
    this.localStream = new MediaStream();
  }

  async join() {
    const getToken = async () => {
      const t = await this.api.post(`/requests/${this.requestId}/token`);
      this.room = t.room;
      return t.token;
    };
    const client = new RoomClient({ getToken, subscribe: true, simulcast: false });
    this.client = client;
    client.addEventListener('track', (e) => {
      const d = e.detail;
      this.remote.set(d.track_id, { kind: d.kind, source: this._source(d.track_id, d.kind),
        track: d.track, stream: new MediaStream([d.track]), transceiver: d.transceiver });
      this._changed();
    });
    client.addEventListener('trackended', (e) => {
      if (this.remote.delete(e.detail.track_id)) this._changed();
    });
    client.addEventListener('tracks', () => {
      for (const [id, r] of this.remote) r.source = this._source(id, r.kind);
      this._changed();
    });
    client.addEventListener('state', (e) => this.dispatchEvent(new CustomEvent('state', { detail: e.detail })));
    await client.connect();
    return client;
  }

  _source(trackId, kind) {
    const info = (this.client?.tracks || []).find((t) => t.track_id === trackId);
    return info?.source ?? (kind === 'video' ? 'camera' : 'microphone');
  }

  _changed() {
    this.dispatchEvent(new CustomEvent('change'));
  }

  /** Publish (or replace) a local track under `source`. */
  async publish(track, source) {
    for (const t of this.localStream.getTracks()) {
      if (t.kind === track.kind && t._consultSource === source) this.localStream.removeTrack(t);
    }
    track._consultSource = source;
    if (source !== 'screen') this.localStream.addTrack(track);
    await this.client.publishTrack(track, { source, stream: source === 'screen' ? new MediaStream([track]) : this.localStream });
  }

  async unpublish(source) {
    for (const t of this.localStream.getTracks()) {
      if (t._consultSource === source) { this.localStream.removeTrack(t); t.stop(); }
    }
    await this.client.unpublishTrack(source);
  }

  /** The remote track shown as the main picture / as the shared screen. */
  remoteVideo(source) {
    for (const r of this.remote.values()) if (r.kind === 'video' && r.source === source) return r;
    return null;
  }

  /** Per remote track: decoded frames and size; per local source: bytes sent. */
  async stats() {
    const pc = this.client?.pc;
    if (!pc) return { remote: [], sent: {} };
    const remote = [];
    for (const [id, r] of this.remote) {
      let framesDecoded = 0; let width = 0; let height = 0; let bytes = 0; let energy = 0;
      try {
        const report = await r.transceiver.receiver.getStats();
        report.forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          framesDecoded = s.framesDecoded ?? framesDecoded;
          width = s.frameWidth ?? width;
          height = s.frameHeight ?? height;
          bytes = s.bytesReceived ?? bytes;
          energy = s.totalAudioEnergy ?? energy;
        });
      } catch { /* transceiver stopped */ }
      remote.push({ track_id: id, kind: r.kind, source: r.source, framesDecoded, width, height,
        bytesReceived: bytes, audioEnergy: energy });
    }
    const sent = {};
    for (const t of pc.getTransceivers()) {
      const track = t.sender.track;
      if (!track || t.currentDirection === 'stopped' || t.direction === 'stopped') continue;
      let bytes = 0;
      try {
        (await t.sender.getStats()).forEach((s) => { if (s.type === 'outbound-rtp') bytes += s.bytesSent || 0; });
      } catch { /* stopped */ }
      const key = `${track.kind}:${track._consultSource ?? track.kind}`;
      sent[key] = (sent[key] || 0) + bytes;
    }
    return { remote, sent };
  }

  close() {
    for (const t of this.localStream.getTracks()) t.stop();
    if (this.client) this.client.close();
    this.remote.clear();
  }
}

export function pageIdentity(prefix) {
  const q = new URLSearchParams(location.search).get('identity');
  if (q) return q;
  const key = `consult-identity:${prefix}`;
  let id = null;
  try { id = sessionStorage.getItem(key); } catch { /* storage off */ }
  if (!id) {
    id = `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
    try { sessionStorage.setItem(key, id); } catch { /* storage off */ }
  }
  return id;
}

export function show(video, stream) {
  if (video.srcObject !== stream) video.srcObject = stream;
}
