"""coordset.verify: exact columns must match, floats and vectors pass within the stated tolerances."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from coordset.verify import compare_tables, main, verify
from tests.helpers import REPO


def _build(root: Path, *, shift: float = 0.0, text: str = "hello", vector_noise: float = 0.0) -> Path:
    (root / "data/embeddings").mkdir(parents=True)
    (root / "data/release").mkdir(parents=True)
    vectors = [np.array([1.0, 0.0], np.float32), np.array([0.6, 0.8 + vector_noise], np.float32)]
    pd.DataFrame({"text_sha256": ["a", "b"], "embedding": vectors, "n_chunks": [1, 2]}).to_parquet(
        root / "data/embeddings/embeddings.parquet")
    pd.DataFrame({"episode_id": ["e1", "e2"], "score": [0.5 + shift, None],
                  "messages": [[{"text": text, "value": 1.0 + shift}], []]}).to_parquet(
        root / "data/release/coordset.parquet")
    return root


def test_identical_builds_pass(tmp_path: Path) -> None:
    a, b = _build(tmp_path / "a"), _build(tmp_path / "b")
    assert main([str(a), str(b)]) == 0
    assert [r.name for r in verify(a, b)] == ["embeddings/embeddings.parquet", "release/coordset.parquet"]


def test_floats_within_tolerance_pass_and_beyond_fail(tmp_path: Path) -> None:
    a = _build(tmp_path / "a")
    assert main([str(a), str(_build(tmp_path / "b", shift=1e-6))]) == 0
    assert main([str(a), str(_build(tmp_path / "c", shift=1e-2))]) == 1
    report = compare_tables("t", pd.read_parquet(a / "data/release/coordset.parquet"),
                            pd.read_parquet(tmp_path / "c/data/release/coordset.parquet"))
    assert abs(report.max_abs["score"] - 1e-2) < 1e-9 and abs(report.max_abs["messages"] - 1e-2) < 1e-9


def test_a_changed_text_or_vector_direction_fails(tmp_path: Path) -> None:
    a = _build(tmp_path / "a")
    assert main([str(a), str(_build(tmp_path / "b", text="hullo"))]) == 1
    rotated = verify(a, _build(tmp_path / "c", vector_noise=0.05))[0]
    assert rotated.min_cosine["embedding"] < 0.9999 and not rotated.passed(1.0, 0.9999)


def test_the_command_line_reports_and_exits_nonzero_on_a_difference(tmp_path: Path) -> None:
    a, b = _build(tmp_path / "a"), _build(tmp_path / "b", text="changed")
    result = subprocess.run([sys.executable, "-m", "coordset.verify", str(a), str(b)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "FAIL release/coordset.parquet" in result.stdout and "messages: 1 row(s) differ" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "coordset.verify", str(a), str(tmp_path / "nope")], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "neither a Parquet file nor a folder" in missing.stderr
