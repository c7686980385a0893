"""coordset.metrics_diff on a throwaway DVC project whose two commits differ in `rank`; the PR workflow."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coordset import metrics_diff
from coordset.errors import CoordsetError
from tests.helpers import REPO

WORKFLOW = REPO / ".github" / "workflows" / "pr-metrics.yml"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

# The stage's metrics as a function of rank; the test derives expected rows from the same formulas.
STAGE = """\
import json, os, yaml
rank = yaml.safe_load(open("params.yaml"))["rank"]
os.makedirs("metrics", exist_ok=True)
json.dump({"holdout": {"error": 1 / rank}, "state_size": rank * 4}, open("metrics/train.json", "w"))
"""
DVC_YAML = """\
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [rank, lr]
    metrics:
      - metrics/train.json:
          cache: false
"""


def metrics_for(rank: int) -> dict[str, float]:
    return {"holdout.error": 1 / rank, "state_size": rank * 4}


def run(cwd: Path, *args: str) -> str:
    result = subprocess.run(list(args), cwd=cwd, env={**os.environ, **GIT_ENV, "DVC_NO_ANALYTICS": "1"},
                            capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def set_rank_and_repro(project: Path, rank: int) -> None:
    (project / "params.yaml").write_text(f"rank: {rank}\nlr: 0.005\n")
    run(project, sys.executable, "-m", "dvc", "repro", "-q")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Commit 1 (tag r8) built with rank 8, commit 2 (tag r16) with rank 16; workspace clean."""
    root = tmp_path_factory.mktemp("diffproj")
    run(root, "git", "init", "-q")
    run(root, sys.executable, "-m", "dvc", "init", "-q")
    (root / "train.py").write_text(STAGE)
    (root / "dvc.yaml").write_text(DVC_YAML)
    for rank in (8, 16):
        set_rank_and_repro(root, rank)
        run(root, "git", "add", "-A")
        run(root, "git", "commit", "-qm", f"rank {rank}")
        run(root, "git", "tag", f"r{rank}")
    return root


def row(path: str, key: str, old: float, new: float) -> str:
    delta = new - old
    sign = "+" if delta > 0 else ""
    return (f"| {path} | {key} | {metrics_diff.format_value(old)} | {metrics_diff.format_value(new)} | "
            f"{sign}{metrics_diff.format_value(delta)} |")


def test_report_between_commits_shows_rank_and_metric_changes(project: Path) -> None:
    report = metrics_diff.build_report("r8", "r16", repo=project)
    assert report.startswith(metrics_diff.COMMENT_MARKER)
    assert "`r8`" in report and "`r16`" in report
    assert row("params.yaml", "rank", 8, 16) in report
    old, new = metrics_for(8), metrics_for(16)
    for key in old:
        assert row("metrics/train.json", key, old[key], new[key]) in report
    # `lr` did not change: not listed by default, listed with show_all.
    assert "| lr |" not in report
    everything = metrics_diff.build_report("r8", "r16", repo=project, show_all=True)
    assert row("params.yaml", "lr", 0.005, 0.005) in everything


def test_cli_writes_the_same_markdown_to_a_file(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "diff.md"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([sys.executable, "-m", "coordset.metrics_diff", "--base", "r8", "--rev", "r16",
                             "--output", str(out)], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert out.read_text() == metrics_diff.build_report("r8", "r16", repo=project)


def test_default_rev_is_the_workspace(project: Path) -> None:
    set_rank_and_repro(project, 32)
    try:
        report = metrics_diff.build_report("r16", repo=project)
    finally:
        run(project, "git", "checkout", "-q", "--", "params.yaml", "dvc.lock", "metrics/train.json")
    assert f"→ {metrics_diff.WORKSPACE}" in report
    assert row("params.yaml", "rank", 16, 32) in report
    old, new = metrics_for(16), metrics_for(32)
    assert row("metrics/train.json", "state_size", old["state_size"], new["state_size"]) in report


def test_missing_metrics_file_is_flagged_not_hidden(project: Path) -> None:
    metrics_file = project / "metrics" / "train.json"
    saved = metrics_file.read_bytes()
    metrics_file.unlink()
    try:
        report = metrics_diff.build_report("r16", repo=project)
    finally:
        metrics_file.write_bytes(saved)
    assert f"| metrics/train.json | state_size | {metrics_for(16)['state_size']} | — | — |" in report
    assert "> **dvc:** DVC failed to load some metrics" in report


def test_same_revision_reports_no_change(project: Path) -> None:
    report = metrics_diff.build_report("r16", "HEAD", repo=project)
    assert "No param changed." in report and "No metric changed." in report


def test_unknown_revision_is_a_clear_error(project: Path) -> None:
    with pytest.raises(CoordsetError, match="no-such-branch"):
        metrics_diff.build_report("no-such-branch", repo=project)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([sys.executable, "-m", "coordset.metrics_diff", "--base", "no-such-branch"],
                            cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "no-such-branch" in result.stderr


def test_cells_cannot_break_the_table() -> None:
    diff = {"params.yaml": {"sources.use": {"old": ["a|b"], "new": "x\ny"},
                            "model": {"old": None, "new": 1.0}}}
    lines = metrics_diff.table(diff, "Param", "`main`", "workspace").splitlines()
    assert all(line.count("|") - line.count("\\|") == 6 for line in lines)
    assert "| params.yaml | model | — | 1.0 | — |" in lines


def test_workflow_is_valid_and_runs_the_script() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "pull_request" in triggers
    assert workflow["permissions"]["pull-requests"] == "write"
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"
    scripts = [s["run"] for s in steps if "run" in s]
    assert any("pip install -r requirements.txt" in s for s in scripts)
    assert (REPO / "requirements.txt").is_file()
    fetch = next(s for s in scripts if "dvc pull" in s)
    assert fetch.index("dvc pull") < fetch.index("dvc repro")  # pull first, rebuild only if it fails
    # The diff step names a module that exists and flags its parser accepts.
    (command,) = [line for s in scripts for line in s.splitlines() if "coordset.metrics_diff" in line]
    argv = shlex.split(command)
    module = argv[argv.index("-m") + 1]
    assert (REPO / (module.replace(".", "/") + ".py")).is_file()
    args = metrics_diff.parse_args(argv[argv.index("-m") + 2:])
    assert args.base == "origin/${{ github.base_ref }}"
    assert args.output is not None
    comment = next(s for s in steps if s.get("uses", "").startswith("actions/github-script@"))
    assert str(args.output) in comment["with"]["script"]
    assert metrics_diff.COMMENT_MARKER in comment["with"]["script"]
