"""LLM labels of conversations among agents (the group judge), several models and their consensus, the rule
that cuts long conversations, and the comparison with the sources' own labels."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from coordset.errors import ParamError
from coordset.labels.llm import LlmSettings, choose_episodes, label_with_llm, llm_models
from coordset.labels.llm_consensus import (
    among_models,
    attribution_baselines,
    llm_consensus,
    native_success,
    vs_native,
)
from coordset.labels.llm_prompt import CUT_MARK, cap_texts, extract_payload, validate_group_answer
from testkit.openai_server import MISTAKE_MARK, SUCCESS_MARK, FakeOpenAI
from tests.helpers import repo_params
from tests.test_llm_labels import FAST, MODEL, episode_frames

AGENTS = ("Planner", "Coder", "Checker")


def team_frames(marks: dict[str, tuple[int, str]], *, n_steps: int = 6, long_step: int | None = None,
                source: str = "who_when", subset: str | None = "algorithm_generated"
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One conversation among three agents and a code terminal per episode id. ``marks[eid] = (step, mark)``
    appends a mark (MISTAKE, SUCCESS) to that step's text; ``long_step`` makes one message 5,000 characters."""
    episodes, messages = [], []
    for eid, (marked_step, mark) in marks.items():
        episodes.append({"episode_id": eid, "source": source, "subset": subset, "agents": list(AGENTS),
                         "agent_models": [None] * 3, "n_agents": 3, "n_messages": n_steps, "parallel": False})
        for step in range(n_steps):
            speaker = "Computer_terminal" if step % 4 == 3 else AGENTS[step % 3]
            role = "tool" if speaker == "Computer_terminal" else "agent"
            text = f"{speaker} says step {step} of {eid}." + (f" {mark}" if step == marked_step else "")
            if step == long_step:
                text += " " + "x" * 5000
            messages.append({"episode_id": eid, "turn": step + 1, "position": step, "speaker": speaker,
                             "role": role, "agent_model": None, "text": text})
    return pd.DataFrame(episodes), pd.DataFrame(messages)


def run(episodes: pd.DataFrame, messages: pd.DataFrame, cache_dir, models=(MODEL,), **changes: object):
    settings = LlmSettings(**{**FAST.__dict__, **changes})
    return label_with_llm(episodes, messages, model=models, settings=settings, cache_dir=cache_dir)


def test_a_group_conversation_is_judged_once_with_agent_and_step_limited_to_the_episode(
        endpoint: FakeOpenAI, tmp_path) -> None:
    episodes, messages = team_frames({"g1": (2, MISTAKE_MARK), "g2": (4, SUCCESS_MARK)})
    result = run(episodes, messages, tmp_path / "store")
    assert endpoint.call_count == 2 == result.stats.requests and result.stats.group_episodes == 2
    for call in endpoint.calls:
        schema = call.body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["mistake_agent"] == {"type": "string", "enum": list(AGENTS)}
        assert schema["properties"]["mistake_step"] == {"type": "integer", "minimum": 0, "maximum": 5}
        assert schema["properties"]["reason"]["maxLength"] == 300
        payload = extract_payload(call.body["messages"][1]["content"])
        assert payload["agents"] == list(AGENTS) and [s["step"] for s in payload["steps"]] == list(range(6))
        assert payload["steps"][3]["speaker"] == "Computer_terminal" and payload["steps"][3]["role"] == "tool"
    labels = result.labels.set_index("episode_id")
    assert labels["kind"].tolist() == ["group", "group"] and labels["valid"].all()
    # The server blames the step carrying the MISTAKE mark (step 2: Checker); g2 has none, so step 0.
    assert (labels.at["g1", "outcome"], labels.at["g1", "mistake_agent"], labels.at["g1", "mistake_step"]) == \
        ("failure", "Checker", 2)
    assert (labels.at["g2", "outcome"], labels.at["g2", "mistake_step"]) == ("success", 0)
    assert labels["preferred"].isna().all() and labels["consistent"].isna().all()
    assert labels["served_by"].tolist() == [f"local:{MODEL}"] * 2

    again = run(episodes, messages, tmp_path / "store")
    assert again.stats.calls_made == 0 and endpoint.call_count == 2
    pd.testing.assert_frame_equal(again.labels, result.labels)


@pytest.mark.parametrize(("answer", "problem"), [
    ({"mistake_agent": "Computer_terminal"}, "mistake_agent"),    # not one of the agents
    ({"mistake_step": 6}, "mistake_step"),                        # past the last step
    ({"mistake_step": -1}, "mistake_step"),
    ({"mistake_step": True}, "mistake_step"),
    ({"outcome": "partial"}, "outcome"),
    ({"preferred": "A"}, "unexpected ['preferred']"),
    ({"mistake_agent": None}, "missing ['mistake_agent']"),
])
def test_a_group_answer_outside_the_episode_is_invalid(answer: dict, problem: str) -> None:
    good = {"success_score": 3, "outcome": "failure", "agreement": "low", "efficiency_score": 4,
            "mistake_agent": "Coder", "mistake_step": 5, "reason": "Coder broke it."}
    assert validate_group_answer(json.dumps(good), AGENTS, 6) == (good, None)
    bad = {k: v for k, v in {**good, **answer}.items() if v is not None}
    parsed, found = validate_group_answer(json.dumps(bad), AGENTS, 6)
    assert parsed is None and problem in found


def test_the_cut_rule_keeps_every_message_and_cuts_only_the_longest_to_the_largest_cap_that_fits() -> None:
    texts = ["a" * 10, "b" * 400, None, "c" * 1000, "d" * 50]
    same, cut = cap_texts(texts, 2000)
    assert same == texts and cut.message_char_cap is None and cut.chars_cut == 0
    lengths = [len(t) for t in texts if t]
    for budget, n_cut in ((1000, 1), (500, 2)):
        capped, cut = cap_texts(texts, budget)
        cap = cut.message_char_cap
        assert sum(min(n, cap) for n in lengths) <= budget < sum(min(n, cap + 1) for n in lengths)
        assert capped[0] == "a" * 10 and capped[4] == "d" * 50 and capped[2] is None  # short ones untouched
        assert capped[3] == "c" * cap + CUT_MARK.format(n=1000 - cap)
        assert sum(t is not None and t.endswith("characters]") for t in capped) == n_cut
        assert cut.chars_cut == sum(max(n - cap, 0) for n in lengths)


def test_a_long_conversation_is_cut_and_the_cut_is_recorded(endpoint: FakeOpenAI, tmp_path) -> None:
    episodes, messages = team_frames({"long": (1, MISTAKE_MARK)}, long_step=4)
    result = run(episodes, messages, tmp_path / "store", max_conversation_chars=1200)
    row = result.labels.iloc[0]
    assert row["valid"] and row["chars_cut"] > 3900 and row["message_char_cap"] < 1200
    assert result.stats.cut_episodes == 1
    steps = extract_payload(endpoint.calls[0].body["messages"][1]["content"])["steps"]
    assert len(steps) == 6 and steps[4]["text"].endswith("characters]")
    assert "was cut" in endpoint.calls[0].body["messages"][1]["content"]
    # The pairwise judge cuts both orders alike, so an order's answer never sees more than the other's.
    pair_episodes, pair_messages = episode_frames(["x" * 3000])
    run(pair_episodes, pair_messages, tmp_path / "store2", max_conversation_chars=1000)
    firsts = [extract_payload(c.body["messages"][1]["content"])["turns"][0] for c in endpoint.calls[1:]]
    alpha = {t[side] for t in firsts for side in ("assistant_A", "assistant_B") if t[side].startswith("alpha")}
    assert len(firsts) == 2 and len(alpha) == 1 and alpha.pop().endswith("characters]")


def test_several_models_label_on_their_own_within_one_budget(endpoint: FakeOpenAI, tmp_path) -> None:
    team = team_frames({"g1": (2, MISTAKE_MARK)})
    pair = episode_frames([""], ids=["p1"])
    episodes, messages = (pd.concat([a, b], ignore_index=True) for a, b in zip(team, pair, strict=True))
    first = run(episodes, messages, tmp_path / "store", models=("judge-a", "judge-b"), max_calls=4, concurrency=1)
    assert first.stats.calls_made == 4 == endpoint.call_count and first.stats.budget_exhausted
    assert first.stats.requests == 6 and first.stats.models == 2 and first.stats.episodes == 2
    second = run(episodes, messages, tmp_path / "store", models=("judge-a", "judge-b"))
    assert second.stats.calls_made == 2 and second.stats.complete
    assert {c.body["model"] for c in endpoint.calls} == {"judge-a", "judge-b"}
    labels = second.labels
    assert list(zip(labels["episode_id"], labels["model"], strict=True)) == [
        ("g1", "judge-a"), ("g1", "judge-b"), ("p1", "judge-a"), ("p1", "judge-b")]
    consensus = llm_consensus(labels).set_index("episode_id")
    assert consensus.at["g1", "n_valid"] == 2 and consensus.at["g1", "mistake_agent"] == "Checker"
    assert consensus.at["p1", "models"] == "judge-a, judge-b" and consensus.at["p1", "preferred"] == "tie"


def test_llm_models_takes_one_name_or_a_list() -> None:
    assert llm_models(repo_params(model="m")) == ("m",)
    assert llm_models(repo_params(model=["m", "n"])) == ("m", "n")
    for bad in ([], ["m", "m"], [""], 3):
        with pytest.raises(ParamError, match="model"):
            llm_models(repo_params(model=bad))


def per_model(rows: list[dict]) -> pd.DataFrame:
    """Per-model label rows in the shape label_with_llm returns (only the fields a test sets)."""
    base = {"kind": "group", "status": "valid", "valid": True, "success_score": 5.0, "agreement": "medium",
            "efficiency_score": 5.0, "reason": "r", "preferred": None, "preferred_ab": None, "preferred_ba": None,
            "consistent": pd.NA, "outcome": None, "mistake_agent": None, "mistake_step": pd.NA,
            "message_char_cap": pd.NA, "chars_cut": 0, "served_by": "local:m", "prompt_tokens": 10,
            "completion_tokens": 2}
    frame = pd.DataFrame([{**base, **r} for r in rows])
    return frame.astype({"mistake_step": "Int64", "consistent": "boolean", "chars_cut": "int64",
                         "prompt_tokens": "int64", "completion_tokens": "int64"})


def test_the_consensus_takes_majorities_and_says_when_models_tie() -> None:
    rows = per_model([
        {"episode_id": "g", "model": "m1", "outcome": "success", "mistake_agent": "a", "mistake_step": 4,
         "agreement": "high", "success_score": 9.0},
        {"episode_id": "g", "model": "m2", "outcome": "failure", "mistake_agent": "b", "mistake_step": 2,
         "agreement": "low", "success_score": 3.0},
        {"episode_id": "g", "model": "m3", "outcome": "failure", "mistake_agent": "a", "mistake_step": 7,
         "agreement": "medium", "success_score": 3.0},
        {"episode_id": "h", "model": "m1", "outcome": "success", "mistake_agent": "a", "mistake_step": 1},
        {"episode_id": "h", "model": "m2", "outcome": "failure", "mistake_agent": "b", "mistake_step": 1},
        {"episode_id": "h", "model": "m3", "status": "invalid", "valid": False, "success_score": float("nan"),
         "agreement": None, "efficiency_score": float("nan"), "reason": None},
        {"episode_id": "p", "model": "m1", "kind": "pairwise", "preferred": "x", "consistent": True},
        {"episode_id": "p", "model": "m2", "kind": "pairwise", "preferred": "x", "consistent": True},
        {"episode_id": "p", "model": "m3", "kind": "pairwise", "preferred": "inconsistent", "consistent": False},
    ])
    c = llm_consensus(rows).set_index("episode_id")
    assert (c.at["g", "outcome"], c.at["g", "mistake_agent"], c.at["g", "mistake_step"]) == ("failure", "a", 2)
    assert c.at["g", "agreement"] == "medium" and c.at["g", "success_score"] == pytest.approx(5.0)
    # h: one success, one failure, one invalid: no majority; agents tie too; steps agree.
    assert (c.at["h", "outcome"], c.at["h", "mistake_step"]) == ("unknown", 1) and pd.isna(c.at["h", "mistake_agent"])
    assert (c.at["h", "n_valid"], c.at["h", "models"]) == (2, "m1, m2")
    assert c.at["p", "preferred"] == "x" and not c.at["p", "consistent"]


def test_agreement_among_models_is_fleiss_kappa_per_label_kind() -> None:
    same = [{"episode_id": f"e{i}", "model": m, "outcome": o, "mistake_agent": "a", "mistake_step": i}
            for i, o in enumerate(["success", "failure", "failure", "success"]) for m in ("m1", "m2")]
    figures = among_models(per_model(same), ("m1", "m2"))
    assert figures["group_outcome"] == {"fleiss_kappa": 1.0, "n_episodes": 4, "n_models": 2}
    assert figures["group_mistake_agent"]["fleiss_kappa"] is None  # one category only: undefined
    split = [{**r, "outcome": "success" if r["model"] == "m1" else "failure"} for r in same]
    assert among_models(per_model(split), ("m1", "m2"))["group_outcome"]["fleiss_kappa"] < 0
    assert among_models(per_model(same[:1]), ("m1",)) is None


def test_attribution_is_scored_against_the_human_labels_next_to_random_and_majority() -> None:
    episodes = pd.DataFrame({
        "episode_id": ["w1", "w2", "w3", "w4"], "source": "who_when",
        "subset": ["algorithm_generated", "algorithm_generated", "hand_crafted", "hand_crafted"],
        "agents": [["a", "b"], ["a", "b"], ["a", "b", "c", "d"], ["a", "b", "c", "d"]],
        "n_messages": [4, 4, 10, 10]})
    outcomes = pd.DataFrame({"episode_id": ["w1", "w2", "w3", "w4"], "outcome": "failure",
                             "mistake_agent": ["a", "a", "c", "d"],
                             "mistake_step": pd.array([0, 2, 5, 9], dtype="Int64")})
    labels = per_model([
        {"episode_id": "w1", "model": "m", "outcome": "failure", "mistake_agent": "a", "mistake_step": 0},
        {"episode_id": "w2", "model": "m", "outcome": "success", "mistake_agent": "b", "mistake_step": 3},
        {"episode_id": "w3", "model": "m", "outcome": "failure", "mistake_agent": "c", "mistake_step": 7},
        {"episode_id": "w4", "model": "m", "outcome": "failure", "mistake_agent": "a", "mistake_step": 9},
    ])
    figures = vs_native(labels, llm_consensus(labels), ("m",), episodes, outcomes, pd.DataFrame())["who_when"]
    attribution = figures["m"]["failure_attribution"]
    assert attribution["algorithm_generated"] == {"n": 2, "agent_accuracy": 0.5, "step_accuracy": 0.5,
                                                  "step_within_one": 1.0}
    assert attribution["hand_crafted"] == {"n": 2, "agent_accuracy": 0.5, "step_accuracy": 0.5,
                                           "step_within_one": 0.5}
    assert attribution["all"]["n"] == 4 and attribution["all"]["agent_accuracy"] == 0.5
    # Every log is a failure: the success judgment is right where the LLM says failure.
    assert figures["m"]["success_vs_native"]["accuracy"] == 0.75
    base = attribution_baselines(native_success(episodes, outcomes))
    assert base["algorithm_generated"]["random_agent_accuracy"] == 0.5
    assert base["hand_crafted"]["random_step_accuracy"] == 0.1
    # within one step of step 0 of 4: steps 0 and 1 (2 of 4); of step 2: 1, 2, 3 (3 of 4)
    assert base["algorithm_generated"]["random_step_within_one"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert base["algorithm_generated"]["majority_agent_accuracy"] == 1.0
    assert figures["paper_best_method"]["step_accuracy"] == 0.142


def test_max_episodes_takes_the_first_of_each_source_and_subset() -> None:
    episodes = pd.DataFrame({"episode_id": ["w/a/2", "w/a/1", "w/h/1", "m/3", "m/1", "m/2"],
                             "source": ["w", "w", "w", "m", "m", "m"], "subset": ["a", "a", "h", None, None, None]})
    assert choose_episodes(episodes, 1)["episode_id"].tolist() == ["m/1", "w/a/1", "w/h/1"]
    assert len(choose_episodes(episodes, None)) == 6
