// Commerce state of one room as a client sees it, rebuilt from the node's datachannel
// messages (docs/protocol.md, "Commerce").
//
// Rules:
// - a `snapshot` is a full reset (card, sale, stock, cart) and sets `seq`;
// - a room message (`product.card`, `sale.*`, `stock.updated`) is applied only if its `seq`
//   is greater than the last applied one (duplicates after a channel swap are ignored);
// - a room message whose `seq` is more than one past the last applied is still applied (it is
//   newer state), but it is a *gap*: `apply()` reports it so the caller can await or request
//   a fresh snapshot. The node only skips seqs of superseded `stock.updated` messages
//   (coalescing) or sends a snapshot first (overflow); anything else means lost messages;
// - direct replies (`cart.updated`, `order.result`, `error`) carry no seq and always apply.
//
// No DOM, no network: pages and RoomClient feed it messages and listen for 'change'.

export const ROOM_TYPES = Object.freeze([
  'product.card', 'sale.scheduled', 'sale.started', 'sale.ended', 'stock.updated',
]);

/** State of a sale at server time `serverSeconds`: scheduled, open or ended. */
export function saleState(sale, serverSeconds) {
  if (!sale) return null;
  if (serverSeconds === null || serverSeconds === undefined) return sale.state ?? null;
  if (serverSeconds < sale.starts_at) return 'scheduled';
  if (serverSeconds < sale.ends_at) return 'open';
  return 'ended';
}

/** "1 299,00 €"-style price from integer minor units. */
export function formatPrice(cents, currency, locale) {
  try {
    return new Intl.NumberFormat(locale, { style: 'currency', currency }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

export class CommerceState extends EventTarget {
  constructor() {
    super();
    this.reset();
  }

  reset() {
    this.seq = null; // last applied room seq; null before the first snapshot
    this.card = null; // the product.card message (pinned_at_rtp in *this* viewer's timeline)
    this.sale = null; // {sale_id, product_id, starts_at, ends_at, state?}
    this.stock = new Map(); // product_id -> stock
    this.cart = []; // [{product_id, quantity}]
    this.snapshots = 0;
    this.gaps = 0;
    this.lastGap = null; // {expected, got, type}
  }

  /** Stock of the product that matters now: the sale's, else the card's. */
  get currentStock() {
    const id = this.sale?.product_id ?? this.card?.product_id;
    if (id === undefined) return null;
    return this.stock.has(id) ? this.stock.get(id) : null;
  }

  get cartCount() {
    return this.cart.reduce((n, line) => n + line.quantity, 0);
  }

  /** Plain-object view (tests, debugging, re-rendering). */
  toJSON() {
    return {
      seq: this.seq,
      card: this.card && { product_id: this.card.product_id, name: this.card.name,
        price_cents: this.card.price_cents, currency: this.card.currency },
      sale: this.sale && { sale_id: this.sale.sale_id, product_id: this.sale.product_id,
        starts_at: this.sale.starts_at, ends_at: this.sale.ends_at },
      stock: this.currentStock,
      cart: this.cart.map((l) => ({ ...l })),
    };
  }

  /**
   * Apply one decoded message. Returns {applied, gap, stale}:
   * applied - the state changed (or a reply was taken); gap - seqs were skipped before this
   * room message; stale - a room message at or below the last seq, ignored.
   */
  apply(msg) {
    const result = { applied: false, gap: false, stale: false };
    if (!msg || typeof msg.type !== 'string') return result;
    const type = msg.type;
    if (type === 'snapshot') {
      this._snapshot(msg);
      result.applied = true;
    } else if (ROOM_TYPES.includes(type)) {
      if (typeof msg.seq === 'number') {
        if (this.seq !== null && msg.seq <= this.seq) {
          result.stale = true;
          return result;
        }
        if (this.seq !== null && msg.seq > this.seq + 1) {
          result.gap = true;
          this.gaps += 1;
          this.lastGap = { expected: this.seq + 1, got: msg.seq, type };
        }
        this.seq = msg.seq;
      }
      this._room(msg);
      result.applied = true;
    } else if (type === 'cart.updated') {
      this.cart = (msg.lines || []).map((l) => ({ product_id: l.product_id, quantity: l.quantity }));
      result.applied = true;
    } else if (type === 'order.result') {
      if (typeof msg.remaining === 'number' && msg.status !== 'rate_limited') {
        // Only a newer (lower) level: results can overtake a stock.updated.
        const pid = this._orderProduct(msg);
        if (pid !== null) {
          const old = this.stock.get(pid);
          if (old === undefined || msg.remaining < old) this.stock.set(pid, msg.remaining);
        }
      }
      result.applied = true;
    }
    if (result.applied) {
      this.dispatchEvent(new CustomEvent('change', { detail: { message: msg, ...result } }));
    }
    return result;
  }

  _orderProduct(msg) {
    return msg.product_id ?? this.sale?.product_id ?? this.card?.product_id ?? null;
  }

  _snapshot(msg) {
    this.seq = typeof msg.seq === 'number' ? msg.seq : null;
    this.card = msg.card ?? null;
    this.sale = msg.sale ?? null;
    this.stock = new Map();
    if (this.card) this.stock.set(this.card.product_id, this.card.stock);
    const pid = this.sale?.product_id ?? this.card?.product_id;
    if (pid !== undefined && typeof msg.stock === 'number') this.stock.set(pid, msg.stock);
    this.cart = (msg.cart || []).map((l) => ({ product_id: l.product_id, quantity: l.quantity }));
    this.snapshots += 1;
  }

  _room(msg) {
    switch (msg.type) {
      case 'product.card':
        this.card = msg;
        this.stock.set(msg.product_id, msg.stock);
        break;
      case 'sale.scheduled':
      case 'sale.started':
      case 'sale.ended': {
        const state = { 'sale.scheduled': 'scheduled', 'sale.started': 'open',
          'sale.ended': 'ended' }[msg.type];
        // A sale.* for another sale than the shown one replaces it only if it is not ended
        // (the node announces changes to any sale; the active one is what viewers see).
        if (!this.sale || this.sale.sale_id === msg.sale_id || state !== 'ended') {
          this.sale = { sale_id: msg.sale_id, product_id: msg.product_id,
            starts_at: msg.starts_at, ends_at: msg.ends_at, state };
        }
        this.stock.set(msg.product_id, msg.stock);
        break;
      }
      case 'stock.updated':
        this.stock.set(msg.product_id, msg.stock);
        if (this.card && this.card.product_id === msg.product_id) {
          this.card = { ...this.card, stock: msg.stock };
        }
        break;
      default:
        break;
    }
  }
}
