"""Where finished recordings live: metadata and files behind `RecordingStore`.

`LocalStore` keeps each recording in a directory of its own (``<root>/<id>/``: the media
files, the commerce sidecars and ``meta.json``). The worker thread always writes into a local
working directory; a store backed by an object store would upload in `commit` and serve
downloads from there. Every method here blocks on the filesystem: call it off the event loop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORDING_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{6,64}$")
META_FILE = "meta.json"


@dataclass
class RecordingMeta:
    """What the operator API lists about one recording."""

    id: str
    room: str
    state: str = "recording"  # recording -> done | failed
    auto: bool = False  # started by the room's auto-record setting
    started_at: float = 0.0  # wall clock (Unix seconds) when the recording was started
    media_started_at: float | None = None  # wall clock of media time 0
    ended_at: float | None = None
    duration: float = 0.0  # media seconds
    tracks: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)  # name, size, kind
    size: int = 0  # bytes of all files
    error: str | None = None
    dropped_frames: int = 0  # refused by a full mux queue
    events: int = 0  # commerce timeline events

    def public(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordingMeta:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class RecordingStore(ABC):
    """Recording metadata and files, by recording id."""

    @abstractmethod
    def workdir(self, rec_id: str) -> Path:
        """A local directory the writer can put this recording's files in (created)."""

    @abstractmethod
    def commit(self, meta: RecordingMeta) -> None:
        """Persist `meta` (and, for a remote store, the files of its work directory)."""

    @abstractmethod
    def get(self, rec_id: str) -> RecordingMeta | None: ...

    @abstractmethod
    def list(self, room: str | None = None) -> list[RecordingMeta]: ...

    @abstractmethod
    def path(self, rec_id: str, name: str) -> Path | None:
        """A local path to serve a recording's file from, or None if there is no such file."""

    @abstractmethod
    def delete(self, rec_id: str) -> bool:
        """Remove the recording's files and metadata; False if it did not exist."""

    @abstractmethod
    def free_bytes(self) -> int | None:
        """Free space where recordings are written, None when unknown."""


class LocalStore(RecordingStore):
    """Recordings under a local directory (default ``<data_dir>/recordings``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, rec_id: str) -> Path:
        if not RECORDING_ID_RE.match(rec_id):
            raise ValueError(f"bad recording id {rec_id!r}")
        return self.root / rec_id

    def workdir(self, rec_id: str) -> Path:
        d = self._dir(rec_id)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def commit(self, meta: RecordingMeta) -> None:
        d = self.workdir(meta.id)
        tmp = d / f".{META_FILE}.tmp"
        tmp.write_text(json.dumps(meta.public(), indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, d / META_FILE)

    def get(self, rec_id: str) -> RecordingMeta | None:
        try:
            raw = (self._dir(rec_id) / META_FILE).read_text(encoding="utf-8")
            return RecordingMeta.from_json(json.loads(raw))
        except (OSError, ValueError, TypeError):
            return None

    def list(self, room: str | None = None) -> list[RecordingMeta]:
        out: list[RecordingMeta] = []
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return out
        for entry in entries:
            if not RECORDING_ID_RE.match(entry.name):
                continue
            meta = self.get(entry.name)
            if meta is not None and (room is None or meta.room == room):
                out.append(meta)
        out.sort(key=lambda m: m.started_at)
        return out

    def path(self, rec_id: str, name: str) -> Path | None:
        meta = self.get(rec_id)
        if meta is None or name not in {f["name"] for f in meta.files}:
            return None
        p = self._dir(rec_id) / name
        return p if p.is_file() else None

    def delete(self, rec_id: str) -> bool:
        d = self._dir(rec_id)
        if not d.exists():
            return False
        shutil.rmtree(d)
        return True

    def free_bytes(self) -> int | None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return shutil.disk_usage(self.root).free
        except OSError:
            return None
