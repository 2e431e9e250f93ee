"""Helpers for driving headless Debian Chromium through Playwright in the e2e tests."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_PATH = Path("/usr/bin/chromium")
PAGES_DIR = Path(__file__).parent / "pages"
ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "test-artifacts"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-gpu",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    # Chromium leaves loopback out of WebRTC host candidates unless told otherwise; the
    # node under test listens on 127.0.0.1 only.
    "--allow-loopback-in-peer-connection",
    # No autoplay gesture needed for the player's <video>.
    "--autoplay-policy=no-user-gesture-required",
]


async def launch_chromium(playwright: Any) -> Any:
    """Launch Debian's Chromium (never a Playwright-downloaded one)."""
    return await playwright.chromium.launch(
        executable_path=str(CHROMIUM_PATH), headless=True, args=CHROMIUM_ARGS
    )


def page_url(pages_url: str, name: str, **params: str) -> str:
    return f"{pages_url.rstrip('/')}/{name}?{urllib.parse.urlencode(params)}"


class PageLog:
    """Collects console messages and page errors so a failure can show what the page saw."""

    def __init__(self, page: Any, label: str) -> None:
        self.label = label
        self.lines: list[str] = []
        page.on("console", lambda msg: self.lines.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda err: self.lines.append(f"[pageerror] {err}"))

    def tail(self, n: int = 40) -> str:
        return f"--- {self.label} console ---\n" + "\n".join(self.lines[-n:])


async def poll_js(
    page: Any,
    expression: str,
    predicate: Callable[[Any], bool],
    *,
    timeout: float,  # noqa: ASYNC109 (deadline of the poll loop)
    interval: float = 0.25,
    describe: str = "",
    log: PageLog | None = None,
) -> Any:
    """Evaluate ``expression`` in the page until ``predicate(value)`` holds, bounded.

    Returns the value that satisfied the predicate; on timeout raises AssertionError with
    the last value seen and the page's console tail.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = await page.evaluate(expression)
        if predicate(last):
            return last
        if loop.time() >= deadline:
            details = json.dumps(last, indent=1, default=str)
            tail = log.tail() if log is not None else ""
            raise AssertionError(
                f"{describe or expression} not satisfied after {timeout}s; last value:\n"
                f"{details}\n{tail}"
            )
        await asyncio.sleep(interval)  # polling interval of a deadline-bounded loop


async def wait_page_status(
    page: Any,
    wanted: str,
    *,
    timeout: float,  # noqa: ASYNC109
    log: PageLog,
) -> None:
    """Wait for ``window.whip.status == wanted``; fail fast if the page reports error/failed."""
    status = await poll_js(
        page,
        "() => window.whip || {}",
        lambda w: w.get("status") in (wanted, "error", "failed"),
        timeout=timeout,
        describe=f"page status {wanted!r}",
        log=log,
    )
    if status.get("status") != wanted:
        raise AssertionError(f"page status {status!r} (wanted {wanted!r})\n{log.tail()}")


def save_artifact(name: str, data: Any) -> Path:
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / name
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


async def post_offer(
    http_url: str, endpoint: str, room: str, token: str, sdp: str
) -> tuple[str, str]:
    """POST a page's offer to WHIP/WHEP (`endpoint`); (absolute resource URL, answer SDP)."""
    url = f"{http_url}/{endpoint}/{urllib.parse.quote(room, safe='')}"
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
        http.post(url, data=sdp.encode(), headers=headers) as resp,
    ):
        body = await resp.text()
        assert resp.status == 201, (resp.status, body)
        return urllib.parse.urljoin(url, resp.headers["Location"]), body
