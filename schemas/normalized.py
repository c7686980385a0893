"""Canonical tables written by the normalize stage."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.pandas import Check, Column

from coordset.sources import KNOWN_SOURCES

SHA256 = Check.str_matches(r"^[0-9a-f]{64}$")


def _nonempty_str_list(values: object) -> bool:
    return (
        hasattr(values, "__len__")
        and len(values) >= 2
        and all(isinstance(v, str) and v for v in values)
        and len(set(values)) == len(values)
    )


EPISODES = pa.DataFrameSchema(
    name="episodes",
    columns={
        "episode_id": Column(str, unique=True),
        "source": Column(str, Check.isin(KNOWN_SOURCES)),
        "question_id": Column(str),
        "category": Column(str, nullable=True),
        "language": Column(str),
        "agent_models": Column(object, Check(lambda s: s.map(_nonempty_str_list), element_wise=False,
                                             error="agent_models must list >= 2 distinct model names")),
        "n_agents": Column(int, Check.ge(2)),
        "n_turns": Column(int, Check.ge(1)),
        "winner": Column(str),
        "winner_source": Column(str, Check.isin(["judge_majority", "human", "source", "none"])),
        "tstamp_start": Column(float, nullable=True),
        "tstamp_end": Column(float, nullable=True),
    },
    checks=[
        Check(lambda df: df.apply(
            lambda r: r["winner"] in ("tie", "unknown") or r["winner"] in list(r["agent_models"]), axis=1),
            error="winner must be one of agent_models, 'tie' or 'unknown'"),
        Check(lambda df: df["n_agents"] == df["agent_models"].map(len), error="n_agents == len(agent_models)"),
    ],
    strict=True,
    coerce=False,
)

MESSAGES = pa.DataFrameSchema(
    name="messages",
    columns={
        "episode_id": Column(str),
        "turn": Column(int, Check.ge(1)),
        "position": Column(int, Check.ge(0)),
        "role": Column(str, Check.isin(["user", "agent"])),
        "agent_model": Column(str, nullable=True),
        "text": Column(str),
        "text_sha256": Column(str, SHA256),
        "n_chars": Column(int, Check.ge(0)),
        "tstamp": Column(float, nullable=True),
    },
    checks=[
        Check(lambda df: (df["role"] == "user") == df["agent_model"].isna(),
              error="agent_model is set exactly for agent messages"),
        Check(lambda df: ~df.duplicated(["episode_id", "position"]), error="(episode_id, position) is unique"),
    ],
    strict=True,
)

# Every imported pairwise verdict, both orders kept as the judge gave them.
JUDGE_VERDICTS = pa.DataFrameSchema(
    name="judge_verdicts",
    columns={
        "episode_id": Column(str),
        "judge_id": Column(str),
        "question_id": Column(str),
        "model_a": Column(str),
        "model_b": Column(str),
        "winner_ab": Column(str, Check.isin(["A", "B", "tie", "error"])),
        "winner_ba": Column(str, Check.isin(["A", "B", "tie", "error"])),
        "winner": Column(str),
        "turn": Column(int),
        "tstamp": Column(float, nullable=True),
    },
    checks=[Check(lambda df: ~df.duplicated(["episode_id", "judge_id", "turn"]),
                  error="one verdict per (episode_id, judge_id, turn)")],
    strict=True,
)

# Single-answer grades (1-10 per turn) from each judge, without or with a reference answer.
JUDGE_GRADES = pa.DataFrameSchema(
    name="judge_grades",
    columns={
        "question_id": Column(str),
        "model_id": Column(str),
        "judge_id": Column(str),
        "mode": Column(str, Check.isin(["single_grade", "single_grade_ref"])),
        "turn": Column(int, Check.ge(1)),
        "score": Column(float, Check.in_range(1, 10), nullable=True),
    },
    checks=[Check(lambda df: ~df.duplicated(["question_id", "model_id", "judge_id", "mode", "turn"]),
                  error="one grade per (question, model, judge, mode, turn)")],
    strict=True,
)
