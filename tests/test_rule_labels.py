"""Rule labels at their threshold boundaries, threshold validation, and the label stage on tiny tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from coordset.errors import CoordsetError, ParamError
from coordset.labels.rules import (
    Thresholds,
    agreement_level,
    episode_rule_labels,
    grade_outcome,
    is_length_imbalanced,
    read_thresholds,
    turn_rule_labels,
)
from coordset.normalize import episode_frames
from coordset.sources.parallel import Conversation, parallel_episode
from stages import label as label_stage
from testkit.openai_server import WINNER_MARK, FakeOpenAI
from tests.helpers import repo_params

T = Thresholds(
    coordination_overhead=0.25, agreement_low=0.5, agreement_high=0.8, agreement_drop=0.15, length_ratio=3.0
)


# --------------------------------------------------------------------------------------------------------
# Thresholds from params.


def test_repo_thresholds_are_valid() -> None:
    thresholds = read_thresholds(repo_params())
    assert thresholds.agreement_low <= thresholds.agreement_high


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("agreement_low", "0.5", "must be a number"),
        ("agreement_high", 1.5, "must be <= 1"),
        ("agreement_drop", -0.1, "must be >= 0"),
        ("coordination_overhead", True, "must be a number"),
        ("coordination_overhead", None, "must be a number"),
        ("length_ratio", "3", "must be a number"),
        ("length_ratio", 0.5, "must be >= 1"),
        ("agreement_low", 0.9, "must be <= thresholds.agreement_high"),
    ],
)
def test_bad_thresholds_name_the_key(key: str, value: object, problem: str) -> None:
    with pytest.raises(ParamError) as err:
        read_thresholds(repo_params(**{f"thresholds.{key}": value}))
    assert err.value.key == f"thresholds.{key}" and f"'thresholds.{key}'" in str(err.value)
    assert problem in str(err.value)


def test_missing_threshold_names_the_key() -> None:
    params = repo_params()
    del params["thresholds"]["length_ratio"]
    with pytest.raises(ParamError, match="'thresholds.length_ratio' is missing"):
        read_thresholds(params)


def test_stage_checks_thresholds_before_reading_any_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No data at all in tmp_path: the params error must come first.
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(repo_params(**{"numerics": "native", "thresholds.agreement_high": "high"}))
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamError, match="thresholds.agreement_high"):
        label_stage.main()


# --------------------------------------------------------------------------------------------------------
# Boundaries of each rule.


@pytest.mark.parametrize(
    ("similarity", "level"),
    [
        (0.4999, "low"),
        (0.5, "medium"),
        (0.7999, "medium"),
        (0.8, "high"),
        (1.0, "high"),
        (-0.2, "low"),
        (float("nan"), "unknown"),
        (None, "unknown"),
    ],
)
def test_agreement_level_boundaries(similarity: float | None, level: str) -> None:
    assert agreement_level(similarity, T) == level


@pytest.mark.parametrize(
    ("tokens", "imbalanced"),
    [
        ([300, 100], True),
        ([100, 300], True),
        ([299, 100], False),
        ([5, 0], True),
        ([0, 0], False),
        ([300, 200, 100], True),
        ([250, 200, 100], False),
        ([300], False),
    ],
)
def test_length_imbalance_boundaries(tokens: list[int], imbalanced: bool) -> None:
    assert is_length_imbalanced(tokens, T) is imbalanced


def test_grade_outcome() -> None:
    assert grade_outcome(["x", "y"], [7.0, 8.5]) == "y"
    assert grade_outcome(["x", "y"], [8.5, 8.5]) == "tie"
    assert grade_outcome(["x", "y", "z"], [9.0, 9.0, 1.0]) == "tie"
    assert grade_outcome(["x", "y"], [8.0, None]) == "unknown"


def _unit(angle_cos: float) -> list[float]:
    return [angle_cos, float(np.sqrt(1.0 - angle_cos**2))]


def _turn_tables(similarities: list[float], tokens: list[tuple[int, int]] | None = None):
    """One two-agent episode whose turn t has the agents' replies at cosine similarities[t-1]."""
    messages, embeddings, turns = [], [], []
    for t, sim in enumerate(similarities, start=1):
        for agent, vector in (("x", [1.0, 0.0]), ("y", _unit(sim))):
            sha = hashlib.sha256(f"{t}{agent}".encode()).hexdigest()
            messages.append(
                {"episode_id": "e", "turn": t, "role": "agent", "speaker": agent, "text_sha256": sha}
            )
            embeddings.append({"text_sha256": sha, "embedding": np.array(vector, dtype=np.float64) * (t + 1)})
        for agent, n in zip(("x", "y"), (tokens or [(100, 100)] * len(similarities))[t - 1], strict=True):
            turns.append({"episode_id": "e", "turn": t, "speaker": agent, "completion_tokens": n})
    return pd.DataFrame(messages), pd.DataFrame(turns), pd.DataFrame(embeddings)


def test_turn_labels_similarity_levels_and_drop_boundaries() -> None:
    # Drops: 0.9 -> 0.75 is exactly 0.15 (no event), 0.75 -> 0.5 is 0.25 (event), then a rise.
    messages, turns, embeddings = _turn_tables([0.9, 0.75, 0.5, 0.8])
    out = turn_rule_labels(messages, turns, embeddings, T)
    assert out["turn"].tolist() == [1, 2, 3, 4]
    assert out["agent_similarity"].tolist() == pytest.approx([0.9, 0.75, 0.5, 0.8], abs=1e-9)
    assert out["agreement_level"].tolist() == ["high", "medium", "medium", "high"]
    assert out["agreement_drop"].tolist() == [False, False, True, False]


def test_turn_labels_length_imbalance_and_missing_reply() -> None:
    messages, turns, embeddings = _turn_tables([0.3, 0.3], tokens=[(300, 100), (299, 100)])
    messages = messages[
        ~((messages["turn"] == 2) & (messages["speaker"] == "y"))
    ]  # y did not reply to turn 2
    out = turn_rule_labels(messages, turns, embeddings, T)
    assert out["length_imbalance"].tolist() == [True, False]
    assert out["agreement_level"].tolist() == ["low", "unknown"]
    assert np.isnan(out["agent_similarity"].iloc[1]) and not out["agreement_drop"].iloc[1]


def test_more_than_two_agents_use_the_mean_pairwise_cosine() -> None:
    vectors = {"x": [1.0, 0.0], "y": [2.0, 0.0], "z": [0.0, 1.0]}  # pairs: 1, 0, 0
    messages = pd.DataFrame(
        [
            {"episode_id": "e", "turn": 1, "role": "agent", "speaker": m, "text_sha256": m * 64}
            for m in vectors
        ]
    )
    embeddings = pd.DataFrame({"text_sha256": [m * 64 for m in vectors], "embedding": list(vectors.values())})
    turns = pd.DataFrame(
        {"episode_id": "e", "turn": 1, "speaker": list(vectors), "completion_tokens": 10}
    )
    out = turn_rule_labels(messages, turns, embeddings, T)
    assert out["agent_similarity"].iloc[0] == pytest.approx(1 / 3)


def test_a_reply_without_embedding_is_an_error() -> None:
    messages, turns, embeddings = _turn_tables([0.9])
    with pytest.raises(CoordsetError, match="no embedding .* re-run the embed stage"):
        turn_rule_labels(messages, turns, embeddings.iloc[:1], T)


def _episode_frames(overheads: list[float], consensus: list[str]):
    ids = [f"mt_bench_repro/en/1/{i}" for i in range(len(overheads))]
    episodes = pd.DataFrame(
        {
            "episode_id": ids,
            "source": "mt_bench_repro",
            "group_id": "1",
            "agents": [["x", "y"]] * len(ids),
            "parallel": True,
        }
    )
    usage = pd.DataFrame({"episode_id": ids, "completion_tokens": 2000, "coordination_overhead": overheads})
    return episodes, usage, pd.DataFrame({"episode_id": ids, "consensus": consensus})


GRADES = pd.DataFrame(
    [
        # x: (8 + 6) / 2 = 7 (unparsed and reference grades ignored); y: 9.
        {
            "question_id": "1",
            "model_id": "x",
            "judge_id": "j1",
            "mode": "single_grade",
            "turn": 1,
            "score": 8.0,
        },
        {
            "question_id": "1",
            "model_id": "x",
            "judge_id": "j2",
            "mode": "single_grade",
            "turn": 2,
            "score": 6.0,
        },
        {
            "question_id": "1",
            "model_id": "x",
            "judge_id": "j3",
            "mode": "single_grade",
            "turn": 1,
            "score": None,
        },
        {
            "question_id": "1",
            "model_id": "x",
            "judge_id": "j1",
            "mode": "single_grade_ref",
            "turn": 1,
            "score": 1.0,
        },
        {
            "question_id": "1",
            "model_id": "y",
            "judge_id": "j1",
            "mode": "single_grade",
            "turn": 1,
            "score": 9.0,
        },
    ]
)


def test_coordination_success_needs_a_winner_and_overhead_strictly_below_threshold() -> None:
    episodes, usage, consensus = _episode_frames(
        [0.2499, 0.25, 0.0, 0.0, 0.1], ["x", "y", "tie", "unknown", "y"]
    )
    out = episode_rule_labels(episodes, usage, GRADES, consensus, T)
    assert out["coordination_success"].tolist() == [True, False, False, False, True]


def test_efficiency_is_mean_agent_grade_per_1k_completion_tokens() -> None:
    episodes, usage, consensus = _episode_frames([0.1], ["y"])
    row = episode_rule_labels(episodes, usage, GRADES, consensus, T).iloc[0]
    assert row["agent_grades"] == [7.0, 9.0] and row["mean_grade"] == 8.0
    assert row["efficiency_score"] == pytest.approx(8.0 / 2.0)
    assert row["rule_outcome"] == "y"


def test_ungraded_agents_and_other_sources_get_no_grade_based_labels() -> None:
    episodes, usage, consensus = _episode_frames([0.1, 0.1], ["x", "x"])
    episodes["agents"] = [["x", "w"], ["x", "y"]]
    episodes.loc[1, "source"] = "fastchat_mt_bench"  # same question id and models, but not graded
    out = episode_rule_labels(episodes, usage, GRADES, consensus, T)
    assert out["rule_outcome"].tolist() == ["unknown", "unknown"]
    assert out["efficiency_score"].isna().all() and out["mean_grade"].isna().all()
    assert out["coordination_success"].tolist() == [True, True]


def test_conversations_among_agents_take_success_from_their_native_outcome() -> None:
    episodes, usage, consensus = _episode_frames([0.9, 0.0, 0.0], ["pass", "fail", "unknown"])
    episodes["source"], episodes["parallel"] = "llm_deliberation", False
    out = episode_rule_labels(episodes, usage, GRADES, consensus, T)
    # the token-spread heuristic does not apply: a passing deal is a success whatever the overhead
    assert out["coordination_success"].astype(object).where(out["coordination_success"].notna(), None).tolist() == [
        True, False, None]


# --------------------------------------------------------------------------------------------------------
# The stage on tiny contract-shaped tables: one judged mt_bench_repro episode, one local (human vote) episode.


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_inputs(root: Path, **params: object) -> None:
    """Every input of the label stage in its schema's shape: a local (human vote) and a judged MT-Bench episode."""
    mt, local = "mt_bench_repro/en/1/x__y", "local/q1"
    replies = {  # (episode, turn) -> agent -> (embedding, completion tokens)
        (local, 1): {"a": ([0.0, 1.0], 50), "b": ([0.0, 1.0], 60)},
        (mt, 1): {"x": ([1.0, 0.0], 100), "y": ([0.9, 0.43589], 320)},
        (mt, 2): {"x": ([1.0, 0.0], 100), "y": ([0.6, 0.8], 110)},
    }

    def text(who: str, turn: int) -> str:  # y's replies carry the mark the test server prefers
        return f"{who} answers turn {turn}." + (" " + WINNER_MARK if who == "y" else "")

    convs = [
        Conversation(local, "local", "q1", None, "en", ["Question 1?"], {m: [text(m, 1)] for m in "ab"}, "a",
                     "human_vote", {"a": 1.0, "b": 2.0}),
        Conversation(mt, "mt_bench_repro", "1", "writing", "en", ["Question 1?", "Question 2?"],
                     {m: [text(m, 1), text(m, 2)] for m in "xy"}, "y", "judge_majority"),
    ]
    episodes, messages = episode_frames([parallel_episode(c, "test") for c in convs])
    outcomes = pd.DataFrame({"episode_id": [local, mt], "source": ["local", "mt_bench_repro"], "outcome": ["a", "y"],
                             "outcome_source": ["human_vote", "judge_majority"]}).assign(
        unknown_reason=pd.Series([None, None], dtype="str"), mistake_agent=pd.Series([None, None], dtype="str"),
        mistake_step=pd.array([None, None], dtype="Int64"), mistake_reason=pd.Series([None, None], dtype="str"),
        any_deal_passed=pd.array([None, None], dtype="boolean"))
    verdicts = pd.DataFrame([
        {"episode_id": mt, "judge_id": j, "question_id": "1", "model_a": "y", "model_b": "x", "winner_ab": ab,
         "winner_ba": ba, "winner": w, "turn": 2, "tstamp": float("nan")}
        for j, ab, ba, w in (("j1", "A", "B", "y"), ("j2", "A", "B", "y"), ("j3", "A", "A", "inconsistent"))])
    tokens = {(e, t, a): n for (e, t), agents in replies.items() for a, (_, n) in agents.items()}
    key = list(zip(messages["episode_id"], messages["turn"], messages["speaker"], strict=True))
    enriched = messages[["episode_id", "turn", "position", "speaker", "role", "agent_model", "text_sha256"]].assign(
        n_tokens=[tokens.get(k, 10) for k in key], reasoning_tokens=pd.array([None] * len(key), dtype="Int64"))
    agents = enriched[enriched["role"] == "agent"]
    calls = agents[["episode_id", "turn", "position", "speaker", "agent_model"]].assign(
        user_tokens=10, reasoning_tokens=0, completion_tokens=agents["n_tokens"], billed_prompt_tokens=20,
        billing="own_thread").reset_index(drop=True)
    usage = []
    for eid, models in ((local, ["a", "b"]), (mt, ["x", "y"])):
        rows = calls[calls["episode_id"] == eid]
        by_agent = [int(rows.loc[rows["speaker"] == m, "completion_tokens"].sum()) for m in models]
        out, billed, n_turns = sum(by_agent), int(rows["billed_prompt_tokens"].sum()), int(rows["turn"].nunique())
        usage.append({
            "episode_id": eid, "n_turns": n_turns, "n_agents": 2, "n_calls": len(rows), "user_tokens": 10 * n_turns,
            "completion_tokens": out, "billed_prompt_tokens": billed, "input_tokens": billed, "output_tokens": out,
            "total_tokens": billed + out, "completion_tokens_by_agent": by_agent,
            "avg_tokens_per_turn": (billed + out) / n_turns, "input_output_ratio": billed / (billed + out),
            "coordination_overhead": abs(by_agent[0] - by_agent[1]) / (billed + out)})
    vectors = {sha: np.array(replies[(e, t)][a][0], dtype=np.float32)
               for e, t, a, sha in zip(messages["episode_id"], messages["turn"], messages["speaker"],
                                       messages["text_sha256"], strict=True) if a != "user"}
    embeddings = pd.DataFrame({"text_sha256": sorted(vectors), "embedding": [vectors[h] for h in sorted(vectors)],
                               "n_wordpieces": 5, "n_chunks": 1, "truncated": False, "long_text_method": "truncate"})
    grades = pd.DataFrame([{"question_id": "1", "model_id": m, "judge_id": "j1", "mode": "single_grade", "turn": 1,
                            "score": s} for m, s in (("x", 6.0), ("y", 8.0))])
    tables = {
        "normalized/episodes": episodes,
        "normalized/outcomes": outcomes,
        "normalized/judge_verdicts": verdicts,
        "normalized/judge_grades": grades,
        "normalized/messages": messages,
        "enriched/messages": enriched,
        "enriched/calls": calls,
        "enriched/episodes": pd.DataFrame(usage),
        "embeddings/embeddings": embeddings,
    }
    for name, frame in tables.items():
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / "data" / f"{name}.parquet", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(repo_params(**{"numerics": "native", **params})))  # in-process


def test_label_stage_on_tiny_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    label_stage.main()

    episodes = pd.read_parquet("data/labels/episode_labels.parquet").set_index("episode_id")
    assert list(episodes.index) == ["local/q1", "mt_bench_repro/en/1/x__y"]
    local, mt = episodes.loc["local/q1"], episodes.loc["mt_bench_repro/en/1/x__y"]
    assert (local["consensus"], local["consensus_source"], local["rule_outcome"]) == ("a", "human_vote", "unknown")
    assert (mt["consensus"], mt["consensus_category"], mt["n_consistent_judges"]) == ("y", "agent_2", 2)
    assert (mt["rule_outcome"], mt["mean_grade"]) == ("y", 7.0)
    assert mt["efficiency_score"] == pytest.approx(7.0 / 0.63)
    assert pd.isna(local["efficiency_score"])

    turns = pd.read_parquet("data/labels/turn_labels.parquet")
    assert turns["agreement_level"].tolist() == ["high", "high", "medium"]
    assert turns["agreement_drop"].tolist() == [False, False, True]
    assert turns["length_imbalance"].tolist() == [False, True, False]
    assert len(pd.read_parquet("data/labels/judge_episode_verdicts.parquet")) == 3
    assert pd.read_parquet("data/labels/judge_consistency.parquet")["n_inconsistent"].tolist() == [0, 0, 1]

    metrics = json.loads(Path("metrics/labels.json").read_text())
    assert metrics["llm"] is None and metrics["llm_vs_consensus"] is None
    assert metrics["judges"]["consistency"]["j3"]["inconsistency_rate"] == 1.0
    assert metrics["rule_vs_consensus"]["n"] == 1 and metrics["rule_vs_consensus"]["accuracy"] == 1.0
    assert (
        Path("metrics/confusion_rule.csv").read_text()
        == "actual,predicted\nagent_1,unknown\nagent_2,agent_2\n"
    )
    assert Path("metrics/confusion_llm.csv").read_text() == "actual,predicted\n"
    assert Path("metrics/judge_kappa.png").read_bytes().startswith(b"\x89PNG")


def test_label_stage_with_llm_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openai_server: FakeOpenAI
) -> None:
    # The real openai client against the local test endpoint: both orders of both episodes are asked.
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    _write_inputs(tmp_path, **{"label.llm.enabled": True})
    monkeypatch.chdir(tmp_path)
    label_stage.main()

    assert openai_server.call_count == 4
    episodes = pd.read_parquet("data/labels/episode_labels.parquet").set_index("episode_id")
    assert episodes["llm_preferred"].tolist() == ["tie", "y"]
    assert episodes["llm_consistent"].tolist() == [True, True]
    metrics = json.loads(Path("metrics/labels.json").read_text())
    quality = metrics["llm"]["quality"]["gpt-4o-mini"]["pairwise"]
    assert quality["coverage"] == 1.0 and quality["n_inconsistent"] == 0 and quality["inconsistency_rate"] == 0.0
    assert pd.read_parquet("data/labels/llm_labels.parquet")["model"].tolist() == ["gpt-4o-mini"] * 2
    # Consensus of local/q1 is the human vote for a; the LLM says tie. Only mt agrees.
    assert metrics["llm_vs_consensus"]["n"] == 2 and metrics["llm_vs_consensus"]["accuracy"] == 0.5
    assert metrics["llm_vs_consensus"]["accuracy_non_tie"] == 0.5
    assert Path("metrics/confusion_llm.csv").read_text() == "actual,predicted\nagent_1,tie\nagent_2,agent_2\n"
    assert "calls_made" not in metrics["llm"]["labeler"]  # per-run figures stay out of metrics
