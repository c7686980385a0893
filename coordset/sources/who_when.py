"""Who&When (ICML 2025): 184 failure logs of LLM multi-agent systems, with human failure attribution.

Each log file is one episode: ``Who&When/Algorithm-Generated/<n>.json`` (126 AutoGen teams built by
CaptainAgent; the speaker is in ``name``) and ``Who&When/Hand-Crafted/<n>.json`` (58 Magentic-One
runs; the speaker is in ``role``). Every file is a failed run of a GAIA or AssistantBench task.

Messages: exactly one per ``history`` entry, in order and with nothing added, because the human label
``mistake_step`` is an index into ``history`` and must equal the message position. Hence turn =
position + 1 (each message is its own step) and mistake_step = turn - 1.

Speakers:
- Algorithm-Generated: ``Computer_terminal`` returns code output -> role ``tool``; every other name is
  an agent. The entry's own ``role`` (assistant/user, AutoGen's point of view) says nothing and is ignored.
- Hand-Crafted (Magentic-One): ``human`` -> speaker ``user``; ``ComputerTerminal`` (runs code, no LLM)
  -> role ``tool``; ``Orchestrator (thought)``, ``Orchestrator (-> WebSurfer)``, ``Orchestrator
  (termination condition)`` are all the one agent ``Orchestrator``. The shape has no addressee field,
  so the parenthesis stays in the text as a prefix: ``"(-> WebSurfer) Please search ..."``.
- Agents are the speakers that are not user/tool, in order of first appearance (team members listed in
  ``system_prompt`` who never speak are not agents).

Models: the Algorithm-Generated logs name none (None). Magentic-One logs carry stray autogen warnings
``<module>.py:N: UserWarning: Resolved model mismatch: <configured> != <answered>``; where the module is
an agent's own (orchestrator.py, coder.py = Assistant, file_surfer.py, multimodal_web_surfer.py) that
agent's model is the one the API answered with (``gpt-4o-2024-05-13``); other agents stay None.

Outcome: every run failed; ``Outcome("failure", "human_annotation")`` with the annotated
``mistake_agent`` (matched to a speaker case-insensitively: two files write ``Websurfer``),
``mistake_step`` and ``mistake_reason``, plus a ``decisive_error`` TurnEvent at that message. A step
outside the history or an agent that never speaks is a bad record. Billing: shared_history (AutoGen
group chat and the Magentic-One orchestrator re-send the conversation). group_id is ``question_ID``:
45 tasks appear in both subsets under the same id and are held out together.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

from coordset.records import BadRecord, SkipLog, numeric_order
from coordset.sources.episode import Agent, Episode, Outcome, TurnEvent, history_messages
from coordset.sources.registry import Limit, Source, SourceData, episodes_from_json_files, limit

NAME = "who_when"
ROOT = "Who&When"
# (folder, subset name, the history key that names the speaker)
SUBSETS = (("Algorithm-Generated", "algorithm_generated", "name"), ("Hand-Crafted", "hand_crafted", "role"))
TOOLS = {"Computer_terminal", "ComputerTerminal"}  # code executors: they return output, they are not LLM agents
USERS = {"human"}
# Magentic-One module -> the agent whose LLM calls it makes (for the "Resolved model mismatch" warnings).
AGENT_MODULES = {"orchestrator": "Orchestrator", "coder": "Assistant", "file_surfer": "FileSurfer",
                 "multimodal_web_surfer": "WebSurfer"}
_MODEL_WARNING = re.compile(r"(\w+)\.py:\d+: UserWarning: Resolved model mismatch: (\S+) != (\S+?)\.(?:\s|$)")
_QUALIFIED = re.compile(r"^(.+?) \((.+)\)$")  # "Orchestrator (-> WebSurfer)" -> ("Orchestrator", "-> WebSurfer")


def _files(raw: Path, folder: str) -> list[Path]:
    return numeric_order((raw / ROOT / folder).glob("*.json"))


def _field(record: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in record:
        raise BadRecord(f"{where}, field '{key}'", f"missing field '{key}'", "missing_field")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadRecord(f"{where}, field '{key}'", f"field '{key}' must be {names}, got {type(value).__name__}",
                        "wrong_type")
    return value


def _speaker(raw_speaker: str, text: str) -> tuple[str, str, str]:
    """(speaker, role, text) for one history entry; a qualified Magentic-One role keeps its qualifier in the text."""
    if raw_speaker in USERS:
        return "user", "user", text
    if raw_speaker in TOOLS:
        return raw_speaker, "tool", text
    qualified = _QUALIFIED.match(raw_speaker)
    if qualified:
        return qualified.group(1), "agent", f"({qualified.group(2)}) {text}"
    return raw_speaker, "agent", text


def _models(texts: list[str]) -> dict[str, str | None]:
    """Agent -> the model the API answered with, from warnings emitted by that agent's own module."""
    seen: dict[str, set[str]] = {}
    for text in texts:
        for module, _configured, answered in _MODEL_WARNING.findall(text):
            if module in AGENT_MODULES:
                seen.setdefault(AGENT_MODULES[module], set()).add(answered)
    # Several different models for one agent would be contradictory: say nothing rather than pick one.
    return {agent: next(iter(models)) if len(models) == 1 else None for agent, models in seen.items()}


def _mistake_step(record: dict[str, Any], n: int, where: str) -> int:
    value = _field(record, "mistake_step", (str, int), where)
    text = str(value).strip()
    if not re.fullmatch(r"\d+", text):
        raise BadRecord(f"{where}, field 'mistake_step'", f"mistake_step {value!r} is not a non-negative integer",
                        "bad_label")
    step = int(text)
    if step >= n:
        raise BadRecord(f"{where}, field 'mistake_step'", f"mistake_step {step} is outside the history "
                        f"(positions 0..{n - 1})", "mistake_step_out_of_range")
    return step


def human_labels(record: dict[str, Any], where: str, agents: list[str], n: int, *,
                 reason_required: bool = True) -> tuple[Outcome, tuple[TurnEvent, ...]]:
    """The annotators' failure attribution: ``failure`` with the agent and step at fault, and its event.

    ``mistake_agent`` was typed by people: it matches a speaker case-insensitively ("Websurfer" is the
    speaker "WebSurfer"). ``reason_required=False`` (AutoGen-style files of the ``local`` source) keeps a
    missing or non-string ``mistake_reason`` as None.
    """
    step = _mistake_step(record, n, where)
    labelled = _field(record, "mistake_agent", str, where).strip()
    by_folded = {a.casefold(): a for a in agents}
    if labelled.casefold() not in by_folded:
        raise BadRecord(f"{where}, field 'mistake_agent'", f"mistake_agent {labelled!r} is not an agent of this log "
                        f"(agents: {agents})", "mistake_agent_not_speaker")
    agent = by_folded[labelled.casefold()]
    if reason_required:
        reason: str | None = _field(record, "mistake_reason", str, where)
    else:
        reason = record["mistake_reason"] if isinstance(record.get("mistake_reason"), str) else None
    return (Outcome("failure", "human_annotation", mistake_agent=agent, mistake_step=step, mistake_reason=reason),
            (TurnEvent("decisive_error", turn=step + 1, position=step, agent=agent, detail=reason),))


def _entry(entry: dict[str, Any], where: str, speaker_key: str) -> tuple[str, str, str]:
    raw_speaker = _field(entry, speaker_key, str, where).strip()
    if not raw_speaker:
        raise BadRecord(f"{where}, field '{speaker_key}'", "empty speaker", "missing_speaker")
    return _speaker(raw_speaker, _field(entry, "content", str, where))


def episode_from_record(record: dict[str, Any], rel: str, subset: str, speaker_key: str) -> Episode:
    """One log file as an episode; raises BadRecord naming the file and field when it cannot be one."""
    history = _field(record, "history", list, rel)
    if not history:
        raise BadRecord(f"{rel}, field 'history'", "empty history: no message", "empty_conversation")
    question_id = _field(record, "question_ID", str, rel)
    if not question_id.strip():
        raise BadRecord(f"{rel}, field 'question_ID'", "empty question_ID", "missing_field")
    messages, agents = history_messages(history, rel, "history", partial(_entry, speaker_key=speaker_key))
    outcome, events = human_labels(record, rel, agents, len(history))
    models = _models([m.text for m in messages]) if subset == "hand_crafted" else {}
    level = record.get("level")
    episode_no = Path(rel).stem
    return Episode(
        episode_id=f"{NAME}/{subset}/{episode_no}", source=NAME, group_id=question_id,
        agents=tuple(Agent(a, models.get(a)) for a in agents), messages=tuple(messages), outcome=outcome,
        category=None if level is None else str(level), subset=subset, language="en", events=events,
    )


def read(raw: Path, settings: Limit, skips: SkipLog) -> SourceData:
    files = [(path, partial(episode_from_record, subset=subset, speaker_key=speaker_key))
             for folder, subset, speaker_key in SUBSETS for path in _files(raw, folder)]
    return episodes_from_json_files(files, raw, NAME, settings.max_episodes, skips)


SOURCE = Source(
    name=NAME,
    title="Who&When: 184 failed runs of LLM multi-agent systems (AutoGen/CaptainAgent teams, Magentic-One) with "
          "human labels of the agent and step that caused the failure",
    licence="MIT",
    hf_license="mit",
    homepage="https://github.com/mingyin1/Agents_Failure_Attribution",
    base_url="https://raw.githubusercontent.com/mingyin1/Agents_Failure_Attribution/"
             "3d9d568840f004b389638f97adf3e0ab8b5a9514/",
    settings=partial(limit, source=NAME),
    read=read,
    billing="shared_history",
    native_labels=("mistake_agent", "mistake_step"),
    turn="one message: every entry of the log's history is its own step (turn = position + 1; mistake_step = "
         "turn - 1)",
    card="Who&When (ICML 2025) collects 184 failed runs of LLM multi-agent systems on GAIA and AssistantBench "
         "tasks: 126 teams of experts generated by CaptainAgent (AutoGen group chat, `algorithm_generated`) and 58 "
         "runs of Magentic-One (`hand_crafted`). Each log is one episode with one message per logged step, in "
         "order; code terminals are tools, the Magentic-One orchestrator is one agent whose addressee or "
         "`(thought)` marker prefixes its text. The outcome is `failure` with the human annotators' "
         "`mistake_agent`, `mistake_step` (the message position of the decisive error) and `mistake_reason`, also "
         "given as a `decisive_error` turn event. Models are named only where the log itself does (Magentic-One: "
         "gpt-4o-2024-05-13 for the orchestrator and, where present, Assistant and FileSurfer). Licence file "
         "`LICENSE` at the pinned commit.",
)
