"""The canonical shape every source reader produces: N named agents, messages in order, native outcomes.

A reader yields one :class:`Episode` per conversation (or a :class:`coordset.records.BadRecord`
naming the file, record and field when one cannot become an episode). ``coordset.normalize`` lays
episodes out as the ``episodes``, ``messages``, ``outcomes`` and ``turn_events`` tables.

- An **agent** is a named participant backed by a model; models may repeat (seven GPT-4
  negotiators are seven agents). For head-to-head sources (MT-Bench, arena) the agent name is the
  model name.
- A **message** has a speaker: an agent's name, ``user``, or a tool/environment (e.g. a code
  terminal). Its role is ``user``, ``agent`` or ``tool``. ``reasoning`` holds private text the agent
  wrote but did not say (a scratchpad); ``prompt`` holds that call's prompt where the log has it (verbatim or rebuilt);
  ``logged_*_tokens`` hold the usage an API reported for that call.
- ``turn`` is source-defined (a question turn, a negotiation round, a phase step); ``position`` is
  the message's 0-based index in the episode and is assigned by normalize from the order given here.
- The **outcome** is the source's own: a string label plus who made it (``outcome_source``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordset.records import BadRecord
from schemas.normalized import OUTCOME_SOURCES, ROLES  # noqa: F401  (the allowed values live with the schema)


@dataclass(frozen=True)
class Agent:
    name: str
    model: str | None = None  # None where the source does not say


@dataclass(frozen=True)
class Message:
    speaker: str  # an agent's name, "user", or a tool's name
    role: str  # user | agent | tool
    text: str  # what was said (public)
    turn: int  # >= 1, source-defined
    reasoning: str | None = None  # private text the agent wrote but did not say
    prompt: str | None = None  # the prompt the framework logged for this call, where it did
    tstamp: float | None = None  # seconds since the epoch, UTC
    logged_prompt_tokens: int | None = None  # usage the API reported for this call
    logged_completion_tokens: int | None = None


@dataclass(frozen=True)
class TurnEvent:
    """A native turn-level annotation: a decisive error, a proposal and its acceptance, a preference."""

    kind: str  # e.g. decisive_error, deal_proposed, moderator_preference
    turn: int
    position: int | None = None  # the message it is about, where it is about one
    agent: str | None = None
    value: float | None = None  # e.g. the number of parties accepting a proposal
    detail: str | None = None  # short free text (the proposal, the reason)


@dataclass(frozen=True)
class Outcome:
    label: str  # e.g. a winning agent / tie / unknown; pass / fail; failure; correct / incorrect
    source: str  # one of OUTCOME_SOURCES
    unknown_reason: str | None = None  # why the label is "unknown", when it is
    mistake_agent: str | None = None  # Who&When: the agent responsible for the failure
    mistake_step: int | None = None  # Who&When: position of the decisive error
    mistake_reason: str | None = None
    any_deal_passed: bool | None = None  # negotiation: did any deal p1 proposed pass


@dataclass(frozen=True)
class Episode:
    episode_id: str
    source: str
    group_id: str  # what is held out together: the question, task, game configuration or project
    agents: tuple[Agent, ...]
    messages: tuple[Message, ...]
    outcome: Outcome
    category: str | None = None
    subset: str | None = None  # e.g. Who&When's Algorithm-Generated / Hand-Crafted
    language: str = "en"
    events: tuple[TurnEvent, ...] = field(default_factory=tuple)
    origin: str | None = None  # where it was read (file, line), for error messages
    # A source that reads several formats (``local``) can say per episode how its calls are billed and
    # whether its agents answered in parallel; None means the source's own ``billing`` / ``parallel``.
    billing: str | None = None
    parallel: bool | None = None


# (entry, where) -> (speaker, role, text) of one logged history entry; raises BadRecord naming ``where``.
EntryReader = Callable[[dict[str, Any], str], tuple[str, str, str]]


def history_messages(history: list[Any], where: str, key: str,
                     read_entry: EntryReader) -> tuple[list[Message], list[str]]:
    """One message per entry of a logged history, in order and with nothing added, and the agents.

    Turn = position + 1 (each entry is its own step), so a label that indexes the history (Who&When's
    ``mistake_step``) is a message position. Agents are the speakers with role ``agent``, in order of first
    appearance. An entry is named ``<where>, <key>[<index>]`` in errors.
    """
    messages: list[Message] = []
    agents: list[str] = []
    for index, entry in enumerate(history):
        here = f"{where}, {key}[{index}]"
        if not isinstance(entry, dict):
            raise BadRecord(here, f"expected an object, got {type(entry).__name__}", "wrong_type")
        speaker, role, text = read_entry(entry, here)
        if role == "agent" and speaker not in agents:
            agents.append(speaker)
        messages.append(Message(speaker, role, text, index + 1))
    return messages, agents
