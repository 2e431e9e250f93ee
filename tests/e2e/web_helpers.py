"""Helpers for the web client e2e tests (tests/e2e/test_web_client.py): launching Chromium
for several live pages at once, opening the studio and viewer pages, and page-side checks
(contrast, focus order, layout)."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.e2e.browser import CHROMIUM_ARGS, CHROMIUM_PATH, PageLog, poll_js

# Several pages play and count down at once: none of them may be throttled as a background
# tab, or its timers would fire up to a second late.
WEB_CHROMIUM_ARGS = [
    *CHROMIUM_ARGS,
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--disable-features=IntensiveWakeUpThrottling",
]


async def launch_web_chromium(playwright: Any) -> Any:
    return await playwright.chromium.launch(
        executable_path=str(CHROMIUM_PATH), headless=True, args=WEB_CHROMIUM_ARGS
    )


def studio_url(base: str, room: str, **params: str) -> str:
    return f"{base}/studio?{urllib.parse.urlencode({'room': room, **params})}"


def watch_url(base: str, room: str) -> str:
    return f"{base}/watch/{urllib.parse.quote(room, safe='')}"


@asynccontextmanager
async def open_page(
    browser: Any, url: str, label: str, **context_options: Any
) -> AsyncIterator[tuple[Any, PageLog]]:
    """A page in its own browser context (own storage, own window), closed afterwards."""
    context = await browser.new_context(**context_options)
    try:
        page = await context.new_page()
        log = PageLog(page, label)
        await page.goto(url)
        yield page, log
    finally:
        await context.close()


async def wait_status(
    page: Any, holder: str, wanted: str, *, timeout: float, log: PageLog  # noqa: ASYNC109
) -> None:
    """Wait for ``window.<holder>.state().status == wanted`` (fail fast on error)."""
    state = await poll_js(
        page,
        f"() => window.{holder} ? window.{holder}.state() : null",
        lambda s: bool(s) and s["status"] in (wanted, "error", "closed"),
        timeout=timeout,
        describe=f"{holder} status {wanted!r}",
        log=log,
    )
    if state["status"] != wanted:
        raise AssertionError(f"{holder} status {state['status']!r}, wanted {wanted!r}\n{log.tail()}")


# Contrast of every visible text element against its nearest opaque background, WCAG 2.x.
CONTRAST_JS = """
() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map((x) => parseFloat(x)); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = ({r, g, b}) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bgOf = (el) => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c.a >= 0.99) return c; } return {r: 255, g: 255, b: 255, a: 1}; };
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const st = getComputedStyle(el); const rect = el.getBoundingClientRect();
    if (st.visibility === 'hidden' || st.display === 'none' || rect.width === 0 || rect.height === 0) continue;
    if (el.closest('.sr-only, [hidden]')) continue;
    const fg = parse(st.color); const bg = bgOf(el);
    const [a, b] = [lum(fg) + 0.05, lum(bg) + 0.05];
    out.push({text: el.textContent.trim().slice(0, 40), id: el.id || el.className || el.tagName,
      ratio: Math.round(100 * Math.max(a, b) / Math.min(a, b)) / 100});
  }
  return out;
}
"""

LAYOUT_JS = """
() => {
  const rect = (id) => { const r = document.getElementById(id).getBoundingClientRect();
    return {x: r.x, y: r.y, w: r.width, h: r.height, right: r.right, bottom: r.bottom}; };
  const buttons = [...document.querySelectorAll('button')].filter((b) => b.offsetParent !== null);
  return {
    innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
    video: rect('video'), card: rect('card'), buy: rect('buy'), add: rect('add-to-cart'),
    minButtonHeight: Math.min(...buttons.map((b) => b.getBoundingClientRect().height)),
    unlabelled: [...document.querySelectorAll('input, select, button, video')]
      .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
      .map((e) => e.id || e.tagName),
    clickableNonButtons: [...document.querySelectorAll('[onclick], div[tabindex], span[tabindex]')]
      .map((e) => e.id || e.tagName),
    live: [...document.querySelectorAll('[aria-live]')].map((e) => [e.id, e.getAttribute('aria-live')]),
  };
}
"""


async def focus_order(page: Any, presses: int) -> list[str]:
    """Ids (or tag names) of the elements focused by pressing Tab ``presses`` times."""
    await page.evaluate("() => { document.activeElement && document.activeElement.blur(); }")
    order: list[str] = []
    for _ in range(presses):
        await page.keyboard.press("Tab")
        order.append(
            await page.evaluate(
                "() => { const e = document.activeElement;"
                " return e ? (e.id || e.getAttribute('href') || e.tagName) : null; }"
            )
        )
    return order
