"""End to end: `dvc repro` in a fresh copy builds everything, is a no-op again, and reproduces bytes.

One small build per module (``shared_build``), which tests only read; a test that changes a build (a forced
repro, an experiment, a commit, a remote, other params) gets its own copy of it (``built``), so no test sees
what another did and each can run alone or in any order.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from testkit.pipeline import SMALL_BUILD, copy_repo, dvc, git, lock_hashes, read_json
from tests.helpers import MIRROR

pytestmark = [pytest.mark.pipeline,
              pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")]


@pytest.fixture(scope="module")
def shared_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small build with a researcher's own logs, built once; read it, never change it (use ``built``)."""
    project = copy_repo(tmp_path_factory.mktemp("coordset"), small=True)
    # A researcher's own logs too: the four worked examples of data/local/README.md (every local format).
    readme = (project / "data/local/README.md").read_text()
    for name, body in re.findall(r"<!-- example: (\S+) -->\n```json\n(.*?)```", readme, re.S):
        (project / "data/local/examples").mkdir(exist_ok=True)
        (project / "data/local/examples" / name).write_text(body)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sources"]["use"].append("local")
    params["sources"]["local"]["path"] = "data/local/examples"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "with local logs")
    dvc(project, "repro")
    return project


@pytest.fixture
def built(shared_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared build for one test that changes it: workspace, .git and .dvc/cache, all of it."""
    dest = tmp_path_factory.mktemp("built") / "coordset"
    # .dvc/tmp is the original's run state (locks, the hash cache keyed by inode, experiment workspaces):
    # the copy starts without it, and DVC re-hashes the copied outputs to the same md5s.
    shutil.copytree(shared_build, dest, symlinks=True,
                    ignore=lambda folder, names: ["tmp"] if Path(folder) == shared_build / ".dvc" else [])
    return dest


N_LOCAL = 4  # one episode per worked example
N_EPISODES = 1200 + sum(SMALL_BUILD.values()) + N_LOCAL


def test_default_source_counts(shared_build: Path) -> None:
    metrics = read_json(shared_build / "metrics/enrich.json")
    assert metrics["by_source"]["mt_bench_repro"]["episodes"] == 1200
    assert metrics["by_source"]["mt_bench_repro"]["turns"] == 2400
    for name, n in SMALL_BUILD.items():
        assert metrics["by_source"][name]["episodes"] == n
    assert metrics["by_source"]["chatdev"]["vs_logged_usage"]["completion"]["calls"] > 0
    episodes = pd.read_parquet(shared_build / "data/normalized/episodes.parquet")
    assert len(episodes) == N_EPISODES
    labels = read_json(shared_build / "metrics/labels.json")
    assert set(labels["native_outcomes"]) == {"mt_bench_repro", "local", *SMALL_BUILD}
    assert labels["native_outcomes"]["who_when"]["outcome"] == {"failure": 12}
    # The researcher's own logs went through every stage: billed per format, with latent states and labels.
    release = pd.read_parquet(shared_build / "data/release/coordset.parquet").set_index("episode_id")
    local = release[release["source"] == "local"]
    assert len(local) == N_LOCAL and local["latent_per_turn"].map(len).eq(local["n_turns"]).all()
    assert local.at["local/budget-7", "billing"] == "logged_prompt" and not local.at["local/budget-7", "parallel"]
    assert local.at["local/q1", "billing"] == "own_thread" and local.at["local/q1", "parallel"]
    assert local.at["local/budget-7", "coordination_success"]


def test_release_has_every_episode_in_both_shapes(shared_build: Path) -> None:
    import json

    release = pd.read_parquet(shared_build / "data/release/coordset.parquet")
    assert len(release) == N_EPISODES and release["episode_id"].is_unique
    assert {"token_usage_per_call", "latent_per_turn", "consensus", "coordination_success"} <= set(release.columns)
    with open(shared_build / "data/release/coordset.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert len(rows) == N_EPISODES
    first = rows[0]
    assert set(first) == {"input", "context", "output", "metadata"}
    assert {"agents", "responses", "winner", "token_usage", "latent_states", "coordination_outcomes"} <= set(
        first["context"])
    assert {"per_call", "totals", "communication_efficiency"} <= set(first["context"]["token_usage"])
    latent = first["context"]["latent_states"]
    assert len(latent["per_turn"][0]["vector"]) == latent["rank"] == 8
    assert {"source", "annotation_version", "date"} <= set(first["metadata"])
    card = (shared_build / "data/release/README.md").read_text()
    assert card.startswith("---\n") and "license:" in card
    for name in ("mt_bench_repro", *SMALL_BUILD):
        assert f"### `{name}` (" in card


def test_second_repro_does_nothing(shared_build: Path) -> None:
    result = dvc(shared_build, "repro")
    assert "Running stage" not in result.stdout
    assert dvc(shared_build, "status", "--json").stdout.strip() == "{}"


def test_forced_repro_gives_identical_hashes(built: Path) -> None:
    before = lock_hashes(built)
    dvc(built, "repro", "--force")
    assert lock_hashes(built) == before
    assert dvc(built, "status", "--json").stdout.strip() == "{}"


def test_rank_sweep_reruns_only_what_depends_on_rank(built: Path) -> None:
    import re

    result = dvc(built, "exp", "run", "-S", "rank=16")
    ran = re.findall(r"Running stage '([^']+)'", result.stdout)
    assert ran and set(ran) <= {"latent", "release"} and "latent" in ran
    latents = pd.read_parquet(built / "data/latent/latent_states.parquet")
    assert latents["latent"].map(len).eq(16).all()
    assert read_json(built / "metrics/latent.json")["rank"] == 16
    import csv

    header, *rows = list(csv.reader(dvc(built, "exp", "show", "--csv").stdout.splitlines()))
    # `dvc exp show` puts the baseline (rank 8) and the experiment (rank 16) side by side.
    ranks = {row[header.index("params.yaml:rank")] for row in rows}
    assert {"8", "16"} <= ranks
    assert {"reconstruction_error", "pca_reconstruction_error", "next_step_error"} <= set(header)


def test_threshold_sweep_reruns_only_labels_and_release(built: Path) -> None:
    import re

    result = dvc(built, "exp", "run", "-S", "thresholds.agreement_high=0.85")
    ran = re.findall(r"Running stage '([^']+)'", result.stdout)
    assert ran and set(ran) <= {"label", "release"} and "label" in ran


def test_full_run_round_trips_through_s3(built: Path, tmp_path: Path) -> None:
    """`dvc push` of the whole build to a real S3-compatible server; a fresh clone pulls it, nothing re-runs."""
    from testkit.pipeline import git
    from testkit.s3_server import s3_server

    git(built, "add", "-A")
    git(built, "commit", "-qm", "built")
    with s3_server() as server:
        creds = {"AWS_ACCESS_KEY_ID": server.access_key_id, "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
                 "AWS_DEFAULT_REGION": server.region}
        remote = ["remote", "add", "-f", "s3", f"s3://{server.bucket}/coordset"]
        dvc(built, *remote)
        dvc(built, "remote", "modify", "s3", "endpointurl", server.endpoint_url)
        git(built, "commit", "-qam", "s3 remote")
        dvc(built, "push", "-r", "s3", env=creds)
        assert server.keys("coordset/")
        clone = tmp_path / "clone"
        git(tmp_path, "clone", "-q", str(built), str(clone))
        dvc(clone, "pull", "-r", "s3", env=creds)
        assert dvc(clone, "status", "--json").stdout.strip() == "{}"
        assert "Running stage" not in dvc(clone, "repro", env={"COORDSET_MIRROR": "/nonexistent"}).stdout
        for out in ("data/release/coordset.parquet", "data/latent/latent_states.parquet", "models/latent_model.pt"):
            assert (clone / out).read_bytes() == (built / out).read_bytes()


# Made at run time, so the only copies are those the pipeline itself might leak.
SECRET = "sk-coordset-test-" + __import__("secrets").token_hex(16)


def test_llm_labels_through_dvc_and_no_key_anywhere(built: Path) -> None:
    """The label stage with the LLM on, against the tests' OpenAI-compatible server; then a secret scan."""
    import yaml

    from testkit.openai_server import serve_openai
    from testkit.pipeline import git

    params_path = built / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["label"]["llm"].update({"enabled": True, "max_episodes": 3, "concurrency": 4})
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    from coordset.labels.llm import choose_episodes

    chosen = choose_episodes(pd.read_parquet(built / "data/normalized/episodes.parquet"), 3)
    n_pairwise = int((chosen["parallel"] & (chosen["n_agents"] == 2)).sum())
    n_group = int((~chosen["parallel"]).sum())
    # the first three of each source and subset (the small build's Who&When has one subset; each local example
    # is its own subset, one episode each)
    assert chosen.groupby("source").size().to_dict() == {"chatdev": 3, "llm_deliberation": 3, "local": N_LOCAL,
                                                         "mt_bench_repro": 3, "who_when": 3}
    assert n_pairwise == 3 + 1 and n_group == 3 * 3 + N_LOCAL - 1  # one local example is arena-shaped (parallel)
    with serve_openai(api_key=SECRET) as server:
        env = {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": server.base_url}
        first = dvc(built, "repro", env=env)
        assert "Running stage 'label'" in first.stdout
        # pairwise: both agent orders; a conversation among agents: one request
        assert server.call_count == 2 * n_pairwise + n_group
        rerun = dvc(built, "repro", "--force", "--single-item", "label", env=env)
        assert server.call_count == 2 * n_pairwise + n_group  # the store answered everything: none paid twice
    labels = read_json(built / "metrics/labels.json")
    assert labels["llm"]["models"] == [params["model"]]
    assert labels["llm"]["vs_native"]["who_when"]["paper_best_method"]["agent_accuracy"] == 0.535
    per_model = pd.read_parquet(built / "data/labels/llm_labels.parquet")
    assert sorted(per_model["kind"].value_counts().items()) == [("group", n_group), ("pairwise", n_pairwise)]
    assert per_model["valid"].all() and per_model["served_by"].str.startswith("local:").all()
    episode_labels = pd.read_parquet(built / "data/labels/episode_labels.parquet")
    assert episode_labels["llm_status"].notna().sum() == n_pairwise + n_group
    group = episode_labels[episode_labels["llm_kind"] == "group"]
    assert group["llm_mistake_agent"].notna().all() and group["llm_outcome"].isin(["success", "failure"]).all()

    git(built, "add", "-A")
    scanned = [built / p for p in git(built, "ls-files").splitlines()]
    scanned += [p for folder in ("data", "metrics", "models", ".dvc/cache") for p in (built / folder).rglob("*")]
    hits = [str(p) for p in scanned if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert hits == []
    for log in (first.stdout, first.stderr, rerun.stdout, rerun.stderr):
        assert SECRET not in log
