"""Outputs are replaced atomically: a writer killed mid-write leaves the previous file whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from coordset import atomic
from tests.helpers import REPO

SLOW_WRITER = """
import sys, time
from coordset.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "w") as fh:
        fh.write("partial ")
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)
        fh.write("never reached")
"""


def test_sigkill_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic.write_json(target, {"old": True})
    before = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], cwd=REPO, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert target.read_bytes() == before
    # The abandoned temporary file is a dot-file beside it; it never replaces the target.
    assert all(p.name.startswith(".out.json.") for p in tmp_path.iterdir() if p != target)


def test_exception_mid_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    atomic.write_parquet(target, pd.DataFrame({"a": [1, 2]}))
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"garbage")
            raise RuntimeError("stage failed half-way")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def test_json_bytes_are_reproducible(tmp_path: Path) -> None:
    atomic.write_json(tmp_path / "a.json", {"b": 1, "a": [1.5, "x"]})
    time.sleep(0.01)
    atomic.write_json(tmp_path / "b.json", {"a": [1.5, "x"], "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
