// Cluster routing for RoomClient (docs/client.md#clusters).
//
// Which node the next room socket goes to: the node a `redirect` names, and after a failure
// the other nodes the last `joined` listed, with `exclude=<failed node id>` so the directory
// never sends the client back to a node that just failed (its registry record lives up to
// 3 s longer). No I/O and no timers: the clock is passed in, so node:test covers it.

export const MAX_REDIRECTS = 3;
export const EXCLUDE_TTL_MS = 10000; // how long a failed node is avoided

/** ws(s)://host/ws for an http(s) base, with the cluster hints. */
export function socketUrl(base, { exclude = [], hops = 0 } = {}) {
  const u = new URL('/ws', base);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  if (exclude.length) u.searchParams.set('exclude', [...exclude].sort().join(','));
  if (hops) u.searchParams.set('hops', String(hops));
  return u.toString();
}

function origin(url) {
  try { return new URL(url).origin; } catch { return url; }
}

export class NodeRoute {
  /** `home`: the node URL the application gave (the page's origin by default). */
  constructor(home, { now = () => Date.now(), excludeTtlMs = EXCLUDE_TTL_MS } = {}) {
    this.home = origin(home);
    this.base = this.home; // the node the current (or next) socket goes to
    this.node = null; // id of the node joined, when the node is in a cluster
    this.nodes = [this.home]; // known node URLs, from the last `joined`
    this.redirects = 0; // redirects followed for the socket being opened
    this._now = now;
    this._ttl = excludeTtlMs;
    this._failed = new Map(); // node id or URL -> {url, at}
  }

  /** The socket URL of the first connection. */
  first() {
    this.redirects = 0;
    return socketUrl(this.base, { exclude: this.excluded() });
  }

  /** Apply a `redirect` answer; returns the socket URL to open, or null past MAX_REDIRECTS. */
  redirect(msg) {
    this.redirects += 1;
    if (this.redirects > MAX_REDIRECTS || typeof msg.url !== 'string') return null;
    if (typeof msg.node_url === 'string') this.base = origin(msg.node_url);
    return msg.url;
  }

  /** Apply a `joined` answer. */
  joined(msg) {
    this.redirects = 0;
    this.node = typeof msg.node === 'string' ? msg.node : null;
    if (Array.isArray(msg.nodes) && msg.nodes.length) {
      this.nodes = [...new Set([...msg.nodes.map(origin), this.home])];
    }
    this._failed.delete(this.node ?? this.base);
  }

  /** The current node failed (socket lost, ICE failed, drain): avoid it for a while. */
  failed() {
    this._failed.set(this.node ?? this.base, { url: this.base, at: this._now() });
    this.node = null;
  }

  _recent() {
    const now = this._now();
    for (const [key, f] of this._failed) if (now - f.at >= this._ttl) this._failed.delete(key);
    return this._failed;
  }

  /** Node ids to send as `exclude` (URL keys of nodes that never joined are not ids). */
  excluded() {
    return [...this._recent().keys()].filter((k) => !k.includes('://'));
  }

  /** The socket URL for reconnect attempt `attempt` (0-based): nodes that did not fail
   *  recently in turn, starting after the failed one; every node again if all failed. */
  next(attempt) {
    const bad = new Set([...this._recent().values()].map((f) => f.url));
    const good = this.nodes.filter((u) => !bad.has(u));
    const order = good.length ? good : this.nodes;
    this.base = order[attempt % order.length];
    this.redirects = 0;
    return socketUrl(this.base, { exclude: this.excluded() });
  }
}
