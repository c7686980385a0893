"""Token-usage tables written by the enrich stage (message columns are taken from the normalized schema)."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.pandas import Check, Column

from schemas.normalized import BILLING, MESSAGES

NONNEG = Check.ge(0)

MESSAGE_TOKENS = pa.DataFrameSchema(
    name="message_tokens",
    columns={
        **{name: MESSAGES.columns[name] for name in ("episode_id", "turn", "position", "speaker", "role",
                                                     "agent_model", "text_sha256")},
        "n_tokens": Column(int, NONNEG),
        "reasoning_tokens": Column("Int64", NONNEG, nullable=True),
    },
    strict=True,
)

# One row per agent message: an API call, what it completed and what its prompt was billed.
CALL_USAGE = pa.DataFrameSchema(
    name="call_usage",
    columns={
        **{name: MESSAGES.columns[name] for name in ("episode_id", "turn", "position", "speaker", "agent_model")},
        "user_tokens": Column(int, NONNEG),
        "reasoning_tokens": Column(int, NONNEG),
        "completion_tokens": Column(int, NONNEG),
        "billed_prompt_tokens": Column(int, Check.gt(0)),
        "billing": Column(str, Check.isin(BILLING)),
    },
    checks=[Check(lambda df: ~df.duplicated(["episode_id", "position"]), error="one row per (episode_id, position)"),
            Check(lambda df: df["completion_tokens"] >= df["reasoning_tokens"],
                  error="completion_tokens include reasoning_tokens")],
    strict=True,
)

EPISODE_USAGE = pa.DataFrameSchema(
    name="episode_usage",
    columns={
        "episode_id": Column(str, unique=True),
        "n_turns": Column(int, Check.ge(1)),
        "n_agents": Column(int, Check.ge(1)),
        "n_calls": Column(int, NONNEG),
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
