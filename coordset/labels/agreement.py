"""How well rule-based and LLM-assisted outcome labels agree with the judges' consensus.

Outcomes are compared as categories relative to the episode's agent order (agent_1, agent_2, ...,
tie, unknown; see coordset.labels.judges.outcome_category), so one kappa covers episodes whose model pairs
differ. Agreement is measured on the episodes where both labels are known; accuracy is also given
on the episodes whose consensus is not a tie (the ones where a label can name the right agent).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from coordset.labels.judges import FleissResult, cohen_kappa, judge_name, outcome_category
from coordset.verdicts import TIE, UNKNOWN

CONFUSION_COLUMNS = ["actual", "predicted"]


def as_categories(outcomes: pd.Series, agents: pd.Series) -> pd.Series:
    """Outcomes -> categories that do not name agents: a winning agent becomes agent_1 / agent_2 / … by its
    slot; tie, unknown and a source's own labels (pass, fail, failure, correct, …) stay as they are."""
    values = [outcome_category(o, a) if (o in list(a) or o in (TIE, UNKNOWN)) else str(o)
              for o, a in zip(outcomes, agents, strict=True)]
    return pd.Series(values, index=outcomes.index, dtype="str")


def compare_outcomes(actual: pd.Series, predicted: pd.Series) -> dict[str, Any]:
    """Cohen's kappa and accuracy of ``predicted`` vs ``actual`` (both category series, same index)."""
    known = (actual != UNKNOWN) & (predicted != UNKNOWN)
    a, p = actual[known], predicted[known]
    non_tie = a != TIE
    return {
        "n": int(known.sum()),
        "kappa": _number(cohen_kappa(a.tolist(), p.tolist())),
        "accuracy": _number((a == p).mean()) if len(a) else None,
        "n_non_tie": int(non_tie.sum()),
        "accuracy_non_tie": _number((a[non_tie] == p[non_tie]).mean()) if non_tie.any() else None,
    }


def confusion_frame(actual: pd.Series, predicted: pd.Series) -> pd.DataFrame:
    """One row per episode (in the given order): actual (consensus) and predicted category."""
    return pd.DataFrame(
        {"actual": actual.to_numpy(), "predicted": predicted.to_numpy()}, columns=CONFUSION_COLUMNS
    )


def judges_metrics(consistency: pd.DataFrame, fleiss: FleissResult, pairs: pd.DataFrame) -> dict[str, Any]:
    """Judge metrics keyed by the judges' short names (no dots, so DVC's flattened keys stay readable)."""
    per_judge = {
        row.judge_name: {
            "judge_id": row.judge_id,
            "n_verdicts": int(row.n_verdicts),
            "n_valid": int(row.n_valid),
            "n_error": int(row.n_error),
            "n_inconsistent": int(row.n_inconsistent),
            "inconsistency_rate": _number(row.inconsistency_rate),
        }
        for row in consistency.itertuples(index=False)
    }
    cohen: dict[str, dict[str, Any]] = {}
    for row in pairs.itertuples(index=False):
        a, b = sorted([judge_name(row.judge_a), judge_name(row.judge_b)])
        cohen.setdefault(a, {})[b] = {"kappa": _number(row.kappa), "n_episodes": int(row.n_episodes)}
    return {
        "consistency": per_judge,
        "fleiss_kappa": _number(fleiss.kappa),
        "fleiss_n_episodes": fleiss.n_episodes,
        "fleiss_n_judges": fleiss.n_judges,
        "fleiss_categories": fleiss.categories,
        "cohen_kappa": cohen,
    }


def value_counts(series: pd.Series) -> dict[str, int]:
    """Counts keyed by the value as text, in sorted key order (JSON is written with sorted keys anyway)."""
    counts = series.astype(str).value_counts()
    return {str(k): int(counts[k]) for k in sorted(counts.index)}


def _number(value: Any) -> float | None:
    """A float for JSON, or None (null) where the statistic is undefined (NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
