"""label: judges' consensus, rule labels (and, opt-in, LLM labels) -> data/labels/ + metrics/labels.json.

Reads data/normalized/{episodes,judge_verdicts,judge_grades}.parquet, data/enriched/{messages,turns,
episodes}.parquet and data/embeddings/embeddings.parquet. Writes data/labels/{episode_labels,
turn_labels,judge_consistency,judge_episode_verdicts}.parquet, metrics/labels.json,
metrics/judge_kappa.png and the confusion-matrix plot data metrics/confusion_{rule,llm}.csv. With
label.llm.enabled, also reads data/normalized/messages.parquet (the texts) and keeps the LLM answers in
data/llm_cache/ (created empty otherwise, so the persisted output always exists).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from coordset import atomic
from coordset.errors import CoordsetError
from coordset.judges import (
    episode_consensus,
    episode_verdicts,
    judge_consistency,
    judges_fleiss,
    kappa_heatmap_png,
    kappa_matrix,
    pairwise_cohen,
)
from coordset.label_agreement import (
    CONFUSION_COLUMNS,
    as_categories,
    compare_outcomes,
    confusion_frame,
    judges_metrics,
    llm_predictions,
    llm_quality,
    value_counts,
)
from coordset.params import load_params, require_bool, require_str
from coordset.rule_labels import episode_rule_labels, read_thresholds, turn_rule_labels, turn_summary
from schemas import check
from schemas.enriched import EPISODE_USAGE, MESSAGE_TOKENS, TURN_USAGE
from schemas.labels import EPISODE_LABELS, JUDGE_CONSISTENCY, JUDGE_EPISODE_VERDICTS, TURN_LABELS
from schemas.normalized import EPISODES, JUDGE_GRADES, JUDGE_VERDICTS, MESSAGES
from stages._entry import run

NORMALIZED = Path("data/normalized")
ENRICHED = Path("data/enriched")
EMBEDDINGS = Path("data/embeddings/embeddings.parquet")
OUT = Path("data/labels")
METRICS = Path("metrics")
LLM_CACHE = Path("data/llm_cache")
# LlmStats fields that describe this run (what the cache already held), not the labels.
LLM_RUN_STATS = frozenset(
    {
        "cache_hits",
        "calls_made",
        "answers_received",
        "failed_requests",
        "budget_exhausted",
        "prompt_tokens",
        "completion_tokens",
    }
)


def _read(path: Path, schema: Any = None) -> pd.DataFrame:
    if not path.exists():
        raise CoordsetError(f"{path}: not found; run the stages before label (dvc repro)")
    frame = pd.read_parquet(path)
    return check(frame, schema, str(path)) if schema is not None else frame


@dataclass(frozen=True)
class LlmLabeler:
    """The LLM-assisted labeler's settings, prepared only when label.llm.enabled is true."""

    model: str
    settings: Any


def prepare_llm(params: dict[str, Any]) -> LlmLabeler | None:
    """Check label.llm.*, the model name and the API credentials before any work; None when disabled.

    Imported lazily so that rule labels never load the openai client.
    """
    if not require_bool(params, "label.llm.enabled"):
        return None
    from coordset.llm_labels import llm_settings, require_credentials

    settings = llm_settings(params)
    model = require_str(params, "model")
    require_credentials()
    return LlmLabeler(model=model, settings=settings)


def llm_labels(
    labeler: LlmLabeler, episodes: pd.DataFrame, messages: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run the LLM labeler through its answer cache: (one row per judged episode, metrics of the labels).

    Its columns (preferred, consistent, valid, success_score, agreement, ...) are carried into
    episode_labels prefixed ``llm_``. Figures that depend on this run rather than on the labels
    (calls made, cache hits, tokens billed) go to stderr, not to metrics, so metrics repeat.
    """
    from coordset.llm_labels import label_with_llm

    result = label_with_llm(episodes, messages, model=labeler.model, settings=labeler.settings,
                            cache_dir=LLM_CACHE)
    stats = result.stats.as_dict()
    run_stats = {k: v for k, v in stats.items() if k in LLM_RUN_STATS}
    print(f"llm labels: {json.dumps(run_stats, sort_keys=True)}", file=sys.stderr)
    if not result.stats.complete:
        print(f"warning: {stats['unanswered']} LLM request(s) unanswered (label.llm.max_calls budget or endpoint "
              "failures); run again to fill them in from where this run stopped", file=sys.stderr)
    return result.labels, {k: v for k, v in stats.items() if k not in LLM_RUN_STATS}


def _prefixed(llm: pd.DataFrame) -> pd.DataFrame:
    return llm.rename(
        columns={c: c if c == "episode_id" or c.startswith("llm_") else f"llm_{c}" for c in llm}
    )


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def main() -> None:
    params = load_params()
    # Every param is checked before any work.
    thresholds = read_thresholds(params)
    labeler = prepare_llm(params)

    episodes = _read(NORMALIZED / "episodes.parquet", EPISODES)
    verdicts = _read(NORMALIZED / "judge_verdicts.parquet", JUDGE_VERDICTS)
    grades = _read(NORMALIZED / "judge_grades.parquet", JUDGE_GRADES)
    messages = _read(ENRICHED / "messages.parquet", MESSAGE_TOKENS)
    turns = _read(ENRICHED / "turns.parquet", TURN_USAGE)
    usage = _read(ENRICHED / "episodes.parquet", EPISODE_USAGE)
    embeddings = _read(EMBEDDINGS)
    episodes = episodes.sort_values("episode_id", kind="stable").reset_index(drop=True)

    # Imported judges.
    consistency = judge_consistency(verdicts)
    per_judge = episode_verdicts(verdicts, episodes)
    consensus = episode_consensus(per_judge, episodes)
    fleiss = judges_fleiss(per_judge)
    pairs = pairwise_cohen(per_judge)
    heatmap = kappa_heatmap_png(kappa_matrix(pairs, sorted(consistency["judge_id"])))

    # Rule labels.
    turn_labels = turn_rule_labels(messages, turns, embeddings, thresholds)
    rules = episode_rule_labels(episodes, usage, grades, consensus, thresholds)
    labels = (
        episodes[["episode_id", "source", "agent_models"]]
        .merge(consensus, on="episode_id", validate="one_to_one")
        .merge(rules, on="episode_id", validate="one_to_one")
        .merge(turn_summary(turn_labels), on="episode_id", how="left", validate="one_to_one")
    )
    labels["consensus_category"] = as_categories(labels["consensus"], labels["agent_models"])
    labels["rule_outcome_category"] = as_categories(labels["rule_outcome"], labels["agent_models"])
    for column in ("n_agreement_drops", "n_length_imbalances"):
        labels[column] = labels[column].fillna(0).astype("int64")

    metrics: dict[str, Any] = {
        "episodes": int(len(labels)),
        "by_source": value_counts(labels["source"]),
        "judges": judges_metrics(consistency, fleiss, pairs),
        "consensus": value_counts(labels["consensus_category"]),
        "rule_vs_consensus": compare_outcomes(labels["consensus_category"], labels["rule_outcome_category"]),
        "rule_labels": {
            "rule_outcome": value_counts(labels["rule_outcome_category"]),
            "coordination_success": int(labels["coordination_success"].sum()),
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

    # The answer cache is a (persisted) output of this stage: it exists even while the LLM is off.
    LLM_CACHE.mkdir(parents=True, exist_ok=True)
    if labeler is not None:
        llm, llm_stats = llm_labels(labeler, episodes, _read(NORMALIZED / "messages.parquet", MESSAGES))
        predicted = as_categories(llm_predictions(llm, labels["episode_id"]), labels["agent_models"])
        metrics["llm"] = {**llm_quality(llm, len(labels)), "labeler": llm_stats}
        metrics["llm_vs_consensus"] = compare_outcomes(labels["consensus_category"], predicted)
        confusion_llm = confusion_frame(labels["consensus_category"], predicted)
        labels = labels.merge(_prefixed(llm), on="episode_id", how="left", validate="one_to_one")

    labels = labels.drop(columns=["agent_models"])
    front = [
        "episode_id",
        "source",
        "consensus",
        "consensus_category",
        "consensus_source",
        "n_judges",
        "n_consistent_judges",
        "rule_outcome",
        "rule_outcome_category",
        "coordination_success",
        "coordination_overhead",
        "agent_grades",
        "mean_grade",
        "efficiency_score",
        "mean_agent_similarity",
        "n_agreement_drops",
        "n_length_imbalances",
    ]
    labels = labels[front + [c for c in labels if c not in front]]

    tables = {
        "episode_labels": (labels, EPISODE_LABELS),
        "turn_labels": (turn_labels, TURN_LABELS),
        "judge_consistency": (consistency, JUDGE_CONSISTENCY),
        "judge_episode_verdicts": (per_judge, JUDGE_EPISODE_VERDICTS),
    }
    for name, (frame, schema) in tables.items():
        check(frame, schema, str(OUT / f"{name}.parquet"))
    for name, (frame, _) in tables.items():
        atomic.write_parquet(OUT / f"{name}.parquet", frame)
    atomic.write_bytes(METRICS / "judge_kappa.png", heatmap)
    atomic.write_text(METRICS / "confusion_rule.csv", _csv(confusion_rule))
    atomic.write_text(METRICS / "confusion_llm.csv", _csv(confusion_llm))
    atomic.write_json(METRICS / "labels.json", metrics)


if __name__ == "__main__":
    run(main)
