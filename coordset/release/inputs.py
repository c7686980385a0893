"""The release's inputs: every stage's tables and metrics, each checked against its schema when read, and
checked to cover exactly the same episodes (missing or unknown episodes, or counts that differ from
``episodes`` stop the build naming the file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow

from coordset.errors import CoordsetError
from coordset.release.settings import ReleaseSettings
from schemas import check
from schemas.enriched import CALL_USAGE, EPISODE_USAGE
from schemas.labels import EPISODE_LABELS, JUDGE_EPISODE_VERDICTS, TURN_LABELS
from schemas.latent import latent_states
from schemas.normalized import EPISODES, MESSAGES, OUTCOMES, TURN_EVENTS
from schemas.release import LLM_PREFIX

INPUTS: dict[str, Path] = {
    "episodes": Path("data/normalized/episodes.parquet"),
    "messages": Path("data/normalized/messages.parquet"),
    "outcomes": Path("data/normalized/outcomes.parquet"),
    "turn_events": Path("data/normalized/turn_events.parquet"),
    "usage": Path("data/enriched/episodes.parquet"),
    "calls": Path("data/enriched/calls.parquet"),
    "latent": Path("data/latent/latent_states.parquet"),
    "episode_labels": Path("data/labels/episode_labels.parquet"),
    "turn_labels": Path("data/labels/turn_labels.parquet"),
    "judge_verdicts": Path("data/labels/judge_episode_verdicts.parquet"),
}
METRICS: dict[str, Path] = {
    "normalize": Path("metrics/normalize.json"),
    "enrich": Path("metrics/enrich.json"),
    "latent": Path("metrics/latent.json"),
    "labels": Path("metrics/labels.json"),
}


@dataclass
class ReleaseInputs:
    episodes: pd.DataFrame
    messages: pd.DataFrame
    outcomes: pd.DataFrame
    turn_events: pd.DataFrame
    usage: pd.DataFrame
    calls: pd.DataFrame
    latent: pd.DataFrame
    episode_labels: pd.DataFrame
    turn_labels: pd.DataFrame
    judge_verdicts: pd.DataFrame
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def llm_columns(self) -> list[str]:
        return sorted(c for c in self.episode_labels if c.startswith(LLM_PREFIX))


def _read_table(root: Path, name: str) -> pd.DataFrame:
    path = INPUTS[name]
    if not (root / path).is_file():
        raise CoordsetError(f"{path}: not found; run the stages before release (dvc repro)")
    try:
        return pd.read_parquet(root / path)
    except (OSError, ValueError, pyarrow.ArrowException) as exc:
        raise CoordsetError(f"{path}: not a readable Parquet file ({exc}); re-run the stage that writes it") from None


def read_metrics(root: Path = Path(".")) -> dict[str, dict[str, Any]]:
    metrics = {}
    for name, path in METRICS.items():
        if not (root / path).is_file():
            raise CoordsetError(f"{path}: not found; run the stages before release (dvc repro)")
        try:
            metrics[name] = json.loads((root / path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CoordsetError(f"{path}: not valid JSON ({exc}); re-run the stage that writes it") from None
        if not isinstance(metrics[name], dict):
            raise CoordsetError(f"{path}: expected a JSON object")
    return metrics


def read_inputs(settings: ReleaseSettings, root: Path = Path(".")) -> ReleaseInputs:
    """Read every input table and metrics file, check each against its schema, then check the joins."""
    latent = _read_table(root, "latent")
    lengths = sorted(set(latent["latent"].map(len))) if len(latent) else []
    if lengths and lengths != [settings.rank]:
        raise CoordsetError(f"{INPUTS['latent']}: latent vectors have length {lengths} but params.yaml 'rank' is "
                            f"{settings.rank}: re-run the latent stage (dvc repro latent)")
    schemas = {"episodes": EPISODES, "messages": MESSAGES, "outcomes": OUTCOMES, "turn_events": TURN_EVENTS,
               "usage": EPISODE_USAGE, "calls": CALL_USAGE,
               "latent": latent_states(settings.rank), "episode_labels": EPISODE_LABELS,
               "turn_labels": TURN_LABELS, "judge_verdicts": JUDGE_EPISODE_VERDICTS}
    tables = {name: latent if name == "latent" else _read_table(root, name) for name in INPUTS}
    for name, frame in tables.items():
        check(frame, schemas[name], str(INPUTS[name]))
    inputs = ReleaseInputs(**tables, metrics=read_metrics(root))
    metric_rank = inputs.metrics["latent"].get("rank")
    if metric_rank is not None and metric_rank != settings.rank:
        raise CoordsetError(f"{METRICS['latent']}: rank {metric_rank} but params.yaml 'rank' is {settings.rank}: "
                            "re-run the latent stage (dvc repro latent)")
    if settings.llm_enabled != bool(inputs.llm_columns):
        state = "enabled" if settings.llm_enabled else "disabled"
        has = "has no" if settings.llm_enabled else "has"
        raise CoordsetError(f"{INPUTS['episode_labels']}: label.llm is {state} in params.yaml but the table {has} "
                            "llm_ columns: re-run the label stage (dvc repro label)")
    check_joins(inputs)
    return inputs


def _coverage(name: str, ids: pd.Series, expected: set[str], *, all_required: bool = True) -> None:
    present = set(ids)
    unknown = sorted(present - expected)
    if unknown:
        raise CoordsetError(f"{INPUTS[name]}: {len(unknown)} episode id(s) not in {INPUTS['episodes']}, e.g. "
                            f"{unknown[0]!r}: the inputs come from different builds; re-run the pipeline (dvc repro)")
    missing = sorted(expected - present) if all_required else []
    if missing:
        raise CoordsetError(f"{INPUTS[name]}: no rows for {len(missing)} episode(s), e.g. {missing[0]!r}: "
                            "re-run the stage that writes it (dvc repro)")


def _counts(name: str, ids: pd.Series, expected: pd.Series, what: str) -> None:
    """Rows per episode in table ``name`` must equal ``expected`` (indexed by episode_id)."""
    counts = ids.value_counts().reindex(expected.index, fill_value=0)
    wrong = counts[counts != expected]
    if len(wrong):
        eid = sorted(wrong.index)[0]
        raise CoordsetError(f"{INPUTS[name]}: episode {eid!r} has {int(counts[eid])} {what}, expected "
                            f"{int(expected[eid])} (as {INPUTS['episodes']} says): re-run the stage "
                            "that writes it (dvc repro)")


def check_joins(inputs: ReleaseInputs) -> None:
    """Every table covers exactly the episodes of ``episodes``, with one row per turn (or message) where due."""
    expected = set(inputs.episodes["episode_id"])
    for name in ("messages", "outcomes", "usage", "latent", "episode_labels", "turn_labels"):
        _coverage(name, getattr(inputs, name)["episode_id"], expected)
    for name in ("judge_verdicts", "calls", "turn_events"):
        _coverage(name, getattr(inputs, name)["episode_id"], expected, all_required=False)
    shape = inputs.episodes.set_index("episode_id")
    turns = shape["n_turns"]
    messages = inputs.messages
    _counts("messages", messages["episode_id"], shape["n_messages"], "messages")
    _counts("calls", inputs.calls["episode_id"], messages.loc[messages["role"] == "agent", "episode_id"]
            .value_counts().reindex(shape.index, fill_value=0), "calls (agent messages)")
    _counts("latent", inputs.latent["episode_id"], turns, "turn rows")
    _counts("turn_labels", inputs.turn_labels["episode_id"], turns, "turn rows")
    for name in ("usage", "episode_labels"):
        frame = getattr(inputs, name).set_index("episode_id")
        for column in ("n_turns", "n_agents"):
            if column in frame and not frame[column].reindex(shape.index).eq(shape[column]).all():
                raise CoordsetError(f"{INPUTS[name]}: {column} differs from {INPUTS['episodes']}: re-run the stage "
                                    "that writes it (dvc repro)")


