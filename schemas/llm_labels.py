"""LLM-assisted labels: one row per judged episode (both agent orders combined)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.pandas import Check, Column

SCORE = Check.in_range(0, 10)
LABEL_FIELDS = ["success_score", "agreement", "efficiency_score", "preferred", "preferred_ab", "preferred_ba",
                "consistent", "reason"]


def _labels_only_when_valid(df: pd.DataFrame) -> pd.Series:
    """A valid row has every label field; any other row has none (an invalid answer is never a label)."""
    present = df[LABEL_FIELDS].notna()
    return (df["valid"] & present.all(axis=1)) | (~df["valid"] & ~present.any(axis=1))


def _consistency_matches(df: pd.DataFrame) -> pd.Series:
    """consistent iff both orders name the same model or tie; then that is the preferred value."""
    same = df["preferred_ab"] == df["preferred_ba"]
    expected_preferred = df["preferred_ab"].where(same, "inconsistent")
    ok = ~df["valid"] | ((df["consistent"] == same) & (df["preferred"] == expected_preferred))
    return ok.fillna(False).astype(bool)


LLM_LABELS = pa.DataFrameSchema(
    name="llm_labels",
    columns={
        "episode_id": Column(str, unique=True),
        "status": Column(str, Check.isin(["valid", "invalid", "unanswered"])),
        "valid": Column(bool),
        "success_score": Column(float, SCORE, nullable=True),      # mean over both orders
        "agreement": Column(str, Check.isin(["low", "medium", "high"]), nullable=True),
        "efficiency_score": Column(float, SCORE, nullable=True),   # mean over both orders
        "preferred": Column(str, nullable=True),      # model name, "tie" or "inconsistent"
        "preferred_ab": Column(str, nullable=True),   # model name or "tie", agent_models[0] shown as A
        "preferred_ba": Column(str, nullable=True),   # model name or "tie", agent_models[1] shown as A
        "consistent": Column("boolean", nullable=True),
        "reason": Column(str, nullable=True),
        "prompt_tokens": Column("int64", Check.ge(0)),
        "completion_tokens": Column("int64", Check.ge(0)),
    },
    checks=[
        Check(lambda df: df["valid"] == (df["status"] == "valid"), error="valid iff status == 'valid'"),
        Check(_labels_only_when_valid, error="label fields are set exactly on valid rows"),
        Check(_consistency_matches, error="consistent/preferred agree with preferred_ab and preferred_ba"),
        Check(lambda df: df["episode_id"].is_monotonic_increasing, element_wise=False,
              error="rows sorted by episode_id"),
    ],
    strict=True,
    coerce=False,
)
