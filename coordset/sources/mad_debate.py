"""MAD (Multi-Agents-Debate): 200 debates of gpt-3.5-turbo players on ambiguous Chinese-English translations.

Each ``data/CommonMT/Lexical_Ambiguity/MAD_Debate_Process/<n>.json`` is one episode (one source sentence
with a ``correct reference`` and an ``incorrect reference`` translation). The agents are the players:
``Affirmative side``, ``Negative side``, ``Moderator`` and, when the moderator never settled the debate,
``Judge``; all use the file's ``model_name``. The task text shown to them is the user.

Rebuilding one conversation. ``players`` holds each player's own chat (``[system, user, assistant,
user, assistant, ...]``), so an utterance appears once as the speaker's ``assistant`` turn and again inside
the other players' ``user`` turns. An utterance is an ``assistant`` turn; it becomes one agent message.
The upstream protocol (``debate4tran.py``) fixes the order; with R moderator replies (= rounds):

- round 1: the Affirmative's first prompt (the task, ``Translate ... : <source>``, a user message), its
  base translation, its second prompt (``Restate the translation ...``, a user message), its argument;
  then the Negative's argument, then the Moderator's verdict;
- round r = 2..R: Affirmative, Negative, Moderator;
- turn R + 1, only with a Judge: the Judge's list of candidates, its final question (a user message),
  its final answer.

Every other ``user`` turn is a relay: a fixed template around utterances already placed (the Negative
gets the Affirmative's argument of the same round; the Affirmative from round 2 the Negative's previous
one; the Moderator both arguments of the round; the Judge both first arguments). The reader checks that
each relay contains the utterances it should and rejects the file otherwise, then leaves the relay out,
so nothing is said twice. The per-player system prompts (role and debate topic) are not messages.
On the 200 files every view turn is accounted for this way: 0 exceptions.

Outcome (``moderator_judge``): the final translation is the Judge's ``Correct Translation`` when there is
a Judge, else that of the Moderator's last verdict when it states a preference. It is ``correct`` /
``incorrect`` when, after normalisation (NFKC, case-folded, apostrophes dropped, every run of other
non-alphanumerics one space), one reference is contained in the final translation or contains it, as
whole words, and the other reference is not; otherwise ``unknown`` with the reason. Debaters translate
freely, so most outcomes are ``unknown``. Each Moderator verdict is a ``moderator_preference`` event
(agent: the side it prefers, None without a single preferred side; value 1 when it states a preference,
else 0; detail: its reason); the final translation is a ``final_answer`` event of the deciding agent.
Billing: shared_history (an approximation: the debaters never see the Moderator).
"""

from __future__ import annotations

import ast
import json
import re
import unicodedata
from functools import partial
from pathlib import Path
from typing import Any

from coordset.records import BadRecord, SkipLog, numeric_order
from coordset.sources.episode import Agent, Episode, Message, Outcome, TurnEvent
from coordset.sources.registry import Limit, Source, SourceData, episodes_from_json_files, limit

NAME = "mad_debate"
DEBATES = "data/CommonMT/Lexical_Ambiguity/MAD_Debate_Process"
AFF, NEG, MOD, JUDGE = "Affirmative side", "Negative side", "Moderator", "Judge"
SIDES = {"affirmative": AFF, "negative": NEG}


def _files(raw: Path) -> list[Path]:
    return numeric_order((raw / DEBATES).glob("*.json"))


def _field(record: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in record:
        raise BadRecord(f"{where}, field '{key}'", f"missing field '{key}'", "missing_field")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BadRecord(f"{where}, field '{key}'", f"field '{key}' must be {kind.__name__}, "
                        f"got {type(value).__name__}", "wrong_type")
    return value


def _view(players: dict[str, Any], name: str, rel: str) -> list[tuple[str, str]]:
    """A player's chat as (prompt, reply) pairs, checking the system/user/assistant alternation."""
    where = f"{rel}, field 'players.{name}'"
    chat = players[name]
    if not isinstance(chat, list):
        raise BadRecord(where, f"must be a list, got {type(chat).__name__}", "wrong_type")
    for i, turn in enumerate(chat):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            raise BadRecord(f"{where}[{i}]", "expected an object with a string 'content'", "wrong_type")
        expected = "system" if i == 0 else ("user" if i % 2 else "assistant")
        if turn.get("role") != expected:
            raise BadRecord(f"{where}[{i}]", f"role {turn.get('role')!r}, expected {expected!r} (a player's chat "
                            "is system, then user/assistant pairs)", "inconsistent_views")
    if len(chat) < 3 or len(chat) % 2 == 0:
        raise BadRecord(where, f"{len(chat)} turns: expected a system prompt and at least one user/assistant pair",
                        "inconsistent_views")
    return [(chat[i]["content"], chat[i + 1]["content"]) for i in range(1, len(chat), 2)]


def _relays(rel: str, name: str, index: int, prompt: str, *utterances: str) -> None:
    """A relayed prompt must contain the utterances it passes on; otherwise the views disagree."""
    for utterance in utterances:
        if utterance not in prompt:
            raise BadRecord(f"{rel}, field 'players.{name}'[{2 * index + 1}]",
                            f"prompt does not contain the utterance it should relay ({utterance[:60]!r}...)",
                            "inconsistent_views")


def _verdict(text: str, where: str) -> dict[str, Any]:
    """A Moderator or Judge reply: a JSON object, or the Python dict literal the upstream code eval()s."""
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    raise BadRecord(where, f"verdict is not a JSON object or dict literal: {text[:80]!r}", "unparseable_verdict")


def _text(verdict: dict[str, Any], key: str) -> str:
    value = verdict.get(key)
    return value.strip() if isinstance(value, str) else ""


def normalise(text: str) -> str:
    """Case-folded words separated by single spaces and padded with one, so containment is whole-word."""
    text = re.sub(r"['\u2018\u2019`]", "", unicodedata.normalize("NFKC", text).casefold())
    words = re.findall(r"[^\W_]+", text)
    return f" {' '.join(words)} " if words else ""


def match_reference(answer: str, correct: str, incorrect: str) -> tuple[str, str | None]:
    """(label, unknown_reason) for a final translation against the two references."""
    a, c, i = normalise(answer), normalise(correct), normalise(incorrect)
    if not a:
        return "unknown", "no final translation"
    hits_c = bool(c) and (c in a or a in c)
    hits_i = bool(i) and (i in a or a in i)
    if hits_c and not hits_i:
        return "correct", None
    if hits_i and not hits_c:
        return "incorrect", None
    if hits_c:
        return "unknown", "final translation matches both references"
    return "unknown", "final translation neither contains nor is contained in either reference (normalised)"


def episode_from_record(record: dict[str, Any], rel: str) -> Episode:
    """One debate file as an episode; raises BadRecord naming the file and field when it cannot be one."""
    model = _field(record, "model_name", str, rel).strip() or None
    correct = _field(record, "correct reference", str, rel)
    incorrect = _field(record, "incorrect reference", str, rel)
    players = _field(record, "players", dict, rel)
    for name in (AFF, NEG, MOD):
        if name not in players:
            raise BadRecord(f"{rel}, field 'players'", f"no {name!r} player (has {sorted(players)})", "missing_field")
    unknown = sorted(set(players) - {AFF, NEG, MOD, JUDGE})
    if unknown:
        raise BadRecord(f"{rel}, field 'players'", f"unknown players {unknown}", "inconsistent_views")
    aff, neg, mod = _view(players, AFF, rel), _view(players, NEG, rel), _view(players, MOD, rel)
    judge = _view(players, JUDGE, rel) if JUDGE in players else []
    rounds = len(mod)
    if len(aff) != rounds + 1 or len(neg) != rounds or len(judge) not in (0, 2):
        raise BadRecord(f"{rel}, field 'players'", f"replies per player do not fit one debate: {len(aff)} "
                        f"affirmative (expected rounds + 1), {len(neg)} negative, {rounds} moderator (rounds), "
                        f"{len(judge)} judge (0 or 2)", "inconsistent_views")
    for r in range(rounds):
        _relays(rel, NEG, r, neg[r][0], aff[r + 1][1])
        _relays(rel, MOD, r, mod[r][0], aff[r + 1][1], neg[r][1])
        if r:
            _relays(rel, AFF, r + 1, aff[r + 1][0], neg[r - 1][1])
    if judge:
        _relays(rel, JUDGE, 0, judge[0][0], aff[1][1], neg[0][1])

    messages: list[Message] = []
    events: list[TurnEvent] = []

    def say(speaker: str, text: str, turn: int) -> int:
        messages.append(Message(speaker=speaker, role="user" if speaker == "user" else "agent", text=text, turn=turn))
        return len(messages) - 1

    last_verdict: tuple[int, int, dict[str, Any]] | None = None
    for r in range(1, rounds + 1):
        if r == 1:
            say("user", aff[0][0], 1)
            say(AFF, aff[0][1], 1)
            say("user", aff[1][0], 1)
        say(AFF, aff[r][1], r)
        say(NEG, neg[r - 1][1], r)
        position = say(MOD, mod[r - 1][1], r)
        verdict = _verdict(mod[r - 1][1], f"{rel}, field 'players.{MOD}'[{2 * r}]")
        stated = _text(verdict, "Whether there is a preference").casefold() == "yes"
        side = SIDES.get(_text(verdict, "Supported Side").casefold()) if stated else None
        events.append(TurnEvent("moderator_preference", turn=r, position=position, agent=side,
                                value=1.0 if stated else 0.0, detail=_text(verdict, "Reason") or None))
        last_verdict = (r, position, verdict) if stated else None
    final: tuple[str, int, int, str] | None = None  # (agent, turn, position, translation)
    if judge:
        say(JUDGE, judge[0][1], rounds + 1)
        say("user", judge[1][0], rounds + 1)
        position = say(JUDGE, judge[1][1], rounds + 1)
        verdict = _verdict(judge[1][1], f"{rel}, field 'players.{JUDGE}'[4]")
        final = (JUDGE, rounds + 1, position, _text(verdict, "Correct Translation"))
    elif last_verdict is not None and last_verdict[0] == rounds:
        final = (MOD, last_verdict[0], last_verdict[1], _text(last_verdict[2], "Correct Translation"))
    if final is None:
        label, why = "unknown", "the debate ended without a moderator preference or a judge"
    else:
        label, why = match_reference(final[3], correct, incorrect)
        events.append(TurnEvent("final_answer", turn=final[1], position=final[2], agent=final[0],
                                detail=final[3] or None))
    names = [AFF, NEG, MOD] + ([JUDGE] if judge else [])
    return Episode(
        episode_id=f"{NAME}/{Path(rel).stem}", source=NAME, group_id=f"{NAME}/{Path(rel).stem}",
        agents=tuple(Agent(n, model) for n in names), messages=tuple(messages),
        outcome=Outcome(label, "moderator_judge", unknown_reason=why),
        category="lexical_ambiguity", language="en", events=tuple(events),
    )


def read(raw: Path, settings: Limit, skips: SkipLog) -> SourceData:
    files = [(path, episode_from_record) for path in _files(raw)]
    return episodes_from_json_files(files, raw, NAME, settings.max_episodes, skips)


SOURCE = Source(
    name=NAME,
    title="MAD (Multi-Agents-Debate): 200 gpt-3.5-turbo debates (affirmative, negative, moderator, judge) on "
          "translating lexically ambiguous Chinese sentences",
    licence="GPL-3.0",
    hf_license="gpl-3.0",
    homepage="https://github.com/Skytliang/Multi-Agents-Debate",
    base_url="https://raw.githubusercontent.com/Skytliang/Multi-Agents-Debate/022a7a8eecda85844d336e9064cc556edb0445b3/",
    settings=partial(limit, source=NAME),
    read=read,
    success_outcomes=("correct",),
    billing="shared_history",
    turn="a debate round (affirmative, negative, moderator; round 1 also holds the task, the affirmative's base "
         "translation and the request to restate it); the judge's candidates, question and answer after the last "
         "round are one more turn",
    card="MAD (Liang et al., Encouraging Divergent Thinking in Large Language Models through Multi-Agent Debate) "
         "logged 200 debates of gpt-3.5-turbo players on translating lexically ambiguous Chinese sentences from "
         "CommonMT: an affirmative and a negative debater argue for up to four rounds, a moderator says after each "
         "round whether it prefers a side, and a judge decides when it never does. The upstream files keep each "
         "player's own view of the chat; one episode rebuilds the debate in order with each utterance once. The "
         "outcome is whether the final translation (judge's, else moderator's) matches the correct rather than "
         "the incorrect reference by normalised whole-word containment; free translations match neither and are "
         "`unknown`. Each moderator verdict is a `moderator_preference` turn event. Licence file `LICENSE` "
         "(GPL-3.0) at the pinned commit.",
)
