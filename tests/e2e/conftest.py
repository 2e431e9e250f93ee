"""Fixtures for browser e2e tests: a static server for tests/e2e/pages, headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.e2e.browser import CHROMIUM_PATH, PAGES_DIR, launch_chromium


@pytest.fixture
async def pages_url() -> AsyncIterator[str]:
    """Serve tests/e2e/pages on http://127.0.0.1:<ephemeral> (a secure context for gUM)."""
    app = web.Application()

    async def no_favicon(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app.router.add_get("/favicon.ico", no_favicon)
    app.router.add_static("/", PAGES_DIR, show_index=True)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """Headless Debian Chromium via Playwright; skipped only when /usr/bin/chromium is absent."""
    if not CHROMIUM_PATH.exists():
        pytest.skip(f"{CHROMIUM_PATH} not installed (make test installs Debian's chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            yield browser
        finally:
            await browser.close()
