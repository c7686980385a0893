"""Atomic output writing: a killed or failed stage never leaves a half-written file.

Every writer goes to a temporary file in the destination directory, fsyncs it and then
``os.replace``s it over the target, which is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; move it into place only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; published outputs get the usual permissions for this umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON with sorted keys and a trailing newline so the bytes are reproducible."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_parquet(target: str | os.PathLike[str], frame: pd.DataFrame) -> None:
    """Write a frame without its index; callers sort rows first so bytes are reproducible."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")


def write_checked(outputs: dict[Path, tuple[pd.DataFrame, Any]]) -> None:
    """Validate every table against its schema first, then write them all: a bad one leaves every old file whole."""
    from schemas import check

    for path, (frame, schema) in outputs.items():
        check(frame, schema, str(path))
    for path, (frame, _) in outputs.items():
        write_parquet(path, frame)
