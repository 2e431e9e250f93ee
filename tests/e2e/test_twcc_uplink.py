"""Headless Chromium publishes a 1280x720 fake camera via WHIP; the node returns transport-cc
feedback, so Chromium's bandwidth estimate, and with it the video bitrate, climbs.

Chromium starts its estimate at 300 kbit/s and, without feedback, keeps it there (NOTES.md).
The test runs the publisher twice: against the node as it is, where the video bitrate must pass
1 Mbit/s within 10 s of connecting and the sender's estimate (`availableOutgoingBitrate` of the
selected candidate pair) must grow past it; and against the same node with its transport-cc
feedback switched off (the extension is still negotiated), where neither may happen.

The camera is Chromium's fake capture device fed from a Y4M file of grey with luma noise
(`--use-file-for-fake-video-capture`). Its built-in pattern is so cheap to encode that VP8
sends only about 0.7 Mbit/s at 1280x720 with a 2.5 Mbit/s target (measured), which would
measure the content, not the congestion control. Noise makes the encoder spend what it is given,
and the sender keeps 1280x720 (degradationPreference "maintain-resolution") so that Chromium's
QP-driven resolution changes do not decide the bitrate either.
Timelines land in test-artifacts/twcc-uplink-*.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sfu.net.peer import Peer
from tests.e2e.browser import (
    CHROMIUM_ARGS,
    CHROMIUM_PATH,
    PageLog,
    page_url,
    save_artifact,
    wait_page_status,
)

pytestmark = pytest.mark.browser

CONNECT_TIMEOUT = 20.0
CLIMB_TIMEOUT = 10.0  # seconds from "connected" for the bitrate to pass TARGET_BPS
CONTROL_DURATION = 8.0
MIN_SAMPLED = 4.0  # keep sampling this long even once the target is reached (for the artifact)
TARGET_BPS = 1_000_000
SAMPLE_INTERVAL = 0.5
WIDTH, HEIGHT, NOISE_FRAMES, NOISE_AMPLITUDE = 1280, 720, 8, 24

# Video bytes sent and the sender's estimate, read straight from the publisher's getStats().
SAMPLE_JS = """
async () => {
  const stats = await window.pc.getStats();
  const out = { t: 0, bytesSent: 0, frameWidth: 0, available: null, qualityLimitationReason: null,
                targetBitrate: 0 };
  let pairId = null;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    if (s.type === "outbound-rtp" && s.kind === "video") {
      out.t = s.timestamp;
      out.bytesSent += s.bytesSent || 0;
      out.targetBitrate += s.targetBitrate || 0;
      out.frameWidth = Math.max(out.frameWidth, s.frameWidth || 0);
      out.qualityLimitationReason = s.qualityLimitationReason || null;
    }
  });
  const pair = pairId && stats.get(pairId);
  if (pair && pair.availableOutgoingBitrate !== undefined) out.available = pair.availableOutgoingBitrate;
  return out;
}
"""


# Chromium starts a 720p camera at 320x180 (its start estimate is low) and, with the default
# "balanced" preference, raises the resolution only while the encoder's QP is low, which noise
# never allows. Keeping the resolution isolates what this test is about: the bitrate follows the
# estimate. Both runs use it.
KEEP_RESOLUTION_JS = """
async () => {
  for (const sender of window.pc.getSenders()) {
    if (!sender.track || sender.track.kind !== "video") continue;
    const params = sender.getParameters();
    params.degradationPreference = "maintain-resolution";
    await sender.setParameters(params);
  }
}
"""


def write_noise_y4m(path: Path) -> None:
    """A few 1280x720 I420 frames of grey with luma noise of +-NOISE_AMPLITUDE; Chromium loops
    the file at 30 fps. Full-range noise would not do: VP8 then cannot get below ~1.1 Mbit/s at
    720p even at its coarsest quantiser (measured), with or without feedback. At +-24 it sends
    ~0.2 Mbit/s on a 0.3 Mbit/s estimate and ~2.5 Mbit/s on a 4 Mbit/s one."""
    levels = 2 * NOISE_AMPLITUDE + 1
    to_luma = bytes(128 - NOISE_AMPLITUDE + b % levels for b in range(256))
    grey_chroma = b"\x80" * (WIDTH * HEIGHT // 2)
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(NOISE_FRAMES):
            f.write(b"FRAME\n" + os.urandom(WIDTH * HEIGHT).translate(to_luma) + grey_chroma)


@pytest.fixture
async def noise_chromium(tmp_path: Path) -> AsyncIterator[Any]:
    """Headless Debian Chromium whose fake camera plays a noise file at 1280x720."""
    if not CHROMIUM_PATH.exists():
        pytest.skip(f"{CHROMIUM_PATH} not installed (make test installs Debian's chromium)")
    from playwright.async_api import async_playwright

    video = tmp_path / "noise.y4m"
    write_noise_y4m(video)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM_PATH),
            headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={video}"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def _publish_and_sample(
    node: Any, mint: Callable[..., str], browser: Any, pages_url: str, room: str,
    *, duration: float, stop_when_reached: bool,
) -> dict[str, Any]:
    """Publish, then sample the sender's stats until `duration` (or the target) is reached."""
    context = await browser.new_context()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(context.close)
        page = await context.new_page()
        log = PageLog(page, "publish.html")
        await page.goto(
            page_url(
                pages_url, "publish.html", node=node.http_url, room=room,
                token=mint(room, "twcc-host", ["publish"]),
            )
        )
        await wait_page_status(page, "connected", timeout=CONNECT_TIMEOUT, log=log)
        capture = [c for c in await page.evaluate("window.captureSettings") if c["kind"] == "video"]
        assert (capture[0]["width"], capture[0]["height"]) == (WIDTH, HEIGHT), capture
        await page.evaluate(KEEP_RESOLUTION_JS)
        loop = asyncio.get_running_loop()
        started = loop.time()
        samples: list[dict[str, Any]] = []
        reached_at: float | None = None
        peak_bps = 0.0
        while loop.time() - started < duration:
            sample = await page.evaluate(SAMPLE_JS)
            sample["elapsed"] = round(loop.time() - started, 2)
            sample["twcc_feedback"] = node.metrics.twcc_feedback
            # Bitrate over the last second of samples (stats timestamps are in ms).
            earlier = [s for s in samples if sample["t"] - s["t"] >= 1000]
            if earlier:
                ref = earlier[-1]
                bps = (sample["bytesSent"] - ref["bytesSent"]) * 8000 / (sample["t"] - ref["t"])
                sample["bps"] = round(bps)
                peak_bps = max(peak_bps, bps)
                if bps > TARGET_BPS and reached_at is None:
                    reached_at = sample["elapsed"]
            samples.append(sample)
            if (
                stop_when_reached
                and reached_at is not None
                and sample["elapsed"] >= MIN_SAMPLED
                and (sample.get("available") or 0) > TARGET_BPS
            ):
                break
            await asyncio.sleep(SAMPLE_INTERVAL)  # sampling period of a deadline-bounded loop
        assert await page.evaluate("window.stopPublishing()") in (200, 204), log.tail()
        return {
            "reached_1mbps_after_s": reached_at,
            "peak_bps": round(peak_bps),
            "estimates": [s["available"] for s in samples if s.get("available") is not None],
            "twcc_feedback": node.metrics.twcc_feedback,
            "samples": samples,
            "console": log.lines[-20:],
        }


async def test_twcc_feedback_lets_chromium_raise_its_bitrate(
    node: Any, mint: Callable[..., str], noise_chromium: Any, pages_url: str
) -> None:
    run = await _publish_and_sample(
        node, mint, noise_chromium, pages_url, "twcc-uplink",
        duration=CLIMB_TIMEOUT, stop_when_reached=True,
    )
    save_artifact("twcc-uplink-feedback.json", run)
    estimates = run["estimates"]
    assert run["twcc_feedback"] > 0, "the node sent no transport-cc feedback"
    assert run["reached_1mbps_after_s"] is not None, (
        f"video bitrate peaked at {run['peak_bps'] / 1e6:.2f} Mbit/s in {CLIMB_TIMEOUT}s; "
        f"estimates {estimates}"
    )
    # The estimate left Chromium's 300 kbit/s start value (where the control run stays) behind.
    assert estimates and estimates[-1] > TARGET_BPS, estimates


async def test_without_feedback_chromium_stays_at_its_start_estimate(
    node: Any, mint: Callable[..., str], noise_chromium: Any, pages_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The control: transport-cc is still negotiated, but the node never answers it.
    monkeypatch.setattr(Peer, "enable_twcc", lambda self, ext_id: None)
    run = await _publish_and_sample(
        node, mint, noise_chromium, pages_url, "twcc-control",
        duration=CONTROL_DURATION, stop_when_reached=False,
    )
    save_artifact("twcc-uplink-control.json", run)
    assert run["twcc_feedback"] == 0
    assert run["reached_1mbps_after_s"] is None, run["peak_bps"]
    assert run["estimates"] and max(run["estimates"]) < TARGET_BPS, run["estimates"]
