"""MALLM discussion records (``sources.local.format: mallm`` and the ``debate`` source).

MALLM (github.com/Multi-Agent-LLMs/mallm, Apache-2.0) writes one JSON list per run, one record per
discussion: ``exampleId``, ``instruction``, ``input`` and ``context`` (the task), ``personas`` (``agentId``,
``model``, ``persona``, ``personaDescription``), ``paradigm``, ``globalMemory`` (one entry per agent message:
``message_id``, ``turn``, ``agent_id``, ``persona``, ``contribution``, ``message``, ``agreement``,
``solution``, ``memory_ids``, ``additional_args``), ``agreements``, ``decisionSuccess``, ``finalAnswer``,
``references``, ``votesEachTurn``, ``turns`` and ``clockSeconds``. The mapping (no MALLM code is used):

- Agents are the personas in their order, named by ``persona`` (a repeated or reserved name gets the first 8
  characters of its ``agentId`` appended); ``model`` is the persona's model (MALLM's old ``placeholder`` is
  null).
- Messages: the task first (speaker ``user``, turn 1: the instruction, the context and the input, rendered as
  ``render_task`` does), then the ``globalMemory`` entries in ``message_id`` order, each spoken by the agent
  whose ``agentId`` is its ``agent_id`` at its own ``turn`` (MALLM numbers turns from 1).
- ``memory_ids`` are the messages that agent was shown when it wrote the message. Each must name an earlier
  message; the task and those messages, rendered by ``render_prompt``, are the message's ``prompt``, so a
  source billed ``logged_prompt`` bills each call for exactly what the agent saw (MALLM's own prompt template,
  persona description and current draft are not in the record, so this is a lower bound).
- ``agreement`` (true/false) is an ``agreement`` turn event at that message (value 1 or 0, detail: the
  contribution, e.g. ``draft``, ``improve``, ``feedback``); null gives none.
- ``decisionSuccess`` is whether MALLM's decision protocol (voting, consensus) reached a decision within the
  turn limit -- not whether the answer is right. true -> ``success``, false -> ``failure``, both
  ``game_rule``; null -> ``unknown`` ("decisionSuccess is null"); absent -> ``unknown`` (``none``). Any other
  value is a bad record.
- ``finalAnswer`` is a ``final_answer`` event at the last turn (detail: the answer); each non-null
  ``votesEachTurn`` entry is a ``vote`` event at its turn (detail: the voting type).
- group_id is a hash of the input text (runs of several configurations on one question stay together;
  ``example-<exampleId>`` without an input);
  category is the paradigm; timestamps are not logged (``clockSeconds`` is a duration).
"""

from __future__ import annotations

from typing import Any

from coordset.records import BadRecord, sha256_text
from coordset.sources.episode import Agent, Episode, Message, Outcome, TurnEvent
from coordset.sources.local_files import Record

PLACEHOLDER_MODELS = ("", "placeholder")
RESERVED = ("user",)


def _field(record: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, *,
           optional: bool = False) -> Any:
    if record.get(key) is None:
        if optional:
            return None
        reason = "missing_field" if key not in record else "wrong_type"
        raise BadRecord(f"{where}, field '{key}'", f"missing field '{key}'" if key not in record else
                        f"field '{key}' is null", reason)
    value = record[key]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadRecord(f"{where}, field '{key}'", f"field '{key}' must be {names}, got {type(value).__name__}",
                        "wrong_type")
    return value


def _strings(value: Any, key: str, where: str) -> list[str]:
    """A list of strings (MALLM's input, context, references); a lone string is a list of one."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise BadRecord(f"{where}, field '{key}'", f"field '{key}' must be a string or a list of strings",
                        "wrong_type")
    return items


def render_task(instruction: str | None, inputs: list[str], context: list[str]) -> str:
    """The task as one user message: instruction, context and input (numbered when there are several)."""
    parts = [instruction.strip()] if instruction and instruction.strip() else []
    if context:
        parts.append("Context:\n" + "\n".join(context))
    if len(inputs) == 1:
        parts.append(f"Input: {inputs[0]}")
    elif inputs:
        parts.append("Input:\n" + "\n".join(f"{i}) {text}" for i, text in enumerate(inputs, 1)))
    return "\n\n".join(parts)


def render_prompt(task: str, seen: list[tuple[str, str]]) -> str:
    """What one agent was shown: the task, then each visible (speaker, message) in message order."""
    return "\n\n".join([task, *(f"{speaker}: {text}" for speaker, text in seen)])


def _agents(record: dict[str, Any], where: str) -> tuple[list[Agent], dict[str, str]]:
    personas = _field(record, "personas", list, where)
    if not personas:
        raise BadRecord(f"{where}, field 'personas'", "no personas: a discussion needs agents", "bad_agents")
    ids: list[str] = []
    labels: list[str] = []
    models: list[str | None] = []
    for index, persona in enumerate(personas):
        here = f"{where}, personas[{index}]"
        if not isinstance(persona, dict):
            raise BadRecord(here, f"expected an object, got {type(persona).__name__}", "wrong_type")
        agent_id = _field(persona, "agentId", str, here)
        if agent_id in ids:
            raise BadRecord(f"{here}, field 'agentId'", f"agentId {agent_id!r} appears twice", "bad_agents")
        ids.append(agent_id)
        label = (_field(persona, "persona", str, here, optional=True) or "").strip()
        labels.append(label or agent_id)
        model = _field(persona, "model", str, here, optional=True)
        models.append(None if model is None or model.strip() in PLACEHOLDER_MODELS else model)
    names = [f"{label} ({agent_id[:8]})" if labels.count(label) > 1 or label in RESERVED else label
             for label, agent_id in zip(labels, ids, strict=True)]
    if len(set(names)) != len(names):
        raise BadRecord(f"{where}, field 'personas'", f"agents cannot be told apart by persona and agentId: {names}",
                        "bad_agents")
    return [Agent(n, m) for n, m in zip(names, models, strict=True)], dict(zip(ids, names, strict=True))


def _int(entry: dict[str, Any], key: str, here: str, low: int) -> int:
    value = _field(entry, key, int, here)
    if value < low:
        raise BadRecord(f"{here}, field '{key}'", f"{key} must be >= {low}, got {value}", "bad_value")
    return value


def _outcome(record: dict[str, Any], where: str) -> Outcome:
    if "decisionSuccess" not in record:
        return Outcome("unknown", "none", unknown_reason="no decisionSuccess in record")
    value = record["decisionSuccess"]
    if value is None:
        return Outcome("unknown", "game_rule", unknown_reason="decisionSuccess is null")
    if not isinstance(value, bool):
        raise BadRecord(f"{where}, field 'decisionSuccess'", f"decisionSuccess must be true, false or null, got "
                        f"{value!r}", "bad_label")
    return Outcome("success" if value else "failure", "game_rule")


def _votes(record: dict[str, Any], where: str, turns: set[int]) -> list[TurnEvent]:
    votes = record.get("votesEachTurn")
    if votes is None:
        return []
    if isinstance(votes, list):  # Parquet keeps a JSON object with number keys as a list of (key, value) pairs
        votes = dict(v for v in votes if isinstance(v, (list, tuple)) and len(v) == 2)
    if not isinstance(votes, dict):
        raise BadRecord(f"{where}, field 'votesEachTurn'", "votesEachTurn must be an object of turn -> result",
                        "wrong_type")
    events = []
    for key, result in votes.items():
        if result is None:
            continue
        if not str(key).isdigit() or int(key) not in turns:
            raise BadRecord(f"{where}, field 'votesEachTurn'", f"key {key!r} is not a turn of this discussion "
                            f"({min(turns)}..{max(turns)})", "bad_value")
        kind = result.get("type") if isinstance(result, dict) else None
        events.append(TurnEvent("vote", int(key), detail=kind if isinstance(kind, str) else None))
    return sorted(events, key=lambda e: e.turn)


def episode(ref: Record, record: dict[str, Any], source: str, episode_id: str, *,
            language: str = "unknown") -> Episode:
    """One MALLM discussion as an episode; raises BadRecord naming the file, record and field."""
    where = ref.where
    example = _field(record, "exampleId", (str, int), where)
    agents, name_of = _agents(record, where)
    memory = _field(record, "globalMemory", list, where)
    if not memory:
        raise BadRecord(f"{where}, field 'globalMemory'", "empty conversation: no message", "empty_conversation")
    inputs = _strings(record.get("input"), "input", where)
    task = render_task(_field(record, "instruction", str, where, optional=True), inputs,
                       _strings(record.get("context"), "context", where))
    entries: list[tuple[int, int, dict[str, Any]]] = []  # (message_id, index in globalMemory, entry)
    for index, entry in enumerate(memory):
        here = f"{where}, globalMemory[{index}]"
        if not isinstance(entry, dict):
            raise BadRecord(here, f"expected an object, got {type(entry).__name__}", "wrong_type")
        entries.append((_int(entry, "message_id", here, 0), index, entry))
    ids = [e[0] for e in entries]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise BadRecord(f"{where}, field 'globalMemory'", f"message_id {duplicate} appears twice", "bad_value")
    entries.sort()
    messages = [Message("user", "user", task, 1)]
    events: list[TurnEvent] = []
    text_of: dict[int, tuple[str, str]] = {}
    previous = 1
    for message_id, index, entry in entries:
        here = f"{where}, globalMemory[{index}]"
        agent_id = _field(entry, "agent_id", str, here)
        if agent_id not in name_of:
            raise BadRecord(f"{here}, field 'agent_id'", f"agent_id {agent_id!r} is not the agentId of any persona "
                            f"({sorted(name_of)})", "unknown_speaker")
        speaker = name_of[agent_id]
        turn = _int(entry, "turn", here, 1)
        if turn < previous:
            raise BadRecord(f"{here}, field 'turn'", f"turn {turn} comes after turn {previous} (message_id order)",
                            "bad_value")
        previous = turn
        text = _field(entry, "message", str, here)
        seen = _field(entry, "memory_ids", list, here)
        for seen_id in seen:
            if isinstance(seen_id, bool) or not isinstance(seen_id, int) or seen_id not in ids:
                raise BadRecord(f"{here}, field 'memory_ids'", f"memory id {seen_id!r} is not the message_id of any "
                                "message in globalMemory", "bad_memory_id")
            if seen_id >= message_id:
                raise BadRecord(f"{here}, field 'memory_ids'", f"message {message_id} cannot have seen message "
                                f"{seen_id}, which comes at or after it", "bad_memory_id")
        prompt = render_prompt(task, [text_of[i] for i in sorted(set(seen))])
        agreement = entry.get("agreement")
        if agreement is not None and not isinstance(agreement, bool):
            raise BadRecord(f"{here}, field 'agreement'", f"agreement must be true, false or null, got {agreement!r}",
                            "bad_value")
        contribution = _field(entry, "contribution", str, here, optional=True)
        if agreement is not None:
            events.append(TurnEvent("agreement", turn, len(messages), speaker, 1.0 if agreement else 0.0,
                                    contribution))
        messages.append(Message(speaker, "agent", text, turn, prompt=prompt))
        text_of[message_id] = (speaker, text)
    turns = {m.turn for m in messages}
    answer = _field(record, "finalAnswer", str, where, optional=True)
    if answer is not None:
        events.append(TurnEvent("final_answer", max(turns), detail=answer))
    events += _votes(record, where, turns)
    return Episode(
        episode_id=episode_id, source=source,
        group_id=f"input-{sha256_text(chr(10).join(inputs))[:16]}" if inputs else f"example-{example}",
        agents=tuple(agents), messages=tuple(messages), outcome=_outcome(record, where),
        category=_field(record, "paradigm", str, where, optional=True), subset="mallm", language=language,
        events=tuple(events), origin=where,
    )
