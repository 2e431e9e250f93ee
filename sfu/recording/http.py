"""Operator HTTP API for recordings of a room.

Like the commerce operator API (``signalling.http``), every route needs a Bearer token for
the room with the ``admin`` grant (401/403 with the reason), and the routes are described in
the node's OpenAPI document (``openapi_paths``, merged by ``signalling.http``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web

from sfu.auth import TokenError
from sfu.http.app import CORS, NODE_KEY, Handler, _auth_refusal, authorize, refuse
from sfu.recording.recorder import RecorderManager, RecordingError
from sfu.recording.storage import RECORDING_ID_RE

if TYPE_CHECKING:
    from sfu.node import Node

MAX_BODY: Final = 4096
ROOM_ID_CHARS = "1-64 of A-Z a-z 0-9 . _ : -"
_MEDIA_TYPES = {"webm": "video/webm", "mkv": "video/x-matroska", "mp4": "video/mp4",
                "jsonl": "application/x-ndjson", "vtt": "text/vtt"}


class RecordingStart(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    auto: bool | None = None  # also keep the room auto-recorded (true) or stop that (false)


class AutoRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]  # type: ignore[return-value]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers=CORS)


def _valid_room(room: str) -> bool:
    from signalling.domain.catalog import is_valid_id

    return is_valid_id(room)


async def _body(request: web.Request, cls: type[Any]) -> Any:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise RecordingError(413, f"request body over {MAX_BODY} bytes")
    if not raw.strip():
        raw = b"{}"
    elif request.headers.get("Content-Type", "").split(";")[0].strip().lower() != (
        "application/json"
    ):
        raise RecordingError(415, "Content-Type must be application/json")
    try:
        return msgspec.json.decode(raw, type=cls)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise RecordingError(400, f"invalid body: {exc}") from exc


def _admin(handler: Handler) -> Handler:
    """Admin grant for the path's room; validate ids; map RecordingError to responses."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        node = _node(request)
        room = request.match_info["room"]
        try:
            authorize(request, room, "admin")
        except TokenError as exc:
            return _auth_refusal(node, exc)
        if node.recorder is None:
            return refuse(node, 503, "recorder not running")
        if not _valid_room(room):
            return refuse(node, 400, f"room must be {ROOM_ID_CHARS}")
        rec_id = request.match_info.get("recording_id")
        if rec_id is not None and not RECORDING_ID_RE.match(rec_id):
            return refuse(node, 400, "recording_id must be 6-64 of A-Z a-z 0-9 _ -")
        try:
            return await handler(request)
        except RecordingError as exc:
            return refuse(node, exc.status, exc.reason)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _manager(request: web.Request) -> RecorderManager:
    manager: RecorderManager = _node(request).recorder
    return manager


async def _own(request: web.Request) -> Any:
    """The path's recording, if it belongs to the path's room (404 otherwise)."""
    room, rec_id = request.match_info["room"], request.match_info["recording_id"]
    meta = await _manager(request).get(rec_id)
    if meta is None or meta.room != room:
        raise RecordingError(404, f"no recording {rec_id} in room {room}")
    return meta


@_admin
async def start_recording(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    body: RecordingStart = await _body(request, RecordingStart)
    manager = _manager(request)
    if body.auto is not None:
        manager.set_auto(room, body.auto)
    meta = manager.begin(room)
    return _json(meta.public(), status=201)


@_admin
async def stop_recording(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    meta = await _own(request)
    manager = _manager(request)
    active = manager.active.get(room)
    if active is None or active.id != meta.id:
        raise RecordingError(409, f"recording {meta.id} is not in progress")
    return _json((await manager.stop(room)).public())


@_admin
async def list_recordings(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    manager = _manager(request)
    metas = await manager.list_room(room)
    return _json({
        "recordings": [m.public() for m in metas],
        "auto": room in manager.auto_rooms or "*" in manager.auto_rooms,
    })


@_admin
async def get_recording(request: web.Request) -> web.StreamResponse:
    return _json((await _own(request)).public())


@_admin
async def download_recording(request: web.Request) -> web.StreamResponse:
    meta = await _own(request)
    if meta.state == "recording":
        raise RecordingError(409, "recording in progress; stop it first")
    media = [f["name"] for f in meta.files if f.get("kind") == "media"]
    name = request.query.get("file") or (media[0] if media else "")
    path = await asyncio.to_thread(_manager(request).store.path, meta.id, name)
    if path is None:
        raise RecordingError(404, f"no file {name!r} in recording {meta.id}")
    ctype = _MEDIA_TYPES.get(path.suffix.lstrip("."), "application/octet-stream")
    headers = {**CORS, "Content-Type": ctype,
               "Content-Disposition": f'attachment; filename="{path.name}"'}
    return web.FileResponse(path, headers=headers)


@_admin
async def delete_recording(request: web.Request) -> web.StreamResponse:
    meta = await _own(request)
    if not await _manager(request).delete(meta.id):
        raise RecordingError(404, f"no recording {meta.id}")
    return _json({"deleted": meta.id})


@_admin
async def set_auto_record(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    body: AutoRecord = await _body(request, AutoRecord)
    _manager(request).set_auto(room, body.enabled)
    return _json({"room": room, "auto": body.enabled})


BASE = "/api/rooms/{room}/recordings"
ONE = BASE + "/{recording_id}"
# (method, path, handler, summary, request body schema or None, success status)
ROUTES: Final[list[tuple[str, str, Handler, str, type[Any] | None, int]]] = [
    ("GET", BASE, list_recordings, "List the room's recordings (and its auto-record flag)",
     None, 200),
    ("POST", BASE, start_recording, "Start recording the room (optionally set auto-record)",
     RecordingStart, 201),
    ("PUT", "/api/rooms/{room}/recording-auto", set_auto_record,
     "Record the room automatically whenever it has tracks", AutoRecord, 200),
    ("GET", ONE, get_recording, "One recording: state, duration, tracks, files, size", None,
     200),
    ("POST", ONE + "/stop", stop_recording, "Stop the recording and finish its files", None,
     200),
    ("GET", ONE + "/download", download_recording,
     "Download a file of the recording (?file=name; default the main media file)", None, 200),
    ("DELETE", ONE, delete_recording, "Delete the recording's files and metadata", None, 200),
]


def openapi_paths() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(paths, component schemas) of the recording routes for the node's OpenAPI document."""
    bodies = [cls for *_, cls, _ in ROUTES if cls is not None]
    schemas, components = msgspec.json.schema_components(
        bodies, ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(bodies, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler, summary, body, status in ROUTES:
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in ("room", "recording_id")
            if "{" + name + "}" in path
        ]
        if handler is download_recording:
            params.append(
                {"name": "file", "in": "query", "required": False, "schema": {"type": "string"}}
            )
        content = (
            {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
            if handler is download_recording
            else {"application/json": {"schema": {"type": "object"}}}
        )
        op: dict[str, Any] = {
            "operationId": handler.__name__,
            "summary": summary,
            "tags": ["recording"],
            "security": [{"bearer": []}],
            "parameters": params,
            "responses": {
                str(status): {"description": "OK", "content": content},
                "400": {"description": "Invalid body or parameter (text/plain reason)"},
                "401": {"description": "Missing or invalid token"},
                "403": {"description": "Token for another room or without the admin grant"},
                "404": {"description": "Unknown recording (or file)"},
                "409": {"description": "Already recording, or the recording is in progress"},
                "507": {"description": "Not enough free disk space to start"},
            },
        }
        if body is not None:
            op["requestBody"] = {
                "required": handler is not start_recording,
                "content": {"application/json": {"schema": refs[body]}},
            }
        paths.setdefault(path, {})[method.lower()] = op
    return paths, components


def add_routes(app: web.Application) -> None:
    r = app.router
    for method, path, handler, *_ in ROUTES:
        r.add_route(method, path, handler)
