"""The published dataset: every stage's output joined into one Parquet row and one JSON line per episode.

Inputs are the normalized episodes and messages, the enriched token usage, the latent states and the
label tables; each is checked against its own schema when read, and every episode must be covered by
each of them exactly (missing or unknown episodes, or a turn count that differs from ``n_turns``, stop
the build naming the file). Episodes are processed in sorted chunks: each chunk is validated against
``schemas.release`` and then appended to the Parquet file (one row group) and the JSONL file (one line
per episode), both written through :func:`coordset.atomic.atomic_path`, so the 37,200-episode set needs
only one chunk's Python objects in memory and a failed build replaces nothing.

The bytes repeat: rows are sorted, JSON has sorted keys and Python's shortest float repr (float32 latent
values are written with their own shortest repr), and nothing depends on the clock or the machine; the
only date is each episode's own latest timestamp.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as pq

from coordset import atomic
from coordset.errors import CoordsetError, ParamError
from coordset.labels.rules import Thresholds, read_thresholds
from coordset.latent import LatentSettings, latent_settings
from coordset.params import require_bool, require_int, require_str
from coordset.sources import REGISTRY
from schemas import check
from schemas.enriched import CALL_USAGE, EPISODE_USAGE
from schemas.labels import EPISODE_LABELS, JUDGE_EPISODE_VERDICTS, TURN_LABELS
from schemas.latent import latent_states
from schemas.normalized import EPISODES, MESSAGES, OUTCOMES, TURN_EVENTS
from schemas.release import FIELD_NAMES, LLM_PREFIX, RECORD_KEYS, arrow_schema, missing_keys, release_schema

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
OUT_DIR = Path("data/release")
PARQUET, JSONL, CARD = "coordset.parquet", "coordset.jsonl", "README.md"
CHUNK_EPISODES = 2048  # one Parquet row group per chunk; fixed, so the bytes do not depend on the machine

# Which latent metrics go into every record's latent_states.error: the held-out quality figures.
LATENT_ERROR_KEYS = ("error", "variance", "probe_", "heldout_")

@dataclass(frozen=True)
class ReleaseSettings:
    annotation_version: str
    rank: int
    cell: str
    thresholds: Thresholds
    llm_enabled: bool
    llm_model: str | None
    latent: LatentSettings
    embed_model: str
    embed_long_text: str
    embed_backend: str
    encoding: str
    tokens_per_message: int
    tokens_per_reply: int


def release_settings(params: dict[str, Any]) -> ReleaseSettings:
    """Check every param the release reads, before any data is read."""
    version = require_str(params, "release.annotation_version")
    if version != version.strip():
        raise ParamError("release.annotation_version", f"must not start or end with spaces, got {version!r}")
    latent = latent_settings(params)
    llm_enabled = require_bool(params, "label.llm.enabled")
    return ReleaseSettings(
        annotation_version=version,
        rank=latent.rank,
        cell=latent.cell,
        thresholds=read_thresholds(params),
        llm_enabled=llm_enabled,
        llm_model=require_str(params, "model") if llm_enabled else None,
        latent=latent,
        embed_model=require_str(params, "embed.model"),
        embed_long_text=require_str(params, "embed.long_text"),
        embed_backend=require_str(params, "embed.backend"),
        encoding=require_str(params, "enrich.encoding"),
        tokens_per_message=require_int(params, "enrich.tokens_per_message", low=0),
        tokens_per_reply=require_int(params, "enrich.tokens_per_reply", low=0),
    )


# ---------------------------------------------------------------------------------------------------------
# Reading and cross-checking the inputs.


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


# ---------------------------------------------------------------------------------------------------------
# The release frame, one chunk of episodes at a time.


def episode_date(tstamp_start: float | None, tstamp_end: float | None) -> str | None:
    """UTC date of the episode's latest timestamp (the data's own time, never the clock); None without one."""
    for value in (tstamp_end, tstamp_start):
        if value is not None and not pd.isna(value):
            return dt.datetime.fromtimestamp(float(value), tz=dt.UTC).date().isoformat()
    return None


class _Index:
    """Row positions of every episode in a table, so a chunk takes its rows without scanning the table."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.rows = frame.groupby("episode_id", sort=False).indices

    def take(self, ids: list[str]) -> pd.DataFrame:
        parts = [self.rows[i] for i in ids if i in self.rows]
        positions = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
        return self.frame.iloc[np.sort(positions)]


def _place(slots: list[Any], index: int, value: Any, where: Path, eid: str, what: str) -> None:
    if not 0 <= index < len(slots):
        raise CoordsetError(f"{where}: episode {eid!r} has {what} {index + 1}, beyond its {len(slots)}")
    if slots[index] is not None:
        raise CoordsetError(f"{where}: episode {eid!r} has {what} {index + 1} twice")
    slots[index] = value


def _columns(frame: pd.DataFrame, columns: list[str]) -> Iterator[tuple[Any, ...]]:
    """Rows as tuples of plain Python values (faster than itertuples over Arrow-backed strings)."""
    return zip(*(frame[c].tolist() for c in columns), strict=True)


def _float_or_none(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _str_or_none(value: Any) -> str | None:
    """A missing string (None, NaN or NA, as pandas' string columns hold it) as None."""
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


@dataclass
class EpisodeJoiner:
    """Builds release rows from the inputs, one chunk of episode ids at a time."""

    inputs: ReleaseInputs

    def __post_init__(self) -> None:
        self.episodes = self.inputs.episodes.sort_values("episode_id", kind="stable").reset_index(drop=True)
        labels = self.inputs.episode_labels.drop(columns=["source", "coordination_overhead"])
        outcomes = self.inputs.outcomes[["episode_id", "unknown_reason", "mistake_agent", "mistake_step",
                                         "mistake_reason", "any_deal_passed"]]
        self.scalars = (self.episodes
                        .merge(self.inputs.usage.drop(columns=["n_turns", "n_agents"]), on="episode_id",
                               validate="one_to_one")
                        .merge(outcomes, on="episode_id", validate="one_to_one")
                        .merge(labels, on="episode_id", validate="one_to_one"))
        self.index = {name: _Index(getattr(self.inputs, name))
                      for name in ("messages", "calls", "turn_events", "latent", "turn_labels", "judge_verdicts")}

    def chunks(self, size: int = CHUNK_EPISODES) -> Iterator[pd.DataFrame]:
        for start in range(0, len(self.scalars), size):
            yield self.frame(self.scalars.iloc[start:start + size].reset_index(drop=True))

    def frame(self, scalars: pd.DataFrame) -> pd.DataFrame:
        ids = scalars["episode_id"].tolist()
        shape = {r.episode_id: (list(r.agents), int(r.n_turns))
                 for r in scalars[["episode_id", "agents", "n_turns"]].itertuples(index=False)}
        lists = {eid: self._empty(n_turns) for eid, (_, n_turns) in shape.items()}
        self._messages(self.index["messages"].take(ids), lists)
        self._tokens(self.index["calls"].take(ids), lists)
        self._turn_events(self.index["turn_events"].take(ids), lists)
        self._latent(self.index["latent"].take(ids), lists)
        self._turn_labels(self.index["turn_labels"].take(ids), lists)
        self._verdicts(self.index["judge_verdicts"].take(ids), lists)

        out = scalars.copy()
        out.insert(out.columns.get_loc("agents"), "date",
                   pd.Series([episode_date(s, e) for s, e in zip(out["tstamp_start"], out["tstamp_end"], strict=True)],
                             dtype="str"))
        for column in ("messages", "token_usage_per_call", "turn_events", "latent_per_turn", "latent_split",
                       "judge_verdicts", "agent_similarity_per_turn", "agreement_level_per_turn", "events"):
            kind = "str" if column == "latent_split" else object
            out[column] = pd.Series([lists[i][column] for i in ids], dtype=kind)
        out["completion_tokens_by_agent"] = out["completion_tokens_by_agent"].map(lambda v: [int(x) for x in v])
        out["agents"] = out["agents"].map(list)
        out["agent_models"] = out["agent_models"].map(list)
        out["agent_grades"] = pd.Series(
            [None if v is None else [_float_or_none(x) for x in v] for v in out["agent_grades"]], dtype=object)
        front = [f for f in FIELD_NAMES if f in out]
        return out[front + sorted(c for c in out if c.startswith(LLM_PREFIX))]

    @staticmethod
    def _empty(n_turns: int) -> dict[str, Any]:
        return {"messages": [], "token_usage_per_call": [], "turn_events": [], "latent_per_turn": [None] * n_turns,
                "latent_split": None, "judge_verdicts": [], "agent_similarity_per_turn": [None] * n_turns,
                "agreement_level_per_turn": [None] * n_turns, "events": []}

    def _messages(self, rows: pd.DataFrame, lists: dict[str, Any]) -> None:
        columns = ["episode_id", "position", "turn", "speaker", "role", "agent_model", "text", "reasoning"]
        for eid, position, turn, speaker, role, model, text, reasoning in _columns(rows, columns):
            lists[eid]["messages"].append({"position": int(position), "turn": int(turn), "speaker": speaker,
                                           "role": role, "model": _str_or_none(model), "text": text,
                                           "reasoning": _str_or_none(reasoning)})

    def _tokens(self, rows: pd.DataFrame, lists: dict[str, Any]) -> None:
        columns = ["episode_id", "position", "turn", "speaker", "completion_tokens", "reasoning_tokens",
                   "billed_prompt_tokens", "billing"]
        for eid, position, turn, speaker, completion, reasoning, billed, billing in _columns(rows, columns):
            lists[eid]["token_usage_per_call"].append(
                {"position": int(position), "turn": int(turn), "agent": speaker, "completion_tokens": int(completion),
                 "reasoning_tokens": int(reasoning), "billed_prompt_tokens": int(billed), "billing": billing})

    def _turn_events(self, rows: pd.DataFrame, lists: dict[str, Any]) -> None:
        columns = ["episode_id", "turn", "position", "kind", "agent", "value", "detail"]
        for eid, turn, position, kind, agent, value, detail in _columns(rows, columns):
            lists[eid]["turn_events"].append(
                {"turn": int(turn), "position": None if pd.isna(position) else int(position), "kind": kind,
                 "agent": _str_or_none(agent), "value": _float_or_none(value), "detail": _str_or_none(detail)})

    def _latent(self, rows: pd.DataFrame, lists: dict[str, Any]) -> None:
        for eid, turn, split, vector in _columns(rows, ["episode_id", "turn", "split", "latent"]):
            _place(lists[eid]["latent_per_turn"], int(turn) - 1, vector, INPUTS["latent"], eid, "turn")
            lists[eid]["latent_split"] = split

    def _turn_labels(self, rows: pd.DataFrame, lists: dict[str, Any]) -> None:
        where = INPUTS["turn_labels"]
        columns = ["episode_id", "turn", "agent_similarity", "agreement_level", "agreement_drop", "length_imbalance"]
        for eid, turn, similarity, level, drop, imbalance in _columns(rows, columns):
            entry = lists[eid]
            _place(entry["agreement_level_per_turn"], int(turn) - 1, level, where, eid, "turn")
            entry["agent_similarity_per_turn"][int(turn) - 1] = _float_or_none(similarity)
            for event, happened in (("agreement_drop", drop), ("length_imbalance", imbalance)):
                if happened:
                    entry["events"].append({"turn": int(turn), "event": event})
        for entry in lists.values():
            entry["events"].sort(key=lambda e: (e["turn"], e["event"]))

    def _verdicts(self, rows: pd.DataFrame, lists: dict[str, Any]) -> None:
        columns = ["episode_id", "judge_name", "judge_id", "turn", "model_a", "model_b", "winner_ab", "winner_ba",
                   "verdict", "verdict_category"]
        for eid, name, judge_id, turn, model_a, model_b, ab, ba, verdict, category in _columns(rows, columns):
            lists[eid]["judge_verdicts"].append(
                {"judge": name, "judge_id": judge_id, "turn": int(turn), "model_a": model_a, "model_b": model_b,
                 "winner_ab": ab, "winner_ba": ba, "verdict": verdict, "verdict_category": category})
        for entry in lists.values():
            entry["judge_verdicts"].sort(key=lambda v: v["judge_id"])


# ---------------------------------------------------------------------------------------------------------
# JSON lines in the seed report's shape.


def _scalar(value: Any) -> Any:
    """A row value as plain JSON: numpy scalars unwrapped, NaN and NA as null; lists and arrays untouched."""
    if isinstance(value, (list, dict, np.ndarray)) or value is None:
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _json_default(value: Any) -> Any:
    """What json cannot write by itself: numpy arrays and scalars.

    float32 values are written with float32's own shortest repr (``0.956323``, not ``0.9563230276107788``),
    which reads back as the same float32.
    """
    if isinstance(value, np.ndarray):
        if value.dtype == np.float32:
            return [float(str(x)) for x in value]
        return [_json_default(v) if isinstance(v, np.generic) else v for v in value.tolist()]
    if isinstance(value, np.float32):
        return float(str(value))
    if isinstance(value, np.generic):
        return _scalar(value.item())
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


@dataclass(frozen=True)
class RecordContext:
    """What every JSON line shares: the build's settings, methods and held-out latent metrics."""

    settings: ReleaseSettings
    latent_error: dict[str, Any]

    def token_method(self, source: str) -> str:
        s = self.settings
        seen = {"own_thread": "every user turn so far and its own earlier replies",
                "shared_history": "every earlier message of the episode",
                "logged_prompt": "that call's prompt, logged or rebuilt from the log"}[REGISTRY[source].billing]
        return (f"tiktoken {s.encoding}; each agent call is billed for what that agent saw ({seen}) plus "
                f"{s.tokens_per_message} tokens per message and the role, and {s.tokens_per_reply} tokens to prime "
                "the reply")

    @property
    def latent_model(self) -> str:
        return (f"recurrent coordinator ({self.settings.cell}, state width {self.settings.rank}) over "
                f"{self.settings.embed_model} message embeddings; the state after each turn's last message")

    JUDGES_METHOD = ("each judge's pairwise verdict on the last turn it judged, asked in both agent orders; a "
                     "verdict counts only if both orders agree; consensus = plurality of the consistent verdicts "
                     "(top count shared: tie; none: unknown)")
    RULES_METHOD = ("rules keyed to params.yaml thresholds (coordset/labels/rules.py): outcome from the judges' mean "
                    "1-10 grades, success = a named winner and coordination_overhead below its threshold, agreement "
                    "from the cosine similarity of the agents' reply embeddings")

    @property
    def llm_method(self) -> str:
        return (f"{self.settings.llm_model} through an OpenAI-compatible endpoint, asked in both agent orders with a "
                "structured answer; consistent iff both orders prefer the same model or both tie "
                "(coordset/labels/llm.py)")


def latent_error_metrics(latent_metrics: dict[str, Any]) -> dict[str, Any]:
    """The held-out quality figures of metrics/latent.json (whatever of them the file has)."""
    return {k: v for k, v in sorted(latent_metrics.items()) if any(part in k for part in LATENT_ERROR_KEYS)}


def episode_record(row: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    """One JSON line: input, context (agents, responses, tokens, latent states, outcomes), output, metadata."""
    row = {k: _scalar(v) for k, v in row.items()}
    agents = list(row["agents"])
    source = REGISTRY[row["source"]]
    thresholds = ctx.settings.thresholds
    grades = row["agent_grades"]
    llm_fields = {k[len(LLM_PREFIX):]: v for k, v in row.items() if k.startswith(LLM_PREFIX)}
    record = {
        "input": [m["text"] for m in row["messages"] if m["role"] == "user"],
        "context": {
            "agents": agents,
            "agent_models": list(row["agent_models"]),
            "messages": row["messages"],
            "responses": {agent: [m["text"] for m in row["messages"] if m["speaker"] == agent] for agent in agents},
            # A head-to-head source's outcome names the winning agent; elsewhere there is no winner.
            "winner": row["consensus"] if source.parallel else None,
            "token_usage": {
                "method": ctx.token_method(row["source"]),
                "per_call": row["token_usage_per_call"],
                "totals": {
                    **{k: row[k] for k in ("user_tokens", "completion_tokens", "billed_prompt_tokens",
                                           "input_tokens", "output_tokens", "total_tokens")},
                    "completion_tokens_by_agent": dict(zip(agents, row["completion_tokens_by_agent"], strict=True)),
                },
                "communication_efficiency": {k: row[k] for k in ("avg_tokens_per_turn", "input_output_ratio",
                                                                 "coordination_overhead")},
            },
            "latent_states": {
                "method": ctx.settings.cell,
                "model": ctx.latent_model,
                "rank": ctx.settings.rank,
                "split": row["latent_split"],
                "per_turn": [{"turn": t + 1, "vector": v} for t, v in enumerate(row["latent_per_turn"])],
                "error": ctx.latent_error,
            },
            "coordination_outcomes": {
                "native": {
                    "outcome": row["consensus"],
                    "outcome_source": row["consensus_source"],
                    **{k: row[k] for k in ("unknown_reason", "mistake_agent", "mistake_step", "mistake_reason",
                                           "any_deal_passed")},
                    "turn_events": row["turn_events"],
                },
                "judges": {
                    "method": RecordContext.JUDGES_METHOD,
                    "verdicts": row["judge_verdicts"],
                    "consensus": row["consensus"],
                    "consensus_category": row["consensus_category"],
                    "consensus_source": row["consensus_source"],
                    "n_judges": row["n_judges"],
                    "n_consistent_judges": row["n_consistent_judges"],
                },
                "rule": {
                    "method": RecordContext.RULES_METHOD,
                    "thresholds": {
                        "coordination_overhead": thresholds.coordination_overhead,
                        "agreement_low": thresholds.agreement_low,
                        "agreement_high": thresholds.agreement_high,
                        "agreement_drop": thresholds.agreement_drop,
                        "length_ratio": thresholds.length_ratio,
                    },
                    "coordination_success": row["coordination_success"],
                    "coordination_overhead": row["coordination_overhead"],
                    "rule_outcome": row["rule_outcome"],
                    "rule_outcome_category": row["rule_outcome_category"],
                    "agent_grades": None if grades is None else dict(zip(agents, grades, strict=True)),
                    "mean_grade": row["mean_grade"],
                    "efficiency_score": row["efficiency_score"],
                    "mean_agent_similarity": row["mean_agent_similarity"],
                    "per_turn": [{"turn": t + 1, "agent_similarity": s, "agreement_level": level}
                                 for t, (s, level) in enumerate(zip(row["agent_similarity_per_turn"],
                                                                    row["agreement_level_per_turn"], strict=True))],
                    "events": row["events"],
                },
                "llm": ({"method": ctx.llm_method, "model": ctx.settings.llm_model, **llm_fields}
                        if ctx.settings.llm_enabled else None),
            },
        },
        "output": {
            "outcome": row["consensus"],
            "outcome_category": row["consensus_category"],
            "outcome_source": row["consensus_source"],
            "coordination_success": row["coordination_success"],
        },
        "metadata": {
            "episode_id": row["episode_id"],
            "source": row["source"],
            "licence": source.licence,
            "annotation_version": ctx.settings.annotation_version,
            "date": row["date"],
            "group_id": row["group_id"],
            "category": row["category"],
            "subset": row["subset"],
            "language": row["language"],
        },
    }
    return record


def json_line(record: dict[str, Any]) -> str:
    """One line of reproducible JSON: sorted keys, no spaces, UTF-8 text, no NaN."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=_json_default) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Writing.


@dataclass
class ReleaseSummary:
    """What the card reports about the written files."""

    rows: int = 0
    schema: pyarrow.Schema | None = None
    sources: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    first_date: str | None = None
    last_date: str | None = None
    undated: int = 0

    def add(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        for name, column in (("sources", "source"), ("languages", "language"), ("splits", "latent_split")):
            counts = getattr(self, name)
            for key, n in frame[column].value_counts().items():
                counts[str(key)] = counts.get(str(key), 0) + int(n)
        dates = frame["date"].dropna()
        self.undated += int(frame["date"].isna().sum())
        if len(dates):
            self.first_date = min(filter(None, [self.first_date, dates.min()]))
            self.last_date = max(filter(None, [self.last_date, dates.max()]))


def llm_arrow_types(labels: pd.DataFrame) -> dict[str, pyarrow.DataType]:
    """Arrow types of the llm_ columns, from the whole table (a chunk may be all null); all-null -> string."""
    columns = sorted(c for c in labels if c.startswith(LLM_PREFIX))
    if not columns:
        return {}
    types = pyarrow.Table.from_pandas(labels[columns], preserve_index=False).schema
    return {f.name: pyarrow.string() if pyarrow.types.is_null(f.type) else f.type for f in types}


def write_release(inputs: ReleaseInputs, settings: ReleaseSettings, out_dir: Path = OUT_DIR,
                  chunk_size: int = CHUNK_EPISODES,
                  render_card: Callable[[ReleaseSummary], str] | None = None) -> ReleaseSummary:
    """Write coordset.parquet and coordset.jsonl chunk by chunk, each chunk schema-checked before it is written,
    and, with ``render_card``, README.md from their summary. No file is replaced unless all of them are done."""
    schema = arrow_schema(llm_arrow_types(inputs.episode_labels))
    checked = release_schema(settings.rank)
    ctx = RecordContext(settings, latent_error_metrics(inputs.metrics.get("latent", {})))
    summary = ReleaseSummary(schema=schema)
    parquet_path, jsonl_path = out_dir / PARQUET, out_dir / JSONL
    with atomic.atomic_path(parquet_path) as parquet_tmp, atomic.atomic_path(jsonl_path) as jsonl_tmp:
        with pq.ParquetWriter(parquet_tmp, schema, compression="zstd") as writer, \
                open(jsonl_tmp, "w", encoding="utf-8", newline="\n") as lines:
            for frame in EpisodeJoiner(inputs).chunks(chunk_size):
                check(frame, checked, str(parquet_path))
                table = pyarrow.Table.from_pandas(frame, schema=schema, preserve_index=False)
                writer.write_table(table.replace_schema_metadata(None))
                for row in frame.to_dict("records"):
                    record = episode_record(row, ctx)
                    missing = missing_keys(record, RECORD_KEYS)
                    if missing:  # a guard on this module's own code: the shape is the published contract
                        raise CoordsetError(f"{jsonl_path}: record {row['episode_id']!r} lacks {missing}")
                    lines.write(json_line(record))
                summary.add(frame)
        if render_card is not None:
            atomic.write_text(out_dir / CARD, render_card(summary))
    return summary
