"""Canonical tables written by the normalize stage."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.pandas import Check, Column

SHA256 = Check.str_matches(r"^[0-9a-f]{64}$")
ROLES = ["user", "agent", "tool"]
BILLING = ["own_thread", "shared_history", "logged_prompt"]
OUTCOME_SOURCES = ["judge_majority", "human_vote", "human_annotation", "game_rule", "moderator_judge", "none"]


def _distinct_names(values: object) -> bool:
    return (hasattr(values, "__len__") and len(values) >= 1 and all(isinstance(v, str) and v for v in values)
            and len(set(values)) == len(values))


def _models(values: object) -> bool:
    return hasattr(values, "__len__") and all(v is None or (isinstance(v, str) and v) for v in values)


EPISODES = pa.DataFrameSchema(
    name="episodes",
    columns={
        "episode_id": Column(str, unique=True),
        "source": Column(str, Check.str_length(min_value=1)),
        "group_id": Column(str),  # what a held-out split keeps together: question, task, game or project
        "category": Column(str, nullable=True),
        "subset": Column(str, nullable=True),
        "language": Column(str),
        "agents": Column(object, Check(lambda s: s.map(_distinct_names), element_wise=False,
                                       error="agents must list >= 1 distinct non-empty names")),
        "agent_models": Column(object, Check(lambda s: s.map(_models), element_wise=False,
                                             error="agent_models: a model name or null per agent")),
        "n_agents": Column(int, Check.ge(1)),
        "n_turns": Column(int, Check.ge(1)),
        "n_messages": Column(int, Check.ge(1)),
        # how each agent call is billed (enrich) and whether the agents answered the same turns in parallel
        "billing": Column(str, Check.isin(BILLING)),
        "parallel": Column(bool),
        "tstamp_start": Column(float, nullable=True),
        "tstamp_end": Column(float, nullable=True),
    },
    checks=[
        Check(lambda df: df["n_agents"] == df["agents"].map(len), error="n_agents == len(agents)"),
        Check(lambda df: df["agents"].map(len) == df["agent_models"].map(len),
              error="agent_models aligned with agents"),
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
        "speaker": Column(str, Check.str_length(min_value=1)),
        "role": Column(str, Check.isin(ROLES)),
        "agent_model": Column(str, nullable=True),
        "text": Column(str),
        "text_sha256": Column(str, SHA256),
        "n_chars": Column(int, Check.ge(0)),
        "reasoning": Column(str, nullable=True),  # private text the agent wrote but did not say
        "prompt": Column(str, nullable=True),  # the prompt the framework logged for this call
        "tstamp": Column(float, nullable=True),
        "logged_prompt_tokens": Column("Int64", Check.ge(0), nullable=True),
        "logged_completion_tokens": Column("Int64", Check.ge(0), nullable=True),
    },
    checks=[
        Check(lambda df: (df["role"] == "agent") | df["agent_model"].isna(),
              error="agent_model is set only for agent messages"),
        Check(lambda df: ~df.duplicated(["episode_id", "position"]), error="(episode_id, position) is unique"),
    ],
    strict=True,
)

# One row per episode: the source's own outcome and who made it.
OUTCOMES = pa.DataFrameSchema(
    name="outcomes",
    columns={
        "episode_id": Column(str, unique=True),
        "source": Column(str),
        "outcome": Column(str, Check.str_length(min_value=1)),
        "outcome_source": Column(str, Check.isin(OUTCOME_SOURCES)),
        "unknown_reason": Column(str, nullable=True),
        "mistake_agent": Column(str, nullable=True),
        "mistake_step": Column("Int64", Check.ge(0), nullable=True),
        "mistake_reason": Column(str, nullable=True),
        "any_deal_passed": Column("boolean", nullable=True),
    },
    checks=[Check(lambda df: (df["outcome"] == "unknown") == df["unknown_reason"].notna(),
                  error="unknown_reason is given exactly when the outcome is unknown")],
    strict=True,
)

# Native turn-level annotations: decisive errors, proposals and their acceptance, moderator preferences.
TURN_EVENTS = pa.DataFrameSchema(
    name="turn_events",
    columns={
        "episode_id": Column(str),
        "turn": Column(int, Check.ge(1)),
        "position": Column("Int64", Check.ge(0), nullable=True),
        "kind": Column(str, Check.str_length(min_value=1)),
        "agent": Column(str, nullable=True),
        "value": Column(float, nullable=True),
        "detail": Column(str, nullable=True),
    },
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
