"""Rule-based coordination labels keyed to the top-level ``thresholds`` in params.yaml.

Episode level
  * ``rule_outcome``: the agent whose answers the judges graded higher on average (mode
    ``single_grade``, 1-10, every judge and turn of that model on that question); ``tie`` when the
    top mean is shared; ``unknown`` when an agent has no grade (sources without judges).
  * ``mean_grade``: mean over the agents of those per-agent mean grades.
  * ``efficiency_score``: quality per token = ``mean_grade / (completion_tokens / 1000)``, i.e. grade
    points per 1k completion tokens of the whole episode (every agent, every turn). Null without
    grades or without completion tokens.
  * ``coordination_success``: for head-to-head sources, the episode's outcome (the judges' consensus,
    or the human vote) names a winner, i.e. is neither ``tie`` nor ``unknown``, AND
    ``coordination_overhead`` (enrich: ``|out_a - out_b| / total``) is strictly below
    ``thresholds.coordination_overhead``. For conversations among agents it is the source's own
    outcome: true when it is one of the source's success outcomes (a deal that passes, a correct
    final answer), false for any other known outcome (a Who&When failure), null when unknown.

Turn level (one row per episode and turn)
  * ``agent_similarity``: cosine similarity of the agents' reply embeddings in that turn (more than
    two agents: mean over agent pairs); null when fewer than two agents replied.
  * ``agreement_level``: ``low`` below ``thresholds.agreement_low``, ``high`` at or above
    ``thresholds.agreement_high``, else ``medium``; ``unknown`` without a similarity.
  * ``agreement_drop``: similarity fell by *more than* ``thresholds.agreement_drop`` since the
    previous turn (never on turn 1).
  * ``length_imbalance``: the longest reply has at least ``thresholds.length_ratio`` times the
    completion tokens of the shortest (and is not empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from coordset.errors import CoordsetError, ParamError
from coordset.params import require_float
from coordset.sources import REGISTRY
from coordset.verdicts import TIE, UNKNOWN

GRADE_MODE = "single_grade"
LEVELS = ("low", "medium", "high")
# Similarities and their differences are rounded to this many decimals, so that a value of exactly a
# threshold is not moved across it by binary floating-point noise (float32 embeddings carry ~7 digits).
DECIMALS = 9
PAIR_CHUNK = 8192


@dataclass(frozen=True)
class Thresholds:
    coordination_overhead: float
    agreement_low: float
    agreement_high: float
    agreement_drop: float
    length_ratio: float


def read_thresholds(params: dict[str, Any]) -> Thresholds:
    """Check every ``thresholds.*`` key before any work; a bad value raises ParamError naming it."""
    unit = {
        name: require_float(params, f"thresholds.{name}", low=0.0, high=1.0)
        for name in ("coordination_overhead", "agreement_low", "agreement_high", "agreement_drop")
    }
    # A ratio below 1 would call every pair of replies imbalanced.
    ratio = require_float(params, "thresholds.length_ratio", low=1.0)
    if unit["agreement_low"] > unit["agreement_high"]:
        raise ParamError(
            "thresholds.agreement_low",
            f"must be <= thresholds.agreement_high ({unit['agreement_high']}), got {unit['agreement_low']}",
        )
    return Thresholds(length_ratio=ratio, **unit)


def agreement_level(similarity: float | None, thresholds: Thresholds) -> str:
    if similarity is None or pd.isna(similarity):
        return UNKNOWN
    if similarity < thresholds.agreement_low:
        return "low"
    if similarity >= thresholds.agreement_high:
        return "high"
    return "medium"


def is_length_imbalanced(completion_tokens: list[int], thresholds: Thresholds) -> bool:
    """Longest reply >= length_ratio x shortest, with a non-empty longest; needs two or more replies."""
    if not completion_tokens:
        return False
    tokens = np.asarray(completion_tokens)
    return bool(_imbalanced(tokens.max(), tokens.min(), len(tokens), thresholds))


def _imbalanced(longest: Any, shortest: Any, n_replies: Any, thresholds: Thresholds) -> Any:
    """The length-imbalance rule on scalars or on aligned arrays (one entry per turn)."""
    return (
        (np.asarray(n_replies) >= 2)
        & (np.asarray(longest) > 0)
        & (np.asarray(longest) >= thresholds.length_ratio * np.asarray(shortest))
    )


# ---------------------------------------------------------------------------------------------------------
# Episode level.


def agent_mean_grades(grades: pd.DataFrame) -> pd.Series:
    """Mean ``single_grade`` score per (question_id, model_id) over judges and turns; unparsed skipped."""
    graded = grades[(grades["mode"] == GRADE_MODE) & grades["score"].notna()]
    return graded.groupby(["question_id", "model_id"], sort=True)["score"].mean()


def grade_outcome(agent_models: list[str], agent_grades: list[float | None]) -> str:
    """The agent with the highest mean grade; ``tie`` if shared; ``unknown`` if any agent is ungraded."""
    if any(g is None or pd.isna(g) for g in agent_grades):
        return UNKNOWN
    rounded = [round(float(g), DECIMALS) for g in agent_grades]
    top = max(rounded)
    leaders = [m for m, g in zip(agent_models, rounded, strict=True) if g == top]
    return leaders[0] if len(leaders) == 1 else TIE


def episode_rule_labels(
    episodes: pd.DataFrame,
    usage: pd.DataFrame,
    grades: pd.DataFrame,
    consensus: pd.DataFrame,
    thresholds: Thresholds,
) -> pd.DataFrame:
    """Episode-level rule labels (see module docstring).

    ``episodes``: normalized episodes; ``usage``: enriched episodes (completion_tokens,
    coordination_overhead); ``grades``: normalized judge_grades; ``consensus``: frame with
    episode_id and consensus (coordset.labels.judges.episode_consensus).
    """
    frame = episodes[["episode_id", "source", "group_id", "agents", "parallel"]].merge(
        usage[["episode_id", "completion_tokens", "coordination_overhead"]],
        on="episode_id",
        how="left",
        validate="one_to_one",
    )
    missing = frame["completion_tokens"].isna()
    if missing.any():
        raise CoordsetError(
            f"data/enriched/episodes.parquet: no token usage for {int(missing.sum())} episode(s), "
            f"e.g. {frame.loc[missing, 'episode_id'].iloc[0]!r}: re-run the enrich stage"
        )
    frame = frame.merge(
        consensus[["episode_id", "consensus"]], on="episode_id", how="left", validate="one_to_one"
    )
    # judge_grades has no source column and question ids (e.g. MT-Bench's 81..160) repeat across
    # sources, so grades are joined to the sources that import them only.
    frame["consensus"] = frame["consensus"].fillna(UNKNOWN)
    means = agent_mean_grades(grades).to_dict()
    rows = []
    for ep in frame.itertuples(index=False):
        models = list(ep.agents)  # head-to-head sources name agents by their model
        source = REGISTRY[ep.source]
        per_agent = [means.get((ep.group_id, m)) if source.grades else None for m in models]
        complete = all(g is not None for g in per_agent)
        mean_grade = float(np.mean(per_agent)) if complete else None
        tokens = int(ep.completion_tokens)
        efficiency = mean_grade / (tokens / 1000.0) if mean_grade is not None and tokens > 0 else None
        rows.append(
            {
                "episode_id": ep.episode_id,
                "agent_grades": [float(g) for g in per_agent] if complete else None,
                "mean_grade": mean_grade,
                "efficiency_score": efficiency,
                "rule_outcome": grade_outcome(models, per_agent),
                "coordination_success": _success(bool(ep.parallel), source.success_outcomes, ep.consensus,
                                                 ep.coordination_overhead, thresholds),
                "coordination_overhead": float(ep.coordination_overhead),
            }
        )
    out = pd.DataFrame(
        rows,
        columns=[
            "episode_id",
            "agent_grades",
            "mean_grade",
            "efficiency_score",
            "rule_outcome",
            "coordination_success",
            "coordination_overhead",
        ],
    )
    out = out.astype(
        {
            "mean_grade": float,
            "efficiency_score": float,
            "coordination_success": "boolean",
            "coordination_overhead": float,
        }
    )
    return out.sort_values("episode_id", kind="stable").reset_index(drop=True)


def _success(parallel: bool, success_outcomes: tuple[str, ...], outcome: str, overhead: float,
             thresholds: Thresholds) -> bool | None:
    if parallel:
        return bool(outcome not in (TIE, UNKNOWN) and overhead < thresholds.coordination_overhead)
    if outcome == UNKNOWN:
        return None
    return outcome in success_outcomes


# ---------------------------------------------------------------------------------------------------------
# Turn level.


def turn_rule_labels(
    messages: pd.DataFrame, calls: pd.DataFrame, embeddings: pd.DataFrame, thresholds: Thresholds
) -> pd.DataFrame:
    """Turn-level rule labels (see module docstring), one row for every turn of every episode.

    ``messages``: enriched (or normalized) messages with episode_id, turn, role, speaker,
    text_sha256; ``calls``: enriched per-agent-message usage with completion_tokens;
    ``embeddings``: text_sha256 -> embedding (a 1-D float vector per row). Every agent reply must have
    an embedding (the embed stage covers all messages); a missing one raises CoordsetError.
    """
    replies = messages[messages["role"] == "agent"][["episode_id", "turn", "speaker", "text_sha256"]]
    replies = replies.sort_values(["episode_id", "turn", "speaker"], kind="stable").reset_index(drop=True)
    similarity = _turn_similarity(replies, embeddings)
    sizes = calls.groupby(["episode_id", "turn"], sort=True)["completion_tokens"].agg(["max", "min", "size"])

    keys = messages.groupby(["episode_id", "turn"], sort=True).size().index
    out = pd.DataFrame(index=keys)
    out["agent_similarity"] = similarity.reindex(keys).astype(float)
    sizes = sizes.reindex(keys)
    out = out.reset_index()
    out.columns = ["episode_id", "turn", "agent_similarity"]
    out["agreement_level"] = [agreement_level(v, thresholds) for v in out["agent_similarity"].tolist()]
    previous = out.groupby("episode_id", sort=False)["agent_similarity"].shift(1)
    fall = (previous - out["agent_similarity"]).round(DECIMALS)
    out["agreement_drop"] = (fall > thresholds.agreement_drop).fillna(False).astype(bool)
    out["length_imbalance"] = _imbalanced(
        sizes["max"].fillna(0).to_numpy(),
        sizes["min"].fillna(0).to_numpy(),
        sizes["size"].fillna(0).to_numpy(),
        thresholds,
    ).astype(bool)
    out["turn"] = out["turn"].astype("int64")
    return out.sort_values(["episode_id", "turn"], kind="stable").reset_index(drop=True)


def _turn_similarity(replies: pd.DataFrame, embeddings: pd.DataFrame) -> pd.Series:
    """Mean pairwise cosine similarity of the replies of each (episode, turn), indexed by (episode_id,
    turn); NaN with fewer than two replies (or a zero embedding)."""
    keys = replies.groupby(["episode_id", "turn"], sort=True).size().index
    if replies.empty:
        return pd.Series(np.nan, index=keys, dtype=float)
    for column in ("text_sha256", "embedding"):
        if column not in embeddings:
            raise CoordsetError(f"embeddings table has no column {column!r}")
    lookup = pd.Series(np.arange(len(embeddings)), index=embeddings["text_sha256"].to_numpy())
    lookup = lookup[~lookup.index.duplicated()]
    position = replies["text_sha256"].map(lookup)
    missing = position.isna()
    if missing.any():
        first = replies[missing].iloc[0]
        raise CoordsetError(
            f"embeddings: no embedding for {int(missing.sum())} agent repl(ies), e.g. episode "
            f"{first['episode_id']!r} turn {first['turn']} ({first['speaker']}), text_sha256 "
            f"{first['text_sha256']}: re-run the embed stage"
        )
    # Normalise each distinct embedding once; replies point into this matrix.
    used, row = np.unique(position.to_numpy(dtype=np.int64), return_inverse=True)
    vectors = embeddings["embedding"].to_numpy()
    matrix = np.stack([np.asarray(vectors[i], dtype=np.float64) for i in used])
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)  # a zero vector gives NaN

    # Every unordered pair of replies within a turn (one pair per turn with two agents).
    group = replies.groupby(["episode_id", "turn"], sort=True).ngroup().to_numpy()
    members = pd.DataFrame({"group": group, "reply": np.arange(len(replies))})
    pairs = members.merge(members, on="group", suffixes=("_a", "_b"))
    pairs = pairs[pairs["reply_a"] < pairs["reply_b"]]
    a, b = row[pairs["reply_a"].to_numpy()], row[pairs["reply_b"].to_numpy()]
    dots = np.empty(len(pairs))
    for start in range(0, len(pairs), PAIR_CHUNK):  # chunks keep the gathered vectors small in memory
        stop = start + PAIR_CHUNK
        dots[start:stop] = np.einsum("ij,ij->i", matrix[a[start:stop]], matrix[b[start:stop]])
    pair_group = pairs["group"].to_numpy()
    n_pairs = np.bincount(pair_group, minlength=len(keys))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(pair_group, weights=dots, minlength=len(keys)) / n_pairs
    return pd.Series(np.where(n_pairs > 0, np.round(mean, DECIMALS), np.nan), index=keys, dtype=float)


# ---------------------------------------------------------------------------------------------------------
# Episode summaries of the turn labels, carried into episode_labels.


def turn_summary(turn_labels: pd.DataFrame) -> pd.DataFrame:
    grouped = turn_labels.groupby("episode_id", sort=True)
    out = pd.DataFrame(
        {
            "mean_agent_similarity": grouped["agent_similarity"].mean(),
            "n_agreement_drops": grouped["agreement_drop"].sum().astype("int64"),
            "n_length_imbalances": grouped["length_imbalance"].sum().astype("int64"),
        }
    )
    return out.reset_index()
