"""Tables written by the label stage: judge consistency, per-judge verdicts, episode and turn labels."""

from __future__ import annotations

import pandera.pandas as pa
from pandera.pandas import Check, Column

from schemas.normalized import JUDGE_VERDICTS, OUTCOME_SOURCES

NONNEG = Check.ge(0)
# An outcome that does not name agents: agent_<slot>, tie, unknown, or a source's own label (pass, failure, …).
CATEGORY = Check.str_matches(r"^(agent_[0-9]+|[a-z_]+)$")
VERDICT_CATEGORY = Check.str_matches(r"^(agent_[0-9]+|tie|inconsistent|error)$")
# Cosines of float32 embeddings can overshoot +-1 by rounding.
COSINE = Check.in_range(-1.0 - 1e-5, 1.0 + 1e-5)


def _sorted_by(*keys: str) -> Check:
    return Check(
        lambda df: df[list(keys)].apply(tuple, axis=1).is_monotonic_increasing,
        element_wise=False,
        error=f"rows sorted by {', '.join(keys)}",
    )


JUDGE_CONSISTENCY = pa.DataFrameSchema(
    name="judge_consistency",
    columns={
        "judge_id": Column(str, unique=True),
        "judge_name": Column(str),
        "n_verdicts": Column(int, NONNEG),
        "n_valid": Column(int, NONNEG),
        "n_error": Column(int, NONNEG),
        "n_inconsistent": Column(int, NONNEG),
        "inconsistency_rate": Column(float, Check.in_range(0, 1), nullable=True),
    },
    checks=[
        Check(
            lambda df: df["n_valid"] + df["n_error"] == df["n_verdicts"],
            error="n_valid + n_error == n_verdicts",
        ),
        Check(lambda df: df["n_inconsistent"] <= df["n_valid"], error="n_inconsistent <= n_valid"),
        _sorted_by("judge_id"),
    ],
    strict=True,
)


def _from_verdicts(*names: str) -> dict[str, Column]:
    """Columns an imported verdict already has, checked as the normalize stage checks them."""
    return {name: JUDGE_VERDICTS.columns[name] for name in names}


JUDGE_EPISODE_VERDICTS = pa.DataFrameSchema(
    name="judge_episode_verdicts",
    columns={
        **_from_verdicts("episode_id", "judge_id"),
        "judge_name": Column(str),
        "turn": JUDGE_VERDICTS.columns["turn"].update_checks([Check.ge(1)]),
        **_from_verdicts("model_a", "model_b", "winner_ab", "winner_ba"),
        "verdict": Column(str),
        "verdict_category": Column(str, VERDICT_CATEGORY),
    },
    checks=[
        Check(
            lambda df: ~df.duplicated(["episode_id", "judge_id"]), error="one row per (episode_id, judge_id)"
        ),
        Check(
            lambda df: df.apply(
                lambda r: r["verdict"] in ("tie", "inconsistent", "error", r["model_a"], r["model_b"]), axis=1
            ),
            error="verdict is model_a, model_b, tie, inconsistent or error",
        ),
        _sorted_by("episode_id", "judge_id"),
    ],
    strict=True,
)

EPISODE_LABELS = pa.DataFrameSchema(
    name="episode_labels",
    columns={
        "episode_id": Column(str, unique=True),
        "source": Column(str),
        "consensus": Column(str),
        "consensus_category": Column(str, CATEGORY),
        "consensus_source": Column(str, Check.isin(OUTCOME_SOURCES)),
        "n_judges": Column(int, NONNEG),
        "n_consistent_judges": Column(int, NONNEG),
        "rule_outcome": Column(str),
        "rule_outcome_category": Column(str, CATEGORY),
        "coordination_success": Column("boolean", nullable=True),
        "coordination_overhead": Column(float, Check.in_range(0, 1)),
        "agent_grades": Column(object, nullable=True),
        "mean_grade": Column(float, Check.in_range(1, 10), nullable=True),
        "efficiency_score": Column(float, NONNEG, nullable=True),
        "mean_agent_similarity": Column(float, COSINE, nullable=True),
        "n_agreement_drops": Column(int, NONNEG),
        "n_length_imbalances": Column(int, NONNEG),
        # Fields of the LLM-assisted labeler (coordset.labels.llm), prefixed llm_, present only when enabled.
        "^llm_.+$": Column(regex=True, nullable=True, required=False),
    },
    checks=[
        Check(
            lambda df: df["n_consistent_judges"] <= df["n_judges"], error="n_consistent_judges <= n_judges"
        ),
        Check(
            lambda df: ~df["coordination_success"] | ~df["consensus"].isin(["tie", "unknown"]),
            error="coordination_success needs a consensus winner",
        ),
        _sorted_by("episode_id"),
    ],
    strict=True,
)

TURN_LABELS = pa.DataFrameSchema(
    name="turn_labels",
    columns={
        "episode_id": Column(str),
        "turn": Column(int, Check.ge(1)),
        "agent_similarity": Column(float, COSINE, nullable=True),
        "agreement_level": Column(str, Check.isin(["low", "medium", "high", "unknown"])),
        "agreement_drop": Column(bool),
        "length_imbalance": Column(bool),
    },
    checks=[
        Check(lambda df: ~df.duplicated(["episode_id", "turn"]), error="one row per (episode_id, turn)"),
        Check(
            lambda df: (df["agreement_level"] == "unknown") == df["agent_similarity"].isna(),
            error="agreement_level is unknown exactly when agent_similarity is null",
        ),
        _sorted_by("episode_id", "turn"),
    ],
    strict=True,
)
