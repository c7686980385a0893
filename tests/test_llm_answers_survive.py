"""Paid LLM answers survive the DVC commands run around them: a kill, then a resume, under `dvc exp run`,
`dvc exp run --temp` and a queued experiment (`dvc exp run --queue` + `dvc queue start`).

The defect these guard against: the answers used to be a `persist: true` output of the label stage
(data/llm_cache). `dvc exp run` makes a forced `dvc checkout` of the baseline before it runs a stage, which
put that directory back to the version in dvc.lock and deleted every answer a killed run had paid for;
`--temp` and queued runs work in a fresh copy under .dvc/tmp/exps, so they never even saw them. The answers
now live in an answer store outside every path DVC manages (.git/coordset/llm-answers of the main project,
found through DVC_ROOT from temporary workspaces too), written one atomic file per answer as it arrives.

Each test kills the run (SIGKILL of its process group) once the test's OpenAI-compatible server has counted
KILL_AT calls, checks that every answer that reached the stage is in the store (allowing for the calls in
flight at the kill), resumes with the same command, which must pay exactly for what is missing, and runs
the label stage once more (forced), which must pay nothing and write the same labels.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from coordset.labels.llm_cache import STORE_ENV, AnswerCache
from testkit.openai_server import FakeOpenAI, serve_openai
from testkit.pipeline import DVC_ENV, copy_repo, dvc, git
from tests.helpers import MIRROR

pytestmark = [pytest.mark.pipeline,
              pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")]

EPISODES = 40               # label.llm.max_episodes: the first 40 MT-Bench episodes
REQUESTS = 2 * EPISODES     # each asked in both agent orders
CONCURRENCY = 4
LATENCY_S = 0.25            # per answered call, so that the kill lands mid-run
KILL_AT = 24                # calls counted by the server when the run is killed
LLM_ON = ("-S", "label.llm.enabled=true", "-S", "label.llm.max_calls=100000")
FORCE_LABEL = ("--force", "--single-item", "label")   # the label stage again, nothing upstream
DEADLINE_S = 600.0
LABEL_FILES = ("data/labels/episode_labels.parquet", "metrics/labels.json", "metrics/confusion_llm.csv")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed small build (MT-Bench only, LLM labels off), copied by every test."""
    project = copy_repo(tmp_path_factory.mktemp("answers-built"), small=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sources"]["use"] = ["mt_bench_repro"]
    if "epochs" in params.get("latent", {}):
        params["latent"]["epochs"] = 2  # the latent model is not under test here
    params["label"]["llm"].update({"max_episodes": EPISODES, "concurrency": CONCURRENCY, "timeout_s": 30})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "small build")
    assert not store_of(project).exists()
    return project


@pytest.fixture
def project(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(STORE_ENV, raising=False)  # the default location is what is under test
    dest = tmp_path / "project"
    shutil.copytree(built, dest, symlinks=True,
                    ignore=lambda folder, names: ["tmp"] if Path(folder) == built / ".dvc" else [])
    return dest


def store_of(project: Path) -> Path:
    return project / ".git" / "coordset" / "llm-answers"


def stored(project: Path) -> int:
    """Entries in the store, each loaded (a half-written file would raise)."""
    cache = AnswerCache(store_of(project))
    entries = [cache.load(key) for key in cache.keys()]
    assert all(e is not None and len(e.answers) == 1 and e.answers[0].valid for e in entries)
    return len(entries)


def llm_env(server: FakeOpenAI) -> dict[str, str]:
    return {"OPENAI_API_KEY": "sk-test-answers-survive", "OPENAI_BASE_URL": server.base_url}


def stage_stats(output: str, project: Path) -> dict[str, int]:
    """The label stage's own report of this run (cache_hits, calls_made, ...), checked to name the store."""
    found = re.findall(r"llm labels: (\{.*?\}) \(answer store: (.*)\)", output)
    assert len(found) == 1, output[-3000:]
    stats, where = found[0]
    assert Path(where) == store_of(project)  # the main project's store, also from a temporary workspace
    return json.loads(stats)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def settle(server: FakeOpenAI) -> None:
    """Let the server's threads still inside a call (sleeping its latency) give up on the dead client."""
    time.sleep(LATENCY_S + 0.5)


def assert_kept_what_was_answered(project: Path, server: FakeOpenAI) -> int:
    kept = stored(project)
    # Every answer the stage received is in the store; the calls in flight at the kill (at most one per
    # worker) may be lost, and the run really was cut short.
    assert server.answered - CONCURRENCY <= kept <= server.answered < REQUESTS, (server.answered, kept)
    assert kept > 0
    return kept


def kill_exp_run(project: Path, server: FakeOpenAI, *args: str) -> None:
    """Start `dvc exp run ARGS` and SIGKILL its whole process group once the server counted KILL_AT calls."""
    with open(project.parent / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", *args], cwd=project,
                                env={**os.environ, **DVC_ENV, **llm_env(server)}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: server.call_count >= KILL_AT or proc.poll() is not None, "the calls to start")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (project.parent / "killed.log").read_text()[-3000:]
    settle(server)


def exp_run(project: Path, server: FakeOpenAI, *args: str) -> tuple[int, dict[str, int]]:
    """`dvc exp run ARGS`: (calls the server counted, the stage's stats)."""
    before = server.call_count
    result = dvc(project, "exp", "run", *args, env=llm_env(server))
    return server.call_count - before, stage_stats(result.stdout + result.stderr, project)


def test_exp_run_killed_then_resumed_pays_only_for_what_is_missing(project: Path) -> None:
    with serve_openai(lifetime_s=DEADLINE_S, latency_s=LATENCY_S) as server:
        kill_exp_run(project, server, *LLM_ON)
        kept = assert_kept_what_was_answered(project, server)

        paid, stats = exp_run(project, server, *LLM_ON)  # the command of the issue, again
        assert paid == stats["calls_made"] == REQUESTS - kept and stats["cache_hits"] == kept
        assert stored(project) == REQUESTS
        labels = {rel: (project / rel).read_bytes() for rel in LABEL_FILES}

        paid, stats = exp_run(project, server, *FORCE_LABEL, *LLM_ON)
        assert paid == stats["calls_made"] == 0 and stats["cache_hits"] == REQUESTS
        # Same labels and metrics whether the answers came from calls or from the store.
        assert {rel: (project / rel).read_bytes() for rel in LABEL_FILES} == labels

        # Nothing a user runs around the experiments touches the store.
        snapshot = {p: p.read_bytes() for p in store_of(project).rglob("*.json")}
        exp_name = dvc(project, "exp", "ls", "--name-only").stdout.split()[0]
        git(project, "stash", "-u")
        dvc(project, "checkout", "--force")
        dvc(project, "exp", "apply", exp_name)
        dvc(project, "checkout", "--force")
        assert {p: p.read_bytes() for p in store_of(project).rglob("*.json")} == snapshot
        paid, stats = exp_run(project, server, *FORCE_LABEL, *LLM_ON)
        assert paid == 0 and stats["cache_hits"] == REQUESTS


def test_exp_run_temp_killed_then_resumed_pays_only_for_what_is_missing(project: Path) -> None:
    with serve_openai(lifetime_s=DEADLINE_S, latency_s=LATENCY_S) as server:
        kill_exp_run(project, server, "--temp", *LLM_ON)
        kept = assert_kept_what_was_answered(project, server)

        paid, stats = exp_run(project, server, "--temp", "-n", "resumed", *LLM_ON)
        assert paid == stats["calls_made"] == REQUESTS - kept and stats["cache_hits"] == kept
        assert stored(project) == REQUESTS

        paid, stats = exp_run(project, server, "--temp", "-n", "again", *FORCE_LABEL, *LLM_ON)
        assert paid == stats["calls_made"] == 0 and stats["cache_hits"] == REQUESTS

        labels = []
        for name in ("resumed", "again"):
            dvc(project, "exp", "apply", name)
            labels.append({rel: (project / rel).read_bytes() for rel in LABEL_FILES})
        assert labels[0] == labels[1]
        assert stored(project) == REQUESTS


def _queue(project: Path, server: FakeOpenAI, name: str, *args: str) -> None:
    """Queue an experiment and start a worker (its output goes to the queue's logs, not to a pipe)."""
    dvc(project, "exp", "run", "--queue", "-n", name, *args, env=llm_env(server))
    subprocess.run([sys.executable, "-m", "dvc", "queue", "start"], cwd=project, check=True,
                   env={**os.environ, **DVC_ENV, **llm_env(server)}, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)


def _queue_status(project: Path, name: str) -> str | None:
    for line in dvc(project, "queue", "status").stdout.splitlines():
        cells = line.split()
        if len(cells) >= 3 and cells[1] == name:
            return cells[-1]
    return None


def _queued_run(project: Path, server: FakeOpenAI, name: str, *args: str) -> tuple[int, dict[str, int]]:
    before = server.call_count
    _queue(project, server, name, *args)
    wait_for(lambda: _queue_status(project, name) in ("Success", "Failed"), f"queued experiment {name}")
    logs = dvc(project, "queue", "logs", name).stdout
    assert _queue_status(project, name) == "Success", logs[-3000:]
    return server.call_count - before, stage_stats(logs, project)


def _label_processes(project: Path) -> list[int]:
    """Pids of the label stage this test's queue worker runs (DVC_ROOT names the project): the stage's
    python and, where the shell DVC runs the command through does not exec it, that shell too."""
    marker = f"DVC_ROOT={project}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (b"stages.label" in (proc / "cmdline").read_bytes()
                        and marker in (proc / "environ").read_bytes().split(b"\0")):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker's stage through /proc")
def test_queued_exp_killed_then_resumed_pays_only_for_what_is_missing(project: Path) -> None:
    with serve_openai(lifetime_s=DEADLINE_S, latency_s=LATENCY_S) as server:
        _queue(project, server, "killed", *LLM_ON)
        wait_for(lambda: server.call_count >= KILL_AT, "the queued run's calls")
        pids = _label_processes(project)
        groups = {os.getpgid(pid) for pid in pids}
        assert pids and len(groups) == 1, pids  # one stage run, in one process group
        os.killpg(groups.pop(), signal.SIGKILL)  # the worker, its `exp exec-run` and the stage
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), "the killed stage to be gone",
                 timeout=30)
        settle(server)
        kept = assert_kept_what_was_answered(project, server)

        paid, stats = _queued_run(project, server, "resumed", *LLM_ON)
        assert paid == stats["calls_made"] == REQUESTS - kept and stats["cache_hits"] == kept
        assert stored(project) == REQUESTS

        paid, stats = _queued_run(project, server, "again", *FORCE_LABEL, *LLM_ON)
        assert paid == stats["calls_made"] == 0 and stats["cache_hits"] == REQUESTS
        assert stored(project) == REQUESTS
