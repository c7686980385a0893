"""normalize: every source's raw files -> the canonical episodes, messages, outcomes and turn-event tables.

Each source's reader (``coordset.sources``) yields :class:`~coordset.sources.episode.Episode` objects;
this module checks what holds for every source (agents named once, every agent message spoken by an
agent, labels pointing inside the episode) and lays the episodes out as rows, sorted by episode and
position so the bytes do not depend on reading order. The stage builds :class:`NormalizeSettings` once
from params (``normalize_settings``) and hands them to :func:`normalize`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa

from coordset.params import require_choice
from coordset.records import BadRecord, SkipLog, sha256_text
from coordset.sources import REGISTRY, source_use, sources_in_use
from coordset.sources.episode import Episode
from coordset.sources.registry import SourceUse
from schemas.normalized import (
    EPISODES,
    JUDGE_GRADES,
    JUDGE_VERDICTS,
    MESSAGES,
    OUTCOME_SOURCES,
    OUTCOMES,
    ROLES,
    TURN_EVENTS,
)

# Each table the stage writes (data/normalized/<name>.parquet): its schema, and the row order that makes its
# bytes independent of reading order.
TABLES: dict[str, tuple[pa.DataFrameSchema, list[str]]] = {
    "episodes": (EPISODES, ["episode_id"]),
    "messages": (MESSAGES, ["episode_id", "position"]),
    "outcomes": (OUTCOMES, ["episode_id"]),
    "turn_events": (TURN_EVENTS, ["episode_id", "turn", "kind", "position"]),
    "judge_verdicts": (JUDGE_VERDICTS, ["episode_id", "judge_id", "turn"]),
    "judge_grades": (JUDGE_GRADES, ["question_id", "model_id", "judge_id", "mode", "turn"]),
}


@dataclass(frozen=True)
class NormalizeSettings:
    on_bad_record: str  # stop | skip, for every source that sets no policy of its own
    sources: tuple[SourceUse, ...]  # sources.use, each with its checked settings


def normalize_settings(params: dict[str, Any]) -> NormalizeSettings:
    """Check ``sources`` and ``normalize`` once, before any file is read."""
    used = sources_in_use(params)
    policy = require_choice(params, "normalize.on_bad_record", ("stop", "skip"))
    return NormalizeSettings(policy, tuple(source_use(source, params) for source in used))


@dataclass
class NormalizedTables:
    episodes: pd.DataFrame
    messages: pd.DataFrame
    outcomes: pd.DataFrame
    turn_events: pd.DataFrame
    judge_verdicts: pd.DataFrame
    judge_grades: pd.DataFrame
    skips: SkipLog
    counts: dict[str, Counter] = field(default_factory=dict)  # per source: episodes, messages

    def outputs(self, out_dir: Path) -> dict[Path, tuple[pd.DataFrame, pa.DataFrameSchema]]:
        """Each table with its schema, keyed by the file it is written to under ``out_dir``."""
        return {out_dir / f"{name}.parquet": (getattr(self, name), schema) for name, (schema, _) in TABLES.items()}


def check_episode(ep: Episode) -> None:
    """What must hold for an episode of any source; raises BadRecord naming the episode and the field."""
    where = ep.origin or f"{ep.source}: episode {ep.episode_id}"
    names = [a.name for a in ep.agents]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise BadRecord(where, f"agents must be distinct non-empty names, got {names}", "bad_agents")
    if not ep.messages:
        raise BadRecord(where, "empty conversation: no message", "empty_conversation")
    agents = set(names)
    for index, msg in enumerate(ep.messages):
        here = f"{where}, message {index}"
        if msg.role not in ROLES:
            raise BadRecord(here, f"role {msg.role!r} is not one of {ROLES}", "bad_value")
        if msg.role == "agent" and msg.speaker not in agents:
            raise BadRecord(here, f"speaker {msg.speaker!r} is not one of the agents {names}", "unknown_speaker")
        if msg.role != "agent" and (not msg.speaker or msg.speaker in agents):
            raise BadRecord(here, f"{msg.role} message has speaker {msg.speaker!r}", "unknown_speaker")
        if msg.turn < 1:
            raise BadRecord(here, f"turn must be >= 1, got {msg.turn}", "bad_value")
    turns = {m.turn for m in ep.messages}
    if turns != set(range(1, len(turns) + 1)):
        raise BadRecord(where, f"turns must be numbered 1..n without gaps, got {sorted(turns)[:10]}", "bad_value")
    out = ep.outcome
    if out.source not in OUTCOME_SOURCES:
        raise BadRecord(where, f"outcome source {out.source!r} is not one of {OUTCOME_SOURCES}", "bad_value")
    if out.mistake_step is not None and not 0 <= out.mistake_step < len(ep.messages):
        raise BadRecord(where, f"mistake_step {out.mistake_step} is outside the {len(ep.messages)} messages",
                        "bad_mistake_step")
    for event in ep.events:
        if event.position is not None and not 0 <= event.position < len(ep.messages):
            raise BadRecord(where, f"{event.kind} event at position {event.position} is outside the messages",
                            "bad_event")


def _rows(ep: Episode) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    source = REGISTRY[ep.source]
    model_of = {a.name: a.model for a in ep.agents}
    messages = [{
        "episode_id": ep.episode_id, "turn": m.turn, "position": i, "speaker": m.speaker, "role": m.role,
        "agent_model": model_of.get(m.speaker) if m.role == "agent" else None, "text": m.text,
        "text_sha256": sha256_text(m.text), "n_chars": len(m.text), "reasoning": m.reasoning, "prompt": m.prompt,
        "tstamp": m.tstamp, "logged_prompt_tokens": m.logged_prompt_tokens,
        "logged_completion_tokens": m.logged_completion_tokens,
    } for i, m in enumerate(ep.messages)]
    times = [m.tstamp for m in ep.messages if m.tstamp is not None]
    episode = {
        "episode_id": ep.episode_id, "source": ep.source, "group_id": ep.group_id, "category": ep.category,
        "subset": ep.subset, "language": ep.language, "agents": [a.name for a in ep.agents],
        "agent_models": [a.model for a in ep.agents], "n_agents": len(ep.agents),
        "n_turns": len({m.turn for m in ep.messages}), "n_messages": len(ep.messages),
        "billing": ep.billing or source.billing, "parallel": source.parallel if ep.parallel is None else ep.parallel,
        "tstamp_start": min(times) if times else None, "tstamp_end": max(times) if times else None,
    }
    out = ep.outcome
    outcome = {
        "episode_id": ep.episode_id, "source": ep.source, "outcome": out.label, "outcome_source": out.source,
        "unknown_reason": out.unknown_reason, "mistake_agent": out.mistake_agent, "mistake_step": out.mistake_step,
        "mistake_reason": out.mistake_reason, "any_deal_passed": out.any_deal_passed,
    }
    events = [{"episode_id": ep.episode_id, "turn": e.turn, "position": e.position, "kind": e.kind,
               "agent": e.agent, "value": e.value, "detail": e.detail} for e in ep.events]
    return episode, messages, outcome, events


def normalize(settings: NormalizeSettings | dict[str, Any], raw: Path = Path("data/raw")) -> NormalizedTables:
    """Read every source in use from ``raw`` (or in place) into the canonical tables.

    ``settings`` may be the raw params (tests and scripts hold them): they are checked into settings here, once.
    """
    if isinstance(settings, dict):
        settings = normalize_settings(settings)
    skips = SkipLog(policy=settings.on_bad_record)
    for use in settings.sources:
        if use.on_bad_record is not None:
            skips.by_source[use.source.name] = use.on_bad_record
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    ids: set[str] = set()
    counts: dict[str, Counter] = {}
    for use in settings.sources:
        source = use.source
        data = source.read(source.raw_dir(raw, use.settings), use.settings, skips)
        counts[source.name] = Counter(episodes=0, messages=0)
        for ep in data.episodes:
            try:
                if ep.episode_id in ids:
                    raise BadRecord(ep.origin or ep.source, f"duplicate episode id {ep.episode_id!r}", "duplicate_id")
                check_episode(ep)
            except BadRecord as exc:
                skips.handle(source.name, exc)
                continue
            ids.add(ep.episode_id)
            episode, messages, outcome, events = _rows(ep)
            rows["episodes"].append(episode)
            rows["messages"] += messages
            rows["outcomes"].append(outcome)
            rows["turn_events"] += events
            counts[source.name].update(episodes=1, messages=len(messages))
        rows["judge_verdicts"] += data.judge_verdicts
        rows["judge_grades"] += data.judge_grades
    frames = {name: _frame(rows[name], schema, order) for name, (schema, order) in TABLES.items()}
    return NormalizedTables(**frames, skips=skips, counts=counts)


def episode_frames(episodes: list[Episode]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Checked episodes laid out as the (episodes, messages) tables, for callers that build episodes themselves."""
    rows = [_rows(ep) for ep in episodes if check_episode(ep) is None]
    return (_frame([r[0] for r in rows], *TABLES["episodes"]),
            _frame([m for r in rows for m in r[1]], *TABLES["messages"]))


def normalize_metrics(tables: NormalizedTables) -> dict[str, Any]:
    skipped: dict[str, dict[str, int]] = {}
    for (source, reason), count in sorted(tables.skips.counts.items()):
        skipped.setdefault(source, {})[reason] = count
    by_source: dict[str, dict[str, Any]] = {}
    for name, count in tables.counts.items():
        by_source[name] = {"episodes": int(count["episodes"]), "messages": int(count["messages"]),
                           "skipped": int(sum(skipped.get(name, {}).values()))}
        subsets = _subset_counts(tables.episodes, name)
        if subsets:
            by_source[name]["by_subset"] = subsets
    return {
        "on_bad_record": tables.skips.policy,
        "episodes": int(len(tables.episodes)),
        "by_source": by_source,
        "skipped_records": skipped,
        "skipped_total": int(sum(tables.skips.counts.values())),
    }


def _subset_counts(episodes: pd.DataFrame, source: str) -> dict[str, int]:
    """Episodes per subset of a source that has subsets (Who&When: algorithm_generated, hand_crafted); {} if none.

    Episodes without a subset in such a source are counted under ``none``.
    """
    subsets = episodes.loc[episodes["source"] == source, "subset"]
    if subsets.isna().all():
        return {}
    return {str(k): int(v) for k, v in subsets.fillna("none").value_counts().sort_index().items()}


def _frame(rows: list[dict[str, Any]], schema: pa.DataFrameSchema, sort_by: list[str]) -> pd.DataFrame:
    """Rows as a frame with the schema's columns, numbers cast to the schema's types (strings stay objects)."""
    frame = pd.DataFrame(rows, columns=list(schema.columns))
    for name, column in schema.columns.items():
        dtype = str(column.dtype)
        if dtype in ("int64", "float64", "Int64", "boolean"):
            frame[name] = frame[name].astype(dtype)
        elif frame.empty and dtype.startswith("str"):
            frame[name] = frame[name].astype("str")  # an empty column would otherwise be typed object
    return frame.sort_values(sort_by, kind="stable").reset_index(drop=True)
