"""Release rows: every input joined into one row per episode, one chunk of episodes at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coordset.errors import CoordsetError
from coordset.release.inputs import INPUTS, ReleaseInputs
from schemas.release import FIELD_NAMES, LLM_PREFIX

CHUNK_EPISODES = 2048  # one Parquet row group per chunk; fixed, so the bytes do not depend on the machine


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


