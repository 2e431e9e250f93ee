// node --test tests/unit/js/clock-sync.test.mjs  (run from pytest: test_clock_sync_js.py)
//
// sfu/static/js/clock-sync.js under a virtual clock: ping bookkeeping, both pong shapes,
// the burst/resync schedule, accuracy under asymmetric jitter, and attach() driving a fake
// datachannel whose far end is a node on a skewed clock, all in virtual time (no sleeps).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  CLOCK_CHANNEL_LABEL,
  CLOCK_CHANNEL_OPTIONS,
  ClockSync,
  defaultNow,
  openClockChannel,
} from '../../../sfu/static/js/clock-sync.js';

const SERVER_OFFSET_MS = 1_700_000_000_000; // server Unix ms minus the virtual client clock

/** Deterministic PRNG (mulberry32): uniform in [0, 1). */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const oldPong = (ping, serverMs) => ({
  v: 1,
  type: 'clock.pong',
  id: ping.id,
  server_time: serverMs / 1000, // SECONDS on the wire
});
const newPong = (ping, serverMs) => ({ ...oldPong(ping, serverMs), client_time: ping.client_time });

/** A virtual-time scheduler: setTimeout/clearTimeout plus run(until). */
class Sim {
  constructor(start = 0) {
    this.now = start;
    this.queue = []; // {at, seq, fn}
    this.seq = 0;
    this.setTimeout = (fn, ms) => {
      const handle = { at: this.now + Math.max(0, ms ?? 0), seq: this.seq++, fn };
      this.queue.push(handle);
      return handle;
    };
    this.clearTimeout = (handle) => {
      const i = this.queue.indexOf(handle);
      if (i >= 0) this.queue.splice(i, 1);
    };
  }

  run(until, maxEvents = 100000) {
    for (let n = 0; n < maxEvents; n++) {
      if (this.queue.length === 0) break;
      this.queue.sort((a, b) => a.at - b.at || a.seq - b.seq);
      if (this.queue[0].at > until) break;
      const next = this.queue.shift();
      this.now = next.at;
      next.fn();
    }
    this.now = Math.max(this.now, until);
  }
}

/** An RTCDataChannel stand-in whose far end is a node with clock `serverOffsetMs` ahead. */
class FakeChannel extends EventTarget {
  constructor(sim, { serverOffsetMs, up, down, answer = () => true, echo = false }) {
    super();
    this.sim = sim;
    this.readyState = 'connecting';
    this.sent = [];
    Object.assign(this, { serverOffsetMs, up, down, answer, echo });
  }

  open() {
    this.readyState = 'open';
    this.dispatchEvent(new Event('open'));
  }

  close() {
    this.readyState = 'closed';
    this.dispatchEvent(new Event('close'));
  }

  send(text) {
    assert.equal(this.readyState, 'open');
    const msg = JSON.parse(text);
    this.sent.push(msg);
    if (msg.type !== 'clock.ping' || !this.answer(msg.id)) return;
    this.sim.setTimeout(() => {
      const serverMs = this.sim.now + this.serverOffsetMs;
      const pong = this.echo ? newPong(msg, serverMs) : oldPong(msg, serverMs);
      this.sim.setTimeout(() => this.deliver(JSON.stringify(pong)), this.down());
      this.sim.setTimeout(() => this.deliver('{"v":1,"type":"hello"}'), this.down());
    }, this.up());
  }

  deliver(data) {
    const event = new Event('message');
    event.data = data;
    this.dispatchEvent(event);
  }
}

test('pings carry increasing ids and the client clock in ms', () => {
  const sync = new ClockSync({ now: () => 42.5 });
  const pings = [sync.ping(), sync.ping(10), sync.ping(20)];
  assert.deepEqual(
    pings.map((p) => [p.v, p.type, p.id, p.client_time]),
    [
      [1, 'clock.ping', 1, 42.5],
      [1, 'clock.ping', 2, 10],
      [1, 'clock.ping', 3, 20],
    ],
  );
  assert.equal(sync.pending, 3);
});

test('the default clock is Unix-epoch milliseconds', () => {
  const t = defaultNow();
  assert.ok(Math.abs(t - Date.now()) < 1000, `${t} vs ${Date.now()}`);
});

for (const [name, shape] of [
  ['without client_time', oldPong],
  ['with client_time echoed', newPong],
]) {
  test(`a pong ${name} gives offset, uncertainty, serverNow and localTimeOf`, () => {
    const sync = new ClockSync();
    const ping = sync.ping(100_000);
    // 30 ms up, 10 ms down: the server stamps at client time 100 030 ms.
    assert.equal(sync.onPong(shape(ping, 100_030 + SERVER_OFFSET_MS), 100_040), true);
    assert.ok(Math.abs(sync.offset - (SERVER_OFFSET_MS + 10)) < 1e-3);
    assert.ok(Math.abs(sync.uncertainty - 20) < 1e-9);
    assert.ok(Math.abs(sync.serverNow(200_000) - (200_000 + SERVER_OFFSET_MS + 10)) < 1e-3);
    // localTimeOf takes server SECONDS and returns client ms.
    const local = sync.localTimeOf((SERVER_OFFSET_MS + 300_000) / 1000);
    assert.ok(Math.abs(local - (300_000 - 10)) < 1e-3, String(local));
  });
}

test('the send time comes from the client record, never the echo', () => {
  const sync = new ClockSync();
  const ping = sync.ping(1000);
  const forged = { ...newPong(ping, 1050 + SERVER_OFFSET_MS), client_time: 0 };
  assert.equal(sync.onPong(forged, 1100), true);
  assert.ok(Math.abs(sync.offset - SERVER_OFFSET_MS) < 1e-3);
});

test('unknown, duplicate, stale, malformed and backwards pongs are ignored', () => {
  const sync = new ClockSync();
  const [p1, p2, p3] = [sync.ping(0), sync.ping(100), sync.ping(200)];
  const bad = [
    { type: 'clock.pong', id: 999, server_time: 1 },
    { type: 'clock.pong', id: '1', server_time: 1 },
    { type: 'clock.pong', id: 1.5, server_time: 1 },
    { type: 'clock.pong', id: 1, server_time: '1' },
    { type: 'clock.pong', id: 1, server_time: NaN },
    { type: 'clock.pong', id: 1, server_time: Infinity },
    { type: 'clock.pong', id: 1 },
    { type: 'hello', id: 1, server_time: 1 },
    null,
  ];
  for (const msg of bad) assert.equal(sync.onPong(msg, 10), false, JSON.stringify(msg));
  assert.equal(sync.offset, null);
  assert.equal(sync.serverNow(0), null);
  assert.equal(sync.localTimeOf(1), null);
  assert.equal(sync.onPong(oldPong(p1, 5 + SERVER_OFFSET_MS), 10), true);
  assert.equal(sync.onPong(oldPong(p1, 5 + SERVER_OFFSET_MS), 11), false); // duplicate
  assert.equal(sync.onPong(oldPong(p2, SERVER_OFFSET_MS), 30_000), false); // past the TTL
  assert.equal(sync.onPong(oldPong(p3, SERVER_OFFSET_MS), 150), false); // before its ping
  assert.equal(sync.pongsIgnored, bad.length + 3);
  assert.equal(sync.sampleList.length, 1);
});

test('onMessage takes raw pongs and leaves everything else alone', () => {
  const sync = new ClockSync();
  const ping = sync.ping(1000);
  for (const other of ['{"v":1,"type":"hello"}', '{not json', '[1]', 'null', '"x"', new Uint8Array(3)]) {
    assert.equal(sync.onMessage(other, 1010), false);
  }
  assert.equal(sync.pongsIgnored, 0);
  assert.equal(sync.onMessage(JSON.stringify(oldPong(ping, 1005 + SERVER_OFFSET_MS)), 1010), true);
  assert.ok(Math.abs(sync.offset - SERVER_OFFSET_MS) < 1e-3);
});

test('invalid options are refused', () => {
  assert.throws(() => new ClockSync({ samples: 0 }), RangeError);
  assert.throws(() => new ClockSync({ samples: 8, maxPings: 7 }), RangeError);
  assert.throws(() => new ClockSync({ resyncMs: 0 }), RangeError);
  assert.throws(() => new ClockSync({ intervalMs: NaN }), RangeError);
});

test('a burst of 8 pings 100 ms apart, slow pongs waited for, then a resync at 30 s', () => {
  const sync = new ClockSync({ samples: 8, intervalMs: 100, resyncMs: 30_000 });
  assert.equal(sync.due(0), true);
  const sent = [];
  const inFlight = [];
  for (let t = 0; t <= 10_000; t += 5) {
    // RTT 250 ms: longer than the interval, so pongs lag the pings.
    while (inFlight.length && inFlight[0].at <= t) {
      const { at, ping } = inFlight.shift();
      assert.equal(sync.onPong(oldPong(ping, at - 125 + SERVER_OFFSET_MS), at), true);
    }
    if (sync.due(t)) {
      inFlight.push({ at: t + 250, ping: sync.ping(t) });
      sent.push(t);
    }
  }
  assert.deepEqual(sent, [0, 100, 200, 300, 400, 500, 600, 700]);
  assert.equal(sync.burstDone, true);
  assert.equal(sync.pending, 0);
  assert.ok(Math.abs(sync.offset - SERVER_OFFSET_MS) < 1e-3);
  assert.equal(sync.nextPingAt(), 30_000);
  assert.equal(sync.due(29_999), false);
  assert.equal(sync.due(30_000), true);
  sync.ping(30_000);
  assert.equal(sync.burstDone, false);
  assert.equal(sync.nextPingAt(), 30_100);
});

test('lost pongs are replaced after lostAfterMs, up to maxPings', () => {
  const sync = new ClockSync({ samples: 4, intervalMs: 100, maxPings: 6, lostAfterMs: 1000 });
  const sent = [];
  for (let t = 0; t <= 5000; t += 50) {
    if (!sync.due(t)) continue;
    const ping = sync.ping(t);
    sent.push(t);
    if (ping.id % 2 === 0) sync.onPong(oldPong(ping, t + SERVER_OFFSET_MS), t); // odd ids lost
  }
  // 4 paced pings; ids 1 and 3 presumed lost 1 s after they went out; 5 lost, 6 answered.
  assert.deepEqual(sent, [0, 100, 200, 300, 1000, 1200]);
  assert.equal(sync.burstDone, true);
});

/** One virtual viewer with clock skew `skewMs`; returns [|error about T_open| ms, bound]. */
function virtualViewer(random, skewMs) {
  const sync = new ClockSync({ samples: 8 });
  let real = random() * 100_000; // true time (ms), arbitrary origin; server = real + OFFSET
  for (let i = 0; i < 8; i++) {
    const ping = sync.ping(real + skewMs);
    const up = 10 + random() * 50; // uplink: 10 ms + 0..50 ms
    const down = 10 + random() * 5; // downlink: 10 ms + 0..5 ms
    const pong = newPong(ping, real + up + SERVER_OFFSET_MS);
    assert.equal(sync.onMessage(JSON.stringify(pong), real + up + down + skewMs), true);
    real += 100;
  }
  const tOpenSeconds = (real + 3000 + SERVER_OFFSET_MS) / 1000;
  const trueLocal = real + 3000 + skewMs; // the client's clock when the server's reads T_open
  return [Math.abs(sync.localTimeOf(tOpenSeconds) - trueLocal), sync.uncertainty];
}

test('200 viewers under asymmetric jitter recover a +-10 s skew within 20 ms', () => {
  const random = rng(7);
  const errors = [];
  for (let i = 0; i < 200; i++) {
    const [err, bound] = virtualViewer(random, (random() * 2 - 1) * 10_000);
    assert.ok(err <= bound + 1e-6, `error ${err} over its bound ${bound}`);
    errors.push(err);
  }
  const max = Math.max(...errors);
  assert.ok(max <= 20, `max error ${max} ms`);
});

for (const echo of [false, true]) {
  test(`attach() syncs over a datachannel in virtual time (echo=${echo})`, () => {
    const sim = new Sim(5_000_000); // the client clock's origin is arbitrary
    const random = rng(11);
    const channel = new FakeChannel(sim, {
      serverOffsetMs: -4321,
      up: () => 10 + random() * 50,
      down: () => 10 + random() * 5,
      echo,
    });
    const sync = new ClockSync({ now: () => sim.now, timers: sim });
    const detach = sync.attach(channel);
    sim.run(sim.now + 500);
    assert.equal(channel.sent.length, 0); // nothing before the channel opens
    channel.open();
    sim.run(sim.now + 2000);
    assert.equal(channel.sent.length, 8);
    assert.equal(sync.burstDone, true);
    assert.ok(Math.abs(sync.offset - -4321) <= sync.uncertainty + 1e-6);
    assert.ok(Math.abs(sync.offset - -4321) <= 20);
    // Resync 30 s after the burst started: 8 more pings, and nothing in between.
    sim.run(sim.now + 25_000);
    assert.equal(channel.sent.length, 8);
    sim.run(sim.now + 5_000);
    assert.equal(channel.sent.length, 16);
    assert.deepEqual(
      channel.sent.map((m) => m.id),
      Array.from({ length: 16 }, (_, i) => i + 1),
    );
    detach();
    sim.run(sim.now + 60_000);
    assert.equal(channel.sent.length, 16);
    assert.equal(sim.queue.length, 0); // no timer left armed
  });
}

test('attach() stops pinging when the channel closes', () => {
  const sim = new Sim();
  const channel = new FakeChannel(sim, { serverOffsetMs: 0, up: () => 5, down: () => 5 });
  channel.readyState = 'open';
  const sync = new ClockSync({ now: () => sim.now, timers: sim });
  sync.attach(channel);
  assert.equal(channel.sent.length, 1); // an open channel is pinged at once
  sim.run(250);
  channel.close();
  const count = channel.sent.length;
  sim.run(60_000);
  assert.equal(channel.sent.length, count);
});

test('openClockChannel asks for an unordered channel without retransmissions', () => {
  const calls = [];
  const pc = { createDataChannel: (label, options) => calls.push([label, options]) };
  openClockChannel(pc);
  assert.deepEqual(calls, [['clock', { ordered: false, maxRetransmits: 0 }]]);
  assert.equal(CLOCK_CHANNEL_LABEL, 'clock');
  assert.ok(Object.isFrozen(CLOCK_CHANNEL_OPTIONS));
});
