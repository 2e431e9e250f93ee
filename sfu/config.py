"""Node settings, the addresses advertised to ICE, and where the API credentials come from.

Credentials come from the environment (``SFU_API_KEY`` / ``SFU_API_SECRET``) in production.
Without them a development key and secret are generated once and persisted under
``data_dir`` so that tokens minted by ``python -m sfu token`` keep working across restarts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import ifaddr

from sfu.auth import MIN_SECRET_LENGTH

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.json"
ENV_API_KEY = "SFU_API_KEY"
ENV_API_SECRET = "SFU_API_SECRET"
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


class PortUnavailable(Exception):
    """A port the settings name could not be bound (in use, or not allowed) at start."""


@dataclass
class Settings:
    """Everything a node needs to start; plain data, validated by the CLI and loaders."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    udp_port: int = 10000
    # Empty means "derive from host / local interfaces" (see advertised_ips).
    public_ips: list[str] = field(default_factory=list)
    api_key: str = ""
    api_secret: str = ""
    data_dir: Path = Path(".sfu")
    # Seconds without any packet or keepalive before a peer is considered gone.
    peer_timeout: float = 7.0
    # Seconds a draining node (first SIGTERM/SIGINT) waits for its sessions to leave.
    drain_timeout: float = 30.0
    # Networks media peers may connect from (CIDRs); empty allows any. STUN checks from
    # elsewhere get no answer, so the node never sends to an address outside them.
    peer_networks: list[str] = field(default_factory=list)
    max_request_bytes: int = 64 * 1024
    dev_mode: bool = True
    log_level: str = "info"
    log_json: bool = True
    # "env" or the path of the credentials file; empty until load_credentials ran.
    credentials_source: str = ""
    # Commerce store: sqlite:///path or redis://host:port/db; empty means
    # sqlite:///<data_dir>/commerce.db (see signalling.store.open_store).
    store_url: str = ""
    # Recording (docs/recording.md): rooms recorded whenever they have tracks ("*" = all),
    # where recordings go (empty: <data_dir>/recordings), days to keep them (0: forever),
    # and the free disk space below which recordings stop.
    record_rooms: list[str] = field(default_factory=list)
    recordings_dir: str = ""
    recording_retention_days: float = 0.0
    recording_min_free_mb: int = 256
    # Downlink bandwidth estimation for viewers that negotiate transport-cc: the estimator
    # (sfu.core.bwe registry: gcc, remb, null), whether to probe with RTX padding, and
    # whether to pace their video at the estimate (sfu.net.downlink), and whether viewers
    # without transport-cc that report REMB (aiortc) get the REMB fallback (on: their REMB
    # caps their layers once it signals congestion, see sfu.core.bwe.remb).
    bwe_estimator: str = "gcc"
    bwe_probing: bool = True
    # Cluster (docs/deploy.md): the Redis holding the node registry and room directory
    # (empty: one node, no registry); this node's id (empty: <hostname>-<http port>); the HTTP
    # URL other nodes redirect clients to (empty: http://<first advertised IP>:<http port>);
    # how many viewer sessions this node takes before the directory prefers others (0: no
    # limit).
    cluster_redis_url: str = ""
    node_id: str = ""
    public_url: str = ""
    node_capacity: int = 0
    # UDP port of the QUIC cascade listener; 0 = off
    cascade_port: int = 0
    # Loss recovery beyond NACK/RTX (docs/benchmarks.md "Loss recovery"): video red+ulpfec
    # answered to viewers that offer it (the node adds ULPFEC per viewer when its loss and
    # RTT make NACK too slow); Opus RED and video red+ulpfec answered to publishers (off:
    # the node NACKs publishers already, and FEC at ingress costs the publisher's uplink and
    # the node a RED unwrap and FEC bookkeeping on every packet).
    viewer_fec: bool = True
    publish_red: bool = False
    publish_fec: bool = False
    bwe_pacing: bool = True
    bwe_remb: bool = True
    # VP8 temporal layers as allocation steps (off: one step per simulcast layer)
    bwe_temporal_steps: bool = False
    # REMB to every publisher: the most its video may send, bits/s (0: no cap)
    publisher_max_bitrate: int = 0


def _local_ipv4_addresses() -> list[str]:
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            # ifaddr reports IPv6 as (addr, flowinfo, scope) tuples and IPv4 as plain str.
            if not isinstance(ip.ip, str):
                continue
            try:
                addr = ipaddress.IPv4Address(ip.ip)
            except ValueError:
                continue
            # Link-local (169.254/16) addresses are unreachable for remote peers, like loopback.
            if addr.is_loopback or addr.is_link_local or addr.is_unspecified:
                continue
            if ip.ip not in found:
                found.append(ip.ip)
    return found


def advertised_ips(settings: Settings) -> list[str]:
    """Addresses to put in ICE host candidates, in preference order."""
    if settings.public_ips:
        return list(dict.fromkeys(settings.public_ips))
    if settings.host not in _WILDCARD_HOSTS:
        return [settings.host]
    return _local_ipv4_addresses() or ["127.0.0.1"]


def _check_secret(secret: str, origin: str) -> None:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{origin}: API secret is {len(secret)} characters; at least "
            f"{MIN_SECRET_LENGTH} are required (try: python -c "
            f"'import secrets; print(secrets.token_urlsafe(32))')"
        )


def _read_credentials(path: Path) -> tuple[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read credentials file {path}: {exc}; delete it to generate new ones"
        ) from exc
    key = data.get("api_key") if isinstance(data, dict) else None
    secret = data.get("api_secret") if isinstance(data, dict) else None
    if not isinstance(key, str) or not key or not isinstance(secret, str):
        raise ConfigError(
            f"credentials file {path} lacks api_key/api_secret; delete it to generate new ones"
        )
    _check_secret(secret, str(path))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # The secret signs every token; others on the machine must not be able to read it.
        log.warning("tightening permissions of %s from %o to 600", path, mode)
        path.chmod(0o600)
    return key, secret


def _create_credentials(path: Path) -> None:
    """Write fresh credentials unless another process won the race to create them."""
    data_dir = path.parent
    if not data_dir.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered through the umask; make 0700 hold regardless.
        data_dir.chmod(0o700)
    payload = {
        "api_key": "dev-" + secrets.token_hex(6),
        "api_secret": secrets.token_urlsafe(32),
    }
    tmp = data_dir / f".{CREDENTIALS_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        # link() refuses to overwrite, so concurrent first starts agree on one secret and
        # readers never observe a half-written file.
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:
            # Filesystems without hard links: a rename is atomic too, only not exclusive.
            if not path.exists():
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load_credentials(settings: Settings, env: Mapping[str, str]) -> Settings:
    """Return a copy of ``settings`` with api_key/api_secret filled from env or the data dir."""
    key = env.get(ENV_API_KEY, "")
    secret = env.get(ENV_API_SECRET, "")
    if key or secret:
        if not (key and secret):
            missing, present = (
                (ENV_API_SECRET, ENV_API_KEY) if key else (ENV_API_KEY, ENV_API_SECRET)
            )
            raise ConfigError(
                f"{present} is set but {missing} is not; set both, or neither to use "
                f"generated development credentials"
            )
        _check_secret(secret, ENV_API_SECRET)
        return dataclasses.replace(
            settings, api_key=key, api_secret=secret, credentials_source="env"
        )

    path = Path(settings.data_dir) / CREDENTIALS_FILE
    try:
        if not path.exists():
            _create_credentials(path)
            log.info("generated development API credentials in %s", path)
        key, secret = _read_credentials(path)
    except OSError as exc:
        raise ConfigError(f"cannot use credentials in {settings.data_dir}: {exc}") from exc
    return dataclasses.replace(
        settings, api_key=key, api_secret=secret, credentials_source=str(path)
    )
