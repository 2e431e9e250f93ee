"""Command line: `token` output, `serve` settings and banner (with a stand-in node), logging."""

from __future__ import annotations

import json
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from sfu.auth import GRANTS, verify_token
from sfu.cli import main
from sfu.config import Settings, load_credentials
from sfu.logs import setup_logging

ENV_VARS = (
    "SFU_API_KEY",
    "SFU_API_SECRET",
    "SFU_HOST",
    "SFU_HTTP_PORT",
    "SFU_UDP_PORT",
    "SFU_PUBLIC_IP",
    "SFU_DATA_DIR",
    "SFU_CLUSTER_REDIS_URL",
    "SFU_NODE_ID",
    "SFU_PUBLIC_URL",
    "SFU_NODE_CAPACITY",
    "SFU_CASCADE_PORT",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def fake_node(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stand in for sfu.node so `serve` returns instead of running a media node."""
    calls: list[Settings] = []
    module = types.ModuleType("sfu.node")

    def run_node(settings: Settings) -> None:
        calls.append(settings)

    module.run_node = run_node  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sfu.node", module)
    return calls


def test_token_verifies_with_file_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "token",
            "--room",
            "shop-1",
            "--identity",
            "bob",
            "--grant",
            "publish,subscribe",
            "--data-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    token = out.strip()
    assert out == token + "\n"  # only the JWT, so `$(python -m sfu token ...)` works
    creds = load_credentials(Settings(data_dir=tmp_path), {})
    claims = verify_token(token, api_key=creds.api_key, api_secret=creds.api_secret)
    assert claims.room == "shop-1"
    assert claims.identity == "bob"
    assert claims.grants == {"publish", "subscribe"}


def test_token_defaults_to_subscribe_and_ttl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--room", "r", "--identity", "i", "--data-dir", str(tmp_path)]) == 0
    creds = load_credentials(Settings(data_dir=tmp_path), {})
    token = capsys.readouterr().out.strip()
    claims = verify_token(token, api_key=creds.api_key, api_secret=creds.api_secret)
    assert claims.grants == {"subscribe"}
    issued = verify_token(
        token, api_key=creds.api_key, api_secret=creds.api_secret, now=claims.expires_at - 21600
    )
    assert issued == claims


def test_token_uses_env_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SFU_API_KEY", "prod")
    monkeypatch.setenv("SFU_API_SECRET", "p" * 40)
    monkeypatch.setenv("SFU_DATA_DIR", str(tmp_path / "state"))
    assert main(["token", "--room", "r", "--identity", "i", "--ttl", "60"]) == 0
    claims = verify_token(capsys.readouterr().out.strip(), api_key="prod", api_secret="p" * 40)
    assert claims.room == "r"
    assert not (tmp_path / "state").exists()


def test_token_data_dir_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SFU_DATA_DIR", str(tmp_path / "state"))
    assert main(["token", "--room", "r", "--identity", "i"]) == 0
    assert (tmp_path / "state" / "credentials.json").exists()


def test_token_unknown_grant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "token",
            "--room",
            "r",
            "--identity",
            "i",
            "--grant",
            "publish,root",
            "--data-dir",
            str(tmp_path / "state"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "error: unknown grant 'root'" in captured.err
    for grant in GRANTS:
        assert grant in captured.err
    # A rejected command must not create credentials as a side effect.
    assert not (tmp_path / "state").exists()


def test_token_invalid_room(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["token", "--room", "r" * 200, "--identity", "i", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "error: room" in capsys.readouterr().err


def test_token_half_set_env_is_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SFU_API_KEY", "prod")
    code = main(["token", "--room", "r", "--identity", "i", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "error: SFU_API_KEY is set but SFU_API_SECRET is not" in capsys.readouterr().err


def test_missing_required_argument_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--room", "r"]) == 2
    assert "--identity" in capsys.readouterr().err


def test_no_command_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


def test_serve_env_provides_defaults_and_flags_override(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_node: list[Settings],
) -> None:
    monkeypatch.setenv("SFU_HOST", "10.1.1.1")
    monkeypatch.setenv("SFU_HTTP_PORT", "9000")
    monkeypatch.setenv("SFU_UDP_PORT", "11000")
    monkeypatch.setenv("SFU_PUBLIC_IP", "203.0.113.1, 203.0.113.2")
    monkeypatch.setenv("SFU_DATA_DIR", str(tmp_path / "env-dir"))
    code = main(
        [
            "serve",
            "--http-port",
            "9100",
            "--public-ip",
            "198.51.100.9",
            "--data-dir",
            str(tmp_path / "flag-dir"),
            "--peer-timeout",
            "3.5",
            "--log-level",
            "debug",
            "--no-json-logs",
            "--production",
        ]
    )
    assert code == 0
    [settings] = fake_node
    assert settings.host == "10.1.1.1"
    assert settings.http_port == 9100
    assert settings.udp_port == 11000
    assert settings.public_ips == ["198.51.100.9"]
    assert settings.data_dir == tmp_path / "flag-dir"
    assert settings.peer_timeout == 3.5
    assert settings.log_level == "debug"
    assert settings.log_json is False
    assert settings.dev_mode is False
    assert settings.credentials_source == str(tmp_path / "flag-dir" / "credentials.json")
    out = capsys.readouterr().out
    assert "http://10.1.1.1:9100/whip/{room}" in out
    assert "198.51.100.9" in out
    assert "dev token" not in out  # production mode
    assert (settings.viewer_fec, settings.publish_fec, settings.publish_red) == (
        True, False, False)


def test_serve_loss_recovery_flags(tmp_path: Path, fake_node: list[Settings]) -> None:
    code = main(["serve", "--data-dir", str(tmp_path), "--no-viewer-fec", "--publish-fec",
                 "--publish-red"])
    assert code == 0
    [settings] = fake_node
    assert (settings.viewer_fec, settings.publish_fec, settings.publish_red) == (
        False, True, True)


def test_serve_remb_fallback_is_on_unless_turned_off(
    tmp_path: Path, fake_node: list[Settings], monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["serve", "--data-dir", str(tmp_path)]) == 0
    assert main(["serve", "--data-dir", str(tmp_path), "--no-bwe-remb"]) == 0
    monkeypatch.setenv("SFU_BWE_REMB", "0")
    assert main(["serve", "--data-dir", str(tmp_path)]) == 0
    assert [s.bwe_remb for s in fake_node] == [True, False, False]


def test_serve_publisher_cap_and_temporal_steps_from_flag_or_env(
    tmp_path: Path, fake_node: list[Settings], monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["serve", "--data-dir", str(tmp_path)]) == 0
    assert main(["serve", "--data-dir", str(tmp_path), "--publisher-max-bitrate", "800000",
                 "--bwe-temporal-steps"]) == 0
    monkeypatch.setenv("SFU_PUBLISHER_MAX_BITRATE", "300000")
    monkeypatch.setenv("SFU_BWE_TEMPORAL_STEPS", "1")
    assert main(["serve", "--data-dir", str(tmp_path)]) == 0
    assert [(s.publisher_max_bitrate, s.bwe_temporal_steps) for s in fake_node] == [
        (0, False), (800_000, True), (300_000, True)]


def test_serve_banner_in_dev_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_node: list[Settings]
) -> None:
    assert main(["serve", "--data-dir", str(tmp_path), "--udp-port", "12000"]) == 0
    [settings] = fake_node
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8080" in out
    assert "http://127.0.0.1:8080/whip/{room}" in out
    assert "http://127.0.0.1:8080/whep/{room}" in out
    assert "12000" in out
    assert settings.credentials_source in out
    assert "python -m sfu token --room demo --identity me --grant publish,subscribe" in out
    dev_token = out.strip().splitlines()[-1].strip()
    claims = verify_token(dev_token, api_key=settings.api_key, api_secret=settings.api_secret)
    assert claims.room == "demo"
    assert claims.grants == GRANTS


def test_serve_cascade_port_from_flag_or_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_node: list[Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["serve", "--data-dir", str(tmp_path), "--cascade-port", "4433"]) == 0
    monkeypatch.setenv("SFU_CASCADE_PORT", "4434")
    assert main(["serve", "--data-dir", str(tmp_path)]) == 0
    monkeypatch.delenv("SFU_CASCADE_PORT")
    assert main(["serve", "--data-dir", str(tmp_path)]) == 0
    assert [s.cascade_port for s in fake_node] == [4433, 4434, 0]
    assert "QUIC port 4433" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--cascade-port", "70000"], {}, "cascade port"),
        (["--http-port", "70000"], {}, "HTTP port"),
        ([], {"SFU_UDP_PORT": "abc"}, "SFU_UDP_PORT"),
        (["--public-ip", "example.com"], {}, "not an IP address"),
        (["--peer-timeout", "0"], {}, "peer-timeout"),
        ([], {"SFU_API_SECRET": "x" * 40}, "SFU_API_KEY"),
        (["--cluster-redis-url", "localhost:6379"], {}, "cluster Redis URL"),
        ([], {"SFU_NODE_ID": "node 1"}, "node id"),
        (["--public-url", "sfu-1.example.com"], {}, "public URL"),
        (["--public-url", "https://sfu-1.example.com/sfu"], {}, "public URL"),
        (["--node-capacity", "-1"], {}, "node capacity"),
        ([], {"SFU_CASCADE_PORT": "70000"}, "cascade port"),
        (["--publisher-max-bitrate", "1000"], {}, "publisher max bitrate"),
        ([], {"SFU_PUBLISHER_MAX_BITRATE": "500k"}, "SFU_PUBLISHER_MAX_BITRATE"),
    ],
)
def test_serve_bad_settings_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_node: list[Settings],
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--data-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert fake_node == []


def test_json_logs_carry_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", json_logs=True)
    log = logging.getLogger("sfu.test")
    log.debug("hidden")
    log.info("peer joined %s", "alice", extra={"room": "shop-1", "obj": object()})
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "info"
    assert entry["logger"] == "sfu.test"
    assert entry["msg"] == "peer joined alice"
    assert entry["room"] == "shop-1"
    assert "ts" in entry and "obj" in entry


def test_setup_logging_is_idempotent_and_plain(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", json_logs=True)
    setup_logging("warning", json_logs=False)
    log = logging.getLogger("sfu.test")
    log.info("hidden")
    log.warning("disk low")
    err = capsys.readouterr().err
    assert err.count("disk low") == 1
    assert "WARNING" in err and not err.lstrip().startswith("{")
    with pytest.raises(ValueError):
        setup_logging("loud", json_logs=True)


def test_serve_cluster_settings_from_env_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_node: list[Settings]
) -> None:
    monkeypatch.setenv("SFU_CLUSTER_REDIS_URL", "redis://redis:6379/1")
    monkeypatch.setenv("SFU_NODE_ID", "sfu-1")
    monkeypatch.setenv("SFU_PUBLIC_URL", "https://sfu-1.example.com/")
    monkeypatch.setenv("SFU_NODE_CAPACITY", "500")
    monkeypatch.setenv("SFU_CASCADE_PORT", "4433")
    assert main(["serve", "--data-dir", str(tmp_path), "--node-id", "edge-7",
                 "--cascade-port", "0"]) == 0
    [settings] = fake_node
    assert settings.cluster_redis_url == "redis://redis:6379/1"
    assert settings.node_id == "edge-7"
    assert settings.public_url == "https://sfu-1.example.com"
    assert settings.node_capacity == 500
    assert settings.cascade_port == 0


def test_serve_without_cluster_settings_is_a_single_node(
    tmp_path: Path, fake_node: list[Settings]
) -> None:
    assert main(["serve", "--data-dir", str(tmp_path)]) == 0
    [settings] = fake_node
    assert (settings.cluster_redis_url, settings.node_id, settings.public_url) == ("", "", "")
    assert (settings.node_capacity, settings.cascade_port) == (0, 0)
