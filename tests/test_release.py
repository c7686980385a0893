"""release: the published Parquet, JSONL and dataset card, built from small synthetic inputs in a tmp project."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from coordset.errors import CoordsetError, ParamError
from coordset.normalize import episode_frames
from coordset.release.card import (
    hf_feature,
    latent_findings,
    latent_source_rows,
    latent_targets,
    latent_training_sentences,
    not_beaten,
    size_category,
)
from coordset.release.inputs import read_inputs
from coordset.release.rows import EpisodeJoiner
from coordset.release.settings import release_settings
from coordset.release.write import write_release
from coordset.sources.episode import Agent, Episode, Message, Outcome, TurnEvent
from coordset.sources.parallel import Conversation, parallel_episode
from schemas import SchemaViolation, check
from schemas.labels import EPISODE_LABELS
from schemas.release import FIELD_NAMES, FIELDS, arrow_schema, release_schema
from tests.helpers import REPO, repo_params

RANK = 4
MODELS = ("alpha", "beta", "gamma")
QUESTIONS = ("81", "82", "83")
JUDGES = ("judge-one", "judge-two")
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
# The recurrent model loses to both baselines here, as at the default build's rank 8.
LATENT_METRICS = {"rank": RANK, "cell": "gru", "reconstruction_error": 0.0023, "pca_reconstruction_error": 0.0022,
                  "explained_variance": 0.08, "pca_explained_variance": 0.12, "next_step_error": 0.0024,
                  "next_step_error_no_memory": 0.0021, "probe_accuracy": 0.46, "probe_majority_rate": 0.49,
                  "heldout_episodes": 3, "compression_ratio": 100.0, "some_future_metric": 1.5,
                  "evaluation": {"best_epochs": [0, 0]}}  # early stopping kept the initial cell in both fits


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _episode_id(question: str, pair: tuple[str, str]) -> str:
    return f"mt_bench_repro/en/{question}/{pair[0]}__{pair[1]}"


def _group_chat() -> Episode:
    """A Who&When-like episode: a task, three agents and a code terminal, a human failure label."""
    return Episode(
        episode_id="who_when/hand_crafted/1", source="who_when", group_id="task-1", subset="hand_crafted",
        agents=(Agent("Orchestrator", "gpt-4o"), Agent("WebSurfer"), Agent("Coder", "gpt-4o")),
        messages=(Message("user", "user", "Find the café.", 1, tstamp=T0),
                  Message("Orchestrator", "agent", "Plan: search.", 2, reasoning="thinking"),
                  Message("WebSurfer", "agent", "I clicked a link.", 3),
                  Message("terminal", "tool", "exitcode: 0", 4),
                  Message("Coder", "agent", "Done.", 5)),
        outcome=Outcome("failure", "human_annotation", mistake_agent="WebSurfer", mistake_step=2,
                        mistake_reason="wrong link"),
        events=(TurnEvent("decisive_error", 3, position=2, agent="WebSurfer", detail="wrong link"),))


def build_inputs(root: Path, *, llm: bool = False, group_chat: bool = False) -> dict[str, pd.DataFrame]:
    """Every input of the release stage for 3 questions x 3 model pairs x 2 turns (and, with ``group_chat``, one
    Who&When-like episode), consistent across tables and each in its schema's shape."""
    convs, outcomes, latent, labels, turn_labels, verdicts = ([] for _ in range(6))
    tokens: dict[tuple[str, int, str], int] = {}
    rng = np.random.default_rng(0)
    for q_index, question in enumerate(QUESTIONS):
        for pair in itertools.combinations(MODELS, 2):
            eid = _episode_id(question, pair)
            dated = not (question == "83" and pair == ("beta", "gamma"))  # one episode without timestamps
            start = T0 + 3600 * q_index if dated else None
            end = start + 86_400 if dated else None  # the latest timestamp is one day later: 2023-11-15 (q 81)
            winner = pair[1]
            convs.append(parallel_episode(Conversation(
                eid, "mt_bench_repro", question, "writing", "en", [f"Question {question} turn {t}" for t in (1, 2)],
                {m: [f"{m} answers {question}/{t} ünïcode" for t in (1, 2)] for m in pair}, winner, "judge_majority",
                {pair[0]: start, pair[1]: end}), "test"))
            outcomes.append({"episode_id": eid, "source": "mt_bench_repro", "outcome": winner,
                             "outcome_source": "judge_majority"})
            for turn in (1, 2):
                for k, model in enumerate(pair):
                    tokens[(eid, turn, model)] = 10 * turn + 5 * k
                latent.append({"episode_id": eid, "turn": turn, "split": "heldout" if question == "83" else "train",
                               "latent": rng.normal(size=RANK).astype(np.float32)})
                turn_labels.append({"episode_id": eid, "turn": turn, "agent_similarity": 0.9 if turn == 1 else 0.6,
                                    "agreement_level": "high" if turn == 1 else "medium",
                                    "agreement_drop": turn == 2, "length_imbalance": False})
            for judge in JUDGES:
                verdicts.append({"episode_id": eid, "judge_id": judge, "judge_name": judge.upper(), "turn": 2,
                                 "model_a": pair[0], "model_b": pair[1], "winner_ab": "B", "winner_ba": "A",
                                 "verdict": winner, "verdict_category": "agent_2"})
            labels.append({"episode_id": eid, "source": "mt_bench_repro", "consensus": winner,
                           "consensus_category": "agent_2", "consensus_source": "judge_majority", "n_judges": 2,
                           "n_consistent_judges": 2, "rule_outcome": winner, "rule_outcome_category": "agent_2",
                           "coordination_success": True, "agent_grades": [7.0, 8.5], "mean_grade": 7.75,
                           "mean_agent_similarity": 0.75, "n_agreement_drops": 1, "n_length_imbalances": 0})
    if group_chat:
        chat = _group_chat()
        convs.append(chat)
        outcomes.append({"episode_id": chat.episode_id, "source": "who_when", "outcome": "failure",
                         "outcome_source": "human_annotation", "mistake_agent": "WebSurfer", "mistake_step": 2,
                         "mistake_reason": "wrong link"})
        for turn in range(1, 6):
            latent.append({"episode_id": chat.episode_id, "turn": turn, "split": "train",
                           "latent": rng.normal(size=RANK).astype(np.float32)})
            turn_labels.append({"episode_id": chat.episode_id, "turn": turn, "agent_similarity": None,
                                "agreement_level": "unknown", "agreement_drop": False, "length_imbalance": False})
        labels.append({"episode_id": chat.episode_id, "source": "who_when", "consensus": "failure",
                       "consensus_category": "failure", "consensus_source": "human_annotation", "n_judges": 0,
                       "n_consistent_judges": 0, "rule_outcome": "unknown", "rule_outcome_category": "unknown",
                       "coordination_success": False, "agent_grades": None, "mean_grade": None,
                       "mean_agent_similarity": None, "n_agreement_drops": 0, "n_length_imbalances": 0})
    episodes, messages = episode_frames(convs)
    events = pd.DataFrame([{"episode_id": e.episode_id, "turn": ev.turn, "position": ev.position, "kind": ev.kind,
                            "agent": ev.agent, "value": ev.value, "detail": ev.detail}
                           for e in convs for ev in e.events],
                          columns=["episode_id", "turn", "position", "kind", "agent", "value", "detail"])
    agents = messages[messages["role"] == "agent"]
    calls = agents[["episode_id", "turn", "position", "speaker", "agent_model"]].assign(
        user_tokens=4, reasoning_tokens=0,
        completion_tokens=[tokens.get(k, 3) for k in zip(agents["episode_id"], agents["turn"], agents["speaker"],
                                                         strict=True)],
        billed_prompt_tokens=[7 + 20 * (t - 1) for t in agents["turn"]], billing="own_thread").reset_index(drop=True)
    usage = []
    for eid, names in zip(episodes["episode_id"], episodes["agents"], strict=True):
        rows = calls[calls["episode_id"] == eid]
        by_agent = [int(rows.loc[rows["speaker"] == a, "completion_tokens"].sum()) for a in names]
        out, billed = sum(by_agent), int(rows["billed_prompt_tokens"].sum())
        n_turns = int(episodes.set_index("episode_id").at[eid, "n_turns"])
        usage.append({"episode_id": eid, "n_turns": n_turns, "n_agents": len(names), "n_calls": len(rows),
                      "user_tokens": 8, "completion_tokens": out, "billed_prompt_tokens": billed,
                      "input_tokens": billed, "output_tokens": out, "total_tokens": billed + out,
                      "completion_tokens_by_agent": by_agent, "avg_tokens_per_turn": (billed + out) / n_turns,
                      "input_output_ratio": billed / (billed + out),
                      "coordination_overhead": (max(by_agent) - min(by_agent)) / (billed + out)})
    overhead = {u["episode_id"]: u["coordination_overhead"] for u in usage}
    completion = {u["episode_id"]: u["completion_tokens"] for u in usage}
    for row in labels:
        row["coordination_overhead"] = overhead[row["episode_id"]]
        row["efficiency_score"] = None if row["mean_grade"] is None else row["mean_grade"] / (
            completion[row["episode_id"]] / 1000)
    outcome_frame = pd.DataFrame(outcomes, columns=["episode_id", "source", "outcome", "outcome_source",
                                                    "unknown_reason", "mistake_agent", "mistake_step",
                                                    "mistake_reason", "any_deal_passed"]).astype(
        {"unknown_reason": "str", "mistake_agent": "str", "mistake_reason": "str", "mistake_step": "Int64",
         "any_deal_passed": "boolean"})
    labels_frame = pd.DataFrame(labels).astype({"coordination_success": "boolean", "mean_grade": float,
                                                 "efficiency_score": float, "mean_agent_similarity": float})
    labels_frame = labels_frame[[c for c in EPISODE_LABELS.columns if c in labels_frame]]
    if llm:
        labels_frame["llm_status"] = "valid"
        labels_frame["llm_valid"] = True
        labels_frame["llm_preferred"] = [e.outcome.label for e in convs]
        labels_frame["llm_consistent"] = pd.array([True] * len(labels_frame), dtype="boolean")
        labels_frame["llm_success_score"] = 7.5
        labels_frame.loc[0, ["llm_status", "llm_preferred", "llm_success_score"]] = [None, None, None]
    tables = {
        "data/normalized/episodes.parquet": episodes,
        "data/normalized/messages.parquet": messages,
        "data/normalized/outcomes.parquet": outcome_frame,
        "data/normalized/turn_events.parquet": events.astype({"position": "Int64", "value": float, "turn": "int64",
                                                              "episode_id": "str", "kind": "str", "agent": "str",
                                                              "detail": "str"}),
        "data/enriched/calls.parquet": calls,
        "data/enriched/episodes.parquet": pd.DataFrame(usage),
        "data/latent/latent_states.parquet": pd.DataFrame(latent),
        "data/labels/episode_labels.parquet": labels_frame,
        "data/labels/turn_labels.parquet": pd.DataFrame(turn_labels),
        "data/labels/judge_episode_verdicts.parquet": pd.DataFrame(verdicts),
    }
    for rel, frame in tables.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / rel, index=False)
    n = len(episodes)
    metrics = {
        "normalize": {"episodes": n, "on_bad_record": "stop", "skipped_records": {}, "skipped_total": 0},
        "enrich": {"overall": {"episodes": n, "turns": 2 * n}},
        "latent": LATENT_METRICS,
        "labels": {"episodes": n, "consensus": {"agent_2": n},
                   "judges": {"fleiss_kappa": 1.0, "fleiss_n_episodes": 1, "fleiss_n_judges": 2,
                              "fleiss_categories": ["agent_2"],
                              "consistency": {j.upper(): {"judge_id": j, "n_verdicts": n, "n_valid": n, "n_error": 0,
                                                          "n_inconsistent": 4, "inconsistency_rate": 4 / n}
                                              for j in JUDGES},
                              "cohen_kappa": {}},
                   "llm": None, "llm_vs_consensus": None},
    }
    for name, data in metrics.items():
        (root / "metrics").mkdir(exist_ok=True)
        (root / "metrics" / f"{name}.json").write_text(json.dumps(data))
    params = repo_params(rank=RANK, **{"label.llm.enabled": llm, "release.annotation_version": "9.8.7"})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tables


def run_stage(project: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stages.release"], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("release")
    build_inputs(project)
    result = run_stage(project)
    assert result.returncode == 0, result.stderr
    return project


def _lines(project: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (project / "data/release/coordset.jsonl").read_text().splitlines()]


def _header(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def _settings(project: Path) -> Any:
    return release_settings(yaml.safe_load((project / "params.yaml").read_text()))


# ---------------------------------------------------------------------------------------------------------


def test_parquet_has_every_field_one_sorted_row_per_episode(built: Path) -> None:
    path = built / "data/release/coordset.parquet"
    frame = pd.read_parquet(path)
    assert list(frame.columns) == list(FIELD_NAMES)
    assert len(frame) == 9 and frame["episode_id"].is_monotonic_increasing and frame["episode_id"].is_unique
    assert pq.read_schema(path).remove_metadata().equals(arrow_schema())
    row = frame.set_index("episode_id").loc[_episode_id("81", ("alpha", "gamma"))]
    assert [(m["speaker"], m["text"]) for m in row["messages"]] == [
        ("user", "Question 81 turn 1"), ("alpha", "alpha answers 81/1 ünïcode"),
        ("gamma", "gamma answers 81/1 ünïcode"), ("user", "Question 81 turn 2"),
        ("alpha", "alpha answers 81/2 ünïcode"), ("gamma", "gamma answers 81/2 ünïcode")]
    assert [len(v) for v in row["latent_per_turn"]] == [RANK, RANK]
    assert row["latent_per_turn"][0].dtype == np.float32
    assert [v["judge_id"] for v in row["judge_verdicts"]] == list(JUDGES)
    assert [(e["turn"], e["event"]) for e in row["events"]] == [(2, "agreement_drop")]
    assert list(row["agreement_level_per_turn"]) == ["high", "medium"]
    assert [(t["turn"], t["agent"]) for t in row["token_usage_per_call"]] == [
        (1, "alpha"), (1, "gamma"), (2, "alpha"), (2, "gamma")]
    assert row["total_tokens"] == row["input_tokens"] + row["output_tokens"]
    assert row["date"] == "2023-11-15" and row["latent_split"] == "train"


def test_jsonl_rows_carry_every_key_of_the_seed_shape(built: Path) -> None:
    lines = _lines(built)
    assert [r["metadata"]["episode_id"] for r in lines] == sorted(r["metadata"]["episode_id"] for r in lines)
    assert len(lines) == 9
    for record in lines:
        assert set(record) >= {"input", "context", "output", "metadata"}
        context = record["context"]
        assert set(context) >= {"agents", "responses", "winner", "token_usage", "latent_states",
                                "coordination_outcomes"}
        assert set(context["token_usage"]) >= {"per_call", "totals", "communication_efficiency"}
        assert set(context["token_usage"]["communication_efficiency"]) == {
            "avg_tokens_per_turn", "input_output_ratio", "coordination_overhead"}
        latent = context["latent_states"]
        assert set(latent) >= {"per_turn", "method", "rank", "split", "error"}
        assert latent["rank"] == RANK and latent["method"] == "gru"
        assert [len(step["vector"]) for step in latent["per_turn"]] == [RANK, RANK]
        assert latent["error"]["reconstruction_error"] == LATENT_METRICS["reconstruction_error"]
        outcomes = context["coordination_outcomes"]
        assert set(outcomes) >= {"judges", "rule", "llm"} and outcomes["llm"] is None
        assert all(outcomes[k]["method"] for k in ("judges", "rule"))
        assert outcomes["rule"]["thresholds"]["coordination_overhead"] == 0.25
        assert len(outcomes["judges"]["verdicts"]) == 2
        assert set(record["output"]) >= {"outcome", "coordination_success"}
        meta = record["metadata"]
        assert set(meta) >= {"source", "annotation_version", "date"} and ("licence" in meta or "license" in meta)
        assert meta["annotation_version"] == "9.8.7" and meta["licence"] == "Apache-2.0"
        assert record["input"] == [f"Question {meta['group_id']} turn {t}" for t in (1, 2)]
        assert list(context["responses"]) == context["agents"]
        assert context["winner"] == record["output"]["outcome"] == context["agents"][1]
        assert context["coordination_outcomes"]["native"]["outcome_source"] == "judge_majority"


def test_latent_vectors_in_jsonl_are_the_parquet_float32_values(built: Path) -> None:
    frame = pd.read_parquet(built / "data/release/coordset.parquet")
    for record, vectors in zip(_lines(built), frame["latent_per_turn"], strict=True):
        written = [np.asarray(step["vector"], dtype=np.float32) for step in record["context"]["latent_states"]
                   ["per_turn"]]
        assert all(np.array_equal(a, b) for a, b in zip(written, vectors, strict=True))


def test_date_comes_from_the_data_and_bytes_repeat_across_runs(built: Path) -> None:
    by_id = {r["metadata"]["episode_id"]: r["metadata"]["date"] for r in _lines(built)}
    latest = T0 + 86_400
    assert by_id[_episode_id("81", ("alpha", "beta"))] == dt.datetime.fromtimestamp(latest, dt.UTC).date().isoformat()
    assert by_id[_episode_id("83", ("beta", "gamma"))] is None
    before = {p.name: p.read_bytes() for p in (built / "data/release").iterdir()}
    assert set(before) == {"coordset.parquet", "coordset.jsonl", "README.md"}
    time.sleep(1.1)  # a later run, in another time zone
    result = run_stage(built, TZ="Pacific/Kiritimati")
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_bytes() for p in (built / "data/release").iterdir()} == before
    assert not list((built / "data/release").glob(".*.tmp"))


def test_card_describes_every_column_and_reports_the_baselines_honestly(built: Path) -> None:
    card = (built / "data/release/README.md").read_text()
    header = _header(card)
    columns = pq.read_schema(built / "data/release/coordset.parquet").names
    assert [f["name"] for f in header["dataset_info"]["features"]] == columns
    assert header["license"] == "apache-2.0" and header["language"] == ["en"]
    assert header["size_categories"] == ["n<1K"]
    assert header["configs"] == [{"config_name": "default", "data_files": [{"split": "train",
                                                                            "path": "coordset.parquet"}]}]
    fields = card.split("## Fields", 1)[1].split("\n## ", 1)[0]
    for column in columns:
        assert f"| `{column}` |" in fields, column
    assert "**does not beat** a PCA of the same rank" in card
    assert "**does not beat** the no-memory baseline" in card
    assert "next_step_error_no_memory_same_rank" not in card  # not in this build's metrics: no sentence invented
    assert "`some_future_metric` | 1.5" in card  # extra metric keys are reported as they are
    assert "computed on 1 of 9 episodes" in card and "**few episodes**" in card
    assert "b3b827d39249feebeb859ddc1cb41a24ff2b92fe" in card and "edacaa5bd955893e72a7e6f0899d8301fd5ae492" in card
    assert "CC-BY-NC-4.0" in card
    assert "### `mt_bench_repro` (9 episodes, Apache-2.0)" in card  # a section per source in this build
    assert "thresholds" in card and "| agreement_high | 0.8 |" in card
    assert "contains that PCA as a special case" in card  # says why this cell, in its own words
    assert "**No training epoch improved on the initial cell**" in card and "over 2 fits" in card
    assert "trained for" not in card  # the card says what was published, not the epochs it might have run
    assert "The published latent cell is untrained" in card.split("## Known limitations")[1]
    assert "> " not in card.split("## Params of this build")[0]  # no docstring quoted


def test_missing_input_stops_naming_the_file(built: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(built, project)
    shutil.rmtree(project / "data/release")
    (project / "data/latent/latent_states.parquet").unlink()
    result = run_stage(project)
    assert result.returncode == 2
    assert "data/latent/latent_states.parquet" in result.stderr and "not found" in result.stderr
    assert not (project / "data/release").exists()


@pytest.mark.parametrize(("rel", "change", "message"), [
    ("data/labels/turn_labels.parquet", "extra_episode", "not in data/normalized/episodes.parquet"),
    ("data/enriched/episodes.parquet", "drop_first", "no rows for 1 episode"),
    ("data/latent/latent_states.parquet", "drop_first", "has 1 turn rows, expected 2"),
    ("data/enriched/calls.parquet", "drop_first", "has 3 calls (agent messages), expected 4"),
])
def test_inputs_that_do_not_match_the_episodes_are_refused(tmp_path: Path, rel: str, change: str,
                                                           message: str) -> None:
    tables = build_inputs(tmp_path)
    frame = tables[rel]
    if change == "extra_episode":
        extra = frame.iloc[[0]].assign(episode_id="mt_bench_repro/en/99/alpha__beta")
        frame = pd.concat([frame, extra], ignore_index=True)
    elif change == "drop_first":
        frame = frame.iloc[1:]
    else:
        frame = frame.drop(index=frame.index[frame["role"] == "agent"][0])
    frame.to_parquet(tmp_path / rel, index=False)
    with pytest.raises(CoordsetError) as err:
        read_inputs(_settings(tmp_path), tmp_path)
    assert rel in str(err.value) and message in str(err.value)


def test_latent_built_at_another_rank_is_refused(tmp_path: Path) -> None:
    build_inputs(tmp_path)
    params = repo_params(rank=RANK + 1)
    with pytest.raises(CoordsetError, match=r"latent_states.parquet: latent vectors have length \[4\] but params.yaml "
                                            r"'rank' is 5"):
        read_inputs(release_settings(params), tmp_path)


def test_bad_annotation_version_is_refused_naming_the_key() -> None:
    with pytest.raises(ParamError, match="release.annotation_version"):
        release_settings(repo_params(**{"release.annotation_version": ""}))
    with pytest.raises(ParamError, match="release.annotation_version"):
        release_settings(repo_params(**{"release.annotation_version": 1.0}))


def _frame(project: Path) -> pd.DataFrame:
    inputs = read_inputs(_settings(project), project)
    return next(EpisodeJoiner(inputs).chunks())


@pytest.mark.parametrize(("column", "breakage", "message"), [
    ("latent_per_turn", lambda v: [v[0], v[1][:-1]], "latent_per_turn holds vectors of 4 finite float32"),
    ("latent_per_turn", lambda v: [v[0], np.full(RANK, np.nan, np.float32)], "finite float32"),
    ("agent_similarity_per_turn", lambda v: v[:1], "per-turn lists have n_turns entries"),
    ("messages", lambda v: v[:1], "messages n_messages"),
    ("agreement_level_per_turn", lambda v: ["high", "sky-high"], "agreement_level_per_turn values"),
    ("events", lambda v: [{"turn": 1, "event": "explosion"}], "events rows"),
    ("consensus_category", lambda v: "Agent One!", "consensus_category"),
])
def test_schema_rejects_a_broken_row(tmp_path: Path, column: str, breakage: Any, message: str) -> None:
    build_inputs(tmp_path)
    frame = _frame(tmp_path)
    check(frame, release_schema(RANK), "data/release/coordset.parquet")  # the unbroken frame passes
    frame.at[3, column] = breakage(frame.at[3, column])
    with pytest.raises(SchemaViolation) as err:
        check(frame, release_schema(RANK), "data/release/coordset.parquet")
    text = str(err.value)
    assert "data/release/coordset.parquet" in text and message in text


def test_schema_rejects_unsorted_rows(tmp_path: Path) -> None:
    build_inputs(tmp_path)
    frame = _frame(tmp_path).iloc[::-1].reset_index(drop=True)
    with pytest.raises(SchemaViolation, match="rows sorted by episode_id"):
        check(frame, release_schema(RANK), "data/release/coordset.parquet")


def test_schema_and_fields_are_one_list() -> None:
    columns = [c for c in release_schema(RANK).columns if not c.startswith("^")]
    assert tuple(columns) == FIELD_NAMES
    assert all(f.description.strip() for f in FIELDS)


def test_llm_labels_are_released_when_enabled(tmp_path: Path) -> None:
    build_inputs(tmp_path, llm=True)
    settings = _settings(tmp_path)
    summary = write_release(read_inputs(settings, tmp_path), settings, tmp_path / "out", chunk_size=4)
    frame = pd.read_parquet(tmp_path / "out/coordset.parquet")
    llm_columns = ["llm_consistent", "llm_preferred", "llm_status", "llm_success_score", "llm_valid"]
    assert list(frame.columns) == list(FIELD_NAMES) + llm_columns and summary.rows == 9
    assert pq.ParquetFile(tmp_path / "out/coordset.parquet").num_row_groups == 3  # chunks of 4, 4 and 1
    assert frame["llm_status"].isna().sum() == 1 and frame["llm_consistent"].all()
    lines = [json.loads(x) for x in (tmp_path / "out/coordset.jsonl").read_text().splitlines()]
    llm = lines[1]["context"]["coordination_outcomes"]["llm"]
    assert llm["configured_models"] == ["gpt-4o-mini"] and llm["preferred"] == lines[1]["context"]["winner"]
    assert llm["consistent"] is True and llm["success_score"] == 7.5
    assert lines[0]["context"]["coordination_outcomes"]["llm"]["status"] is None


def test_a_group_chat_episode_is_released_with_its_native_labels(tmp_path: Path) -> None:
    build_inputs(tmp_path, group_chat=True)
    settings = _settings(tmp_path)
    write_release(read_inputs(settings, tmp_path), settings, tmp_path / "out")
    frame = pd.read_parquet(tmp_path / "out/coordset.parquet").set_index("episode_id")
    row = frame.loc["who_when/hand_crafted/1"]
    assert list(row["agents"]) == ["Orchestrator", "WebSurfer", "Coder"]
    assert list(row["agent_models"]) == ["gpt-4o", None, "gpt-4o"]
    assert [m["role"] for m in row["messages"]] == ["user", "agent", "agent", "tool", "agent"]
    assert row["messages"][1]["reasoning"] == "thinking" and row["messages"][0]["reasoning"] is None
    assert (row["mistake_agent"], row["mistake_step"], row["consensus"]) == ("WebSurfer", 2, "failure")
    assert [e["kind"] for e in row["turn_events"]] == ["decisive_error"]
    assert len(row["latent_per_turn"]) == 5 and row["n_calls"] == 3
    record = next(json.loads(x) for x in (tmp_path / "out/coordset.jsonl").read_text().splitlines()
                  if json.loads(x)["metadata"]["source"] == "who_when")
    assert record["context"]["winner"] is None and record["metadata"]["licence"] == "MIT"
    assert record["context"]["responses"]["WebSurfer"] == ["I clicked a link."]
    assert record["context"]["coordination_outcomes"]["native"]["mistake_step"] == 2


def test_llm_enabled_without_llm_labels_is_a_stale_build(tmp_path: Path) -> None:
    build_inputs(tmp_path)
    params = repo_params(rank=RANK, **{"label.llm.enabled": True})
    with pytest.raises(CoordsetError, match="episode_labels.parquet: label.llm is enabled .* has no llm_ columns"):
        read_inputs(release_settings(params), tmp_path)


def test_latent_findings_follow_the_numbers() -> None:
    worse = latent_findings({"reconstruction_error": 0.3, "pca_reconstruction_error": 0.2})
    assert len(worse) == 1 and "**does not beat**" in worse[0]
    better = latent_findings({"reconstruction_error": 0.1, "pca_reconstruction_error": 0.2,
                              "probe_accuracy": 0.7, "probe_majority_rate": 0.5})
    assert len(better) == 2 and not any("does not beat" in s for s in better)
    assert [b.baseline for b in not_beaten({"next_step_error": 0.2, "next_step_error_no_memory": 0.2})] == [
        "next_step_error_no_memory"]  # a tie is not a win
    assert latent_findings({"reconstruction_error": 0.1}) == []  # no baseline reported: no claim


@pytest.mark.parametrize(("n", "label"), [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (1_200, "1K<n<10K"),
                                          (37_200, "10K<n<100K"), (100_000, "100K<n<1M")])
def test_size_category(n: int, label: str) -> None:
    assert size_category(n) == label


def test_hub_features_of_nested_types() -> None:
    types = {f.name: f.type for f in FIELDS}
    assert hf_feature("latent_per_turn", types["latent_per_turn"]) == {
        "name": "latent_per_turn", "list": {"list": "float32"}}
    assert hf_feature("events", types["events"]) == {
        "name": "events", "list": [{"name": "turn", "dtype": "int64"}, {"name": "event", "dtype": "string"}]}
    assert hf_feature("mean_grade", types["mean_grade"]) == {"name": "mean_grade", "dtype": "float64"}


def test_a_failed_card_replaces_no_file(tmp_path: Path) -> None:
    build_inputs(tmp_path)
    settings = _settings(tmp_path)
    inputs = read_inputs(settings, tmp_path)
    write_release(inputs, settings, tmp_path / "out", render_card=lambda summary: f"{summary.rows} rows\n")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    inputs.episode_labels.loc[:, "mean_grade"] = 9.0  # a different release ...

    def broken(summary: Any) -> str:
        raise RuntimeError("card failed")

    with pytest.raises(RuntimeError, match="card failed"):  # ... whose card fails to render
        write_release(inputs, settings, tmp_path / "out", render_card=broken)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_per_source_latent_rows_say_win_lose_or_not_measurable() -> None:
    def c(model: float, baseline: float, ci: list[float] | None, win: bool) -> dict[str, Any]:
        return {"model": model, "baseline": baseline, "difference": model - baseline, "ci95": ci, "win": win}

    rows = latent_source_rows({
        "who_when": {"next_message": {"vs_memoryless_ridge": c(1.0, 2.0, [-1.5, -0.5], True),
                                      "by_position": {"x": {"vs_memoryless_ridge": c(1, 1, [0, 0], False)}}},
                     "probes": {"agent": {"latent_vs_memoryless": c(0.4, 0.5, [-0.2, -0.05], False),
                                          "memoryless_vs_prior": c(0.5, 0.4, [0.0, 0.2], False)}}},
        "local": {"next_message": {"vs_memoryless_ridge": c(1.0, 1.0, None, False)}},
    })
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("`local`", "next_message / vs_memoryless_ridge", "not measurable"),
        ("`who_when`", "next_message / vs_memoryless_ridge", "**wins**"),
        ("`who_when`", "probes / agent / latent_vs_memoryless", "loses"),
    ]


def _comparison(model: float, baseline: float, ci: list[float] | None, win: bool) -> dict[str, Any]:
    return {"model": model, "baseline": baseline, "difference": model - baseline, "ci95": ci, "win": win}


def test_latent_targets_are_met_or_missed_from_the_numbers_and_few_groups_are_called_coarse() -> None:
    c = _comparison
    latent = {"by_source": {
        "who_when": {"groups": 139,
                     "next_message": {"vs_memoryless_ridge": c(0.9, 1.0, [-0.2, -0.05], True),
                                      "relative_gain_over_ridge": 0.1},
                     "reconstruction": {"explained_variance_vs_pca": c(0.27, 0.29, [-0.03, -0.01], False),
                                        "share_of_pca_explained_variance": 0.931},
                     "probes": {"mistake_step": {"top1_accuracy": {
                                    "latent_vs_memoryless": c(0.22, 0.23, [-0.03, 0.01], False),
                                    "latent_vs_prior": c(0.22, 0.1, [0.05, 0.2], True)}},
                                "who_when_paper_best_llm": {"agent_accuracy": 0.535, "step_accuracy": 0.142}}},
        "llm_deliberation": {"groups": 3,
                             "next_message": {"vs_memoryless_ridge": c(1.0, 1.0, [-0.1, 0.05], False),
                                              "relative_gain_over_ridge": 0.0003},
                             "reconstruction": {"explained_variance_vs_pca": c(0.06, 0.06, [-0.01, 0.01], False),
                                                "share_of_pca_explained_variance": 1.002},
                             "probes": {"deal_passes": {"final_round": {"accuracy": {
                                 "latent_vs_memoryless": c(0.7, 0.6, [0.01, 0.2], True)}}}}},
        "mt_bench_repro": {"groups": 80,  # head-to-head: no target applies
                           "next_message": {"vs_memoryless_ridge": c(0.9, 1.0, [-0.2, -0.1], True)},
                           "reconstruction": {"explained_variance_vs_pca": c(0.1, 0.1, [-0.1, 0.1], False),
                                              "share_of_pca_explained_variance": 0.5}},
    }}
    targets = latent_targets(latent)
    assert [(t.source, t.name, t.met) for t in targets] == [
        ("llm_deliberation", "next message beats the memoryless ridge", False),
        ("llm_deliberation", "reconstruction within 5% of PCA", True),
        ("llm_deliberation", "a native-label probe beats its same-size memoryless baseline", True),
        ("who_when", "next message beats the memoryless ridge", True),
        ("who_when", "reconstruction within 5% of PCA", False),  # 93.1% of PCA's explained variance
        ("who_when", "a native-label probe beats its same-size memoryless baseline", False),
        ("mt_bench_repro", "agreement-level probe", None),
        (None, "training time", None),
    ]
    text = {(t.source, t.name): t.text for t in targets}
    deliberation = text[("llm_deliberation", "next message beats the memoryless ridge")]
    assert "Only 3 held-out groups (game configurations)" in deliberation and "0.03% lower" in deliberation
    assert "[95% interval -0.1, 0.05]: **missed**" in deliberation
    step = text[("who_when", "a native-label probe beats its same-size memoryless baseline")]
    assert "mistake_step / top1_accuracy 0.22 vs 0.23" in step and "**missed**" in step
    assert "latent_vs_prior" not in step and "53.5%" in step and "protocols differ" in step
    assert "93.1% of it" in text[("who_when", "reconstruction within 5% of PCA")]
    assert latent_targets({}) == []


def test_the_training_sentence_says_which_epoch_was_kept() -> None:
    settings = release_settings(repo_params(rank=RANK)).latent
    untrained = latent_training_sentences({"evaluation": {"best_epochs": [0, 0, 0]}}, settings)
    assert "**No training epoch improved on the initial cell**" in untrained[0] and "0, 0, 0" in untrained[0]
    assert "**untrained**" in untrained[0]
    published_untrained = latent_training_sentences({"evaluation": {"best_epochs": [0, 4]}}, settings)
    assert "The published model's is 0" in published_untrained[0] and "**untrained**" in published_untrained[0]
    trained = latent_training_sentences({"evaluation": {"best_epochs": [3, 0]}}, settings)
    assert trained == ["Best epoch per fit, over 2 fits (the published model, then the 1 cross-fits that score the "
                       "other held-out groups): 3, 0."]
    assert latent_training_sentences({}, settings) == []
