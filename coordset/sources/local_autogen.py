"""AutoGen / AG2 group-chat histories for the ``local`` source (``sources.local.format: autogen``).

A record is a ``history`` (or ``messages``) list of ``{name, role, content}`` objects as AG2 logs a group
chat, with optional task metadata: an id (``id``, ``question_ID``, ``question_id`` or ``task_id``) and the task
text (``question`` or ``task``). Who&When's Algorithm-Generated logs have this shape, and the speakers are
mapped the way ``coordset.sources.who_when`` maps them (its helpers are reused):

- one message per history entry, in order and with nothing added (AG2's history already starts with the
  message that posed the task), so turn = position + 1 and a Who&When ``mistake_step`` is a position;
- the speaker is ``name``; an entry without one names its speaker in ``role`` (Magentic-One), where the
  plain chat roles ``user``, ``assistant``, ``system`` and ``tool`` mean the user, an agent called
  ``assistant``, a ``system`` message sent as user, and a tool;
- code terminals (``Computer_terminal``), ``role: tool`` / ``function`` entries are tools; ``human``, ``user``,
  ``user_proxy`` and ``admin`` are the user; every other speaker is an agent (agents in order of first
  appearance); ``Orchestrator (-> WebSurfer)`` is the agent ``Orchestrator`` with ``(-> WebSurfer)`` kept as a
  prefix of its text;
- ``content`` is a string, a list of parts (text parts joined, others as ``[<type>]``) or null for a tool
  call (the call, as sorted JSON, is the text).

Outcome: an ``outcome`` object as in the N-speaker format; else Who&When's human labels (``mistake_agent``,
``mistake_step``, ``mistake_reason``: ``failure`` by ``human_annotation`` and a ``decisive_error`` event);
else unknown ("no outcome in file"). group_id is the task id, else a hash of the task text, else the
episode id; the episode id is ``local/<file path under sources.local.path without suffix>`` (plus
``/<index>`` when a file holds several histories).
"""

from __future__ import annotations

import json
from typing import Any

from coordset.records import BadRecord, sha256_text
from coordset.sources.episode import Agent, Episode, Outcome, history_messages
from coordset.sources.local_files import Record
from coordset.sources.local_nspeaker import NO_OUTCOME, parse_outcome
from coordset.sources.who_when import TOOLS, USERS, _models, _speaker, human_labels

ID_KEYS = ("id", "question_ID", "question_id", "task_id")
TASK_KEYS = ("question", "task")
USER_NAMES = {u.casefold() for u in USERS} | {"user", "user_proxy", "userproxy", "admin"}
TOOL_ROLES = ("tool", "function")
CHAT_ROLES = ("user", "assistant", "system", "tool")  # OpenAI roles: an entry without a name has no speaker name


def _text(entry: dict[str, Any], here: str) -> str:
    content = entry.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict) and isinstance(part.get("type"), str):
                parts.append(f"[{part['type']}]")
            else:
                raise BadRecord(f"{here}, field 'content'", "a content part must be an object with a 'type'",
                                "wrong_type")
        return "\n".join(parts)
    calls = entry.get("tool_calls") or entry.get("function_call")
    if content is None and calls:
        return json.dumps(calls, sort_keys=True, ensure_ascii=False)
    if "content" not in entry:
        raise BadRecord(here, "missing field 'content'", "missing_field")
    if content is None:
        return ""
    raise BadRecord(f"{here}, field 'content'", f"content must be a string, a list of parts or null, got "
                    f"{type(content).__name__}", "wrong_type")


def _who(entry: dict[str, Any], here: str) -> tuple[str, str | None]:
    """(the speaker as logged, the chat role when the entry names one besides its speaker)."""
    name, role = entry.get("name"), entry.get("role")
    if name is not None and not isinstance(name, str):
        raise BadRecord(f"{here}, field 'name'", f"name must be a string, got {type(name).__name__}", "wrong_type")
    if role is not None and not isinstance(role, str):
        raise BadRecord(f"{here}, field 'role'", f"role must be a string, got {type(role).__name__}", "wrong_type")
    if name and name.strip():
        return name.strip(), role
    if role and role.strip():
        return role.strip(), None
    hint = " (an entry with 'speaker' and 'text' is the n_speaker format, whose records list their 'agents')" \
        if "speaker" in entry else ""
    raise BadRecord(here, f"no speaker: the entry has neither a 'name' nor a 'role'{hint}", "missing_speaker")


def speaker_role(entry: dict[str, Any], here: str) -> tuple[str, str, str]:
    """(speaker, role, text) of one history entry."""
    raw, chat_role = _who(entry, here)
    text = _text(entry, here)
    if raw in TOOLS or chat_role in TOOL_ROLES:
        return raw, "tool", text
    if chat_role is None and raw in CHAT_ROLES:  # a plain chat message: the role is all there is
        return {"user": ("user", "user"), "assistant": ("assistant", "agent"), "system": ("system", "user"),
                "tool": ("tool", "tool")}[raw] + (text,)
    if raw.casefold() in USER_NAMES:
        return "user", "user", text
    return _speaker(raw, text)


def _task_id(record: dict[str, Any], where: str) -> str | None:
    for key in ID_KEYS:
        if record.get(key) is not None:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
                raise BadRecord(f"{where}, field '{key}'", f"{key} must be a non-empty string or an integer",
                                "wrong_type")
            return str(value).strip()
    return None


def _task_text(record: dict[str, Any], where: str) -> str | None:
    for key in TASK_KEYS:
        if record.get(key) is not None:
            if not isinstance(record[key], str):
                raise BadRecord(f"{where}, field '{key}'", f"{key} must be a string, got "
                                f"{type(record[key]).__name__}", "wrong_type")
            return record[key]
    return None


def episode(ref: Record, record: dict[str, Any], source: str) -> Episode:
    """One AG2-style history as an episode; raises BadRecord naming the file, line and field."""
    where = ref.where
    key = "history" if "history" in record else "messages"
    history = record.get(key)
    if not isinstance(history, list):
        raise BadRecord(f"{where}, field '{key}'", f"expected a list of {{name, role, content}} objects, got "
                        f"{type(history).__name__}", "missing_field" if history is None else "wrong_type")
    if not history:
        raise BadRecord(f"{where}, field '{key}'", "empty conversation: no message", "empty_conversation")
    messages, agents = history_messages(history, where, key, speaker_role)
    clash = {m.speaker for m in messages if m.role != "agent"} & set(agents)
    if clash:
        raise BadRecord(where, f"{sorted(clash)} speak both as agents and as user or tool", "unknown_speaker")
    if not agents:
        raise BadRecord(f"{where}, field '{key}'", "no agent speaks in this history", "no_agent")
    if record.get("outcome") is not None:
        outcome, events = parse_outcome(record["outcome"], where, agents, len(messages), 0), ()
    elif "mistake_agent" in record or "mistake_step" in record:
        outcome, events = human_labels(record, where, agents, len(messages), reason_required=False)
    else:
        outcome, events = Outcome("unknown", "none", unknown_reason=NO_OUTCOME), ()
    task_id, task = _task_id(record, where), _task_text(record, where)
    episode_id = f"{source}/{ref.key}"
    group = task_id or (f"task-{sha256_text(task)[:16]}" if task else episode_id)
    models = _models([m.text for m in messages])  # Magentic-One's "Resolved model mismatch" warnings, if any
    level = record.get("level")
    return Episode(
        episode_id=episode_id, source=source, group_id=group, agents=tuple(Agent(a, models.get(a)) for a in agents),
        messages=tuple(messages), outcome=outcome, category=None if level is None else str(level),
        subset="autogen", language="unknown", events=events, origin=where,
    )
