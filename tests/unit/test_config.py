"""Settings: advertised ICE addresses and where API credentials come from."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import ifaddr
import pytest

from sfu.config import ConfigError, Settings, advertised_ips, load_credentials

GOOD_SECRET = "x" * 32


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _fake_adapters(monkeypatch: pytest.MonkeyPatch, ips: list[str | tuple[str, int, int]]) -> None:
    adapter = ifaddr.Adapter(
        "eth0", "eth0", [ifaddr.IP(ip, 24 if isinstance(ip, str) else 64, "eth0") for ip in ips]
    )
    monkeypatch.setattr(ifaddr, "get_adapters", lambda: [adapter])


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.http_port, s.udp_port) == ("127.0.0.1", 8080, 10000)
    assert s.public_ips == []
    assert s.data_dir == Path(".sfu")
    assert s.peer_timeout == 7.0
    assert s.max_request_bytes == 64 * 1024
    assert s.dev_mode and s.log_json and s.log_level == "info"
    # Separate instances must not share the mutable default list.
    assert Settings().public_ips is not s.public_ips


def test_advertised_ips_prefers_public_ips(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_adapters(monkeypatch, ["10.0.0.5"])
    s = Settings(host="0.0.0.0", public_ips=["203.0.113.7", "198.51.100.1"])
    assert advertised_ips(s) == ["203.0.113.7", "198.51.100.1"]


def test_advertised_ips_uses_specific_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_adapters(monkeypatch, ["10.0.0.5"])
    assert advertised_ips(Settings(host="192.168.1.20")) == ["192.168.1.20"]
    assert advertised_ips(Settings()) == ["127.0.0.1"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_advertised_ips_enumerates_interfaces_for_wildcard(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    _fake_adapters(
        monkeypatch,
        ["127.0.0.1", "10.0.0.5", ("fd00::2", 0, 0), "169.254.3.4", "192.168.1.20", "10.0.0.5"],
    )
    assert advertised_ips(Settings(host=host)) == ["10.0.0.5", "192.168.1.20"]


def test_advertised_ips_falls_back_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_adapters(monkeypatch, ["127.0.0.1", ("::1", 0, 0)])
    assert advertised_ips(Settings(host="0.0.0.0")) == ["127.0.0.1"]


def test_credentials_generated_once_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    settings = Settings(data_dir=data_dir)

    first = load_credentials(settings, {})
    path = data_dir / "credentials.json"
    assert first.credentials_source == str(path)
    assert first.api_key and len(first.api_secret) >= 32
    assert _mode(path) == 0o600
    assert _mode(data_dir) == 0o700
    assert json.loads(path.read_text()) == {
        "api_key": first.api_key,
        "api_secret": first.api_secret,
    }

    second = load_credentials(settings, {})
    assert (second.api_key, second.api_secret) == (first.api_key, first.api_secret)
    # The input is not mutated: load_credentials returns a copy.
    assert settings.api_key == "" and settings.credentials_source == ""


def test_generated_secrets_differ_between_data_dirs(tmp_path: Path) -> None:
    a = load_credentials(Settings(data_dir=tmp_path / "a"), {})
    b = load_credentials(Settings(data_dir=tmp_path / "b"), {})
    assert a.api_secret != b.api_secret


def test_loose_file_permissions_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"api_key": "k", "api_secret": GOOD_SECRET}))
    path.chmod(0o644)
    loaded = load_credentials(Settings(data_dir=tmp_path), {})
    assert (loaded.api_key, loaded.api_secret) == ("k", GOOD_SECRET)
    assert _mode(path) == 0o600


@pytest.mark.parametrize(
    "content", ["not json", "[]", json.dumps({"api_key": "k"}), json.dumps({"api_secret": "s"})]
)
def test_corrupt_credentials_file_is_an_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "credentials.json").write_text(content)
    with pytest.raises(ConfigError, match="credentials"):
        load_credentials(Settings(data_dir=tmp_path), {})


def test_short_secret_in_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "credentials.json").write_text(json.dumps({"api_key": "k", "api_secret": "s"}))
    with pytest.raises(ConfigError, match="at least 32"):
        load_credentials(Settings(data_dir=tmp_path), {})


def test_env_overrides_file(tmp_path: Path) -> None:
    load_credentials(Settings(data_dir=tmp_path / "file"), {})
    env = {"SFU_API_KEY": "prod-key", "SFU_API_SECRET": GOOD_SECRET}
    loaded = load_credentials(Settings(data_dir=tmp_path / "file"), env)
    assert (loaded.api_key, loaded.api_secret) == ("prod-key", GOOD_SECRET)
    assert loaded.credentials_source == "env"


def test_env_credentials_create_no_files(tmp_path: Path) -> None:
    env = {"SFU_API_KEY": "prod-key", "SFU_API_SECRET": GOOD_SECRET}
    load_credentials(Settings(data_dir=tmp_path / "state"), env)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"SFU_API_KEY": "prod-key"}, "SFU_API_SECRET"),
        ({"SFU_API_SECRET": GOOD_SECRET}, "SFU_API_KEY"),
    ],
)
def test_half_set_env_is_an_error(tmp_path: Path, env: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError, match=f"{missing} is not"):
        load_credentials(Settings(data_dir=tmp_path), env)
    assert not (tmp_path / "credentials.json").exists()


def test_short_env_secret_is_an_error(tmp_path: Path) -> None:
    env = {"SFU_API_KEY": "prod-key", "SFU_API_SECRET": "x" * 31}
    with pytest.raises(ConfigError, match="SFU_API_SECRET.*at least 32"):
        load_credentials(Settings(data_dir=tmp_path), env)
