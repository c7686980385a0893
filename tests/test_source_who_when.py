"""Who&When reader: the 184 real mirrored logs, hand-checked episodes, and bad records in small written files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from coordset.errors import CoordsetError, ParamError
from coordset.fetch import read_pins
from coordset.normalize import normalize, normalize_metrics
from coordset.records import SkipLog
from coordset.sources import who_when
from coordset.sources.episode import Episode
from coordset.sources.registry import Limit
from tests.helpers import MIRROR, fetch_raw, repo_params

RAW = MIRROR / "who_when"
needs_mirror = pytest.mark.skipif(not RAW.is_dir(), reason=f"mirror not found at {RAW}")


def _settings(max_episodes: Any = None) -> Limit:
    """The reader's settings, checked from params as the normalize stage checks them."""
    return who_when.SOURCE.settings({"sources": {"who_when": {"max_episodes": max_episodes}}})


@pytest.fixture(scope="module")
def episodes() -> dict[str, Episode]:
    if not RAW.is_dir():
        pytest.skip(f"mirror not found at {RAW}")
    data = who_when.read(RAW, _settings(), SkipLog("stop"))
    return {e.episode_id: e for e in data.episodes}


@needs_mirror
def test_pins_are_the_mirrored_files() -> None:
    pins = read_pins(who_when.SOURCE.pin_file)
    manifest = read_pins(RAW / "MANIFEST.sha256")
    assert list(pins) == sorted(pins) and len(pins) == 185
    assert all(manifest[path] == digest for path, digest in pins.items())
    assert "LICENSE" in pins and sum(p.startswith("Who&When/Hand-Crafted/") for p in pins) == 58


@needs_mirror
def test_all_184_logs_become_episodes(episodes: dict[str, Episode]) -> None:
    assert len(episodes) == 184
    assert Counter(e.subset for e in episodes.values()) == {"algorithm_generated": 126, "hand_crafted": 58}
    assert sum(len(e.messages) for e in episodes.values()) == 4092
    roles = Counter(m.role for e in episodes.values() for m in e.messages)
    assert roles == {"agent": 3721, "tool": 313, "user": 58}
    # 45 tasks were run by both systems under the same question_ID: they share a group.
    assert len({e.group_id for e in episodes.values()}) == 139
    for e in episodes.values():
        names = [a.name for a in e.agents]
        assert len(names) == len(set(names)) and names
        assert [m.turn for m in e.messages] == list(range(1, len(e.messages) + 1))
        assert all(m.speaker in names for m in e.messages if m.role == "agent")
        assert not {m.speaker for m in e.messages if m.role != "agent"} & set(names)
        out = e.outcome
        assert (out.label, out.source) == ("failure", "human_annotation")
        assert out.mistake_agent in names and 0 <= out.mistake_step < len(e.messages)
        (event,) = e.events
        assert (event.kind, event.position, event.turn, event.agent) == (
            "decisive_error", out.mistake_step, out.mistake_step + 1, out.mistake_agent)


@needs_mirror
def test_algorithm_generated_1_by_hand(episodes: dict[str, Episode]) -> None:
    e = episodes["who_when/algorithm_generated/1"]
    assert [(m.speaker, m.role) for m in e.messages] == [
        ("Excel_Expert", "agent"), ("Computer_terminal", "tool"), ("BusinessLogic_Expert", "agent"),
        ("Computer_terminal", "tool"), ("DataVerification_Expert", "agent"), ("DataVerification_Expert", "agent")]
    assert [a.name for a in e.agents] == ["Excel_Expert", "BusinessLogic_Expert", "DataVerification_Expert"]
    assert all(a.model is None for a in e.agents)
    assert e.messages[0].text.startswith("You are given: (1) a task and advises from your manager")
    assert e.messages[3].text == "exitcode: 0 (execution succeeded)\nCode output: 4\n"
    assert e.messages[5].text == "TERMINATE" and e.messages[5].turn == 6
    assert e.outcome.mistake_agent == "Excel_Expert" and e.outcome.mistake_step == 0
    assert e.outcome.mistake_reason.startswith("The code failed to handle edge cases in the 'Street Address'")
    assert e.group_id == "4d51c4bf-4b0e-4f3d-897b-3f6687a7d9f2" and e.category == "2"


@needs_mirror
def test_hand_crafted_1_by_hand(episodes: dict[str, Episode]) -> None:
    e = episodes["who_when/hand_crafted/1"]
    assert len(e.messages) == 29
    assert [(a.name, a.model) for a in e.agents] == [("Orchestrator", "gpt-4o-2024-05-13"), ("WebSurfer", None)]
    assert (e.messages[0].speaker, e.messages[0].role) == ("user", "user")
    assert e.messages[0].text.startswith("Where can I take martial arts classes within a five-minute walk")
    assert e.messages[1].speaker == "Orchestrator" and e.messages[1].text.startswith("(thought) Initial plan:")
    assert e.messages[3].text == ("(-> WebSurfer) Please search for martial arts schools or studios near the New "
                                  "York Stock Exchange and provide a list of their names and addresses.")
    assert e.outcome.mistake_agent == "WebSurfer" and e.outcome.mistake_step == 12
    assert e.messages[12].speaker == "WebSurfer" and e.messages[12].text.startswith("I clicked 'NY Jidokwan Taekwondo'")
    assert e.category is None  # no `level` in this file
    assert e.group_id == episodes["who_when/algorithm_generated/125"].group_id  # same task, other system


@needs_mirror
def test_mistake_agent_case_is_normalised(episodes: dict[str, Episode]) -> None:
    e = episodes["who_when/hand_crafted/11"]  # the file says "Websurfer"
    assert e.outcome.mistake_agent == "WebSurfer" and e.outcome.mistake_step == 24
    assert e.messages[24].speaker == "WebSurfer" and len(e.messages) == 130


@needs_mirror
def test_normalize_metrics_count_each_subset(tmp_path: Path) -> None:
    params = repo_params(**{"sources.use": ["who_when"]})
    tables = normalize(params, fetch_raw(tmp_path / "raw", "who_when", params=params))
    counts = normalize_metrics(tables)["by_source"]["who_when"]
    assert counts == {"episodes": 184, "messages": 4092, "skipped": 0,
                      "by_subset": {"algorithm_generated": 126, "hand_crafted": 58}}


@needs_mirror
def test_max_episodes_keeps_the_first_in_numeric_order() -> None:
    data = who_when.read(RAW, _settings(3), SkipLog("stop"))
    assert [e.episode_id for e in data.episodes] == [f"who_when/algorithm_generated/{n}" for n in (1, 2, 3)]
    with pytest.raises(ParamError, match="sources.who_when.max_episodes"):
        who_when.read(RAW, _settings("all"), SkipLog("stop"))


def _record(**overrides: Any) -> dict[str, Any]:
    record = {
        "question": "How many?", "question_ID": "q-1", "level": "1", "ground_truth": "3", "is_correct": False,
        "history": [
            {"content": "Let me compute it.\n```python\nprint(2)\n```", "role": "assistant", "name": "Math_Expert"},
            {"content": "exitcode: 0 (execution succeeded)\nCode output: 2", "role": "user",
             "name": "Computer_terminal"},
            {"content": "The answer is 2. TERMINATE", "role": "user", "name": "Verification_Expert"},
        ],
        "mistake_agent": "Math_Expert", "mistake_step": "0", "mistake_reason": "Wrong formula.", "system_prompt": {},
    }
    record.update(overrides)
    return record


def _write(raw: Path, n: int, record: Any) -> None:
    path = raw / "Who&When" / "Algorithm-Generated" / f"{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record if isinstance(record, str) else json.dumps(record))


BAD = [
    ("empty_conversation", _record(history=[]), "field 'history'"),
    ("mistake_step_out_of_range", _record(mistake_step="3"), "field 'mistake_step'"),
    ("bad_label", _record(mistake_step="two"), "field 'mistake_step'"),
    ("mistake_agent_not_speaker", _record(mistake_agent="Computer_terminal"), "field 'mistake_agent'"),
    ("missing_field", {k: v for k, v in _record().items() if k != "mistake_reason"}, "field 'mistake_reason'"),
    ("wrong_type", _record(history=[{"content": 7, "name": "Math_Expert"}]), "history[0], field 'content'"),
    ("malformed_json", '{"history": [', "Algorithm-Generated/2.json"),
]


@pytest.mark.parametrize(("reason", "record", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_record_stops_or_is_counted(tmp_path: Path, reason: str, record: Any, field: str) -> None:
    _write(tmp_path, 1, _record())
    _write(tmp_path, 2, record)
    _write(tmp_path, 3, _record(question_ID="q-3"))
    with pytest.raises(CoordsetError) as err:
        who_when.read(tmp_path, _settings(), SkipLog("stop"))
    assert "Who&When/Algorithm-Generated/2.json" in str(err.value) and field in str(err.value)
    skips = SkipLog("skip")
    data = who_when.read(tmp_path, _settings(), skips)
    assert [e.episode_id for e in data.episodes] == ["who_when/algorithm_generated/1", "who_when/algorithm_generated/3"]
    assert skips.counts == Counter({("who_when", reason): 1})


def test_written_record_shape(tmp_path: Path) -> None:
    hand = tmp_path / "Who&When" / "Hand-Crafted" / "1.json"
    hand.parent.mkdir(parents=True)
    hand.write_text(json.dumps({
        "question": "Q?", "question_ID": "h-1", "ground_truth": "x", "is_corrected": False,
        "history": [{"content": "Q?", "role": "human"},
                    {"content": "Plan.", "role": "Orchestrator (thought)"},
                    {"content": "Search it.", "role": "Orchestrator (-> WebSurfer)"},
                    {"content": "I typed Q.", "role": "WebSurfer"},
                    {"content": "ok", "role": "ComputerTerminal"}],
        "mistake_agent": "websurfer", "mistake_step": 3, "mistake_reason": "Wrong page."}))
    (e,) = who_when.read(tmp_path, _settings(), SkipLog("stop")).episodes
    assert [(m.speaker, m.role, m.text) for m in e.messages] == [
        ("user", "user", "Q?"), ("Orchestrator", "agent", "(thought) Plan."),
        ("Orchestrator", "agent", "(-> WebSurfer) Search it."), ("WebSurfer", "agent", "I typed Q."),
        ("ComputerTerminal", "tool", "ok")]
    assert [a.name for a in e.agents] == ["Orchestrator", "WebSurfer"]
    assert (e.outcome.mistake_agent, e.outcome.mistake_step, e.subset) == ("WebSurfer", 3, "hand_crafted")
