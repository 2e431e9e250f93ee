// The host studio, /studio?room=R: publish camera + mic (three simulcast layers), create
// products through the operator API, pin a card, schedule / open / end a timed sale, and watch
// live counters (viewers, carts, orders, stock) and the uplink per simulcast layer.
//
// Query: room (default "demo"), identity (default "host"), width/height of the camera
// (default 1280x720), autostart=1 to go live at once. Token: #token= / ?token= (a token with
// publish, subscribe and admin), else the development endpoint.
// Exposes `window.studio` for tests and debugging.

import { RoomClient } from './client.js';
import { formatPrice, saleState } from './commerce.js';
import { formatBitrate, OutboundSampler } from './stats.js';
import { pageToken } from './token.js';

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const room = query.get('room') || 'demo';
const identity = query.get('identity') || 'host';
const ui = {
  status: $('status'), live: $('live-badge'), preview: $('preview'), golive: $('golive'),
  stop: $('stop'), uplink: $('uplink'), layers: $('layers'), dynacast: $('dynacast'),
  viewers: $('viewers'), carts: $('carts'), orders: $('orders'), stock: $('stock'),
  countdown: $('countdown'), productForm: $('product-form'), product: $('product'), pin: $('pin'),
  saleForm: $('sale-form'), schedule: $('schedule'), startSale: $('start-sale'),
  stopSale: $('stop-sale'), opensIn: $('opens-in'), duration: $('duration'), result: $('result'),
  card: $('card'), cardName: $('card-name'), cardPrice: $('card-price'), cardStock: $('card-stock'),
  cardImage: $('card-image'),
};
$('room-name').textContent = room;
document.title = `Studio · ${room}`;
$('watch-link').href = `/watch/${encodeURIComponent(room)}`;

const studio = {
  status: 'init', publishing: false, products: [], sale: null, counters: null, uplink: null,
  lastPin: null, error: null,
};

function setStatus(state, text) {
  studio.status = state;
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function say(text, ok = true) {
  ui.result.textContent = text;
  ui.result.className = `result ${ok ? 'ok' : 'bad'}`;
}

const getToken = async () => (await pageToken({ room, role: 'host', identity })).token;
// The host watches nobody: it only publishes and runs the shop.
const client = new RoomClient({ getToken, subscribe: false });

client.addEventListener('state', (e) => {
  const { state, reason } = e.detail;
  const text = {
    connecting: 'Connecting…', joined: 'Joined', connected: 'Connected',
    reconnecting: 'Connection lost, reconnecting…', closed: `Disconnected${reason ? `: ${reason}` : ''}`,
  }[state] ?? state;
  setStatus(state, text);
});
client.addEventListener('layers', (e) => {
  const { active, paused } = e.detail;
  ui.dynacast.textContent = `Dynacast: viewers need ${active.join(', ') || 'none'}` +
    (paused.length ? `; paused ${paused.join(', ')}` : '');
});
client.commerce.addEventListener('change', () => render());

// --- operator API --------------------------------------------------------------------------

async function api(method, path, body) {
  const resp = await fetch(`/api/rooms/${encodeURIComponent(room)}${path}`, {
    method,
    headers: { Authorization: `Bearer ${client.token}`,
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${resp.status} ${text.trim()}`);
  return text ? JSON.parse(text) : null;
}

async function loadProducts(select) {
  const { products } = await api('GET', '/products');
  studio.products = products;
  const current = select ?? ui.product.value;
  ui.product.replaceChildren(...(products.length ? products.map((p) => {
    const o = document.createElement('option');
    o.value = p.id;
    o.textContent = `${p.name} · ${formatPrice(p.price_cents, p.currency)} · ${p.stock} in stock`;
    return o;
  }) : [Object.assign(document.createElement('option'), { value: '', textContent: 'No products yet' })]));
  if (current && products.some((p) => p.id === current)) ui.product.value = current;
  render();
}

ui.productForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = new FormData(ui.productForm);
  const body = {
    id: f.get('id').trim(), name: f.get('name').trim(), price_cents: Number(f.get('price_cents')),
    currency: f.get('currency').trim().toUpperCase(), stock: Number(f.get('stock')),
  };
  if (f.get('image_url')) body.image_url = f.get('image_url').trim();
  try {
    const p = await api('POST', '/products', body);
    await loadProducts(p.id);
    say(`Created ${p.name}.`);
  } catch (err) {
    say(`Product not created: ${err.message}`, false);
  }
});

ui.pin.addEventListener('click', async () => {
  const productId = ui.product.value;
  if (!productId) return;
  try {
    studio.lastPin = await api('POST', '/card', { product_id: productId });
    say(`Pinned ${productId}.`);
  } catch (err) {
    say(`Card not pinned: ${err.message}`, false);
  }
});

function serverNowOrLocal() {
  return client.serverNow() ?? Date.now() / 1000;
}

ui.saleForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const productId = ui.product.value;
  const opensIn = Number(ui.opensIn.value);
  const duration = Number(ui.duration.value);
  if (!productId || !(opensIn >= 0) || !(duration > 0)) return;
  const startsAt = serverNowOrLocal() + opensIn;
  try {
    studio.sale = await api('POST', '/sales', {
      product_id: productId, starts_at: startsAt, ends_at: startsAt + duration,
    });
    say(`Sale ${studio.sale.sale_id} opens in ${opensIn} s.`);
  } catch (err) {
    say(`Sale not scheduled: ${err.message}`, false);
  }
  render();
});

async function transition(action) {
  const sale = client.commerce.sale ?? studio.sale;
  if (!sale) return;
  try {
    studio.sale = await api('POST', `/sales/${encodeURIComponent(sale.sale_id)}/${action}`);
    say(action === 'start' ? 'Sale opened.' : 'Sale ended.');
  } catch (err) {
    say(`Could not ${action === 'start' ? 'open' : 'end'} the sale: ${err.message}`, false);
  }
  render();
}
ui.startSale.addEventListener('click', () => transition('start'));
ui.stopSale.addEventListener('click', () => transition('stop'));

// --- publishing ----------------------------------------------------------------------------

ui.golive.addEventListener('click', async () => {
  ui.golive.disabled = true;
  try {
    const width = Number(query.get('width') || 1280);
    const height = Number(query.get('height') || 720);
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } },
      audio: true,
    });
    ui.preview.srcObject = stream;
    await client.publish(stream);
    studio.publishing = true;
    ui.stop.disabled = false;
    ui.live.textContent = 'LIVE';
    ui.live.classList.add('live');
    say('You are live.');
  } catch (err) {
    ui.golive.disabled = false;
    studio.error = String(err.message || err);
    say(`Could not go live: ${studio.error}`, false);
  }
});

ui.stop.addEventListener('click', async () => {
  const stream = client.localStream;
  await client.unpublish();
  if (stream) for (const t of stream.getTracks()) t.stop();
  ui.preview.srcObject = null;
  studio.publishing = false;
  ui.stop.disabled = true;
  ui.golive.disabled = false;
  ui.live.textContent = 'OFF AIR';
  ui.live.classList.remove('live');
  say('Stopped publishing.');
});

// --- rendering -----------------------------------------------------------------------------

function fmt(s) {
  return s >= 60 ? `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}` : `${s.toFixed(1)} s`;
}

function render() {
  const c = client.commerce;
  const sale = c.sale ?? studio.sale;
  const state = saleState(sale, client.serverNow());
  ui.pin.disabled = !ui.product.value;
  ui.schedule.disabled = !ui.product.value;
  ui.startSale.disabled = state !== 'scheduled';
  ui.stopSale.disabled = state !== 'open' && state !== 'scheduled';
  const stock = c.currentStock;
  if (stock !== null) ui.stock.textContent = String(stock);
  if (!sale) ui.countdown.textContent = 'No sale';
  else if (state === 'scheduled') ui.countdown.textContent = `Sale opens in ${fmt(sale.starts_at - client.serverNow())}`;
  else if (state === 'open') ui.countdown.textContent = `Sale open · ends in ${fmt(sale.ends_at - client.serverNow())}`;
  else ui.countdown.textContent = 'Sale ended';
  const card = c.card;
  ui.card.hidden = !card;
  if (card) {
    ui.cardName.textContent = card.name;
    ui.cardPrice.textContent = formatPrice(card.price_cents, card.currency);
    const s = c.stock.get(card.product_id);
    ui.cardStock.textContent = s === undefined ? '' : `${s} left`;
    ui.cardImage.hidden = !card.image_url;
    if (card.image_url) ui.cardImage.src = card.image_url;
  }
}
setInterval(render, 200);

let pollBusy = false;
async function pollCounters() {
  if (pollBusy || !client.token) return;
  pollBusy = true;
  try {
    const state = await api('GET', '/state');
    const sale = client.commerce.sale ?? state.sale;
    const orders = await api('GET', `/orders${sale ? `?sale_id=${encodeURIComponent(sale.sale_id)}` : ''}`);
    // The studio's own commerce channel is one of the room's open channels.
    const own = client.channel && client.channel.readyState === 'open' ? 1 : 0;
    const viewers = Math.max(0, state.viewers - own);
    const product = sale?.product_id ?? state.card;
    const stock = product ? state.stock[product] : undefined;
    studio.counters = { viewers, carts: state.carts ?? null, orders: orders.count,
      ordered: orders.quantity, stock: stock ?? null, seq: state.seq };
    ui.viewers.textContent = String(viewers);
    ui.carts.textContent = state.carts === undefined ? '–' : String(state.carts);
    ui.orders.textContent = String(orders.count);
    if (client.commerce.currentStock === null && stock !== undefined) ui.stock.textContent = String(stock);
  } catch (err) {
    studio.error = String(err.message || err);
  } finally {
    pollBusy = false;
  }
}
setInterval(pollCounters, 1000);
// A stock change means an order: refresh the counters at once.
client.commerce.addEventListener('change', (e) => {
  if (e.detail.message.type === 'stock.updated') pollCounters();
});

const outbound = new OutboundSampler();
setInterval(async () => {
  if (!client.pc || !studio.publishing) return;
  const s = await outbound.sample(client.pc, client.videoSender);
  studio.uplink = s;
  ui.uplink.textContent = `Uplink ${formatBitrate(s.bitrate)}` +
    (s.availableOutgoingBitrate ? ` of ${formatBitrate(s.availableOutgoingBitrate)} available` : '');
  ui.layers.replaceChildren(...s.layers.map((l) => {
    const tr = document.createElement('tr');
    const cells = [l.rid, l.active ? (l.bitrate > 0 ? 'yes' : 'starting') : 'paused',
      l.width ? `${l.width}×${l.height}` : '–', l.fps ? Math.round(l.fps) : '–',
      formatBitrate(l.bitrate), l.limitation];
    for (const v of cells) {
      const td = document.createElement('td');
      td.textContent = String(v);
      tr.append(td);
    }
    return tr;
  }));
}, 1000);

window.studio = {
  client,
  data: studio,
  state() {
    return {
      status: studio.status, publishing: studio.publishing, counters: studio.counters,
      sale: client.commerce.sale ?? studio.sale, card: client.commerce.toJSON().card,
      uplink: studio.uplink, layers: client.layers, result: ui.result.textContent,
      orders: ui.orders.textContent, stock: ui.stock.textContent,
      serverNow: client.serverNow(), clockSynced: client.clock.synced,
    };
  },
};

// --- start ---------------------------------------------------------------------------------

setStatus('connecting', 'Connecting…');
client.connect()
  .then(() => loadProducts())
  .then(() => { if (query.get('autostart') === '1') ui.golive.click(); })
  .catch((err) => {
    studio.error = String(err.message || err);
    setStatus('error', studio.error);
  });
