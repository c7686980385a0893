"""End to end: `dvc repro` in a fresh copy builds everything, is a no-op again, and reproduces bytes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import MIRROR
from tests.pipeline import copy_repo, dvc, lock_hashes, read_json

pytestmark = [pytest.mark.pipeline,
              pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_repo(tmp_path_factory.mktemp("coordset"))
    dvc(project, "repro")
    return project


def test_default_source_counts(built: Path) -> None:
    metrics = read_json(built / "metrics/enrich.json")
    assert metrics["by_source"]["mt_bench_repro"]["episodes"] == 1200
    assert metrics["by_source"]["mt_bench_repro"]["turns"] == 2400
    assert metrics["overall"]["messages"] == 7200
    episodes = pd.read_parquet(built / "data/normalized/episodes.parquet")
    assert len(episodes) == 1200


def test_second_repro_does_nothing(built: Path) -> None:
    result = dvc(built, "repro")
    assert "Running stage" not in result.stdout
    assert dvc(built, "status", "--json").stdout.strip() == "{}"


def test_forced_repro_gives_identical_hashes(built: Path) -> None:
    before = lock_hashes(built)
    dvc(built, "repro", "--force")
    assert lock_hashes(built) == before
    assert dvc(built, "status", "--json").stdout.strip() == "{}"
