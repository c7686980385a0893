"""The schemas reject bad rows, and the error names the file, the row and the field."""

from __future__ import annotations

import pandas as pd
import pytest

from coordset.normalize import episode_frames
from coordset.sources.parallel import Conversation, parallel_episode
from schemas import SchemaViolation, check
from schemas.normalized import EPISODES, JUDGE_VERDICTS, MESSAGES, OUTCOMES


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    conv = Conversation(episode_id="local/q1", source="local", question_id="q1", category=None, language="en",
                        user_turns=["Hi", "More"], replies={"a": ["x", "y"], "b": ["z", "w"]}, winner="a",
                        winner_source="human_vote", tstamps={"a": 1.0, "b": 2.0})
    return episode_frames([parallel_episode(conv, "test")])


def test_good_tables_pass() -> None:
    episodes, messages = _tables()
    check(episodes, EPISODES, "episodes.parquet")
    check(messages, MESSAGES, "messages.parquet")


@pytest.mark.parametrize(("column", "value", "field"), [
    ("source", "", "'source'"),
    ("n_turns", 0, "'n_turns'"),
    ("agents", ["a"], "n_agents == len(agents)"),
    ("agents", ["a", "a"], "agents must list >= 1 distinct non-empty names"),
    ("agent_models", ["a"], "agent_models aligned with agents"),
])
def test_episode_schema_rejects(column: str, value: object, field: str) -> None:
    episodes, _ = _tables()
    episodes.at[0, column] = value
    with pytest.raises(SchemaViolation) as err:
        check(episodes, EPISODES, "data/normalized/episodes.parquet")
    assert "data/normalized/episodes.parquet" in str(err.value) and field in str(err.value)


@pytest.mark.parametrize(("column", "value", "field"), [
    ("text_sha256", "not-a-hash", "field 'text_sha256'"),
    ("role", "system", "field 'role'"),
    ("turn", 0, "field 'turn'"),
    ("agent_model", "a", "agent_model is set only for agent messages"),
    ("position", 1, "(episode_id, position) is unique"),
])
def test_message_schema_rejects_and_names_the_row(column: str, value: object, field: str) -> None:
    _, messages = _tables()
    messages.at[0, column] = value
    with pytest.raises(SchemaViolation) as err:
        check(messages, MESSAGES, "messages.parquet")
    text = str(err.value)
    assert field in text
    if field.startswith("field"):
        assert "row 0" in text


def test_extra_or_missing_columns_are_refused() -> None:
    episodes, messages = _tables()
    with pytest.raises(SchemaViolation, match="unexpected column 'extra'"):
        check(episodes.assign(extra=1), EPISODES, "episodes.parquet")
    with pytest.raises(SchemaViolation, match="missing column 'text'"):
        check(messages.drop(columns=["text"]), MESSAGES, "messages.parquet")


def test_verdict_letters_are_checked() -> None:
    row = {"episode_id": "e", "judge_id": "j", "question_id": "1", "model_a": "a", "model_b": "b",
           "winner_ab": "C", "winner_ba": "A", "winner": "a", "turn": 2, "tstamp": None}
    with pytest.raises(SchemaViolation, match=r"row 0, field 'winner_ab'.*'C'"):
        check(pd.DataFrame([row]).astype({"tstamp": float}), JUDGE_VERDICTS, "judge_verdicts.parquet")


def test_outcome_needs_a_reason_exactly_when_unknown() -> None:
    row = {"episode_id": "e", "source": "s", "outcome": "unknown", "outcome_source": "none", "unknown_reason": None,
           "mistake_agent": None, "mistake_step": None, "mistake_reason": None, "any_deal_passed": None}
    frame = pd.DataFrame([row]).astype({"mistake_step": "Int64", "any_deal_passed": "boolean"})
    with pytest.raises(SchemaViolation, match="unknown_reason is given exactly when the outcome is unknown"):
        check(frame, OUTCOMES, "outcomes.parquet")
    check(frame.assign(unknown_reason="no outcome in source"), OUTCOMES, "outcomes.parquet")
