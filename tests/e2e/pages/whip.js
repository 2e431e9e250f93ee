"use strict";
// Helpers shared by the test pages (plain JS, no build step; the pages load it first).
//
// Every page reports its progress in window.whip.status (init, media, offering, connecting,
// connected, failed, error, closed; tests.e2e.browser.wait_page_status reads it) and the
// details of a failure (error text, resource location) alongside it in window.whip.

window.whip = { status: "init" };

// node, room and token from the query string (pages that do the WHIP/WHEP POST themselves).
function whipParams() {
  const q = new URLSearchParams(location.search);
  const node = (q.get("node") || "").replace(/\/+$/, "");
  const room = q.get("room") || "";
  const token = q.get("token") || "";
  if (!node || !room || !token) throw new Error("query string needs node, room and token");
  return { q, node, room, token };
}

// To the console (the tests collect it) and the page's <pre id="log"> (its last 4000 chars).
function logLine(msg) {
  const el = document.getElementById("log");
  const line = `${new Date().toISOString()} ${msg}`;
  if (el) el.textContent = (el.textContent + line + "\n").slice(-4000);
  console.log(line);
}

function setStatus(s, extra) {
  window.whip = Object.assign(window.whip, { status: s }, extra || {});
  logLine(`status=${s}${extra && extra.error ? " " + extra.error : ""}`);
}

// A peer connection whose connected/failed/closed states become the page status.
function newPeer() {
  const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle" });
  window.pc = pc;
  pc.addEventListener("connectionstatechange", () => {
    const s = pc.connectionState;
    if (s === "connected" || s === "failed" || s === "closed") setStatus(s);
    else logLine(`connectionState=${s}`);
  });
  return pc;
}

// Play every remote track of `pc` in `video`.
function playRemote(pc, video) {
  const remote = new MediaStream();
  video.srcObject = remote;
  pc.addEventListener("track", (ev) => {
    logLine(`track ${ev.track.kind} ${ev.track.id}`);
    remote.addTrack(ev.track);
    video.play().catch((e) => logLine(`play(): ${e}`));
  });
}

// Camera and microphone (the fake devices) at the query's width/height, or the defaults;
// audio=0 / video=0 leave one out. Shown in <video id="preview">.
async function captureMedia(q, width, height) {
  const wantVideo = q.get("video") !== "0";
  const wantAudio = q.get("audio") !== "0";
  const w = parseInt(q.get("width") || String(width), 10);
  const h = parseInt(q.get("height") || String(height), 10);
  setStatus("media");
  const stream = await navigator.mediaDevices.getUserMedia({
    video: wantVideo ? { width: { ideal: w }, height: { ideal: h } } : false,
    audio: wantAudio,
  });
  document.getElementById("preview").srcObject = stream;
  window.captureSettings = stream.getTracks().map((t) => Object.assign({ kind: t.kind }, t.getSettings()));
  return stream;
}

// Resolve after ICE gathering completes, or after limitMs (then go on with what was gathered).
function waitGatheringComplete(pc, limitMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => { pc.removeEventListener("icegatheringstatechange", check); resolve(false); }, limitMs);
    function check() {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve(true);
      }
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// Create and set the offer; return its SDP once ICE gathering is complete (at most 5 s).
async function completeOffer(pc) {
  setStatus("offering");
  await pc.setLocalDescription(await pc.createOffer());
  if (!(await waitGatheringComplete(pc, 5000))) logLine("ICE gathering incomplete after 5 s; sending what we have");
  return pc.localDescription.sdp;
}

// POST the (complete) local offer; apply the answer; return the absolute resource URL.
async function exchangeSdp(pc, endpointUrl, token) {
  const resp = await fetch(endpointUrl, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", "Authorization": `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  const body = await resp.text();
  if (resp.status !== 201) throw new Error(`HTTP ${resp.status}: ${body}`);
  const loc = resp.headers.get("Location");
  if (!loc) throw new Error("201 without a Location header (not exposed by CORS?)");
  await pc.setRemoteDescription({ type: "answer", sdp: body });
  return new URL(loc, endpointUrl).toString();
}

// The answer from the test (which did the POST itself, e.g. to rewrite candidates).
async function acceptAnswer(pc, sdp) {
  await pc.setRemoteDescription({ type: "answer", sdp });
  if (pc.connectionState !== "connected") setStatus("connecting");
}

async function deleteResource(url, token) {
  if (!url) return null;
  const resp = await fetch(url, { method: "DELETE", headers: { "Authorization": `Bearer ${token}` } });
  return resp.status;
}

// The selected ICE candidate pair, for diagnostics.
async function selectedPair(pc) {
  const stats = await pc.getStats();
  let pairId = null;
  stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
  if (!pairId) stats.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pairId = s.id; });
  const pair = pairId && stats.get(pairId);
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId) || {};
  const remote = stats.get(pair.remoteCandidateId) || {};
  return {
    local: `${local.address || local.ip}:${local.port} ${local.candidateType}`,
    remote: `${remote.address || remote.ip}:${remote.port} ${remote.candidateType}`,
    state: pair.state, bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived,
  };
}

function codecOf(stats, s) {
  const c = s.codecId && stats.get(s.codecId);
  return c ? c.mimeType : null;
}
