"""Token arithmetic on hand-checked cases, and an independent recount on the real data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import tiktoken
import tiktoken.load

from coordset import fetch
from coordset.enrich.tokens import load_encoding
from coordset.enrich.usage import enrich, enrich_settings, logged_usage_error
from coordset.errors import CoordsetError
from coordset.normalize import episode_frames, normalize
from coordset.sources.episode import Agent, Episode, Message, Outcome
from coordset.sources.parallel import Conversation, parallel_episode
from schemas import check
from schemas.enriched import CALL_USAGE, EPISODE_USAGE, MESSAGE_TOKENS
from tests.helpers import MIRROR, arena_record, fetch_raw, repo_params, write_jsonl

SETTINGS = enrich_settings(repo_params())

needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")


@pytest.fixture(autouse=True)
def _mirror_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDSET_MIRROR", str(MIRROR))


def _independent_encoding() -> tiktoken.Encoding:
    """cl100k_base built straight from the mirrored rank file, bypassing coordset's loader."""
    ranks = tiktoken.load.load_tiktoken_bpe(str(MIRROR / "tiktoken/cl100k_base.tiktoken"),
                                            expected_hash=fetch.read_pins(fetch.PINS_DIR / "tiktoken.sha256")[
                                                "cl100k_base.tiktoken"])
    reference = tiktoken.core.Encoding  # same class tiktoken.get_encoding returns
    pat = load_encoding("cl100k_base")._pat_str
    return reference(name="cl100k_check", pat_str=pat, mergeable_ranks=ranks, special_tokens={})


@needs_mirror
def test_hand_checked_two_turn_episode(tmp_path: Path) -> None:
    # Token counts (cl100k_base): "Hello world" 2, "How are you today?" 5, "Hi" 1, "Fine." 2,
    # "Sure thing!" 3; the role names "user" and "assistant" are 1 token each.
    record = arena_record("hand", model_a="alpha", model_b="beta", users=("Hello world", "How are you today?"),
                          replies_a=("Hi", "Fine."), replies_b=("Sure thing!", "Hello world"))
    path = write_jsonl(tmp_path / "one.jsonl", [record])
    params = repo_params(**{"sources.use": ["local"], "sources.local.path": str(path)})
    tables = normalize(params, tmp_path)
    usage = enrich(tables.episodes, tables.messages, SETTINGS)
    check(usage.messages, MESSAGE_TOKENS, "m")
    check(usage.calls, CALL_USAGE, "t")
    check(usage.episodes, EPISODE_USAGE, "e")
    assert usage.messages["n_tokens"].tolist() == [2, 1, 3, 5, 2, 2]
    assert set(usage.calls["billing"]) == {"own_thread"}
    turns = usage.calls.set_index(["turn", "speaker"])
    # turn 1: user (3 + 1 + 2) + reply priming 3 = 9 for each agent
    assert turns.at[(1, "alpha"), "billed_prompt_tokens"] == 9
    assert turns.at[(1, "beta"), "billed_prompt_tokens"] == 9
    # turn 2: both user turns (6 + 9) + own earlier reply (3 + 1 + own tokens) + 3
    assert turns.at[(2, "alpha"), "billed_prompt_tokens"] == 15 + 5 + 3
    assert turns.at[(2, "beta"), "billed_prompt_tokens"] == 15 + 7 + 3
    assert turns.at[(2, "alpha"), "user_tokens"] == 5
    assert turns.at[(2, "beta"), "completion_tokens"] == 2
    ep = usage.episodes.iloc[0]
    assert (ep.user_tokens, ep.completion_tokens, ep.billed_prompt_tokens, ep.total_tokens) == (7, 8, 66, 74)
    assert list(ep.completion_tokens_by_agent) == [3, 5]
    assert ep.avg_tokens_per_turn == 37.0
    assert ep.input_output_ratio == pytest.approx(66 / 74)
    assert ep.coordination_overhead == pytest.approx(2 / 74)
    assert usage.metrics["overall"] == {"episodes": 1, "turns": 2, "messages": 6, "calls": 4, "message_tokens": 15,
                                        "billed_prompt_tokens": 66, "completion_tokens": 8}


@needs_mirror
def test_three_agents_use_the_spread_of_completion_tokens(tmp_path: Path) -> None:
    conv = Conversation(episode_id="x", source="local", question_id="x", category=None, language="en",
                        user_turns=["Hi"], replies={"a": ["Hi"], "b": ["Fine."], "c": ["Sure thing!"]},
                        winner="unknown", winner_source="none")
    episodes, messages = episode_frames([parallel_episode(conv, "test")])
    usage = enrich(episodes, messages, SETTINGS)
    ep = usage.episodes.iloc[0]
    assert list(ep.completion_tokens_by_agent) == [1, 2, 3]
    assert ep.coordination_overhead == pytest.approx((3 - 1) / ep.total_tokens)


@needs_mirror
def test_special_token_text_counts_as_plain_text() -> None:
    assert len(load_encoding("cl100k_base").encode_ordinary("<|endoftext|>")) == 7


@needs_mirror
def test_unpinned_encoding_is_refused_with_mirror() -> None:
    with pytest.raises(CoordsetError, match=r"enrich.encoding: 'o200k_base' has no pinned file"):
        load_encoding("o200k_base")


@needs_mirror
def test_message_tokens_match_an_independent_recount(tmp_path: Path) -> None:
    params = repo_params(**{"sources.use": ["mt_bench_repro"]})
    tables = normalize(params, fetch_raw(tmp_path / "raw", "mt_bench_repro"))
    usage = enrich(tables.episodes, tables.messages, SETTINGS)
    encoding = _independent_encoding()
    recount = sum(len(encoding.encode_ordinary(text)) for text in tables.messages["text"])
    assert usage.metrics["overall"]["message_tokens"] == recount
    assert usage.metrics["by_source"]["mt_bench_repro"]["turns"] == 2400


def _group_chat(source: str, prompt: str | None = None) -> Episode:
    """A task, two agents and a tool: "Hello world" (2 tokens), "Hi" (1), "Fine." (2), "Sure thing!" (3)."""
    return Episode(
        episode_id=f"{source}/1", source=source, group_id="g", agents=(Agent("a", "m"), Agent("b", "m")),
        messages=(Message("user", "user", "Hello world", 1), Message("a", "agent", "Hi", 1, reasoning="Fine."),
                  Message("terminal", "tool", "Sure thing!", 2), Message("b", "agent", "Fine.", 2, prompt=prompt)),
        outcome=Outcome("failure", "human_annotation"))


@needs_mirror
def test_group_chat_calls_are_billed_for_the_shared_history() -> None:
    episodes, messages = episode_frames([_group_chat("who_when")])
    calls = enrich(episodes, messages, SETTINGS).calls.set_index("speaker")
    # a sees the task: (3 + 1 + 2) + 3 = 9. b sees the task, a's reply (3 + 1 + 1) and the tool's output sent
    # back as a user message (3 + 1 + 3): 6 + 5 + 7 + 3 = 21.
    assert calls.at["a", "billed_prompt_tokens"] == 9
    assert calls.at["b", "billed_prompt_tokens"] == 21
    # a's completion includes its private reasoning ("Fine.", 2 tokens).
    assert (calls.at["a", "completion_tokens"], calls.at["a", "reasoning_tokens"]) == (3, 2)
    assert list(calls["billing"]) == ["shared_history", "shared_history"]


@needs_mirror
def test_a_logged_prompt_is_what_the_call_is_billed_for() -> None:
    episodes, messages = episode_frames([_group_chat("llm_deliberation", prompt="How are you today?")])
    calls = enrich(episodes, messages, SETTINGS).calls.set_index("speaker")
    assert calls.at["b", "billed_prompt_tokens"] == 3 + 1 + 5 + 3  # one user message holding the prompt
    assert calls.at["b", "billing"] == "logged_prompt"
    # a call without a logged prompt falls back to the shared history
    assert (calls.at["a", "billed_prompt_tokens"], calls.at["a", "billing"]) == (9, "shared_history")


def test_logged_usage_error_known_answer() -> None:
    """Relative error (ours - logged) / logged per call, on numbers worked out by hand."""
    calls = pd.DataFrame({"episode_id": ["e"] * 5, "position": [1, 2, 3, 4, 5],
                          "billed_prompt_tokens": [110, 80, 105, 150, 110],
                          "completion_tokens": [50, 20, 7, 9, 11]})
    # Position 0 is a user message (no call): its logged figures must not count. Completions logged as missing
    # (positions 3, 5) or 0 (position 4: a call that failed) are left out, not counted as errors.
    messages = pd.DataFrame({"episode_id": ["e"] * 6, "position": [0, 1, 2, 3, 4, 5],
                             "logged_prompt_tokens": pd.array([999, 100, 100, 100, 100, 100], dtype="Int64"),
                             "logged_completion_tokens": pd.array([999, 40, 25, None, 0, None], dtype="Int64")})
    error = logged_usage_error(calls, messages)
    assert error is not None
    # prompt: errors +0.1, -0.2, +0.05, +0.5, +0.1 -> |e| sorted 0.05 0.1 0.1 0.2 0.5: median 0.1, and the
    # 90th percentile (linear) at rank 3.6 is 0.2 + 0.6 * 0.3 = 0.38; signed sorted -0.2 .. 0.5: median 0.1.
    assert error["prompt"] == {"calls": 5, "median_abs_relative_error": 0.1, "p90_abs_relative_error": 0.38,
                               "median_relative_error": 0.1, "ours_tokens": 555, "logged_tokens": 500}
    # completion: +0.25 and -0.2 -> |e| median 0.225, p90 0.2 + 0.9 * 0.05 = 0.245; signed median 0.025.
    assert error["completion"] == {"calls": 2, "median_abs_relative_error": 0.225, "p90_abs_relative_error": 0.245,
                                   "median_relative_error": 0.025, "ours_tokens": 70, "logged_tokens": 65}
    # Nothing logged at all: no figure rather than a zero error.
    none = messages.assign(logged_prompt_tokens=pd.array([None] * 6, dtype="Int64"),
                           logged_completion_tokens=pd.array([None] * 6, dtype="Int64"))
    assert logged_usage_error(calls, none) is None
