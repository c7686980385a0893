"""The schemas reject bad rows, and the error names the file, the row and the field."""

from __future__ import annotations

import pandas as pd
import pytest

from coordset.errors import CoordsetError
from coordset.records import Conversation, episode_rows
from schemas import check
from schemas.normalized import EPISODES, JUDGE_VERDICTS, MESSAGES


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    conv = Conversation(episode_id="local/q1", source="local", question_id="q1", category=None, language="en",
                        user_turns=["Hi", "More"], replies={"a": ["x", "y"], "b": ["z", "w"]}, winner="a",
                        winner_source="human", tstamps={"a": 1.0, "b": 2.0})
    episode, messages = episode_rows(conv, "test")
    return pd.DataFrame([episode]), pd.DataFrame(messages)


def test_good_tables_pass() -> None:
    episodes, messages = _tables()
    check(episodes, EPISODES, "episodes.parquet")
    check(messages, MESSAGES, "messages.parquet")


@pytest.mark.parametrize(("column", "value", "field"), [
    ("winner", "c", "winner must be one of agent_models"),
    ("source", "reddit", "'source'"),
    ("n_turns", 0, "'n_turns'"),
    ("agent_models", ["a"], "agent_models must list >= 2"),
    ("agent_models", ["a", "a"], "agent_models must list >= 2"),
])
def test_episode_schema_rejects(column: str, value: object, field: str) -> None:
    episodes, _ = _tables()
    episodes.at[0, column] = value
    with pytest.raises(CoordsetError) as err:
        check(episodes, EPISODES, "data/normalized/episodes.parquet")
    assert "data/normalized/episodes.parquet" in str(err.value) and field in str(err.value)


@pytest.mark.parametrize(("column", "value", "field"), [
    ("text_sha256", "not-a-hash", "field 'text_sha256'"),
    ("role", "system", "field 'role'"),
    ("turn", 0, "field 'turn'"),
    ("agent_model", "a", "agent_model is set exactly for agent messages"),
    ("position", 1, "(episode_id, position) is unique"),
])
def test_message_schema_rejects_and_names_the_row(column: str, value: object, field: str) -> None:
    _, messages = _tables()
    messages.at[0, column] = value
    with pytest.raises(CoordsetError) as err:
        check(messages, MESSAGES, "messages.parquet")
    text = str(err.value)
    assert field in text
    if field.startswith("field"):
        assert "row 0" in text


def test_extra_or_missing_columns_are_refused() -> None:
    episodes, messages = _tables()
    with pytest.raises(CoordsetError, match="unexpected column 'extra'"):
        check(episodes.assign(extra=1), EPISODES, "episodes.parquet")
    with pytest.raises(CoordsetError, match="missing column 'text'"):
        check(messages.drop(columns=["text"]), MESSAGES, "messages.parquet")


def test_verdict_letters_are_checked() -> None:
    row = {"episode_id": "e", "judge_id": "j", "question_id": "1", "model_a": "a", "model_b": "b",
           "winner_ab": "C", "winner_ba": "A", "winner": "a", "turn": 2, "tstamp": None}
    with pytest.raises(CoordsetError, match=r"row 0, field 'winner_ab'.*'C'"):
        check(pd.DataFrame([row]).astype({"tstamp": float}), JUDGE_VERDICTS, "judge_verdicts.parquet")
