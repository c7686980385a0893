"""The label stage's work: judges' consensus, rule labels, native-outcome summaries and opt-in LLM labels.

``label_settings`` checks every param before any data is read; ``read_label_inputs`` reads and validates
the tables; ``build_labels`` returns every table, plot and metric the stage writes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from coordset.labels.agreement import (
    CONFUSION_COLUMNS,
    as_categories,
    compare_outcomes,
    confusion_frame,
    judges_metrics,
    value_counts,
)
from coordset.labels.judges import (
    episode_consensus,
    episode_verdicts,
    judge_consistency,
    judges_fleiss,
    kappa_heatmap_png,
    kappa_matrix,
    pairwise_cohen,
)
from coordset.labels.rules import Thresholds, episode_rule_labels, read_thresholds, turn_rule_labels, turn_summary
from coordset.params import require_bool
from coordset.sources import REGISTRY
from coordset.verdicts import UNKNOWN
from schemas import check, read_checked
from schemas.embeddings import EMBEDDINGS
from schemas.enriched import CALL_USAGE, EPISODE_USAGE, MESSAGE_TOKENS
from schemas.normalized import EPISODES, JUDGE_GRADES, JUDGE_VERDICTS, MESSAGES, OUTCOMES

# LlmStats fields that describe this run (what the cache already held), not the labels.
LLM_RUN_STATS = frozenset({"cache_hits", "calls_made", "answers_received", "failed_requests", "budget_exhausted",
                           "prompt_tokens", "completion_tokens"})
FRONT = ["episode_id", "source", "consensus", "consensus_category", "consensus_source", "n_judges",
         "n_consistent_judges", "rule_outcome", "rule_outcome_category", "coordination_success",
         "coordination_overhead", "agent_grades", "mean_grade", "efficiency_score", "mean_agent_similarity",
         "n_agreement_drops", "n_length_imbalances"]


@dataclass(frozen=True)
class LlmLabeler:
    """The LLM-assisted labeler's settings, prepared only when label.llm.enabled is true."""

    models: tuple[str, ...]
    settings: Any


@dataclass(frozen=True)
class LabelSettings:
    thresholds: Thresholds
    llm: LlmLabeler | None


def label_settings(params: dict[str, Any]) -> LabelSettings:
    """Check ``thresholds``, label.llm.*, the model name and the API credentials before any work.

    The openai client is imported only when LLM labels are on.
    """
    thresholds = read_thresholds(params)
    if not require_bool(params, "label.llm.enabled"):
        return LabelSettings(thresholds, None)
    from coordset.labels.llm import llm_models, llm_settings, require_credentials

    settings = llm_settings(params)
    models = llm_models(params)
    require_credentials()
    return LabelSettings(thresholds, LlmLabeler(models=models, settings=settings))


@dataclass
class LabelInputs:
    episodes: pd.DataFrame
    outcomes: pd.DataFrame
    verdicts: pd.DataFrame
    grades: pd.DataFrame
    messages: pd.DataFrame  # enriched: token counts, no text
    calls: pd.DataFrame
    usage: pd.DataFrame
    embeddings: pd.DataFrame
    texts: Path  # the normalized messages, read only when the LLM labels need the texts


def read_label_inputs(root: Path = Path(".")) -> LabelInputs:
    normalized, enriched = root / "data/normalized", root / "data/enriched"
    return LabelInputs(
        episodes=read_checked(normalized / "episodes.parquet", EPISODES).sort_values(
            "episode_id", kind="stable").reset_index(drop=True),
        outcomes=read_checked(normalized / "outcomes.parquet", OUTCOMES),
        verdicts=read_checked(normalized / "judge_verdicts.parquet", JUDGE_VERDICTS),
        grades=read_checked(normalized / "judge_grades.parquet", JUDGE_GRADES),
        messages=read_checked(enriched / "messages.parquet", MESSAGE_TOKENS),
        calls=read_checked(enriched / "calls.parquet", CALL_USAGE),
        usage=read_checked(enriched / "episodes.parquet", EPISODE_USAGE),
        embeddings=read_checked(root / "data/embeddings/embeddings.parquet", EMBEDDINGS),
        texts=normalized / "messages.parquet",
    )


@dataclass
class Labels:
    episode_labels: pd.DataFrame
    turn_labels: pd.DataFrame
    judge_consistency: pd.DataFrame
    judge_episode_verdicts: pd.DataFrame
    kappa_heatmap_png: bytes
    confusion_rule: pd.DataFrame
    confusion_llm: pd.DataFrame
    llm_labels: pd.DataFrame  # one row per (episode, model); empty when LLM labels are off
    metrics: dict[str, Any]


def native_outcome_metrics(episodes: pd.DataFrame, outcomes: pd.DataFrame) -> dict[str, Any]:
    """Per source: the outcome distribution, the success rate per model team, Who&When's mistake agents."""
    frame = episodes[["episode_id", "source", "agent_models"]].merge(outcomes.drop(columns="source"),
                                                                     on="episode_id", validate="one_to_one")
    out: dict[str, Any] = {}
    for name, rows in frame.groupby("source", sort=True):
        source = REGISTRY[name]
        entry: dict[str, Any] = {"outcome": value_counts(rows["outcome"]),
                                 "outcome_source": value_counts(rows["outcome_source"])}
        unknown = rows["unknown_reason"].dropna()
        if len(unknown):
            entry["unknown_reasons"] = value_counts(unknown)
        if source.success_outcomes:
            known = rows[rows["outcome"] != "unknown"]
            team = known["agent_models"].map(lambda ms: "+".join(sorted({m or "unknown" for m in ms})))
            success = known["outcome"].isin(source.success_outcomes)
            entry["success_rate"] = round(float(success.mean()), 6) if len(known) else None
            entry["success_rate_by_team"] = {
                t: {"episodes": int(len(s)), "success_rate": round(float(s.mean()), 6)}
                for t, s in success.groupby(team.to_numpy(), sort=True)}
        if rows["mistake_agent"].notna().any():
            entry["mistake_agent"] = value_counts(rows["mistake_agent"].dropna())
        if rows["any_deal_passed"].notna().any():
            entry["any_deal_passed_rate"] = round(float(rows["any_deal_passed"].dropna().astype(bool).mean()), 6)
        out[name] = entry
    return out


def _llm_labels(labeler: LlmLabeler, episodes: pd.DataFrame, texts: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run the LLM labeler through its answer store: (one row per episode and model, labeler statistics).

    The store (:func:`coordset.labels.llm_cache.store_dir`) is not an output of the stage: DVC never
    checks it out, so answers survive every DVC and git command. Figures that depend on this run rather
    than on the labels (calls made, store hits, tokens billed, where the store is) go to stderr, not to
    metrics, so metrics repeat.
    """
    from coordset.labels.llm import label_with_llm
    from coordset.labels.llm_cache import store_dir

    store = store_dir()  # a store inside the workspace is refused here, before any data is read
    messages = read_checked(texts, MESSAGES)
    result = label_with_llm(episodes, messages, model=labeler.models, settings=labeler.settings, cache_dir=store)
    stats = result.stats.as_dict()
    run_stats = {k: v for k, v in stats.items() if k in LLM_RUN_STATS}
    print(f"llm labels: {json.dumps(run_stats, sort_keys=True)} (answer store: {store})", file=sys.stderr)
    if not result.stats.complete:
        print(f"warning: {stats['unanswered']} LLM request(s) unanswered (label.llm.max_calls budget or endpoint "
              "failures); run again to fill them in from where this run stopped", file=sys.stderr)
    return result.labels, {k: v for k, v in stats.items() if k not in LLM_RUN_STATS}


def _add_llm(labels: pd.DataFrame, inputs: LabelInputs, labeler: LlmLabeler
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(episode labels with the llm_ consensus columns, per-model labels, confusion rows, metrics)."""
    from coordset.labels import llm_consensus as lc

    per_model, labeler_stats = _llm_labels(labeler, inputs.episodes, inputs.texts)
    consensus = lc.llm_consensus(per_model)
    native = lc.native_success(inputs.episodes, inputs.outcomes)
    views = lc.model_views(per_model, consensus, labeler.models)
    metrics = {
        "models": list(labeler.models),
        "labeler": labeler_stats,
        "quality": {key: lc.quality(view) for key, view in views.items()},
        "vs_native": lc.vs_native(per_model, consensus, labeler.models, inputs.episodes, inputs.outcomes,
                                  labels[["episode_id", "agents", "consensus_category"]]),
        "among_models": lc.among_models(per_model, labeler.models),
    }
    confusion = lc.llm_confusion(consensus, labels, native)
    prefixed = consensus.rename(columns={c: c if c == "episode_id" else f"llm_{c}" for c in consensus})
    merged = labels.merge(prefixed, on="episode_id", how="left", validate="one_to_one")
    # Episodes not sent have no counts: keep the counts integers with nulls rather than floats.
    counts = ["llm_n_models", "llm_n_valid", "llm_chars_cut", "llm_prompt_tokens", "llm_completion_tokens"]
    merged[counts] = merged[counts].astype("Int64")
    return merged, per_model, confusion, metrics


def build_labels(inputs: LabelInputs, settings: LabelSettings) -> Labels:
    episodes = inputs.episodes
    consistency = judge_consistency(inputs.verdicts)
    per_judge = episode_verdicts(inputs.verdicts, episodes)
    consensus = episode_consensus(per_judge, inputs.outcomes)
    fleiss = judges_fleiss(per_judge)
    pairs = pairwise_cohen(per_judge)
    heatmap = kappa_heatmap_png(kappa_matrix(pairs, sorted(consistency["judge_id"])))

    turn_labels = turn_rule_labels(inputs.messages, inputs.calls, inputs.embeddings, settings.thresholds)
    rules = episode_rule_labels(episodes, inputs.usage, inputs.grades, consensus, settings.thresholds)
    labels = (episodes[["episode_id", "source", "agents"]]
              .merge(consensus, on="episode_id", validate="one_to_one")
              .merge(rules, on="episode_id", validate="one_to_one")
              .merge(turn_summary(turn_labels), on="episode_id", how="left", validate="one_to_one"))
    labels["consensus_category"] = as_categories(labels["consensus"], labels["agents"])
    labels["rule_outcome_category"] = as_categories(labels["rule_outcome"], labels["agents"])
    for column in ("n_agreement_drops", "n_length_imbalances"):
        labels[column] = labels[column].fillna(0).astype("int64")

    success = labels["coordination_success"]
    metrics: dict[str, Any] = {
        "episodes": int(len(labels)),
        "by_source": value_counts(labels["source"]),
        "native_outcomes": native_outcome_metrics(episodes, inputs.outcomes),
        "judges": judges_metrics(consistency, fleiss, pairs),
        "consensus": value_counts(labels["consensus_category"]),
        "rule_vs_consensus": compare_outcomes(labels["consensus_category"], labels["rule_outcome_category"]),
        "rule_labels": {
            "rule_outcome": value_counts(labels["rule_outcome_category"]),
            "coordination_success": int(success.fillna(False).astype(bool).sum()),
            "coordination_success_unknown": int(success.isna().sum()),
            "with_efficiency_score": int(labels["efficiency_score"].notna().sum()),
            "agreement_level": value_counts(turn_labels["agreement_level"]),
            "agreement_drop": int(turn_labels["agreement_drop"].sum()),
            "length_imbalance": int(turn_labels["length_imbalance"].sum()),
            "turns": int(len(turn_labels)),
        },
        "llm": None,
        "llm_vs_consensus": None,
    }
    confusion_rule = confusion_frame(labels["consensus_category"], labels["rule_outcome_category"])
    confusion_llm = pd.DataFrame(columns=CONFUSION_COLUMNS)

    llm_labels = empty_llm_labels()
    if settings.llm is not None:
        labels, llm_labels, confusion_llm, metrics["llm"] = _add_llm(labels, inputs, settings.llm)
        pairwise = labels["llm_kind"] == "pairwise"
        predicted = as_categories(labels["llm_preferred"].where(pairwise & (labels["llm_status"] == "valid"))
                                  .fillna(UNKNOWN), labels["agents"])
        metrics["llm_vs_consensus"] = compare_outcomes(labels.loc[pairwise, "consensus_category"], predicted[pairwise])

    labels = labels.drop(columns=["agents"])
    labels = labels[FRONT + [c for c in labels if c not in FRONT]]
    return Labels(labels, turn_labels, consistency, per_judge, heatmap, confusion_rule, confusion_llm, llm_labels,
                  metrics)


def empty_llm_labels() -> pd.DataFrame:
    """The per-model LLM label table with no rows (what the stage writes when LLM labels are off)."""
    from schemas.llm_labels import LLM_LABELS

    dtypes = {name: str(column.dtype) for name, column in LLM_LABELS.columns.items()}
    frame = pd.DataFrame({name: pd.Series(dtype=_pandas_dtype(kind)) for name, kind in dtypes.items()})
    return check(frame, LLM_LABELS, "LLM labels")


def _pandas_dtype(pandera_dtype: str) -> str:
    return {"str": "str", "bool": "bool", "float64": "float64", "int64": "int64", "boolean": "boolean",
            "Int64": "Int64"}.get(pandera_dtype, pandera_dtype)
