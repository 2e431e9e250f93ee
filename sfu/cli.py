"""Command line: ``serve`` runs a media node, ``token`` mints an access token.

Precedence for every setting is flag, then ``SFU_*`` environment variable, then the
``Settings`` default. Errors the user can fix are printed as ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sfu import __version__
from sfu.auth import GRANTS, mint_token
from sfu.config import ConfigError, PortUnavailable, Settings, advertised_ips, load_credentials
from sfu.logs import LEVELS, setup_logging

DEV_TOKEN_TTL = 24 * 3600
DEFAULT_TOKEN_TTL = 6 * 3600
MIN_PUBLISHER_CAP = 30_000  # under this a publisher's encoder cannot keep a picture
MAX_PUBLISHER_CAP = 100_000_000
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


class UsageError(Exception):
    """Bad flag or environment value; reported as ``error: ...`` with exit code 2."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sfu", description="Self-hosted WebRTC SFU for live commerce."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # Defaults are None so "flag not given" can fall back to the environment.
    serve = sub.add_parser("serve", help="run a media node until SIGINT/SIGTERM")
    serve.add_argument("--host", help="address to bind (env SFU_HOST; default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, help="HTTP port (env SFU_HTTP_PORT; 8080)")
    serve.add_argument("--udp-port", type=int, help="UDP media port (env SFU_UDP_PORT; 10000)")
    serve.add_argument(
        "--cascade-port", type=int,
        help="UDP port of the QUIC cascade listener for edge nodes; 0 = cascading off "
        "(env SFU_CASCADE_PORT; 0)",
    )
    serve.add_argument(
        "--public-ip",
        action="append",
        metavar="IP",
        help="address to advertise in ICE candidates; repeatable (env SFU_PUBLIC_IP, "
        "comma-separated)",
    )
    serve.add_argument("--data-dir", type=Path, help="state directory (env SFU_DATA_DIR; .sfu)")
    serve.add_argument(
        "--peer-timeout", type=float, help="seconds of silence before a peer is dropped (7)"
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        help="on SIGTERM, seconds to wait for sessions to leave before exiting "
        "(env SFU_DRAIN_TIMEOUT; 30)",
    )
    serve.add_argument(
        "--peer-network",
        action="append",
        metavar="CIDR",
        help="only accept media peers from this network; repeatable (default: any)",
    )
    serve.add_argument(
        "--store",
        metavar="URL",
        help="commerce store: sqlite:///path or redis://host:port/db (env SFU_STORE; "
        "default sqlite:///<data-dir>/commerce.db)",
    )
    serve.add_argument(
        "--record-room", action="append", metavar="ROOM",
        help="record this room whenever it has tracks; repeatable, '*' for every room",
    )
    serve.add_argument("--recordings-dir", help="where recordings go (<data-dir>/recordings)")
    serve.add_argument(
        "--recording-retention-days", type=float,
        help="delete recordings this many days after they end (default 0: keep)",
    )
    serve.add_argument(
        "--cluster-redis-url", metavar="URL",
        help="Redis of the node registry and room directory; empty runs one node "
        "(env SFU_CLUSTER_REDIS_URL)",
    )
    serve.add_argument(
        "--node-id", help="this node's id in the cluster (env SFU_NODE_ID; <hostname>-<http port>)"
    )
    serve.add_argument(
        "--public-url", metavar="URL",
        help="HTTP(S) URL other nodes redirect clients to (env SFU_PUBLIC_URL; "
        "http://<first public IP>:<http port>)",
    )
    serve.add_argument(
        "--node-capacity", type=int,
        help="viewer sessions before the cluster prefers other nodes (env SFU_NODE_CAPACITY; "
        "0: no limit)",
    )
    serve.add_argument(
        "--no-viewer-fec", action="store_true",
        help="do not answer video red+ulpfec to viewers (no video FEC towards them)",
    )
    serve.add_argument(
        "--publish-fec", action="store_true",
        help="answer video red+ulpfec to publishers and recover their losses from it",
    )
    serve.add_argument(
        "--publish-red", action="store_true",
        help="answer Opus RED to publishers (passed on to viewers with RED, unwrapped for others)",
    )
    serve.add_argument(
        "--no-bwe-pacing", action="store_true",
        help="send viewers' video at once instead of pacing it at their downlink estimate "
        "(env SFU_BWE_PACING=0)",
    )
    serve.add_argument(
        "--no-bwe-remb", action="store_true",
        help="do not estimate the downlink of viewers without transport-cc from their REMB "
        "(abs-send-time + goog-remb, e.g. aiortc); by default their REMB caps their layers "
        "once it signals congestion (env SFU_BWE_REMB=0)",
    )
    serve.add_argument(
        "--bwe-temporal-steps", action="store_true",
        help="let the bandwidth allocator give a viewer a simulcast layer at a lower frame "
        "rate (VP8 temporal layers) before a lower layer (env SFU_BWE_TEMPORAL_STEPS=1)",
    )
    serve.add_argument(
        "--publisher-max-bitrate", type=int, default=None, metavar="BPS",
        help="cap every publisher's video at this many bits/s with a REMB each second "
        "(0: no cap, the default; env SFU_PUBLISHER_MAX_BITRATE)",
    )
    serve.add_argument("--log-level", choices=LEVELS, help="log level (info)")
    serve.add_argument(
        "--no-json-logs", action="store_true", help="plain-text logs instead of JSON lines"
    )
    serve.add_argument("--production", action="store_true", help="disable development conveniences")

    token = sub.add_parser("token", help="mint an access token and print it")
    token.add_argument("--room", required=True)
    token.add_argument("--identity", required=True)
    token.add_argument(
        "--grant",
        default="subscribe",
        help=f"comma-separated grants from {', '.join(sorted(GRANTS))} (default: subscribe)",
    )
    token.add_argument("--ttl", type=float, default=DEFAULT_TOKEN_TTL, help="seconds (21600)")
    token.add_argument("--data-dir", type=Path, help="state directory (env SFU_DATA_DIR; .sfu)")
    return parser


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not an integer") from None


def _publisher_cap(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    cap = (args.publisher_max_bitrate if args.publisher_max_bitrate is not None
           else _env_int(env, "SFU_PUBLISHER_MAX_BITRATE"))
    if cap is not None and not (cap == 0 or MIN_PUBLISHER_CAP <= cap <= MAX_PUBLISHER_CAP):
        raise UsageError(f"publisher max bitrate must be 0 (no cap) or {MIN_PUBLISHER_CAP}-"
                         f"{MAX_PUBLISHER_CAP} bits/s, got {cap}")
    return cap or 0


def _env_float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number") from None


def _check_port(name: str, port: int) -> int:
    if not 1 <= port <= 65535:
        raise UsageError(f"{name} must be between 1 and 65535, got {port}")
    return port


def _data_dir(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    if args.data_dir is not None:
        return Path(args.data_dir)
    raw = env.get("SFU_DATA_DIR", "").strip()
    return Path(raw) if raw else Settings.data_dir


def _settings_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    defaults = Settings()
    host = args.host if args.host is not None else env.get("SFU_HOST", "").strip()
    http_port = args.http_port if args.http_port is not None else _env_int(env, "SFU_HTTP_PORT")
    udp_port = args.udp_port if args.udp_port is not None else _env_int(env, "SFU_UDP_PORT")
    cascade_port = (
        args.cascade_port if args.cascade_port is not None
        else _env_int(env, "SFU_CASCADE_PORT")
    ) or 0
    if cascade_port:
        _check_port("cascade port", cascade_port)
    if args.public_ip is not None:
        raw_ips = [ip.strip() for ip in args.public_ip]
    else:
        raw_ips = [ip.strip() for ip in env.get("SFU_PUBLIC_IP", "").split(",")]
    public_ips: list[str] = []
    for ip in filter(None, raw_ips):
        # ICE host candidates must carry literal addresses; a hostname would be sent verbatim.
        try:
            public_ips.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            raise UsageError(f"public IP {ip!r} is not an IP address") from None
    peer_timeout = defaults.peer_timeout if args.peer_timeout is None else args.peer_timeout
    if not peer_timeout > 0:
        raise UsageError(f"--peer-timeout must be positive, got {peer_timeout}")
    drain_timeout = (
        args.drain_timeout if args.drain_timeout is not None
        else _env_float(env, "SFU_DRAIN_TIMEOUT")
    )
    if drain_timeout is None:
        drain_timeout = defaults.drain_timeout
    if not drain_timeout >= 0:
        raise UsageError(f"--drain-timeout must be 0 or more, got {drain_timeout}")
    peer_networks: list[str] = []
    for cidr in args.peer_network or []:
        try:
            peer_networks.append(str(ipaddress.ip_network(cidr.strip(), strict=False)))
        except ValueError:
            raise UsageError(f"peer network {cidr!r} is not a CIDR like 10.0.0.0/8") from None
    return Settings(
        host=host or defaults.host,
        peer_networks=peer_networks,
        http_port=_check_port("HTTP port", defaults.http_port if http_port is None else http_port),
        udp_port=_check_port("UDP port", defaults.udp_port if udp_port is None else udp_port),
        cascade_port=cascade_port,
        public_ips=public_ips,
        data_dir=_data_dir(args, env),
        peer_timeout=peer_timeout,
        drain_timeout=drain_timeout,
        dev_mode=not args.production,
        log_level=args.log_level or defaults.log_level,
        log_json=not args.no_json_logs,
        store_url=_store_url(args, env),
        record_rooms=[r.strip() for r in args.record_room or [] if r.strip()],
        recordings_dir=args.recordings_dir or "",
        recording_retention_days=max(0.0, args.recording_retention_days or 0.0),
        **_cluster_settings(args, env),
        viewer_fec=not args.no_viewer_fec,
        publish_fec=args.publish_fec,
        publish_red=args.publish_red,
        bwe_pacing=not (args.no_bwe_pacing or _env_off(env, "SFU_BWE_PACING")),
        bwe_remb=not (args.no_bwe_remb or _env_off(env, "SFU_BWE_REMB")),
        bwe_temporal_steps=args.bwe_temporal_steps or _env_on(env, "SFU_BWE_TEMPORAL_STEPS"),
        publisher_max_bitrate=_publisher_cap(args, env),
    )


def _env_off(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("0", "false", "no", "off")


def _env_on(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


_NODE_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


def _cluster_settings(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """The cluster settings (docs/deploy.md#cluster), validated."""
    url = (args.cluster_redis_url if args.cluster_redis_url is not None
           else env.get("SFU_CLUSTER_REDIS_URL", "")).strip()
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"cluster Redis URL {url!r} must start with redis://, rediss:// or unix://")
    node_id = (args.node_id if args.node_id is not None else env.get("SFU_NODE_ID", "")).strip()
    if node_id and not _NODE_ID_RE.match(node_id):
        raise UsageError(f"node id {node_id!r} must be 1-64 of A-Z a-z 0-9 . _ : -")
    public_url = (args.public_url if args.public_url is not None
                  else env.get("SFU_PUBLIC_URL", "")).strip().rstrip("/")
    if public_url:
        parts = urllib.parse.urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise UsageError(f"public URL {public_url!r} must be http(s)://host[:port]")
    capacity = (args.node_capacity if args.node_capacity is not None
                else _env_int(env, "SFU_NODE_CAPACITY"))
    if capacity is not None and capacity < 0:
        raise UsageError(f"node capacity must be 0 (no limit) or more, got {capacity}")
    return {
        "cluster_redis_url": url,
        "node_id": node_id,
        "public_url": public_url,
        "node_capacity": capacity or 0,
    }


def _store_url(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    raw = args.store if args.store is not None else env.get("SFU_STORE", "")
    url = raw.strip()
    if url and not url.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
        raise UsageError(f"store URL {url!r} must start with sqlite:/// or redis://")
    return url


def _url_host(settings: Settings) -> str:
    host = settings.host
    if host in _WILDCARD_HOSTS:
        # A wildcard bind is not dialable; show an address a browser can actually reach.
        host = advertised_ips(settings)[0]
    return f"[{host}]" if ":" in host else host


def _banner(settings: Settings) -> str:
    base = f"http://{_url_host(settings)}:{settings.http_port}"
    token_cmd = "python -m sfu token --room demo --identity me --grant publish,subscribe"
    if settings.credentials_source != "env" and settings.data_dir != Settings.data_dir:
        # Otherwise the command would read (or create) credentials in a different directory.
        token_cmd += f" --data-dir {settings.data_dir}"
    source = (
        "environment (SFU_API_KEY / SFU_API_SECRET)"
        if settings.credentials_source == "env"
        else settings.credentials_source
    )
    lines = [
        f"sfu {__version__} ({'development' if settings.dev_mode else 'production'} mode)",
        f"  HTTP         {base}",
        f"  WHIP         {base}/whip/{{room}}",
        f"  WHEP         {base}/whep/{{room}}",
        f"  UDP media    port {settings.udp_port}, advertised on "
        f"{', '.join(advertised_ips(settings))}",
        f"  credentials  {source}",
    ]
    if settings.cascade_port:
        lines.append(f"  cascade      QUIC port {settings.cascade_port} (origin for edges)")
    lines += [
        f"  new token    {token_cmd}",
    ]
    if settings.dev_mode:
        dev_token = mint_token(
            api_key=settings.api_key,
            api_secret=settings.api_secret,
            room="demo",
            identity="dev",
            grants=GRANTS,
            ttl=DEV_TOKEN_TTL,
        )
        lines.append("  dev token    (room demo, publish+subscribe+admin, valid 24 h)")
        lines.append(f"  {dev_token}")
    return "\n".join(lines)


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = _settings_from_args(args, env)
    # Before loading credentials so "generated development API credentials" is logged.
    setup_logging(settings.log_level, settings.log_json)
    settings = load_credentials(settings, env)
    print(_banner(settings), flush=True)
    # Imported late: the media stack is heavy and `token` must not need it.
    from sfu.cluster.agent import ClusterUnavailable
    from sfu.node import run_node

    try:
        run_node(settings)
    except (ClusterUnavailable, PortUnavailable) as exc:
        # Exit 1, not 2: Redis may come back and a port be freed, so supervisors should
        # restart the node.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _parse_grants(raw: str) -> list[str]:
    grants = [g.strip() for g in raw.split(",") if g.strip()]
    if not grants:
        raise UsageError(f"no grant given (valid grants: {', '.join(sorted(GRANTS))})")
    for grant in grants:
        if grant not in GRANTS:
            raise UsageError(f"unknown grant {grant!r} (valid grants: {', '.join(sorted(GRANTS))})")
    return grants


def _token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    # Validate before touching the data dir so a typo never creates credentials as a side effect.
    grants = _parse_grants(args.grant)
    if not args.ttl > 0:
        raise UsageError(f"--ttl must be positive, got {args.ttl}")
    settings = load_credentials(Settings(data_dir=_data_dir(args, env)), env)
    try:
        token = mint_token(
            api_key=settings.api_key,
            api_secret=settings.api_secret,
            room=args.room,
            identity=args.identity,
            grants=grants,
            ttl=args.ttl,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m sfu`` and the ``sfu`` script; returns the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help/--version/usage errors; callers of main() want a code.
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 2
    env = os.environ
    try:
        if args.command == "serve":
            return _serve(args, env)
        if args.command == "token":
            return _token(args, env)
        parser.print_help(sys.stderr)
        return 2
    except (ConfigError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
