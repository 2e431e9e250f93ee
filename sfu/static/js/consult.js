// The customer page, /consult[?queue=consult]: request a consultation now or book a slot,
// wait for an advisor, join the 1:1 call (camera + mic, or audio only: the "Share my camera"
// choice, changeable during the call), see the advisor's camera and shared screen, add the
// products the advisor offers to the cart and check out (idempotent orders).
//
// For tests: `window.consultPage.state()` and `await window.consultPage.stats()`.

import { formatPrice } from './commerce.js';
import { ConsultApi, ConsultCall, pageIdentity, show } from './consult-call.js';
import { pageToken } from './token.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const queue = params.get('queue') || 'consult';
const identity = pageIdentity('customer');
const ui = {
  status: $('status'), request: $('request'), book: $('book'), slot: $('slot'),
  queueState: $('queue-state'), join: $('join'), cancel: $('cancel'), shareCamera: $('share-camera'),
  remote: $('remote'), placeholder: $('remote-placeholder'), remoteTag: $('remote-tag'),
  self: $('self'), screen: $('screen'), screenWrap: $('screen-wrap'), stage: $('stage'),
  camera: $('camera'), mute: $('mute'), end: $('end'), offer: $('offer'), noOffer: $('no-offer'),
  offerName: $('offer-name'), offerPrice: $('offer-price'), offerStock: $('offer-stock'),
  add: $('add-to-cart'), cart: $('cart'), checkout: $('checkout'), result: $('result'),
};
const page = { status: 'init', request: null, call: null, cameraOn: ui.shareCamera.checked,
  orders: [], error: null, joined: false };
let api = null;
let camTrack = null;
let micTrack = null;
const pendingKeys = new Map(); // product_id -> idempotency key of the checkout attempt

function setStatus(state, text) {
  page.status = state;
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function fail(err) {
  page.error = String(err?.message || err);
  ui.result.className = 'result bad';
  ui.result.textContent = page.error;
}

// --- the queue ----------------------------------------------------------------------------

function describe(r) {
  if (!r) return 'Not in the queue';
  switch (r.state) {
    case 'waiting':
      if (!r.due) return `Booked for ${new Date(r.slot_at * 1000).toLocaleString()}`;
      return `You are number ${r.position ?? '…'} in line`;
    case 'assigned': return `Advisor ${r.advisor} is ready for you`;
    case 'in_call': return page.joined ? `In a call with ${r.advisor}` : `${r.advisor} is waiting in the call`;
    case 'done': return 'Consultation ended. Thank you!';
    default: return 'Not in the queue';
  }
}

function render() {
  const r = page.request;
  const active = r && ['waiting', 'assigned', 'in_call'].includes(r.state);
  ui.queueState.textContent = describe(r);
  ui.request.disabled = Boolean(active);
  ui.book.disabled = Boolean(active);
  ui.cancel.disabled = !(r && ['waiting', 'assigned'].includes(r.state)) || page.joined;
  ui.join.disabled = !(r && ['assigned', 'in_call'].includes(r.state)) || page.joined;
  ui.camera.disabled = !page.joined;
  ui.mute.disabled = !page.joined;
  ui.end.disabled = !page.joined;
  ui.camera.textContent = page.cameraOn ? 'Camera off' : 'Camera on';
  ui.camera.setAttribute('aria-pressed', String(page.cameraOn));
  renderShop();
}

async function poll() {
  try {
    const me = await api.get('/me');
    page.request = me.request;
    if (page.joined && (!me.request || !['assigned', 'in_call'].includes(me.request.state))) leaveCall();
  } catch (err) {
    fail(err);
  }
  render();
}

// --- the call -----------------------------------------------------------------------------

function layout() {
  const call = page.call;
  const cam = call?.remoteVideo('camera');
  const screen = call?.remoteVideo('screen');
  const audio = call ? [...call.remote.values()].find((r) => r.kind === 'audio') : null;
  const main = new MediaStream([...(cam ? [cam.track] : []), ...(audio ? [audio.track] : [])]);
  if (cam || audio) show(ui.remote, main);
  ui.placeholder.hidden = Boolean(cam);
  ui.remoteTag.hidden = !cam;
  ui.screenWrap.hidden = !screen;
  ui.stage.classList.toggle('with-screen', Boolean(screen));
  if (screen) show(ui.screen, screen.stream);
}

async function join() {
  if (page.joined) return;
  page.joined = true;
  render();
  const call = new ConsultCall(api, page.request.id);
  page.call = call;
  call.addEventListener('change', layout);
  call.addEventListener('state', (e) => setStatus(e.detail.state, e.detail.state === 'connected' ? 'In the call' : e.detail.state));
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true, video: page.cameraOn ? { width: { ideal: 640 }, height: { ideal: 360 } } : false });
    micTrack = stream.getAudioTracks()[0] ?? null;
    camTrack = stream.getVideoTracks()[0] ?? null;
    const client = await call.join();
    client.commerce.addEventListener('change', renderShop);
    if (micTrack) await call.publish(micTrack, 'microphone');
    if (camTrack) await call.publish(camTrack, 'camera');
    showSelf();
  } catch (err) {
    fail(err);
  }
  render();
}

function showSelf() {
  ui.self.hidden = !camTrack;
  if (camTrack) show(ui.self, new MediaStream([camTrack]));
}

async function toggleCamera() {
  const call = page.call;
  if (!call) return;
  page.cameraOn = !page.cameraOn;
  ui.shareCamera.checked = page.cameraOn;
  render();
  try {
    if (page.cameraOn) {
      const s = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 360 } } });
      camTrack = s.getVideoTracks()[0];
      await call.publish(camTrack, 'camera');
    } else {
      camTrack = null;
      await call.unpublish('camera');
    }
    showSelf();
  } catch (err) {
    fail(err);
  }
}

function leaveCall() {
  if (page.call) page.call.close();
  page.call = null;
  page.joined = false;
  camTrack = null;
  micTrack = null;
  ui.self.hidden = true;
  ui.remote.srcObject = null;
  ui.screen.srcObject = null;
  layout();
  setStatus('idle', 'Call ended');
}

// --- the shop -----------------------------------------------------------------------------

function commerce() {
  return page.call?.client?.commerce ?? null;
}

function renderShop() {
  const c = commerce();
  const card = c?.card ?? null;
  ui.offer.hidden = !card;
  ui.noOffer.hidden = Boolean(card);
  if (card) {
    ui.offerName.textContent = card.name;
    ui.offerPrice.textContent = formatPrice(card.price_cents, card.currency);
    const stock = c.stock.get(card.product_id) ?? card.stock;
    ui.offerStock.textContent = stock != null ? `${stock} in stock` : '';
  }
  const lines = c?.cart ?? [];
  ui.cart.replaceChildren(...lines.map((l) => {
    const li = document.createElement('li');
    const name = card && card.product_id === l.product_id ? card.name : l.product_id;
    li.textContent = `${l.quantity} × ${name}`;
    return li;
  }));
  if (!lines.length) {
    const li = document.createElement('li');
    li.textContent = 'Cart is empty';
    ui.cart.append(li);
  }
  ui.checkout.disabled = !lines.length || !page.joined;
}

async function addToCart() {
  const card = commerce()?.card;
  if (!card) return;
  try {
    await page.call.client.addToCart(card.product_id, 1);
    ui.result.className = 'result';
    ui.result.textContent = `${card.name} added to your cart`;
  } catch (err) {
    fail(err);
  }
}

async function checkout() {
  const c = commerce();
  if (!c || !c.cart.length) return;
  ui.checkout.disabled = true;
  const confirmed = [];
  for (const line of [...c.cart]) {
    // One idempotency key per line and checkout attempt, reused if the attempt is retried.
    let key = pendingKeys.get(line.product_id);
    if (!key) { key = crypto.randomUUID(); pendingKeys.set(line.product_id, key); }
    try {
      // In-call offers are sold under a sale with the product's id (docs/consultation.md).
      const result = await page.call.client.placeOrder({
        sale_id: line.product_id, product_id: line.product_id, quantity: line.quantity,
        idempotency_key: key });
      page.orders.push(result);
      if (result.status === 'confirmed') {
        pendingKeys.delete(line.product_id);
        confirmed.push(result.order_id);
        await page.call.client.removeFromCart(line.product_id, line.quantity).catch(() => {});
      } else {
        pendingKeys.delete(line.product_id);
        fail(`Order not placed: ${result.status.replace(/_/g, ' ')}`);
      }
    } catch (err) {
      fail(err); // the key stays: "Checkout" again retries the same attempt
    }
  }
  if (confirmed.length) {
    ui.result.className = 'result ok';
    ui.result.textContent = `Order confirmed (${confirmed.join(', ')})`;
  }
  renderShop();
}

// --- start --------------------------------------------------------------------------------

async function start() {
  try {
    const t = await pageToken({ room: queue, role: 'customer', identity });
    api = new ConsultApi(queue, t.token);
  } catch (err) {
    setStatus('error', String(err.message || err));
    return;
  }
  setStatus('idle', `Signed in as ${identity}`);
  ui.shareCamera.addEventListener('change', () => {
    if (!page.joined) { page.cameraOn = ui.shareCamera.checked; render(); }
    else if (ui.shareCamera.checked !== page.cameraOn) toggleCamera();
  });
  ui.request.addEventListener('click', async () => {
    try { page.request = (await api.post('/requests')).request; } catch (err) { fail(err); }
    render();
  });
  ui.book.addEventListener('click', async () => {
    const when = ui.slot.value ? new Date(ui.slot.value).getTime() / 1000 : NaN;
    if (!Number.isFinite(when)) { fail('Pick a date and time to book'); return; }
    try { page.request = (await api.post('/requests', { slot_at: when })).request; } catch (err) { fail(err); }
    render();
  });
  ui.cancel.addEventListener('click', async () => {
    try { page.request = (await api.post(`/requests/${page.request.id}/cancel`)).request; } catch (err) { fail(err); }
    render();
  });
  ui.join.addEventListener('click', join);
  ui.camera.addEventListener('click', toggleCamera);
  ui.mute.addEventListener('click', () => {
    if (!micTrack) return;
    micTrack.enabled = !micTrack.enabled;
    ui.mute.textContent = micTrack.enabled ? 'Mute' : 'Unmute';
    ui.mute.setAttribute('aria-pressed', String(!micTrack.enabled));
  });
  ui.end.addEventListener('click', async () => {
    try { await api.post(`/requests/${page.request.id}/end`); } catch (err) { fail(err); }
    leaveCall();
    poll();
  });
  ui.add.addEventListener('click', addToCart);
  ui.checkout.addEventListener('click', checkout);
  render();
  await poll();
  setInterval(poll, 1000);
}

window.consultPage = {
  page,
  identity,
  state() {
    const c = commerce();
    return {
      status: page.status, identity, request: page.request, joined: page.joined,
      cameraOn: page.cameraOn, queueText: ui.queueState.textContent,
      card: c?.card ?? null, cart: c?.cart ?? [], orders: page.orders, result: ui.result.textContent,
      screenVisible: !ui.screenWrap.hidden, error: page.error,
    };
  },
  async stats() { return page.call ? page.call.stats() : { remote: [], sent: {} }; },
};

start();
