"""Atomic file writes: a temp file in the same folder, fsync, then os.replace.

A reader (or a crash) never sees a half-written request, status, manifest or PLY.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_open(path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file beside path for writing; on success it replaces path, on error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
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
