"""Several LLM labelers made one: the per-episode consensus, their agreement, and how they compare with the
sources' own (human, game-rule, judge) labels.

Consensus rules, per episode, over the models with a valid label (in the order ``model`` lists them):

- pairwise ``preferred``: the majority of the models' order-consistent verdicts
  (:func:`coordset.verdicts.majority_verdict`: an even split is a tie, none is unknown);
- group ``outcome``: the majority of success/failure, ``unknown`` on an even split; ``mistake_agent``: the most
  named agent, null when two are named equally often; ``mistake_step``: the most named step, the earliest of
  them on a tie (Who&When's decisive error is the earliest step the failure follows from);
- scores: the mean; ``agreement``: the median level (the lower of the two middle ones); ``reason``: the first
  valid model's.

Agreement among models is Fleiss' kappa per label kind, over the episodes every model labeled validly.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from coordset.labels.agreement import as_categories, compare_outcomes, value_counts
from coordset.labels.judges import cohen_kappa, fleiss_kappa
from coordset.labels.llm_prompt import AGREEMENT_LEVELS
from coordset.sources import REGISTRY
from coordset.verdicts import INCONSISTENT, UNKNOWN, majority_verdict
from schemas import check
from schemas.llm_labels import LLM_CONSENSUS

CONSENSUS = "consensus"
# The Who&When paper's best method (all-at-once with GPT-4o, hand-crafted and algorithm-generated together).
WHO_WHEN_PAPER = {"agent_accuracy": 0.535, "step_accuracy": 0.142,
                  "protocol": "zero-shot LLM judging in the paper; here every configured model judges each "
                              "log once, all at once, without the ground-truth answer"}


def model_key(model: str) -> str:
    """A metrics key for a model name: no dots or slashes, so DVC's flattened keys stay readable."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", model)


def _mode(values: Sequence[Any]) -> tuple[list[Any], int]:
    counts = Counter(values).most_common()
    if not counts:
        return [], 0
    top = counts[0][1]
    return [v for v, c in counts if c == top], top


def _episode_consensus(rows: pd.DataFrame) -> dict[str, Any]:
    valid = rows[rows["valid"]]
    kind = str(rows["kind"].iloc[0])
    statuses = set(rows["status"])
    out: dict[str, Any] = {
        "episode_id": rows["episode_id"].iloc[0], "kind": kind,
        "status": "valid" if len(valid) else ("invalid" if "invalid" in statuses else "unanswered"),
        "n_models": len(rows), "n_valid": len(valid),
        "models": ", ".join(valid["model"]) or None,
        "served_by": ", ".join(sorted({s for v in valid["served_by"].dropna() for s in v.split(", ")})) or None,
        "success_score": float(valid["success_score"].mean()) if len(valid) else np.nan,
        "efficiency_score": float(valid["efficiency_score"].mean()) if len(valid) else np.nan,
        "agreement": None, "preferred": None, "consistent": pd.NA, "outcome": None, "mistake_agent": None,
        "mistake_step": pd.NA, "reason": valid["reason"].iloc[0] if len(valid) else None,
        "chars_cut": int(rows["chars_cut"].max()),
        "prompt_tokens": int(rows["prompt_tokens"].sum()), "completion_tokens": int(rows["completion_tokens"].sum()),
    }
    if not len(valid):
        return out
    levels = sorted(valid["agreement"], key=AGREEMENT_LEVELS.index)
    out["agreement"] = levels[(len(levels) - 1) // 2]
    if kind == "pairwise":
        out["preferred"] = majority_verdict(valid["preferred"])
        out["consistent"] = bool(valid["consistent"].all())
        return out
    outcomes, _ = _mode(valid["outcome"])
    out["outcome"] = outcomes[0] if len(outcomes) == 1 else UNKNOWN
    agents, _ = _mode(valid["mistake_agent"])
    out["mistake_agent"] = agents[0] if len(agents) == 1 else None
    steps, _ = _mode([int(s) for s in valid["mistake_step"]])
    out["mistake_step"] = min(steps)
    return out


def llm_consensus(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per episode (schema LLM_CONSENSUS) from the per-model rows of ``label_with_llm``."""
    rows = [_episode_consensus(group) for _, group in labels.groupby("episode_id", sort=True)]
    frame = pd.DataFrame(rows, columns=list(LLM_CONSENSUS.columns))
    frame = frame.astype({"episode_id": "str", "kind": "str", "status": "str", "n_models": "int64",
                          "n_valid": "int64", "models": "str", "served_by": "str", "success_score": float,
                          "agreement": "str", "efficiency_score": float, "preferred": "str",
                          "consistent": "boolean", "outcome": "str", "mistake_agent": "str",
                          "mistake_step": "Int64", "reason": "str", "chars_cut": "int64", "prompt_tokens": "int64",
                          "completion_tokens": "int64"})
    return check(frame.reset_index(drop=True), LLM_CONSENSUS, "LLM consensus")


def model_views(labels: pd.DataFrame, consensus: pd.DataFrame, models: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Per-model rows and the consensus, each one row per episode, keyed by model_key / CONSENSUS."""
    views = {model_key(m): labels[labels["model"] == m].set_index("episode_id") for m in models}
    if len(models) > 1:
        views[CONSENSUS] = consensus.set_index("episode_id")
    return views


def _rate(numerator: float, denominator: float) -> float | None:
    return round(float(numerator) / denominator, 6) if denominator else None


def quality(view: pd.DataFrame) -> dict[str, Any]:
    """Coverage per kind; for pairwise labels, the both-orders inconsistency counted as for the imported judges."""
    out: dict[str, Any] = {}
    for kind, rows in view.groupby("kind", sort=True):
        valid = rows["status"] == "valid"
        entry: dict[str, Any] = {"n_labeled": int(len(rows)), "n_valid": int(valid.sum()),
                                 "coverage": _rate(valid.sum(), len(rows))}
        if kind == "pairwise":
            # Table 5 of the judges: valid = both orders parsed; inconsistent = the orders disagree.
            inconsistent = int((rows.loc[valid, "preferred"] == INCONSISTENT).sum())
            entry.update({"n_inconsistent": inconsistent, "inconsistency_rate": _rate(inconsistent, valid.sum())})
        out[str(kind)] = entry
    return out


def native_success(episodes: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per episode: source, subset, agents, n_messages, whether the native outcome is a success (null: unknown).

    A source's success outcomes come from its registry entry; every other known outcome is a failure (Who&When
    lists none: every log is a failure).
    """
    frame = episodes[["episode_id", "source", "subset", "agents", "n_messages"]].merge(
        outcomes[["episode_id", "outcome", "mistake_agent", "mistake_step"]], on="episode_id", validate="one_to_one")
    success = [None if o == UNKNOWN else o in REGISTRY[s].success_outcomes
               for s, o in zip(frame["source"], frame["outcome"], strict=True)]
    frame["native_success"] = pd.array(success, dtype="boolean")
    return frame.set_index("episode_id")


def _by_subset(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Each subset's rows, and all rows together (``all``) when there are several subsets."""
    groups = [(str(k), g) for k, g in rows.groupby(rows["subset"].fillna("all"), sort=True)]
    return [("all", rows), *groups] if len(groups) > 1 else groups


def _attribution(view: pd.DataFrame, native: pd.DataFrame) -> dict[str, Any]:
    """Agent- and step-level accuracy of the failure attribution against the human one, per subset and overall."""
    rows = native.join(view[["status", "mistake_agent", "mistake_step"]].rename(
        columns={"mistake_agent": "llm_agent", "mistake_step": "llm_step"}), how="inner")
    rows = rows[(rows["status"] == "valid") & rows["mistake_agent"].notna()]
    out: dict[str, Any] = {}
    for subset, part in _by_subset(rows):
        step_true, step_llm = part["mistake_step"].astype("Int64"), part["llm_step"].astype("Int64")
        out[str(subset)] = {
            "n": int(len(part)),
            "agent_accuracy": _rate((part["llm_agent"] == part["mistake_agent"]).sum(), len(part)),
            "step_accuracy": _rate((step_llm == step_true).sum(), len(part)),
            "step_within_one": _rate(((step_llm - step_true).abs() <= 1).sum(), len(part)),
        }
    return out


def attribution_baselines(native: pd.DataFrame) -> dict[str, Any]:
    """Random (uniform over the episode's agents / steps) and majority baselines on the same episodes.

    Majority predicts the most frequent human label of the subset itself (in-sample, so it flatters itself).
    """
    out: dict[str, Any] = {}
    labeled = native[native["mistake_agent"].notna()]
    for subset, part in _by_subset(labeled):
        if not len(part):
            continue
        n_steps = part["n_messages"].astype(float)
        true = part["mistake_step"].astype(int)
        within = [min(t + 1, n - 1) - max(t - 1, 0) + 1 for t, n in zip(true, part["n_messages"], strict=True)]
        top_agent, top_step = part["mistake_agent"].mode().iloc[0], true.mode().iloc[0]
        out[str(subset)] = {
            "n": int(len(part)),
            "random_agent_accuracy": round(float((1.0 / part["agents"].map(len)).mean()), 6),
            "random_step_accuracy": round(float((1.0 / n_steps).mean()), 6),
            "random_step_within_one": round(float((np.array(within) / n_steps).mean()), 6),
            "majority_agent": str(top_agent),
            "majority_agent_accuracy": _rate((part["mistake_agent"] == top_agent).sum(), len(part)),
            "majority_step": int(top_step),
            "majority_step_accuracy": _rate((true == top_step).sum(), len(part)),
        }
    return out


def _success_agreement(view: pd.DataFrame, native: pd.DataFrame) -> dict[str, Any]:
    """The LLM's success judgment against the native outcome (both binary), on episodes where both are known."""
    rows = native.join(view[["status", "outcome"]].rename(columns={"outcome": "llm_outcome"}), how="inner")
    rows = rows[(rows["status"] == "valid") & rows["native_success"].notna()
                & rows["llm_outcome"].isin(["success", "failure"])]
    actual = rows["native_success"].map({True: "success", False: "failure"}).astype(str).tolist()
    predicted = rows["llm_outcome"].astype(str).tolist()
    kappa = cohen_kappa(actual, predicted) if actual else float("nan")
    return {"n": len(actual),
            "accuracy": _rate(sum(a == p for a, p in zip(actual, predicted, strict=True)), len(actual)),
            "kappa": None if np.isnan(kappa) else round(kappa, 6),
            "native_success_rate": _rate(actual.count("success"), len(actual)),
            "llm_success_rate": _rate(predicted.count("success"), len(predicted))}


def vs_native(labels: pd.DataFrame, consensus: pd.DataFrame, models: Sequence[str], episodes: pd.DataFrame,
              outcomes: pd.DataFrame, judged: pd.DataFrame) -> dict[str, Any]:
    """Per source, every model (and the consensus) against the source's own labels.

    ``judged``: episode_labels' ``episode_id``, ``agents``, ``consensus_category`` (the judges' consensus of
    pairwise sources).
    """
    native = native_success(episodes, outcomes)
    views = model_views(labels, consensus, models)
    out: dict[str, Any] = {}
    for source, ids in native.groupby("source", sort=True).groups.items():
        in_source = {k: v[v.index.isin(ids)] for k, v in views.items()}
        if not any(len(v) for v in in_source.values()):
            continue
        entry: dict[str, Any] = {}
        kinds = set(next(iter(in_source.values()))["kind"])
        part = native.loc[native.index.isin(next(iter(in_source.values())).index)]
        if "pairwise" in kinds:
            reference = judged.set_index("episode_id").loc[part.index]
            for key, view in in_source.items():
                predicted = as_categories(_preferred(view, reference.index), reference["agents"])
                entry[key] = {"vs_judges_consensus": compare_outcomes(reference["consensus_category"], predicted)}
        if "group" in kinds:
            for key, view in in_source.items():
                entry.setdefault(key, {})["success_vs_native"] = _success_agreement(view, part)
                entry[key]["llm_outcome"] = value_counts(view.loc[view["status"] == "valid", "outcome"])
            if part["mistake_agent"].notna().any():
                for key, view in in_source.items():
                    entry[key]["failure_attribution"] = _attribution(view, part)
                entry["attribution_baselines"] = attribution_baselines(part)
                if source == "who_when":
                    entry["paper_best_method"] = WHO_WHEN_PAPER
        out[str(source)] = entry
    return out


def _preferred(view: pd.DataFrame, episode_ids: pd.Index) -> pd.Series:
    """The preferred outcome per episode, ``unknown`` where there is no valid, order-consistent label."""
    usable = (view["status"] == "valid") & view["consistent"].fillna(False).astype(bool)
    preferred = view["preferred"].where(usable, UNKNOWN).reindex(episode_ids).fillna(UNKNOWN)
    return pd.Series(preferred.to_numpy(), index=episode_ids, dtype="str")


def among_models(labels: pd.DataFrame, models: Sequence[str]) -> dict[str, Any] | None:
    """Fleiss' kappa among the models per label kind, on episodes every model labeled validly (None: one model)."""
    if len(models) < 2:
        return None
    out: dict[str, Any] = {}
    fields = {"pairwise": ["preferred", "agreement"], "group": ["outcome", "mistake_agent", "mistake_step",
                                                                  "agreement"]}
    for kind, rows in labels.groupby("kind", sort=True):
        for field in fields[str(kind)]:
            wide = rows[rows["valid"]].pivot(index="episode_id", columns="model", values=field)
            wide = wide.reindex(columns=list(models)).dropna()
            if field == "preferred":  # an inconsistent verdict is not a rating of any category
                wide = wide[~wide.isin([INCONSISTENT]).any(axis=1)]
            values = wide.astype(str)
            categories = sorted(pd.unique(values.to_numpy().ravel()).tolist())
            counts = np.stack([(values == c).sum(axis=1).to_numpy() for c in categories], axis=1) if categories \
                else np.zeros((0, 0))
            kappa = fleiss_kappa(counts)
            out[f"{kind}_{field}"] = {"fleiss_kappa": None if np.isnan(kappa) else round(kappa, 6),
                                      "n_episodes": int(len(values)), "n_models": len(models)}
    return out


def llm_confusion(consensus: pd.DataFrame, episodes_labels: pd.DataFrame, native: pd.DataFrame | None = None
                  ) -> pd.DataFrame:
    """Rows (actual, predicted) for the confusion plot, over the episodes the LLM labeled validly.

    Pairwise: the judges' consensus category vs the LLM's (agent_1 / agent_2 / tie / unknown); group: the
    native outcome vs the LLM's, as success / failure, where the native outcome is known.
    """
    valid = consensus[consensus["status"] == "valid"].set_index("episode_id")
    judged = episodes_labels.set_index("episode_id")
    rows: list[tuple[str, str]] = []
    pairwise = valid[valid["kind"] == "pairwise"]
    if len(pairwise):
        reference = judged.loc[pairwise.index]
        predicted = as_categories(_preferred(pairwise, pairwise.index), reference["agents"])
        rows += list(zip(reference["consensus_category"], predicted, strict=True))
    group = valid[valid["kind"] == "group"]
    if len(group) and native is not None:
        known = native.loc[native.index.isin(group.index) & native["native_success"].notna()]
        actual = known["native_success"].map({True: "success", False: "failure"})
        rows += [(str(a), str(group.at[e, "outcome"])) for e, a in actual.items()]
    return pd.DataFrame(rows, columns=["actual", "predicted"])



__all__ = ["CONSENSUS", "WHO_WHEN_PAPER", "among_models", "attribution_baselines", "llm_confusion",
           "llm_consensus", "model_key", "model_views", "native_success", "quality", "vs_native"]
