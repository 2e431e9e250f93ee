// The advisor page, /advisor[?queue=consult]: availability, the queue, accept the assigned
// customer, the 1:1 call (camera, mic, screen share as a second video track labelled
// "screen"), the product picker that pushes cards into the call, the call's orders.
//
// Screen share: getDisplayMedia; if the browser cannot share a screen (or ?screen=canvas),
// a canvas capture track (a generated "slide") is shared instead.
// For tests: `window.advisorPage.state()` and `await window.advisorPage.stats()`.

import { formatPrice } from './commerce.js';
import { ConsultApi, ConsultCall, pageIdentity, show } from './consult-call.js';
import { pageToken } from './token.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const queue = params.get('queue') || 'consult';
const identity = pageIdentity('advisor');
const ui = {
  status: $('status'), state: $('advisor-state'), available: $('available'), away: $('away'),
  current: $('current'), accept: $('accept'), queue: $('queue'), queueCount: $('queue-count'),
  remote: $('remote'), placeholder: $('remote-placeholder'), remoteTag: $('remote-tag'),
  self: $('self'), screenWrap: $('screen-wrap'), screenPreview: $('screen-preview'), stage: $('stage'),
  camera: $('camera'), share: $('share'), mute: $('mute'), end: $('end'),
  product: $('product'), push: $('push-card'), result: $('result'), orders: $('orders'),
};
const page = { status: 'init', me: null, call: null, requestId: null, sharing: false,
  screenVia: null, cameraOn: true, pushed: [], orders: null, error: null, products: [] };
let api = null;
let camTrack = null;
let micTrack = null;
let screenTrack = null;
let canvasTimer = null;

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

function waited(s) {
  const m = Math.floor(s / 60);
  return m ? `${m} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`;
}

function render() {
  const me = page.me;
  const state = me?.state ?? 'offline';
  const cur = me?.current ?? null;
  ui.state.textContent = { offline: 'Offline', free: 'Available', busy: 'Busy' }[state] ?? state;
  ui.available.disabled = state !== 'offline';
  ui.away.disabled = state !== 'free';
  ui.current.textContent = cur
    ? `${cur.state === 'in_call' ? 'In a call with' : 'Assigned:'} ${cur.customer} (waited ${waited(cur.waited)})`
    : '';
  ui.accept.disabled = !(cur && cur.state === 'assigned');
  ui.accept.hidden = Boolean(page.call);
  const waiting = me?.queue ?? [];
  ui.queueCount.textContent = String(waiting.filter((r) => r.due).length);
  ui.queue.replaceChildren(...waiting.map((r) => {
    const li = document.createElement('li');
    li.textContent = r.due
      ? `${r.customer}, waiting ${waited(r.waited)}${r.slot_at ? ' (booked)' : ''}`
      : `${r.customer}, booked for ${new Date(r.slot_at * 1000).toLocaleTimeString()}`;
    return li;
  }));
  const inCall = Boolean(page.call);
  ui.camera.disabled = !inCall;
  ui.share.disabled = !inCall;
  ui.mute.disabled = !inCall;
  ui.end.disabled = !inCall;
  ui.push.disabled = !inCall || !ui.product.value;
  ui.camera.textContent = page.cameraOn ? 'Camera off' : 'Camera on';
  ui.share.textContent = page.sharing ? 'Stop sharing' : 'Share screen';
  ui.share.setAttribute('aria-pressed', String(page.sharing));
  const o = page.orders;
  ui.orders.textContent = o && o.count
    ? `${o.count} order${o.count === 1 ? '' : 's'} in this call (${o.quantity} item${o.quantity === 1 ? '' : 's'})`
    : 'No orders in this call';
}

async function poll() {
  try {
    page.me = await api.get('/me');
    const cur = page.me.current;
    if (page.call && (!cur || cur.id !== page.requestId)) leaveCall();
    if (page.call) page.orders = await api.get(`/requests/${page.requestId}/orders`);
  } catch (err) {
    fail(err);
  }
  render();
}

async function loadProducts() {
  try {
    page.products = (await api.get('/products')).products;
  } catch (err) {
    fail(err);
    return;
  }
  const keep = ui.product.value;
  ui.product.replaceChildren(...page.products.map((p) => {
    const opt = document.createElement('option');
    opt.value = p.id;
    opt.textContent = `${p.name} · ${formatPrice(p.price_cents, p.currency)} (${p.stock} left)`;
    return opt;
  }));
  if (keep) ui.product.value = keep;
  render();
}

// --- the call -----------------------------------------------------------------------------

function layout() {
  const call = page.call;
  const cam = call?.remoteVideo('camera');
  const audio = call ? [...call.remote.values()].find((r) => r.kind === 'audio') : null;
  if (cam || audio) show(ui.remote, new MediaStream([...(cam ? [cam.track] : []), ...(audio ? [audio.track] : [])]));
  ui.placeholder.hidden = Boolean(cam);
  ui.placeholder.textContent = call ? (audio ? 'Audio only: the customer\'s camera is off' : 'Connecting…') : 'No customer yet';
  ui.remoteTag.hidden = !cam;
  ui.screenWrap.hidden = !page.sharing;
  ui.stage.classList.toggle('with-screen', page.sharing);
}

async function accept() {
  const cur = page.me?.current;
  if (!cur || page.call) return;
  try {
    await api.post(`/requests/${cur.id}/accept`);
    page.requestId = cur.id;
    const call = new ConsultCall(api, cur.id);
    page.call = call;
    call.addEventListener('change', layout);
    call.addEventListener('state', (e) => setStatus(e.detail.state, e.detail.state === 'connected' ? 'In the call' : e.detail.state));
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: true, video: { width: { ideal: 640 }, height: { ideal: 360 } } });
    micTrack = stream.getAudioTracks()[0];
    camTrack = stream.getVideoTracks()[0];
    await call.join();
    await call.publish(micTrack, 'microphone');
    await call.publish(camTrack, 'camera');
    ui.self.hidden = false;
    show(ui.self, new MediaStream([camTrack]));
    layout();
  } catch (err) {
    fail(err);
  }
  await poll();
}

function canvasTrack() {
  const canvas = document.createElement('canvas');
  canvas.width = 1280;
  canvas.height = 720;
  const g = canvas.getContext('2d');
  let n = 0;
  const draw = () => {
    n += 1;
    g.fillStyle = '#f4f1ea'; g.fillRect(0, 0, 1280, 720);
    g.fillStyle = '#1f3b73'; g.fillRect(0, 0, 1280, 110);
    g.fillStyle = '#fff'; g.font = 'bold 56px sans-serif'; g.fillText('Product comparison', 48, 76);
    g.fillStyle = '#222'; g.font = '40px sans-serif';
    ['Size and fit', 'Materials and care', 'Delivery in 2 days'].forEach((t, i) => g.fillText(`• ${t}`, 80, 230 + i * 80));
    g.fillStyle = '#c62828'; g.fillRect(80 + (n * 6) % 1000, 600, 120, 24);
  };
  draw();
  canvasTimer = setInterval(draw, 100);
  return canvas.captureStream(10).getVideoTracks()[0];
}

async function toggleShare() {
  const call = page.call;
  if (!call) return;
  if (page.sharing) {
    page.sharing = false;
    await call.unpublish('screen');
    if (screenTrack) screenTrack.stop();
    screenTrack = null;
    if (canvasTimer) clearInterval(canvasTimer);
    canvasTimer = null;
    layout(); render();
    return;
  }
  try {
    if (params.get('screen') === 'canvas') throw new Error('canvas requested');
    const s = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 10 }, audio: false });
    screenTrack = s.getVideoTracks()[0];
    page.screenVia = 'getDisplayMedia';
  } catch {
    screenTrack = canvasTrack();
    page.screenVia = 'canvas';
  }
  screenTrack.addEventListener('ended', () => { if (page.sharing) toggleShare(); });
  page.sharing = true;
  show(ui.screenPreview, new MediaStream([screenTrack]));
  await call.publish(screenTrack, 'screen');
  layout(); render();
}

async function toggleCamera() {
  const call = page.call;
  if (!call) return;
  page.cameraOn = !page.cameraOn;
  try {
    if (page.cameraOn) {
      const s = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 360 } } });
      camTrack = s.getVideoTracks()[0];
      await call.publish(camTrack, 'camera');
      show(ui.self, new MediaStream([camTrack]));
    } else {
      camTrack = null;
      await call.unpublish('camera');
    }
    ui.self.hidden = !camTrack;
  } catch (err) {
    fail(err);
  }
  render();
}

function leaveCall() {
  if (page.call) page.call.close();
  if (screenTrack) screenTrack.stop();
  if (canvasTimer) clearInterval(canvasTimer);
  canvasTimer = null;
  screenTrack = null;
  page.call = null;
  page.requestId = null;
  page.sharing = false;
  page.cameraOn = true;
  page.orders = null;
  ui.self.hidden = true;
  ui.remote.srcObject = null;
  layout();
  setStatus('idle', 'Call ended');
}

async function pushCard() {
  const product = ui.product.value;
  if (!page.call || !product) return;
  try {
    const r = await api.post(`/requests/${page.requestId}/card`, { product_id: product });
    page.pushed.push(r);
    const p = page.products.find((x) => x.id === product);
    ui.result.className = 'result ok';
    ui.result.textContent = `Showing ${p ? p.name : product} to the customer`;
  } catch (err) {
    fail(err);
  }
}

// --- start --------------------------------------------------------------------------------

async function start() {
  try {
    const t = await pageToken({ room: queue, role: 'advisor', identity });
    api = new ConsultApi(queue, t.token);
  } catch (err) {
    setStatus('error', String(err.message || err));
    return;
  }
  setStatus('idle', `Signed in as ${identity}`);
  ui.available.addEventListener('click', async () => {
    try { page.me = await api.post('/available'); } catch (err) { fail(err); }
    render();
  });
  ui.away.addEventListener('click', async () => {
    try { page.me = await api.post('/away'); } catch (err) { fail(err); }
    render();
  });
  ui.accept.addEventListener('click', accept);
  ui.share.addEventListener('click', toggleShare);
  ui.camera.addEventListener('click', toggleCamera);
  ui.mute.addEventListener('click', () => {
    if (!micTrack) return;
    micTrack.enabled = !micTrack.enabled;
    ui.mute.textContent = micTrack.enabled ? 'Mute' : 'Unmute';
  });
  ui.end.addEventListener('click', async () => {
    const id = page.requestId;
    leaveCall();
    try { await api.post(`/requests/${id}/end`); } catch (err) { fail(err); }
    poll();
  });
  ui.product.addEventListener('change', render);
  ui.push.addEventListener('click', pushCard);
  await loadProducts();
  await poll();
  setInterval(poll, 1000);
  setInterval(loadProducts, 10000);
}

window.advisorPage = {
  page,
  identity,
  loadProducts,
  state() {
    return {
      status: page.status, identity, advisor: page.me?.state ?? 'offline',
      current: page.me?.current ?? null, queue: page.me?.queue ?? [], inCall: Boolean(page.call),
      sharing: page.sharing, screenVia: page.screenVia, pushed: page.pushed, orders: page.orders,
      result: ui.result.textContent, error: page.error,
    };
  },
  async stats() { return page.call ? page.call.stats() : { remote: [], sent: {} }; },
};

start();
