"""LLM-assisted labels: one row per judged (episode, model), and the per-episode consensus over models."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.pandas import Check, Column

SCORE = Check.in_range(0, 10)
AGREEMENT = Check.isin(["low", "medium", "high"])
STATUS = Check.isin(["valid", "invalid", "unanswered"])
KINDS = ["pairwise", "group"]
COMMON_FIELDS = ["success_score", "agreement", "efficiency_score", "reason"]
PAIRWISE_FIELDS = ["preferred", "preferred_ab", "preferred_ba", "consistent"]
GROUP_FIELDS = ["outcome", "mistake_agent", "mistake_step"]


def _fields_match_status_and_kind(df: pd.DataFrame) -> pd.Series:
    """A valid row has its kind's label fields and none of the other kind's; any other row has none."""
    common, pairwise, group = (df[f].notna() for f in (COMMON_FIELDS, PAIRWISE_FIELDS, GROUP_FIELDS))
    is_pairwise = df["kind"] == "pairwise"
    valid_ok = common.all(axis=1) & (
        (is_pairwise & pairwise.all(axis=1) & ~group.any(axis=1))
        | (~is_pairwise & group.all(axis=1) & ~pairwise.any(axis=1)))
    none = ~common.any(axis=1) & ~pairwise.any(axis=1) & ~group.any(axis=1)
    return (df["valid"] & valid_ok) | (~df["valid"] & none)


def _consistency_matches(df: pd.DataFrame) -> pd.Series:
    """consistent iff both orders name the same model or tie; then that is the preferred value."""
    same = df["preferred_ab"] == df["preferred_ba"]
    expected_preferred = df["preferred_ab"].where(same, "inconsistent")
    ok = ~df["valid"] | (df["kind"] != "pairwise") | ((df["consistent"] == same)
                                                      & (df["preferred"] == expected_preferred))
    return ok.fillna(False).astype(bool)


LLM_LABELS = pa.DataFrameSchema(
    name="llm_labels",
    columns={
        "episode_id": Column(str),
        "model": Column(str, Check.str_length(min_value=1)),   # the model asked (top-level `model`)
        "kind": Column(str, Check.isin(KINDS)),
        "status": Column(str, STATUS),
        "valid": Column(bool),
        "success_score": Column(float, SCORE, nullable=True),      # pairwise: mean over both orders
        "agreement": Column(str, AGREEMENT, nullable=True),
        "efficiency_score": Column(float, SCORE, nullable=True),   # pairwise: mean over both orders
        "reason": Column(str, nullable=True),
        "preferred": Column(str, nullable=True),      # pairwise: model name, "tie" or "inconsistent"
        "preferred_ab": Column(str, nullable=True),   # pairwise: model name or "tie", agent_models[0] shown as A
        "preferred_ba": Column(str, nullable=True),   # pairwise: model name or "tie", agent_models[1] shown as A
        "consistent": Column("boolean", nullable=True),
        "outcome": Column(str, Check.isin(["success", "failure"]), nullable=True),  # group
        "mistake_agent": Column(str, nullable=True),  # group: one of the episode's agents
        "mistake_step": Column("Int64", Check.ge(0), nullable=True),  # group: a message position
        "message_char_cap": Column("Int64", Check.ge(0), nullable=True),  # null: the conversation was not cut
        "chars_cut": Column("int64", Check.ge(0)),
        "served_by": Column(str, nullable=True),      # endpoint kind and served model id of the answers used
        "prompt_tokens": Column("int64", Check.ge(0)),
        "completion_tokens": Column("int64", Check.ge(0)),
    },
    checks=[
        Check(lambda df: df["valid"] == (df["status"] == "valid"), error="valid iff status == 'valid'"),
        Check(_fields_match_status_and_kind, error="label fields are set exactly on valid rows, by kind"),
        Check(_consistency_matches, error="consistent/preferred agree with preferred_ab and preferred_ba"),
        Check(lambda df: ~df.duplicated(["episode_id", "model"]), error="one row per (episode_id, model)"),
        Check(lambda df: pd.Series(list(zip(df["episode_id"], df["model"], strict=True))).is_monotonic_increasing,
              element_wise=False, error="rows sorted by episode_id, then model"),
        Check(lambda df: df["message_char_cap"].isna() == (df["chars_cut"] == 0),
              error="message_char_cap is set exactly when characters were cut"),
    ],
    strict=True,
    coerce=False,
)

# The consensus of every model's label of an episode, joined to episode_labels with the `llm_` prefix.
LLM_CONSENSUS = pa.DataFrameSchema(
    name="llm_consensus",
    columns={
        "episode_id": Column(str, unique=True),
        "kind": Column(str, Check.isin(KINDS)),
        "status": Column(str, STATUS),            # valid when at least one model gave a valid label
        "n_models": Column("int64", Check.ge(1)),
        "n_valid": Column("int64", Check.ge(0)),
        "models": Column(str, nullable=True),     # the models whose valid labels make the consensus, comma-joined
        "served_by": Column(str, nullable=True),
        "success_score": Column(float, SCORE, nullable=True),     # mean over models
        "agreement": Column(str, AGREEMENT, nullable=True),       # median level over models (the lower middle)
        "efficiency_score": Column(float, SCORE, nullable=True),  # mean over models
        "preferred": Column(str, nullable=True),  # pairwise: majority of consistent verdicts, tie, or unknown
        "consistent": Column("boolean", nullable=True),  # pairwise: every valid model was order-consistent
        "outcome": Column(str, Check.isin(["success", "failure", "unknown"]), nullable=True),  # group: majority
        "mistake_agent": Column(str, nullable=True),  # group: most named agent; null when models tie
        "mistake_step": Column("Int64", Check.ge(0), nullable=True),  # group: most named step, earliest on a tie
        "reason": Column(str, nullable=True),     # of the first model (in params order) with a valid label
        "chars_cut": Column("int64", Check.ge(0)),
        "prompt_tokens": Column("int64", Check.ge(0)),
        "completion_tokens": Column("int64", Check.ge(0)),
    },
    checks=[
        Check(lambda df: (df["status"] == "valid") == (df["n_valid"] > 0), error="valid iff some model is valid"),
        Check(lambda df: df["n_valid"] <= df["n_models"], error="n_valid <= n_models"),
        Check(lambda df: df["episode_id"].is_monotonic_increasing, element_wise=False,
              error="rows sorted by episode_id"),
    ],
    strict=True,
    coerce=False,
)
