"""The N-speaker conversation format of the ``local`` source: one JSON object per episode.

The format is the JSON Schema ``SCHEMA`` below (``data/local/n_speaker.schema.json`` is the same schema as
a file, and ``data/local/README.md`` explains it with an example). Every record is checked against it with
``jsonschema``, then by hand for what a schema cannot say (speakers, positions, timestamps):

- ``id`` names the episode (``local/<id>``); ``group`` what a held-out split keeps together (default: the id);
  ``category``, ``language`` (default ``unknown``) and ``metadata`` (kept out of the tables) are optional.
- ``task``, when given, becomes the first message: speaker ``user``, turn 1.
- ``agents``: ``{name, model?}``, distinct names (``user`` is reserved).
- ``messages`` in order: ``speaker``, ``text``, optional ``role`` (default: ``agent`` when the speaker is an
  agent, ``user`` for ``user``, else ``tool``), ``reasoning`` (private text; agents only), ``timestamp``
  (ISO-8601, read as UTC without an offset, or unix seconds) and ``turn``. Without turns every message is its
  own step (turn = position + 1); with them every message needs one and they may not decrease. When
  ``tools`` lists the tools, a speaker that is neither an agent, ``user`` nor a listed tool is an unknown
  speaker.
- ``outcome``: ``{label, by, reason?, mistake_agent?, mistake_step?, mistake_reason?}`` where ``by`` is one
  of ``schemas.normalized.OUTCOME_SOURCES``; ``reason`` says why a label is ``unknown``. Without it the outcome
  is ``unknown`` (``none``, "no outcome in file").
- ``events``: ``{kind, turn?, position?, agent?, value?, detail?}``, at least one of turn and position.

``position`` and ``mistake_step`` are 0-based indexes into the record's ``messages`` (the task message, when
there is one, is not counted there; in the tables it is position 0 and the others move up by one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from coordset.records import BadRecord
from coordset.sources.episode import OUTCOME_SOURCES, ROLES, Agent, Episode, Message, Outcome, TurnEvent
from coordset.sources.local_files import Record

NO_OUTCOME = "no outcome in file"
RESERVED = ("user",)  # the speaker name of user messages cannot be an agent's name

_TEXT_OR_NULL = {"type": ["string", "null"]}
_NAME = {"type": "string", "minLength": 1}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "coordset N-speaker episode",
    "description": "One multi-agent conversation for the coordset `local` source (sources.local.format: n_speaker). "
                   "One object per episode: a line of a .jsonl file, or a .json file holding one object or a list.",
    "type": "object",
    "required": ["id", "agents", "messages"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": ["string", "integer"], "minLength": 1,
               "description": "Episode id, unique among your files; the episode is local/<id>."},
        "task": {**_TEXT_OR_NULL, "description": "The task; becomes the first message (speaker user, turn 1)."},
        "group": {"type": ["string", "null"], "minLength": 1,
                  "description": "What a held-out split keeps together (task, question); default: the id."},
        "category": _TEXT_OR_NULL,
        "language": {"type": ["string", "null"], "minLength": 1, "description": "Default: unknown."},
        "agents": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/agent"}},
        "tools": {"type": ["array", "null"], "items": _NAME,
                  "description": "Tool speakers; when given, any other non-agent speaker but user is refused."},
        "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/message"}},
        "outcome": {"anyOf": [{"$ref": "#/$defs/outcome"}, {"type": "null"}]},
        "events": {"type": ["array", "null"], "items": {"$ref": "#/$defs/event"}},
        "metadata": {"type": ["object", "null"], "description": "Anything else; not read."},
    },
    "$defs": {
        "agent": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": {**_NAME, "not": {"enum": list(RESERVED)}}, "model": _TEXT_OR_NULL},
        },
        "message": {
            "type": "object", "required": ["speaker", "text"], "additionalProperties": False,
            "properties": {
                "speaker": {**_NAME, "description": "An agent's name, user, or a tool."},
                "role": {"enum": [*ROLES, None],
                         "description": "Default: agent for an agent, user for user, else tool."},
                "text": {"type": "string", "description": "What was said."},
                "reasoning": {**_TEXT_OR_NULL, "description": "Private text the agent wrote but did not say."},
                "timestamp": {"type": ["string", "number", "null"],
                              "description": "ISO-8601 (UTC when it has no offset) or unix seconds."},
                "turn": {"type": ["integer", "null"], "minimum": 1,
                         "description": "Default: each message is its own turn (position + 1)."},
                "metadata": {"type": ["object", "null"]},
            },
        },
        "outcome": {
            "type": "object", "required": ["label", "by"], "additionalProperties": False,
            "properties": {
                "label": {**_NAME, "description": "e.g. success, failure, an agent's name, tie, unknown."},
                "by": {"enum": list(OUTCOME_SOURCES), "description": "Who made the label."},
                "reason": {**_TEXT_OR_NULL, "description": "Why the label is unknown (label unknown only)."},
                "mistake_agent": {"type": ["string", "null"]},
                "mistake_step": {"type": ["integer", "null"], "minimum": 0,
                                 "description": "Index into messages of the decisive error."},
                "mistake_reason": _TEXT_OR_NULL,
            },
        },
        "event": {
            "type": "object", "required": ["kind"], "additionalProperties": False,
            "anyOf": [{"required": ["turn"]}, {"required": ["position"]}],
            "properties": {
                "kind": _NAME,
                "turn": {"type": ["integer", "null"], "minimum": 1},
                "position": {"type": ["integer", "null"], "minimum": 0, "description": "Index into messages."},
                "agent": {"type": ["string", "null"]},
                "value": {"type": ["number", "null"]},
                "detail": _TEXT_OR_NULL,
            },
        },
    },
}

_REASONS = {"required": "missing_field", "type": "wrong_type", "additionalProperties": "unknown_field"}


def _path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate(record: dict[str, Any], where: str) -> None:
    """Check ``record`` against ``SCHEMA``; the most relevant violation becomes a BadRecord naming its field."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(SCHEMA).iter_errors(record))
    if error is None:
        return
    parts = list(error.absolute_path)
    here = f"{where}, {_path(parts)}" if parts else where
    if error.validator == "minItems" and parts == ["messages"]:
        raise BadRecord(here, "empty conversation: no message", "empty_conversation")
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    raise BadRecord(here, message, _REASONS.get(str(error.validator), "bad_value"))


def parse_tstamp(value: Any, where: str) -> float | None:
    """Seconds since the epoch from unix seconds or an ISO-8601 string (UTC when it has no offset)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise BadRecord(where, f"timestamp {value!r} is not a finite number", "bad_timestamp")
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise BadRecord(where, f"timestamp {value!r} is neither ISO-8601 nor unix seconds",
                            "bad_timestamp") from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    raise BadRecord(where, f"timestamp must be a string or a number, got {type(value).__name__}", "wrong_type")


def parse_outcome(value: Any, where: str, agents: list[str], n_messages: int, offset: int) -> Outcome:
    """An ``outcome`` object (checked by hand, so other formats can use it); None: unknown, "no outcome in file".

    ``mistake_step`` indexes the record's messages; ``offset`` is how far they moved in the episode (1 when a
    task message precedes them).
    """
    if value is None:
        return Outcome("unknown", "none", unknown_reason=NO_OUTCOME)
    here = f"{where}, outcome"
    if not isinstance(value, dict):
        raise BadRecord(here, f"outcome must be an object, got {type(value).__name__}", "wrong_type")
    allowed = set(SCHEMA["$defs"]["outcome"]["properties"])
    if set(value) - allowed:
        raise BadRecord(here, f"unknown field(s) {sorted(set(value) - allowed)}; allowed: {sorted(allowed)}",
                        "unknown_field")
    label, by = value.get("label"), value.get("by")
    if not isinstance(label, str) or not label:
        raise BadRecord(here, f"outcome.label must be a non-empty string, got {label!r}", "missing_field")
    if by not in OUTCOME_SOURCES:
        raise BadRecord(here, f"outcome.by must be one of {OUTCOME_SOURCES}, got {by!r}", "bad_value")
    reason = _optional_text(value, "reason", here)
    if reason is not None and label != "unknown":
        raise BadRecord(here, f"outcome.reason says why a label is unknown; the label is {label!r}", "bad_value")
    mistake_agent = _optional_text(value, "mistake_agent", here)
    if mistake_agent is not None and mistake_agent not in agents:
        raise BadRecord(here, f"mistake_agent {mistake_agent!r} is not one of the agents {agents}", "bad_label")
    step = value.get("mistake_step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < n_messages:
            raise BadRecord(here, f"mistake_step {step!r} is not an index into the {n_messages} messages",
                            "bad_mistake_step")
        step += offset
    return Outcome(label, by, unknown_reason=(reason or "no reason in file") if label == "unknown" else None,
                   mistake_agent=mistake_agent, mistake_step=step,
                   mistake_reason=_optional_text(value, "mistake_reason", here))


def parse_events(value: Any, where: str, agents: list[str], messages: list[Message], offset: int) -> list[TurnEvent]:
    """An ``events`` list (checked by hand); positions index the record's messages, moved by ``offset``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRecord(f"{where}, events", f"events must be a list, got {type(value).__name__}", "wrong_type")
    turns = {m.turn for m in messages}
    out = []
    for index, event in enumerate(value):
        here = f"{where}, events[{index}]"
        if not isinstance(event, dict):
            raise BadRecord(here, f"expected an object, got {type(event).__name__}", "wrong_type")
        kind = event.get("kind")
        if not isinstance(kind, str) or not kind:
            raise BadRecord(here, f"kind must be a non-empty string, got {kind!r}", "missing_field")
        position, turn = event.get("position"), event.get("turn")
        if position is not None:
            n = len(messages) - offset
            if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < n:
                raise BadRecord(here, f"position {position!r} is not an index into the {n} messages", "bad_event")
            position += offset
            if turn is None:
                turn = messages[position].turn
        if isinstance(turn, bool) or not isinstance(turn, int) or turn not in turns:
            raise BadRecord(here, f"turn {turn!r} is not a turn of this episode ({min(turns)}..{max(turns)})",
                            "bad_event")
        agent = _optional_text(event, "agent", here)
        if agent is not None and agent not in agents:
            raise BadRecord(here, f"agent {agent!r} is not one of the agents {agents}", "bad_event")
        number = event.get("value")
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
            raise BadRecord(here, f"value must be a number, got {type(number).__name__}", "wrong_type")
        out.append(TurnEvent(kind, turn, position, agent, None if number is None else float(number),
                             _optional_text(event, "detail", here)))
    return out


def _optional_text(record: dict[str, Any], key: str, where: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRecord(where, f"field '{key}' must be a string, got {type(value).__name__}", "wrong_type")
    return value


def episode(ref: Record, record: dict[str, Any], source: str) -> Episode:
    """One N-speaker record as an episode; raises BadRecord naming the file, line and field."""
    where = ref.where
    validate(record, where)
    agents = [Agent(a["name"], a.get("model")) for a in record["agents"]]
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise BadRecord(f"{where}, agents", f"agent names must be distinct, got {names}", "bad_agents")
    tools = record.get("tools")
    if tools is not None and set(tools) & set(names):
        raise BadRecord(f"{where}, tools", f"{sorted(set(tools) & set(names))} are both agents and tools",
                        "bad_agents")
    task = record.get("task")
    offset = 1 if task is not None else 0
    messages = [Message("user", "user", task, 1)] if task is not None else []
    entries = record["messages"]
    with_turns = [m.get("turn") is not None for m in entries]
    if any(with_turns) and not all(with_turns):
        raise BadRecord(f"{where}, messages[{with_turns.index(False)}]", "give every message a turn, or none",
                        "missing_field")
    previous = 1
    for index, entry in enumerate(entries):
        here = f"{where}, messages[{index}]"
        speaker, role = entry["speaker"], entry.get("role")
        if role is None:
            role = "agent" if speaker in names else "user" if speaker == "user" else "tool"
        if role == "agent" and speaker not in names:
            raise BadRecord(here, f"speaker {speaker!r} is not one of the agents {names}", "unknown_speaker")
        if role != "agent" and speaker in names:
            raise BadRecord(here, f"agent {speaker!r} cannot speak as a {role}", "unknown_speaker")
        if role == "tool" and tools is not None and speaker not in tools:
            raise BadRecord(here, f"speaker {speaker!r} is neither an agent {names}, user, nor a listed tool "
                                  f"{tools}", "unknown_speaker")
        reasoning = entry.get("reasoning")
        if reasoning is not None and role != "agent":
            raise BadRecord(here, f"a {role} message has no private reasoning (only agents do)", "bad_value")
        turn = entry["turn"] if with_turns[index] else index + 1 + offset
        if turn < previous:
            raise BadRecord(here, f"turn {turn} comes after turn {previous}: turns may not decrease", "bad_value")
        previous = turn
        messages.append(Message(speaker, role, entry["text"], turn, reasoning=reasoning,
                                tstamp=parse_tstamp(entry.get("timestamp"), f"{here}, timestamp")))
    episode_id = str(record["id"])
    return Episode(
        episode_id=f"{source}/{episode_id}", source=source, group_id=record.get("group") or episode_id,
        agents=tuple(agents), messages=tuple(messages),
        outcome=parse_outcome(record.get("outcome"), where, names, len(entries), offset),
        category=record.get("category"), subset="n_speaker", language=record.get("language") or "unknown",
        events=tuple(parse_events(record.get("events"), where, names, messages, offset)), origin=where,
    )
