"""Head-to-head sources: several models answer the same user turns independently.

A :class:`Conversation` (the user turns and each model's replies) becomes an :class:`Episode` whose
agents are the models, ordered by name so that agent 1 / agent 2 do not depend on the order a source
listed them; each turn is the user message followed by every agent's reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordset.records import BadRecord
from coordset.sources.episode import Agent, Episode, Message, Outcome


@dataclass(frozen=True)
class Conversation:
    episode_id: str
    source: str
    question_id: str
    category: str | None
    language: str
    user_turns: list[str]
    replies: dict[str, list[str]]  # model -> one reply per user turn
    winner: str  # a model, tie or unknown
    winner_source: str  # an OUTCOME_SOURCES value
    tstamps: dict[str, float | None] = field(default_factory=dict)  # model -> answer time


def _text(value: object, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise BadRecord(where, f"{what} must be a string, got {type(value).__name__}", "wrong_type")
    return value


def parallel_episode(conv: Conversation, where: str) -> Episode:
    """Validate a head-to-head conversation and lay it out as an episode."""
    if not conv.user_turns:
        raise BadRecord(where, "empty conversation: no user turn", "empty_conversation")
    models = sorted(conv.replies)
    if len(models) < 2:
        raise BadRecord(where, f"needs at least two distinct agent models, got {models}", "too_few_agents")
    n_turns = len(conv.user_turns)
    for model in models:
        if len(conv.replies[model]) != n_turns:
            raise BadRecord(where, f"agent {model!r} has {len(conv.replies[model])} replies for "
                                   f"{n_turns} user turns", "missing_reply")
    if conv.winner not in (*models, "tie", "unknown"):
        raise BadRecord(where, f"winner {conv.winner!r} is not one of {models}, 'tie' or 'unknown'", "bad_winner")
    messages: list[Message] = []
    for turn in range(n_turns):
        messages.append(Message("user", "user", _text(conv.user_turns[turn], where, f"user turn {turn + 1}"),
                                turn + 1))
        for model in models:
            reply = _text(conv.replies[model][turn], where, f"reply of {model!r} to turn {turn + 1}")
            messages.append(Message(model, "agent", reply, turn + 1, tstamp=conv.tstamps.get(model)))
    return Episode(
        episode_id=conv.episode_id, source=conv.source, group_id=conv.question_id,
        agents=tuple(Agent(m, m) for m in models), messages=tuple(messages),
        outcome=Outcome(conv.winner, conv.winner_source,
                        unknown_reason=_unknown_reason(conv)),
        category=conv.category, language=conv.language, origin=where,
    )


def _unknown_reason(conv: Conversation) -> str | None:
    if conv.winner != "unknown":
        return None
    return "no consistent judge verdict" if conv.winner_source == "judge_majority" else "no outcome in source"
