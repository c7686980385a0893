"""Chatbot-Arena-shaped records (the Hub dataset and a researcher's ``local`` files).

Record: ``question_id, model_a, model_b, winner, conversation_a, conversation_b, turn, language,
tstamp, ...`` where each conversation is a list of ``{"role", "content"}`` alternating user and
assistant. Both sides must carry the same user turns; the human vote is the outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from coordset.records import BadRecord, read_jsonl, require
from coordset.sources.parallel import Conversation

# The arena's vote labels, mapped onto the canonical outcome.
ARENA_WINNERS = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "tie"}


def read_arena_records(path: Path) -> Iterator[tuple[str, dict[str, Any] | BadRecord]]:
    """Yield (where, record) from a JSONL or Parquet file (directories: every such file, sorted)."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.suffix in (".jsonl", ".parquet") and not child.name.startswith("."):
                yield from read_arena_records(child)
        return
    if not path.exists():
        yield str(path), BadRecord(str(path), "file not found", "missing_file")
        return
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for index, record in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}, row {index}", record
    else:
        for lineno, record in read_jsonl(path):
            yield f"{path}, line {lineno}", record


def _turns(conversation: Any, side: str, where: str) -> tuple[list[str], list[str]]:
    if not isinstance(conversation, list):
        raise BadRecord(where, f"field 'conversation_{side}' must be a list of messages", "wrong_type")
    if not conversation:
        raise BadRecord(where, f"empty conversation in 'conversation_{side}'", "empty_conversation")
    users: list[str] = []
    replies: list[str] = []
    for index, message in enumerate(conversation):
        here = f"{where}, conversation_{side}[{index}]"
        if not isinstance(message, dict):
            raise BadRecord(here, "message must be an object with 'role' and 'content'", "wrong_type")
        role = require(message, "role", str, here)
        content = require(message, "content", str, here)
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            raise BadRecord(here, f"expected role {expected!r}, got {role!r} (turns must alternate)", "bad_value")
        (users if role == "user" else replies).append(content)
    if len(replies) != len(users):
        raise BadRecord(where, f"conversation_{side}: user turn {len(users)} has no agent reply", "missing_reply")
    return users, replies


def arena_conversation(record: dict[str, Any], where: str, source: str) -> Conversation:
    qid = str(require(record, "question_id", (str, int), where))
    model_a = require(record, "model_a", str, where)
    model_b = require(record, "model_b", str, where)
    if model_a == model_b:
        raise BadRecord(where, f"model_a and model_b are both {model_a!r}", "too_few_agents")
    vote = require(record, "winner", str, where)
    if vote not in ARENA_WINNERS:
        raise BadRecord(where, f"field 'winner' must be one of {list(ARENA_WINNERS)}, got {vote!r}", "bad_value")
    users_a, replies_a = _turns(record.get("conversation_a"), "a", where)
    users_b, replies_b = _turns(record.get("conversation_b"), "b", where)
    if users_a != users_b:
        raise BadRecord(where, "conversation_a and conversation_b differ in their user turns", "bad_value")
    outcome = {"a": model_a, "b": model_b, "tie": "tie"}[ARENA_WINNERS[vote]]
    tstamp = record.get("tstamp")
    tstamp = float(tstamp) if isinstance(tstamp, (int, float)) and not isinstance(tstamp, bool) else None
    language = record.get("language")
    return Conversation(
        episode_id=f"{source}/{qid}", source=source, question_id=qid, category=None,
        language=language if isinstance(language, str) and language else "unknown",
        user_turns=users_a, replies={model_a: replies_a, model_b: replies_b},
        winner=outcome, winner_source="human_vote", tstamps={model_a: tstamp, model_b: tstamp},
    )
