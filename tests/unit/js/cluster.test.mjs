// node --test tests/unit/js/cluster.test.mjs  (run from pytest: test_cluster_js.py)
//
// sfu/static/js/cluster.js on a virtual clock: the socket URL hints, redirects and their
// limit, and which node a reconnect goes to after a failure.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EXCLUDE_TTL_MS, MAX_REDIRECTS, NodeRoute, socketUrl } from '../../../sfu/static/js/cluster.js';

const A = 'http://127.0.0.1:8001';
const B = 'http://127.0.0.1:8002';
const C = 'https://sfu-3.example.com';

function joined(node, nodes) {
  return { type: 'joined', node, nodes };
}

test('socketUrl maps the scheme and carries exclude and hops', () => {
  assert.equal(socketUrl(A), 'ws://127.0.0.1:8001/ws');
  assert.equal(socketUrl(C, { exclude: ['n2', 'n1'], hops: 1 }),
    'wss://sfu-3.example.com/ws?exclude=n1%2Cn2&hops=1');
});

test('a single node keeps reconnecting to its own URL', () => {
  let now = 0;
  const route = new NodeRoute(A + '/watch/demo', { now: () => now });
  assert.equal(route.first(), 'ws://127.0.0.1:8001/ws');
  route.joined({ type: 'joined' });
  route.failed();
  now += 100;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    assert.equal(route.next(attempt), 'ws://127.0.0.1:8001/ws');
  }
});

test('after a node fails the other nodes are tried, with the failed one excluded', () => {
  let now = 0;
  const route = new NodeRoute(A, { now: () => now });
  route.joined(joined('n2', [B, A, C]));
  assert.equal(route.node, 'n2');
  route.base = B;
  route.failed();
  now += 300;
  assert.equal(route.next(0), 'ws://127.0.0.1:8001/ws?exclude=n2');
  assert.equal(route.next(1), 'wss://sfu-3.example.com/ws?exclude=n2');
  assert.equal(route.next(2), 'ws://127.0.0.1:8001/ws?exclude=n2');
  // Joined elsewhere; a later failure of that node adds it to the list.
  route.joined(joined('n1', [A, C]));
  route.failed();
  assert.equal(route.next(0), 'wss://sfu-3.example.com/ws?exclude=n1%2Cn2');
});

test('a failed node is avoided only for a while', () => {
  let now = 0;
  const route = new NodeRoute(A, { now: () => now });
  route.joined(joined('n1', [A, B]));
  route.failed();
  now += EXCLUDE_TTL_MS - 1;
  assert.deepEqual(route.excluded(), ['n1']);
  now += 1;
  assert.deepEqual(route.excluded(), []);
  assert.equal(route.next(0), 'ws://127.0.0.1:8001/ws');
});

test('when every known node failed, all are tried again', () => {
  let now = 0;
  const route = new NodeRoute(A, { now: () => now });
  route.joined(joined('n1', [A, B]));
  route.failed();
  route.base = B;
  route.joined(joined('n2', [B, A]));
  route.failed();
  const urls = [0, 1].map((i) => route.next(i));
  assert.deepEqual(urls.map((u) => new URL(u).port).sort(), ['8001', '8002']);
  assert.ok(urls.every((u) => u.includes('exclude=n1%2Cn2')));
});

test('redirects are followed up to the limit and name the new base', () => {
  const route = new NodeRoute(A);
  route.first();
  for (let i = 1; i <= MAX_REDIRECTS; i += 1) {
    const url = route.redirect({ type: 'redirect', url: `ws://127.0.0.1:8002/ws?hops=${i}`,
      node_url: B, node: 'n2', reason: 'origin' });
    assert.equal(url, `ws://127.0.0.1:8002/ws?hops=${i}`);
    assert.equal(route.base, B);
  }
  assert.equal(route.redirect({ type: 'redirect', url: 'ws://x/ws', node_url: B }), null);
  route.joined(joined('n2', [B]));
  assert.equal(route.redirects, 0);
  assert.equal(route.redirect({ type: 'redirect', node_url: B }), null, 'a redirect needs a url');
});
