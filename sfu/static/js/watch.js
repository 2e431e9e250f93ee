// The viewer page, /watch/{room}: the host's video with the pinned product card on the frame it
// was pinned at, the sale countdown on the server clock, add to cart, buy, connection quality.
//
// For tests and debugging the page exposes `window.watch` (see `snapshotForTests`) and
// `window.countdownZeroAt`: the server time (Unix seconds, via ClockSync) at which this page's
// countdown to the sale's opening reached zero.

import { RoomClient } from './client.js';
import { FrameCardScheduler } from './card-sync.js';
import { formatPrice, saleState } from './commerce.js';
import { formatBitrate, InboundSampler } from './stats.js';
import { pageToken } from './token.js';

const $ = (id) => document.getElementById(id);
const room = decodeURIComponent(location.pathname.replace(/\/+$/, '').split('/').pop());
const video = $('video');
const ui = {
  status: $('status'), card: $('card'), cardName: $('card-name'), cardPrice: $('card-price'),
  cardStock: $('card-stock'), cardImage: $('card-image'), countdown: $('countdown'),
  announce: $('sale-announce'), stock: $('stock'), quantity: $('quantity'),
  add: $('add-to-cart'), buy: $('buy'), result: $('result'), cart: $('cart'),
  quality: $('quality'), unmute: $('unmute'), live: $('live-badge'),
};
$('room-name').textContent = room;
document.title = `${room} · Live shopping`;

window.countdownZeroAt = null;
let busy = false; // an order or cart request is in flight
const page = {
  status: 'init', cardShown: null, cardVia: null, lastOrder: null, inbound: null,
  countdownZero: null, error: null, orders: 0,
};

function setStatus(state, text) {
  page.status = state;
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

// --- identity and token --------------------------------------------------------------------

function viewerIdentity() {
  const key = `watch-identity:${room}`;
  let id = null;
  try { id = sessionStorage.getItem(key); } catch { /* storage off */ }
  if (!id) {
    id = `viewer-${crypto.randomUUID().slice(0, 8)}`;
    try { sessionStorage.setItem(key, id); } catch { /* storage off */ }
  }
  return id;
}

const identity = viewerIdentity();
const getToken = async () => (await pageToken({ room, role: 'viewer', identity })).token;

// --- the client ----------------------------------------------------------------------------

const client = new RoomClient({ getToken, subscribe: true });
window.client = client;

client.addEventListener('state', (e) => {
  const { state, reason } = e.detail;
  const text = {
    connecting: 'Connecting…', joined: 'Joined, connecting media…', connected: 'Connected',
    reconnecting: 'Connection lost, reconnecting…', closed: `Disconnected${reason ? `: ${reason}` : ''}`,
  }[state] ?? state;
  setStatus(state, text);
});

client.addEventListener('track', (e) => {
  const { kind, stream } = e.detail;
  if (kind === 'video' || !video.srcObject) {
    video.srcObject = stream;
    video.play().catch(() => { /* autoplay: muted, so it normally plays */ });
  }
  ui.live.hidden = false;
});
client.addEventListener('tracks', (e) => {
  ui.live.hidden = !e.detail.tracks.some((t) => t.kind === 'video');
});

// --- card ----------------------------------------------------------------------------------

const cards = new FrameCardScheduler(video, (card, how) => {
  page.cardShown = card ? card.product_id : null;
  page.cardVia = how.via;
  page.cardFrameRtp = how.rtpTimestamp;
  page.cardShownAt = card ? client.serverNow() : null;
  renderCard();
});

function renderCard() {
  const card = cards.shown;
  if (!card) { ui.card.hidden = true; return; }
  ui.cardName.textContent = card.name;
  ui.cardPrice.textContent = formatPrice(card.price_cents, card.currency);
  const stock = client.commerce.stock.get(card.product_id);
  ui.cardStock.textContent = stock === undefined ? '' : stock === 0 ? 'Sold out' : `${stock} left`;
  if (card.image_url) { ui.cardImage.src = card.image_url; ui.cardImage.hidden = false; } else {
    ui.cardImage.hidden = true;
  }
  ui.card.hidden = false;
}

// --- commerce state ------------------------------------------------------------------------

let lastCardKey = null;
client.commerce.addEventListener('change', () => {
  const c = client.commerce;
  const key = c.card ? `${c.card.product_id}@${c.card.pinned_at}` : null;
  if (key !== lastCardKey) {
    lastCardKey = key;
    cards.show(c.card);
  }
  render();
});

function productName(id) {
  const c = client.commerce.card;
  return c && c.product_id === id ? c.name : id;
}

function render() {
  const c = client.commerce;
  const stock = c.currentStock;
  ui.stock.textContent = stock === null ? '–' : String(stock);
  renderCard();
  ui.cart.textContent = c.cart.length
    ? `In your cart: ${c.cart.map((l) => `${l.quantity} × ${productName(l.product_id)}`).join(', ')}`
    : 'Cart is empty';
  const now = client.serverNow();
  const state = saleState(c.sale, now);
  ui.add.disabled = !c.card || busy;
  ui.buy.disabled = busy || state !== 'open' || stock === 0;
  renderCountdown();
}

// --- countdown on the server clock ---------------------------------------------------------

const armed = new Set();
let lastAnnounced = null;

function fmtSeconds(s) {
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  if (s >= 60) return `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
  return `${s.toFixed(1)} s`;
}

function announce(text) {
  if (text !== lastAnnounced) {
    lastAnnounced = text;
    ui.announce.textContent = text;
  }
}

function renderCountdown() {
  const sale = client.commerce.sale;
  const now = client.serverNow();
  if (!sale) { ui.countdown.textContent = 'No sale yet'; return; }
  if (now === null) { ui.countdown.textContent = 'Syncing clock…'; return; }
  const state = saleState(sale, now);
  if (state === 'scheduled') {
    const left = sale.starts_at - now;
    ui.countdown.textContent = `Sale opens in ${fmtSeconds(left)}`;
    const whole = Math.ceil(left);
    if (whole <= 5 || whole % 10 === 0) announce(`Sale opens in ${whole} second${whole === 1 ? '' : 's'}`);
    arm(sale, 'open', sale.starts_at);
  } else if (state === 'open') {
    ui.countdown.textContent = `Sale open · ends in ${fmtSeconds(sale.ends_at - now)}`;
    announce('The sale is open');
    arm(sale, 'end', sale.ends_at);
  } else {
    ui.countdown.textContent = 'Sale ended';
    announce('The sale has ended');
  }
}

/** A precise timer for the instant the countdown reaches zero (the 100 ms tick is coarse). */
function arm(sale, phase, at) {
  const key = `${sale.sale_id}:${phase}:${at}`;
  if (armed.has(key)) return;
  const ms = client.msUntil(at);
  if (ms === null || ms > 3000) return; // armed on a later tick, with a fresher clock estimate
  armed.add(key);
  // Wake a little early and spin the last milliseconds: a timer that fires late (a busy main
  // thread) would make this page's countdown end after the others.
  // `wokeLateMs` (how late the last timer ran against the local instant it was set for) and
  // `spinGapMs` are stalls of this page's main thread, not errors of the clock estimate.
  const EARLY_MS = 25;
  let due = 0;
  const schedule = (delay) => {
    due = client.clock.now() + delay;
    setTimeout(fire, delay);
  };
  const fire = () => {
    const wokeLateMs = Math.max(0, client.clock.now() - due);
    let left = client.msUntil(at);
    if (left > EARLY_MS) { schedule(left - EARLY_MS); return; }
    // The spin's longest gap between two clock reads: the OS preempting this page mid-spin.
    let spinGapMs = 0;
    let read = client.clock.now();
    while (left > 0 && left <= EARLY_MS + 5) {
      left = client.msUntil(at);
      const t = client.clock.now();
      spinGapMs = Math.max(spinGapMs, t - read);
      read = t;
    }
    const zero = client.serverNow();
    if (phase === 'open') {
      window.countdownZeroAt = zero;
      page.countdownZero = { sale_id: sale.sale_id, at: zero, starts_at: at,
        late_ms: -left, woke_late_ms: wokeLateMs, spin_gap_ms: spinGapMs,
        offset_ms: client.clock.offset, uncertainty_ms: client.clock.uncertainty };
    }
    render();
  };
  schedule(Math.max(0, ms - EARLY_MS));
}

setInterval(renderCountdown, 100);

// --- buying --------------------------------------------------------------------------------

function showResult(text, ok) {
  ui.result.textContent = text;
  ui.result.className = `result ${ok ? 'ok' : 'bad'}`;
}

const ORDER_TEXT = {
  sold_out: 'Sold out: no order was placed.',
  sale_not_open: 'The sale has not opened yet: no order was placed.',
  sale_ended: 'The sale has ended: no order was placed.',
  invalid: 'This sale is not available: no order was placed.',
  rate_limited: 'Too many attempts; please try again in a moment.',
};

ui.buy.addEventListener('click', async () => {
  const c = client.commerce;
  if (!c.sale) return;
  const quantity = Number(ui.quantity.value);
  const name = productName(c.sale.product_id);
  busy = true;
  render();
  showResult('Placing your order…', true);
  try {
    // One key per purchase attempt; the client re-sends it unchanged after a reconnect.
    const result = await client.placeOrder({
      sale_id: c.sale.sale_id, product_id: c.sale.product_id, quantity,
      idempotency_key: crypto.randomUUID(),
    });
    page.lastOrder = result;
    if (result.status === 'confirmed') {
      page.orders += 1;
      showResult(`Order confirmed: ${result.quantity} × ${name} (order ${result.order_id}).`, true);
    } else {
      showResult(ORDER_TEXT[result.status] ?? `Order not placed (${result.status}).`, false);
    }
  } catch (err) {
    page.lastOrder = { status: 'error', error: String(err.message || err) };
    showResult(`Order not confirmed: ${err.message || err}. Please try again.`, false);
  } finally {
    busy = false;
    render();
  }
});

ui.add.addEventListener('click', async () => {
  const card = client.commerce.card;
  if (!card) return;
  busy = true;
  render();
  try {
    await client.addToCart(card.product_id, Number(ui.quantity.value));
    showResult(`Added ${ui.quantity.value} × ${card.name} to your cart.`, true);
  } catch (err) {
    showResult(`Not added to the cart: ${err.reason || err.message || err}.`, false);
  } finally {
    busy = false;
    render();
  }
});

ui.unmute.addEventListener('click', () => {
  video.muted = !video.muted;
  ui.unmute.setAttribute('aria-pressed', String(!video.muted));
  ui.unmute.textContent = video.muted ? 'Unmute' : 'Mute';
  if (!video.muted) video.play().catch(() => {});
});

// --- quality -------------------------------------------------------------------------------

const inbound = new InboundSampler();
setInterval(async () => {
  if (!client.pc) return;
  const s = await inbound.sample(client.pc);
  page.inbound = s;
  ui.quality.textContent = s.framesDecoded > 0
    ? `${s.frameWidth}×${s.frameHeight} · ${formatBitrate(s.bitrate)} · ${s.lossPercent.toFixed(1)} % loss`
    : 'Waiting for video…';
}, 1000);

// Tell the node how big the video is drawn, so it sends the layer that fits (simulcast).
// Opt-in (?fit=1): with the node as of this writing, a size cap keeps a layer whose frame size
// the node has not seen yet paused for good (see docs/client.md, "Known issues").
let sizeTimer = null;
if (new URLSearchParams(location.search).get('fit') === '1') new ResizeObserver(() => {
  clearTimeout(sizeTimer);
  sizeTimer = setTimeout(() => {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(video.clientWidth * dpr));
    const h = Math.max(1, Math.round(video.clientHeight * dpr));
    client.setLayer({ max_width: w, max_height: h }).catch(() => {});
  }, 300);
}).observe(video);

// --- test hooks ----------------------------------------------------------------------------

window.getInboundStats = async () => {
  const s = client.pc ? await new InboundSampler().sample(client.pc) : null;
  return { ...(s || {}), videoElement: { width: video.videoWidth, height: video.videoHeight,
    currentTime: video.currentTime } };
};
window.watch = {
  client,
  page,
  /** Everything a test compares across a reload. */
  state() {
    const c = client.commerce;
    return {
      status: page.status, identity: client.participant ?? identity, room, seq: c.seq,
      snapshots: c.snapshots,
      commerce: c.toJSON(), cardShown: page.cardShown, cardVia: page.cardVia,
      cardVisible: !ui.card.hidden, cardText: ui.card.hidden ? null : ui.card.innerText,
      stockText: ui.stock.textContent, countdown: ui.countdown.textContent,
      saleState: saleState(c.sale, client.serverNow()), result: ui.result.textContent,
      cartText: ui.cart.textContent, lastOrder: page.lastOrder, countdownZero: page.countdownZero,
      clock: { synced: client.clock.synced, offset: client.clock.offset,
        uncertainty: client.clock.uncertainty },
      buyEnabled: !ui.buy.disabled, reconnects: client.reconnects,
    };
  },
};

// --- start ---------------------------------------------------------------------------------

setStatus('connecting', 'Connecting…');
client.connect().catch((err) => {
  page.error = String(err.message || err);
  setStatus('error', page.error);
});
