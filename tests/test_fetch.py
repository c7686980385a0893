"""fetch: verified copies from the mirror, and clear errors for mismatch, missing file, no network."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coordset import fetch
from coordset.errors import CoordsetError
from coordset.sources import REGISTRY
from tests.helpers import MIRROR, REPO, repo_params

pytestmark = pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")


def _linked_mirror(tmp_path: Path) -> Path:
    """A writable mirror of symlinks to the real files, so a test can break one file."""
    root = tmp_path / "mirror"
    for src in MIRROR.rglob("*"):
        if src.is_file():
            dest = root / src.relative_to(MIRROR)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(src)
    return root


def _fetch(name: str, out: Path, mirror: Path = MIRROR, **overrides: object) -> list[Path]:
    REGISTRY[name].fetch_into(out, repo_params(**overrides), mirror=mirror)
    return sorted(p for p in out.rglob("*") if p.is_file())


def test_fetch_from_mirror_verifies_every_pinned_file(tmp_path: Path) -> None:
    files = [p.relative_to(tmp_path / "out").as_posix() for p in _fetch("mt_bench_repro", tmp_path / "out")]
    assert len(files) == 170  # LICENSE + questions + 6 answer files + 6 judges x 27 judgment files
    assert all(not f.startswith("data/ko/") for f in files)
    pins = fetch.read_pins(REGISTRY["mt_bench_repro"].pin_file)
    for rel in files:
        assert fetch.sha256_file(tmp_path / "out" / rel) == pins[rel]


@pytest.mark.parametrize(("name", "n_files"), [("who_when", 185), ("llm_deliberation", None), ("chatdev", 123),
                                               ("mad_debate", 201)])
def test_every_multi_agent_source_fetches_its_pinned_files(tmp_path: Path, name: str, n_files: int | None) -> None:
    files = _fetch(name, tmp_path / name)
    pins = fetch.read_pins(REGISTRY[name].pin_file)
    wanted = REGISTRY[name].pinned_files(pins, repo_params()) if REGISTRY[name].pinned_files else pins
    assert len(files) == len(wanted) and (n_files is None or len(files) == n_files)
    assert (tmp_path / name / "LICENSE").is_file()


def test_paths_are_url_encoded_when_downloading(tmp_path: Path) -> None:
    offline = fetch.Pinned("who_when", "http://127.0.0.1:9/", REGISTRY["who_when"].pin_file)
    with pytest.raises(CoordsetError, match=r"cannot download http://127.0.0.1:9/Who%26When/Hand-Crafted/1.json"):
        fetch.fetch_file(offline, "Who&When/Hand-Crafted/1.json", "0" * 64, tmp_path / "1.json", mirror=None,
                         timeout=5)


def test_korean_split_is_pinned_but_not_mirrored(tmp_path: Path) -> None:
    pins = fetch.read_pins(REGISTRY["mt_bench_repro"].pin_file)
    assert any(p.startswith("data/ko/") for p in pins)
    with pytest.raises(CoordsetError, match=r"mirror file missing: .*data/ko/"):
        _fetch("mt_bench_repro", tmp_path / "out", **{"sources.mt_bench_repro.language": "ko"})


def test_unknown_language_names_the_param(tmp_path: Path) -> None:
    with pytest.raises(CoordsetError, match=r"sources.mt_bench_repro.language.*'fr'"):
        _fetch("mt_bench_repro", tmp_path / "out", **{"sources.mt_bench_repro.language": "fr"})


def test_hash_mismatch_names_file_and_leaves_nothing(tmp_path: Path) -> None:
    mirror = _linked_mirror(tmp_path)
    target = mirror / "fastchat_mt_bench" / "fastchat/llm_judge/data/mt_bench/model_answer/gpt-4.jsonl"
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data.replace(b"a", b"b", 1))
    with pytest.raises(CoordsetError) as err:
        _fetch("fastchat_mt_bench", tmp_path / "out", mirror)
    assert "sha256 mismatch for fastchat/llm_judge/data/mt_bench/model_answer/gpt-4.jsonl" in str(err.value)
    assert not (tmp_path / "out" / "fastchat/llm_judge/data/mt_bench/model_answer/gpt-4.jsonl").exists()


def test_missing_mirror_file_says_what_to_do(tmp_path: Path) -> None:
    mirror = _linked_mirror(tmp_path)
    (mirror / "mt_bench_repro" / "data/en/questions.jsonl").unlink()
    with pytest.raises(CoordsetError, match=r"mirror file missing: .*questions.jsonl.*unset COORDSET_MIRROR"):
        _fetch("mt_bench_repro", tmp_path / "out", mirror)


def test_no_mirror_and_no_network_is_a_clear_error(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback is closed here: the same failure as having no network.
    offline = fetch.Pinned("mt_bench_repro", "http://127.0.0.1:9/", REGISTRY["mt_bench_repro"].pin_file)
    with pytest.raises(CoordsetError, match=r"cannot download http://127.0.0.1:9/LICENSE.*COORDSET_MIRROR"):
        fetch.fetch_file(offline, "LICENSE", "0" * 64, tmp_path / "LICENSE", mirror=None, timeout=5)


def _stage_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    return project


def _run_stage(project: Path, stage: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=project, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_fetch_stage_failure_exits_nonzero_and_keeps_old_output(tmp_path: Path) -> None:
    project = _stage_project(tmp_path)
    ok = _run_stage(project, "fetch", {"COORDSET_MIRROR": str(MIRROR)})
    assert ok.returncode == 0, ok.stderr
    before = sorted(p.relative_to(project) for p in (project / "data/raw").rglob("*"))
    mirror = _linked_mirror(tmp_path)
    (mirror / "mt_bench_repro" / "data/en/answers/gemma-2-9b-it.jsonl").unlink()
    failed = _run_stage(project, "fetch", {"COORDSET_MIRROR": str(mirror)})
    assert failed.returncode == 2
    assert "mirror file missing" in failed.stderr and "gemma-2-9b-it.jsonl" in failed.stderr
    assert "Traceback" not in failed.stderr
    after = sorted(p.relative_to(project) for p in (project / "data/raw").rglob("*"))
    assert after == before  # the previous complete output is untouched
    assert not (project / "data/.raw.partial").exists()


def test_chatbot_arena_without_token_says_what_to_do(tmp_path: Path) -> None:
    project = _stage_project(tmp_path)
    params = re.sub(r"use: \[[^]]*\]", "use: [chatbot_arena]", (project / "params.yaml").read_text(), count=1)
    (project / "params.yaml").write_text(params)
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=project,
                            env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "HF_TOKEN" in result.stderr and "gated" in result.stderr
