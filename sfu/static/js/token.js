// Where a page gets its access token:
// 1. `#token=<jwt>` in the URL fragment (never sent to any server: preferred), or
// 2. `?token=<jwt>` in the query string, or
// 3. in development only, the node's `GET /dev/token?room=&identity=&role=host|viewer`
//    (404 when the node runs with --production).
// In production the operator's backend mints the token (sfu.auth.mint_token) for the signed-in
// user and puts it in the link it gives them; see docs/client.md.

export class TokenUnavailable extends Error {}

/** The token in the page's URL (fragment first), or null. */
export function tokenFromLocation(loc = globalThis.location) {
  const fragment = new URLSearchParams((loc.hash || '').replace(/^#/, ''));
  return fragment.get('token') || new URLSearchParams(loc.search).get('token') || null;
}

/** The claims of a JWT, unverified (for display only: the node verifies). */
export function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return null;
  }
}

/**
 * A token for `room`: from the URL, else from the development endpoint.
 * @returns {Promise<{token: string, source: 'url'|'dev', identity: string|null}>}
 */
export async function pageToken({ room, role, identity, base } = {}) {
  const fromUrl = tokenFromLocation();
  if (fromUrl) return { token: fromUrl, source: 'url', identity: tokenClaims(fromUrl)?.sub ?? null };
  const q = new URLSearchParams({ room, role });
  if (identity) q.set('identity', identity);
  const url = new URL(`/dev/token?${q}`, base ?? globalThis.location.origin);
  let resp;
  try {
    resp = await fetch(url, { cache: 'no-store' });
  } catch (err) {
    throw new TokenUnavailable(`cannot reach the node for a token: ${err.message}`);
  }
  if (resp.status === 404) {
    throw new TokenUnavailable(
      'No access token. Open this page with #token=<token> (development tokens are off on this node).');
  }
  if (!resp.ok) throw new TokenUnavailable(`token request failed: ${resp.status} ${await resp.text()}`);
  const body = await resp.json();
  return { token: body.token, source: 'dev', identity: body.identity };
}
