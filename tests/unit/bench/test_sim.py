"""bench.sim: the simulated publisher -> node (real sfu.core) -> subscriber path."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.sim.run import PathSpec, SimConfig, simulate

SIM_DIR = Path(__file__).resolve().parents[3] / "bench" / "sim"


def run(**kw: object) -> dict:
    up = kw.pop("up", PathSpec(delay_ms=10))
    down = kw.pop("down", PathSpec(delay_ms=25))
    cfg = SimConfig(duration=kw.pop("duration", 20.0), up=up, down=down, **kw)  # type: ignore[arg-type]
    return simulate(cfg)


def test_same_seed_gives_identical_report_and_another_seed_differs() -> None:
    down = PathSpec(delay_ms=25, jitter_ms=5, loss="ge:loss=5%,burst=3", trace="const:1.2e6")
    a = run(seed=7, down=down, duration=15.0)
    b = run(seed=7, down=down, duration=15.0)
    c = run(seed=8, down=down, duration=15.0)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.dumps(a, sort_keys=True) != json.dumps(c, sort_keys=True)


def test_clean_link_no_loss_no_freeze_latency_is_propagation() -> None:
    report = run(seed=1)
    agg = report["metrics"]["aggregate"]
    assert agg["recovery"] == "none"
    assert agg["loss_before_recovery"] == 0.0
    assert agg["residual_loss"] == 0.0
    assert agg["frames_not_rendered"] == 0.0
    assert agg["freeze_count"] == 0
    for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        assert agg[key] == pytest.approx(35.0, abs=0.5)  # 10 ms up + 25 ms down
    # join at 1 s: PLI upstream, next frame is a keyframe, one frame period + 35 ms
    assert 0.035 <= agg["join_to_first_frame_s"] <= 0.035 + 2 / 30
    assert agg["cpu_per_forwarded_packet_us"] is None
    sub = report["metrics"]["subscribers"]["sub0"]
    assert sub["video"]["frames_rendered"] == sub["video"]["frames_sent"] > 500
    assert report["metrics"]["node"]["plis_upstream"] == 1


def test_twenty_percent_loss_without_recovery_is_the_honest_baseline() -> None:
    report = run(seed=3, duration=40.0, bitrate=300_000,
                 down=PathSpec(delay_ms=25, loss="bernoulli:20%"))
    agg = report["metrics"]["aggregate"]
    assert agg["recovery"] == "none"
    assert agg["loss_before_recovery"] == pytest.approx(0.2, abs=0.02)
    assert agg["residual_loss"] == pytest.approx(0.2, abs=0.02)
    assert agg["freeze_count"] > 0
    assert agg["frames_not_rendered"] > 0.2
    sub = report["metrics"]["subscribers"]["sub0"]
    assert sub["video"]["plis_sent"] > 0
    assert report["metrics"]["publisher"]["forced_keyframes"] > 0


def test_capacity_limits_received_bitrate_and_queues() -> None:
    report = run(seed=2, bitrate=1.5e6, down=PathSpec(delay_ms=25, trace="const:1e6",
                                                      queue_ms=200))
    agg = report["metrics"]["aggregate"]
    assert agg["received_bitrate_bps"] <= 1.02e6
    assert 0.8 <= agg["utilisation"] <= 1.02
    assert agg["queuing_delay_p95_ms"]["downlink"] > 100
    assert agg["loss_before_recovery"] > 0.2


def test_smoke_scenario_run_writes_summary(tmp_path: Path) -> None:
    assert main(["run-scenarios", "--smoke", "--quiet", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [e["scenario"] for e in summary] == ["clean", "bernoulli-20", "rfc8867-variable"]
    for entry in summary:
        for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "freeze_count",
                    "freeze_total_s", "loss_before_recovery", "residual_loss",
                    "frames_not_rendered", "received_bitrate_bps", "utilisation",
                    "queuing_delay_p95_ms", "overhead_nack_rtx_fec", "layer_switches",
                    "join_to_first_frame_s", "cpu_per_forwarded_packet_us", "recovery"):
            assert key in entry, key
        assert entry["duration"] == 10
        d = tmp_path / entry["scenario"]
        assert (d / "report.json").is_file() and (d / "summary.md").is_file()
        for png in ("bitrate.png", "latency.png", "loss.png", "layers.png"):
            assert (d / png).stat().st_size > 1000
    assert "| clean |" in (tmp_path / "summary.md").read_text()


def test_sim_command_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["sim", "--duration", "5", "--loss", "bernoulli:5%", "--trace", "const:2e6",
                 "--seed", "4", "--out", str(out), "--quiet", "--no-plots"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["scenario"] == "sim" and report["seed"] == 4 and report["duration"] == 5
    assert report["config"]["down"]["loss"] == "bernoulli:5%"
    assert set(report["series"]) >= {"t", "capacity_bps", "subscribers"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--loss", "wobbly:5%"], "--down-loss"),
        (["--up-loss", "bernoulli:150%"], "--up-loss"),
        (["--trace", "{bad}"], "bad.trace:2"),
        (["--trace", "/nonexistent/trace.down"], "/nonexistent/trace.down"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        args: list[str], needle: str) -> None:
    bad = tmp_path / "bad.trace"
    bad.write_text("1\nbanana\n3\n")
    args = [a.replace("{bad}", str(bad)) for a in args]
    code = main(["sim", "--duration", "1", "--quiet", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unreadable_or_malformed_scenario_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    assert main(["run-scenarios", "--scenarios", str(missing), "--quiet"]) == 2
    assert "nope.json" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"scenarios": [\n  {"name": "x",}\n]}')
    assert main(["run-scenarios", "--scenarios", str(broken), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "broken.json:2" in err and "Traceback" not in err
    typo = tmp_path / "typo.json"
    typo.write_text('{"scenarios": [{"name": "x", "down": {"los": "none"}}]}')
    assert main(["run-scenarios", "--scenarios", str(typo), "--quiet"]) == 2
    assert "los" in capsys.readouterr().err


def test_sim_modules_use_virtual_time_only() -> None:
    for path in SIM_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"asyncio", "socket", "time"}, (path, name)
