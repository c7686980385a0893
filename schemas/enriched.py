"""Token-usage tables written by the enrich stage."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.pandas import Check, Column

from schemas.normalized import SHA256

NONNEG = Check.ge(0)

MESSAGE_TOKENS = pa.DataFrameSchema(
    name="message_tokens",
    columns={
        "episode_id": Column(str),
        "turn": Column(int, Check.ge(1)),
        "position": Column(int, Check.ge(0)),
        "role": Column(str, Check.isin(["user", "agent"])),
        "agent_model": Column(str, nullable=True),
        "text_sha256": Column(str, SHA256),
        "n_tokens": Column(int, NONNEG),
    },
    strict=True,
)

TURN_USAGE = pa.DataFrameSchema(
    name="turn_usage",
    columns={
        "episode_id": Column(str),
        "turn": Column(int, Check.ge(1)),
        "agent_model": Column(str),
        "user_tokens": Column(int, NONNEG),
        "completion_tokens": Column(int, NONNEG),
        "billed_prompt_tokens": Column(int, Check.gt(0)),
    },
    checks=[Check(lambda df: ~df.duplicated(["episode_id", "turn", "agent_model"]),
                  error="one row per (episode_id, turn, agent_model)")],
    strict=True,
)

EPISODE_USAGE = pa.DataFrameSchema(
    name="episode_usage",
    columns={
        "episode_id": Column(str, unique=True),
        "n_turns": Column(int, Check.ge(1)),
        "n_agents": Column(int, Check.ge(2)),
        "user_tokens": Column(int, NONNEG),
        "completion_tokens": Column(int, NONNEG),
        "billed_prompt_tokens": Column(int, NONNEG),
        "input_tokens": Column(int, NONNEG),
        "output_tokens": Column(int, NONNEG),
        "total_tokens": Column(int, NONNEG),
        "completion_tokens_by_agent": Column(object),
        "avg_tokens_per_turn": Column(float, NONNEG),
        "input_output_ratio": Column(float, Check.in_range(0, 1)),
        "coordination_overhead": Column(float, Check.in_range(0, 1)),
    },
    checks=[
        Check(lambda df: df["total_tokens"] == df["input_tokens"] + df["output_tokens"],
              error="total_tokens == input_tokens + output_tokens"),
        Check(lambda df: df["completion_tokens_by_agent"].map(sum) == df["completion_tokens"],
              error="completion_tokens_by_agent sums to completion_tokens"),
    ],
    strict=True,
)
