"""Trace readers: Mahimahi and OpenNetLab JSON against hand-computed capacities, errors."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from bench.traces import (
    RFC8867_VARIABLE,
    JsonTrace,
    MahimahiTrace,
    StepTrace,
    TraceError,
    constant,
    load_trace,
    read_json_trace,
    read_mahimahi,
    steps,
)


def _shared_traces() -> Path:
    """/work/shared/traces next to the repo (the repo is <root>/main, traces <root>/shared)."""
    repo = Path(__file__).resolve().parents[3]
    return (repo.parent / "shared" / "traces").resolve()


SHARED = _shared_traces()
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- Mahimahi ---------------------------------------------------------------------------


def test_single_line_one_is_12_mbit_per_s(tmp_path: Path) -> None:
    tr = read_mahimahi(write(tmp_path, "one.down", "1\n"))
    assert tr.duration == 0.001
    assert tr.mean_bps == 12e6
    assert tr.mean_rate(0.0, 1.0) == pytest.approx(999 * 12e3)  # [0, 1 s) holds 1..999 ms
    assert tr.mean_rate(0.0005, 1.0005) == pytest.approx(12e6)
    # One 1500-byte opportunity at 1, 2, 3 ... ms.
    assert [tr.time_at(x) for x in (1, 1500, 1501, 3000, 3001)] == [
        0.001,
        0.001,
        0.002,
        0.002,
        0.003,
    ]
    assert tr.cumulative(0.001) == 0  # strictly before 1 ms
    assert tr.cumulative(0.0015) == 1500
    assert tr.serve(0.0, 1200) == 0.001
    assert tr.serve(0.0011, 1200) == 0.002


def test_repeated_timestamps_loop_with_period_last_timestamp(tmp_path: Path) -> None:
    # 3 opportunities at 0 ms, 1 at 5 ms, 2 at 10 ms; period 10 ms -> 6 per 10 ms.
    tr = read_mahimahi(write(tmp_path, "t.up", "0\n0\n0\n5\n10\n10\n"))
    assert isinstance(tr, MahimahiTrace)
    assert tr.duration == 0.010
    assert tr.mean_bps == pytest.approx(6 * 1500 * 8 / 0.010)
    assert tr.cumulative(0.0) == 0
    assert tr.cumulative(0.000001) == 3 * 1500
    assert tr.cumulative(0.005) == 3 * 1500
    assert tr.cumulative(0.0051) == 4 * 1500
    # The last line of loop k and the first line of loop k+1 share the instant 10 ms.
    assert tr.cumulative(0.010) == 4 * 1500
    assert tr.cumulative(0.0101) == 9 * 1500
    assert tr.time_at(6 * 1500) == 0.010
    assert tr.time_at(7 * 1500) == 0.010  # loop 1's "0" lines at 10 ms
    assert tr.time_at(10 * 1500) == 0.015
    assert tr.next_opportunity(0.0051) == 0.010
    assert tr.next_opportunity(0.005) == 0.005
    # 6 opportunities per 10 ms in any aligned 1-s window.
    assert tr.mean_rate(3.0, 4.0) == pytest.approx(600 * 1500 * 8)
    assert tr.rate_at(3.2) == pytest.approx(600 * 1500 * 8)


def test_mahimahi_serve_spans_opportunities(tmp_path: Path) -> None:
    tr = read_mahimahi(write(tmp_path, "t", "2\n4\n"))  # one opportunity each 2 ms
    # 4000 bytes need three 1500-byte opportunities: 2, 4 and 6 ms.
    assert tr.serve(0.0, 4000) == pytest.approx(0.006)


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("", ":1:", "empty"),
        ("\n\n", ":1:", "empty"),
        ("1\n2\nabc\n", ":3:", "not an integer: 'abc'"),
        ("1\n2.5\n", ":2:", "not an integer"),
        ("1\n-3\n", ":2:", "negative"),
        ("5\n7\n6\n", ":3:", "non-decreasing"),
        ("0\n0\n", ":2:", "nonzero"),
        ("1\n\n2\n", ":2:", "empty line"),
    ],
)
def test_mahimahi_errors_name_file_and_line(
    tmp_path: Path, text: str, where: str, what: str
) -> None:
    p = write(tmp_path, "bad.down", text)
    with pytest.raises(TraceError) as e:
        read_mahimahi(p)
    assert str(e.value).startswith(f"{p}{where}")
    assert what in str(e.value)


def test_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_trace(str(tmp_path / "nope.down"))


# --- JSON -------------------------------------------------------------------------------


def json_trace(segments: Sequence[Mapping[str, object]], direction: str = "uplink") -> str:
    return json.dumps({"type": "video", direction: {"trace_pattern": segments}})


def test_json_segments_capacity_loss_rtt(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "t.json",
        json_trace(
            [
                {"duration": 1000, "capacity": 800, "loss": 0.1, "rtt": 40},
                {"duration": 500, "capacity": 0},
                {"duration": 500, "capacity": 1600, "jitter": 5},
            ]
        ),
    )
    tr = read_json_trace(p, clip=None)
    assert isinstance(tr, JsonTrace)
    assert tr.duration == 2.0
    assert tr.rate_at(0.5) == 800e3
    assert tr.rate_at(1.2) == 0.0
    assert tr.rate_at(1.7) == 1600e3
    assert tr.rate_at(2.5) == 800e3  # loops
    # 800 kbit/s for 1 s = 100 kB; outage; 1.6 Mbit/s for 0.5 s = 100 kB.
    assert tr.cumulative(1.0) == pytest.approx(100_000)
    assert tr.cumulative(1.5) == pytest.approx(100_000)
    assert tr.cumulative(2.0) == pytest.approx(200_000)
    assert tr.cumulative(3.0) == pytest.approx(300_000)
    assert tr.time_at(100_000) == pytest.approx(1.0)
    assert tr.time_at(100_001) == pytest.approx(1.5 + 1 / 200_000)
    assert tr.next_opportunity(1.2) == pytest.approx(1.5)
    assert tr.next_opportunity(0.3) == 0.3
    # A 1000-byte packet queued at 0.995 s: 500 bytes in the first segment's last 5 ms,
    # the other 500 in 2.5 ms at 200 kB/s after the outage.
    assert tr.serve(0.995, 1000) == pytest.approx(1.5 + 0.0025)
    assert tr.mean_bps == pytest.approx(800e3)
    assert (tr.loss_at(0.5), tr.rtt_at(0.5), tr.jitter_at(0.5)) == (0.1, 40.0, None)
    assert (tr.loss_at(1.7), tr.rtt_at(1.7), tr.jitter_at(1.7)) == (None, None, 5.0)


def test_json_clip_outliers_to_twice_the_median(tmp_path: Path) -> None:
    segs = [{"duration": 100, "capacity": c} for c in (1000, 1000, 0, 1200, 9_000_000)]
    p = write(tmp_path, "o.json", json_trace(segs))
    clipped = read_json_trace(p)
    assert clipped.rate_at(0.45) == 2 * 1100e3  # median of non-zero: 1100 kbps
    assert clipped.clipped_segments == 1
    assert read_json_trace(p, clip=None).rate_at(0.45) == 9e9


def test_json_downlink_direction(tmp_path: Path) -> None:
    p = write(tmp_path, "d.json", json_trace([{"duration": 10, "capacity": 5}], "downlink"))
    assert read_json_trace(p, direction="downlink").rate_at(0) == 5000
    with pytest.raises(TraceError, match=r"\$\.uplink"):
        read_json_trace(p)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('{"uplink": {"trace_pattern": [}', ":1:"),
        ('{"uplink": {}}', "$.uplink.trace_pattern: missing"),
        (json_trace([]), "$.uplink.trace_pattern: expected a non-empty list"),
        (json_trace([{"duration": 10}]), "$.uplink.trace_pattern[0].capacity: missing"),
        (
            json_trace([{"duration": 10, "capacity": 5}, {"capacity": 5}]),
            "$.uplink.trace_pattern[1].duration: missing",
        ),
        (
            json_trace([{"duration": 10, "capacity": -5}]),
            "$.uplink.trace_pattern[0].capacity: capacity must be a finite number >= 0",
        ),
        (
            json_trace([{"duration": 10, "capacity": "x"}]),
            "$.uplink.trace_pattern[0].capacity: capacity must be a number",
        ),
        (
            json_trace([{"duration": 10, "capacity": 5, "loss": 2}]),
            "$.uplink.trace_pattern[0].loss",
        ),
        (json_trace([{"duration": 10, "capacity": 0}]), "every segment has capacity 0"),
    ],
)
def test_json_errors_name_file_and_path(tmp_path: Path, text: str, what: str) -> None:
    p = write(tmp_path, "bad.json", text)
    with pytest.raises(TraceError) as e:
        read_json_trace(p)
    assert str(e.value).startswith(str(p))
    assert what in str(e.value)


# --- synthetic and specs ----------------------------------------------------------------


def test_rfc8867_variable_capacity() -> None:
    tr = RFC8867_VARIABLE
    assert tr.duration == 100
    assert [tr.rate_at(t) for t in (0, 39.9, 40, 59.9, 60, 79.9, 80, 99.9)] == [
        1e6,
        1e6,
        2.5e6,
        2.5e6,
        0.6e6,
        0.6e6,
        1e6,
        1e6,
    ]
    assert tr.cumulative(100) == pytest.approx((40 * 1 + 20 * 2.5 + 20 * 0.6 + 20 * 1) * 1e6 / 8)


def test_constant_and_steps() -> None:
    c = constant(2e6)
    assert c.serve(3.0, 250_000) == pytest.approx(4.0)
    assert c.time_at(c.cumulative(123.456) + 1) == pytest.approx(123.456 + 4e-6)
    outage = constant(0)
    assert math.isinf(outage.serve(0.0, 1)) and math.isinf(outage.next_opportunity(5.0))
    s = steps([(1.0, 1e6), (1.0, 0.0)])
    assert s.next_opportunity(1.5) == pytest.approx(2.0)
    assert s.next_opportunity(3.5) == pytest.approx(4.0)
    # A backlog that ends exactly as the outage starts leaves at its start.
    assert s.serve(0.0, 125_000) == pytest.approx(1.0)
    assert s.serve(0.0, 125_001) == pytest.approx(2.0 + 8 / 1e6)


def test_load_trace_specs(tmp_path: Path) -> None:
    c = load_trace("const:2.5e6")
    assert isinstance(c, StepTrace) and c.rate_at(7) == 2.5e6
    assert load_trace("const:800k").rate_at(0) == 800e3
    assert load_trace("rfc8867") is RFC8867_VARIABLE
    assert isinstance(load_trace(str(write(tmp_path, "x.up", "1\n"))), MahimahiTrace)
    assert isinstance(load_trace(str(write(tmp_path, "x.anything", "1\n"))), MahimahiTrace)
    j = write(tmp_path, "x.json", json_trace([{"duration": 10, "capacity": 5}]))
    assert isinstance(load_trace(str(j)), JsonTrace)
    for bad in ("", "const:fast", "const:-1"):
        with pytest.raises(TraceError):
            load_trace(bad)


# --- the real files ---------------------------------------------------------------------


@needs_shared
def test_real_mahimahi_trace_matches_its_readme() -> None:
    path = SHARED / "mahimahi" / "TMobile-LTE-short.down"
    tr = read_mahimahi(path)
    lines = path.read_text().split()
    assert len(tr.timestamps_ms) == len(lines) == 194846
    assert tr.duration == int(lines[-1]) / 1000
    assert tr.mean_bps / 1e6 == pytest.approx(16.70, abs=0.01)  # README: mean 16.70
    # Hand count over [10 s, 11 s): lines with 10000 <= t < 11000.
    n = sum(1 for x in lines if 10_000 <= int(x) < 11_000)
    assert tr.mean_rate(10.0, 11.0) == pytest.approx(n * 1500 * 8)


@needs_shared
def test_real_json_traces() -> None:
    tr = read_json_trace(SHARED / "opennetlab-gym" / "4G_3mbps.json")
    assert tr.rate_at(0.1) == 0.0  # starts with an outage
    assert tr.rate_at(0.3) == 1720e3
    assert tr.clipped_segments > 0 and tr.clip_bps is not None
    assert max(r for _, r in tr.segments) <= tr.clip_bps
    loss = read_json_trace(SHARED / "opennetlab-gym" / "loss" / "trace_loss_pattern_2.json")
    assert loss.duration == 1.0
    assert (loss.loss_at(0.2), loss.loss_at(0.7), loss.loss_at(1.7)) == (0.0, 0.2, 0.2)
    assert loss.rate_at(0.2) == 1e6
    rtt = read_json_trace(SHARED / "opennetlab-gym" / "rtt" / "trace_rtt_pattern_2.json")
    assert (rtt.rtt_at(1.0), rtt.rtt_at(3.0)) == (200.0, 400.0)
