"""Atomic file writes: a temp file in the same folder, fsync, then os.replace (stdlib only).

A reader (or a crash) never sees a half-written request, status, manifest or PLY. Every temp file
is named ``.<name>.<8 hex>.tmp`` beside its target (:func:`temp_path`), so what an interrupted
write leaves behind is recognised by :func:`is_temp_name` and removed at start-up.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def temp_path(path) -> Path:
    """A fresh temp path beside path: <folder>/.<name>.<8 hex>.tmp."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def is_temp_name(name: str) -> bool:
    """True for a file name temp_path makes (what an interrupted atomic write leaves)."""
    return bool(TEMP_NAME.match(name))


@contextmanager
def atomic_open(path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file beside path for writing; on success it replaces path, on error it is removed."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path, text: str) -> None:
    """Write text to path atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json_atomic(path, obj) -> None:
    """Write obj as JSON (no NaN/inf) to path atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1, allow_nan=False))
