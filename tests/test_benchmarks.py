"""The benchmark harness in --quick mode: it runs end to end and writes both files in the right shape.

Timings are not checked (they belong to BENCHMARKS.md, not to a test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.pipeline import DVC_ENV
from tests.helpers import MIRROR, REPO

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")]


def test_quick_benchmark_writes_results_and_table(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path),
                             "--markdown", str(tmp_path / "BENCHMARKS.md")], cwd=REPO,
                            env={**os.environ, **DVC_ENV}, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "quick"
    assert {"pipeline", "enrich", "embed", "scaling", "labels", "rank_sweep", "memory", "figures"} <= set(results)
    assert set(results["pipeline"]) >= {"fetch", "normalize", "enrich", "embed", "latent", "label"}
    assert [row["fraction"] for row in results["scaling"]] == [0.125, 0.25, 0.5, 1.0]
    assert results["labels"]["warm_cache_calls"] == 0
    assert "latent" in results["rank_sweep"]["stages_rerun"]
    for figure in results["figures"]:
        assert {"figure", "value", "target", "met"} <= set(figure)
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| figure | value | target | met |" in table
    assert all(f"| {figure['figure']} |" in table for figure in results["figures"])
