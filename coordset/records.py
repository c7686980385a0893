"""Reading source records and turning one conversation into canonical episode and message rows."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordset.errors import CoordsetError


class BadRecord(CoordsetError):
    """One source record that cannot become an episode; names file, line and field."""

    def __init__(self, where: str, problem: str, reason: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.reason = reason  # short category, counted in metrics when skipped


@dataclass
class SkipLog:
    """Records skipped under ``normalize.on_bad_record: skip``; never silent, always counted."""

    policy: str = "stop"
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def handle(self, source: str, exc: BadRecord) -> None:
        if self.policy == "stop":
            raise exc
        self.counts[(source, exc.reason)] += 1
        if len(self.examples) < 20:
            self.examples.append(str(exc))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRecord]]:
    """Yield (line number, record) per non-empty line; a bad line yields a BadRecord instead."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}, line {lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, BadRecord(where, f"not valid UTF-8 at byte {exc.start}", "invalid_utf8")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, BadRecord(where, f"malformed JSON ({exc.msg}, column {exc.colno})", "malformed_json")
                continue
            if not isinstance(record, dict):
                yield lineno, BadRecord(where, "expected a JSON object", "malformed_json")
                continue
            yield lineno, record


def require(record: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in record:
        raise BadRecord(where, f"missing field '{key}'", "missing_field")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadRecord(where, f"field '{key}' must be {names}, got {type(value).__name__}", "wrong_type")
    return value


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise BadRecord(where, f"{what} must be a string, got {type(value).__name__}", "wrong_type")
    return value


@dataclass(frozen=True)
class Conversation:
    """One multi-turn conversation answered by several agents (the unit that becomes an episode)."""

    episode_id: str
    source: str
    question_id: str
    category: str | None
    language: str
    user_turns: list[str]
    replies: dict[str, list[str]]  # agent model -> one reply per user turn
    winner: str
    winner_source: str
    tstamps: dict[str, float | None] = field(default_factory=dict)  # agent model -> answer time


def episode_rows(conv: Conversation, where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate a conversation and lay it out as one episode row and its message rows.

    Agents are ordered by model name so an episode's agent 1 / agent 2 do not depend on which
    order a source happened to list them.
    """
    if not conv.user_turns:
        raise BadRecord(where, "empty conversation: no user turn", "empty_conversation")
    agents = sorted(conv.replies)
    if len(agents) < 2:
        raise BadRecord(where, f"needs at least two distinct agent models, got {agents}", "too_few_agents")
    n_turns = len(conv.user_turns)
    for model in agents:
        if len(conv.replies[model]) != n_turns:
            raise BadRecord(where, f"agent {model!r} has {len(conv.replies[model])} replies for "
                                   f"{n_turns} user turns", "missing_reply")
    if conv.winner not in (*agents, "tie", "unknown"):
        raise BadRecord(where, f"winner {conv.winner!r} is not one of {agents}, 'tie' or 'unknown'", "bad_winner")
    messages: list[dict[str, Any]] = []
    for turn in range(n_turns):
        turn_rows = [("user", None, _text(conv.user_turns[turn], where, f"user turn {turn + 1}"), None)]
        for model in agents:
            reply = _text(conv.replies[model][turn], where, f"reply of {model!r} to turn {turn + 1}")
            turn_rows.append(("agent", model, reply, conv.tstamps.get(model)))
        for role, model, text, tstamp in turn_rows:
            messages.append({
                "episode_id": conv.episode_id, "turn": turn + 1, "position": len(messages), "role": role,
                "agent_model": model, "text": text, "text_sha256": sha256_text(text), "n_chars": len(text),
                "tstamp": tstamp,
            })
    times = [t for t in conv.tstamps.values() if t is not None]
    episode = {
        "episode_id": conv.episode_id, "source": conv.source, "question_id": conv.question_id,
        "category": conv.category, "language": conv.language, "agent_models": agents,
        "n_agents": len(agents), "n_turns": n_turns, "winner": conv.winner,
        "winner_source": conv.winner_source,
        "tstamp_start": min(times) if times else None, "tstamp_end": max(times) if times else None,
    }
    return episode, messages
