"""A fresh clone's `dvc repro` reproduces the committed dvc.lock: `git status` and `dvc status` stay clean.

This is the repository's central promise, checked the way a new user meets it: clone, build the default
sources from the mirror, compare. It runs the whole default build (minutes), so it carries the
``pipeline`` marker; `.ci/run` runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.pipeline import MIRROR, REPO, dvc, git

pytestmark = [pytest.mark.pipeline, pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")]


def test_a_fresh_clone_reproduces_the_committed_lock(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(REPO), str(clone))
    dvc(clone, "repro", timeout=3000)
    changed = git(clone, "status", "--porcelain").splitlines()
    assert changed == [], "the build changed tracked files: " + ", ".join(changed)
    assert dvc(clone, "status", "--json").stdout.strip() == "{}"
