"""label: judges' consensus, rule labels (and, opt-in, LLM labels) -> data/labels/ + metrics/labels.json.

Writes data/labels/{episode_labels,turn_labels,judge_consistency,judge_episode_verdicts,llm_labels}.parquet,
metrics/labels.json, metrics/judge_kappa.png and the confusion-matrix plot data
metrics/confusion_{rule,llm}.csv. With label.llm.enabled, every LLM answer is kept, as it arrives, in the
answer store (coordset.labels.llm_cache.store_dir: $COORDSET_LLM_STORE, else .git/coordset/llm-answers of
the main project), which is not a DVC output, so no DVC or git command drops a paid answer.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coordset import atomic
from coordset.labels.build import build_labels, label_settings, read_label_inputs
from coordset.numerics import numerics_mode, pin
from coordset.params import load_params
from schemas.labels import EPISODE_LABELS, JUDGE_CONSISTENCY, JUDGE_EPISODE_VERDICTS, TURN_LABELS
from schemas.llm_labels import LLM_LABELS
from stages._entry import run

OUT = Path("data/labels")
METRICS = Path("metrics")


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def main() -> None:
    params = load_params()
    pin(numerics_mode(params))  # stages/__init__.py pinned the numeric code paths; this refuses if it could not
    settings = label_settings(params)  # every param is checked before any data is read
    labels = build_labels(read_label_inputs(), settings)
    atomic.write_checked({
        OUT / "episode_labels.parquet": (labels.episode_labels, EPISODE_LABELS),
        OUT / "turn_labels.parquet": (labels.turn_labels, TURN_LABELS),
        OUT / "judge_consistency.parquet": (labels.judge_consistency, JUDGE_CONSISTENCY),
        OUT / "judge_episode_verdicts.parquet": (labels.judge_episode_verdicts, JUDGE_EPISODE_VERDICTS),
        OUT / "llm_labels.parquet": (labels.llm_labels, LLM_LABELS),
    })
    atomic.write_bytes(METRICS / "judge_kappa.png", labels.kappa_heatmap_png)
    atomic.write_text(METRICS / "confusion_rule.csv", _csv(labels.confusion_rule))
    atomic.write_text(METRICS / "confusion_llm.csv", _csv(labels.confusion_llm))
    atomic.write_json(METRICS / "labels.json", labels.metrics)


if __name__ == "__main__":
    run(main)
