"""Failure behaviour as a feature: killed stages, huge messages, bad params, leaked secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from coordset.enrich.usage import enrich, enrich_settings
from coordset.normalize import normalize
from testkit.pipeline import DVC_ENV, copy_repo, dvc
from tests.helpers import MIRROR, arena_record, repo_params, write_jsonl

needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")


@needs_mirror
def test_one_megabyte_message_is_counted_not_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huge = "word " * 210_000  # ~1 MB of text in one agent reply
    path = write_jsonl(tmp_path / "big.jsonl", [arena_record("big", replies_a=(huge, "short"))])
    params = repo_params(**{"sources.use": ["local"], "sources.local.path": str(path)})
    monkeypatch.setenv("COORDSET_MIRROR", str(MIRROR))
    tables = normalize(params, tmp_path)
    assert tables.messages["n_chars"].max() == len(huge) > 1_000_000
    usage = enrich(tables.episodes, tables.messages, enrich_settings(params))
    # "word" then " word" x 209,999 are one token each; the trailing space is one more.
    assert usage.messages["n_tokens"].max() == 210_001
    # The huge reply is billed again as history at turn 2, so it dominates input and output alike.
    assert usage.episodes.loc[0, "billed_prompt_tokens"] > 210_000
    assert 0.45 < usage.episodes.loc[0, "coordination_overhead"] < 0.55


@needs_mirror
@pytest.mark.kill
def test_stage_killed_mid_run_leaves_no_partial_file_and_repro_recovers(tmp_path: Path) -> None:
    """Kill `dvc repro latent` (and the stage under it) once training is seen to be under way."""
    project = copy_repo(tmp_path / "project", small=True)
    dvc(project, "repro", "embed")
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "latent"], cwd=project,
                            env={**os.environ, **DVC_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    seen, deadline = b"", time.monotonic() + 600
    # The event: the latent stage's progress bar has counted its second epoch (tqdm redraws with \r, not \n).
    while b"| 2/" not in seen.rsplit(b"latent: train", 1)[-1] and time.monotonic() < deadline:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        seen += chunk
    assert b"latent: train" in seen, seen.decode(errors="replace")[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)  # reaped, so DVC sees the lock holder is gone
    assert not (project / "data/latent/latent_states.parquet").exists()  # killed before it wrote anything
    for path in (project / "data").rglob("*.parquet"):
        pd.read_parquet(path)  # whatever exists is whole: written atomically or not at all
    assert not list(project.rglob(".*.tmp"))
    result = dvc(project, "repro", "latent")
    assert "Running stage 'latent'" in result.stdout
    assert dvc(project, "status", "latent", "--json").stdout.strip() == "{}"
    episodes = pd.read_parquet(project / "data/normalized/episodes.parquet")
    states = pd.read_parquet(project / "data/latent/latent_states.parquet")
    assert len(states) == episodes["n_turns"].sum()


# (stage, dotted key, bad value, text the error must contain). The project has no data at all, so a
# stage that got past its params would fail on a missing input instead: the message proves the order.
BAD_PARAMS = [
    ("fetch", "sources.use", ["mt_bench_repro", "arena2"], "'sources.use' names unknown source 'arena2'"),
    ("fetch", "sources.use", [], "'sources.use' must be a non-empty list"),
    ("normalize", "normalize.on_bad_record", "ignore", "'normalize.on_bad_record' must be one of"),
    ("enrich", "enrich.tokens_per_message", -1, "'enrich.tokens_per_message' must be >= 0"),
    ("embed", "embed.batch_size", 0, "embed.batch_size"),
    ("embed", "embed.long_text", "drop", "embed.long_text"),
    ("latent", "rank", 0, "'rank'"),
    ("latent", "rank", "eight", "'rank'"),
    ("latent", "rank", 385, "'rank'"),
    ("label", "thresholds.agreement_high", 1.5, "thresholds.agreement_high"),
    ("label", "thresholds.coordination_overhead", "low", "thresholds.coordination_overhead"),
    ("label", "label.llm.max_calls", -5, "label.llm.max_calls"),
]


@pytest.mark.parametrize(("stage", "key", "value", "message"), BAD_PARAMS,
                         ids=[f"{s}-{k}={v!r}" for s, k, v, _ in BAD_PARAMS])
def test_bad_params_are_refused_before_any_work(tmp_path: Path, stage: str, key: str, value: object,
                                                message: str) -> None:
    import yaml

    from tests.helpers import REPO

    params = repo_params(**{key: value})
    if key.startswith("label.llm"):
        params["label"]["llm"]["enabled"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, **DVC_ENV, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "sk-test"}
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written
