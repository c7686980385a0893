"""MAD debate reader: the 200 real mirrored debates, the rebuilt order, and bad records in small written files."""

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
from coordset.sources import mad_debate
from coordset.sources.episode import Episode
from coordset.sources.registry import Limit
from schemas import check
from schemas.normalized import EPISODES, MESSAGES, OUTCOMES, TURN_EVENTS
from tests.helpers import MIRROR, fetch_raw, repo_params

RAW = MIRROR / "mad_debate"
DEBATES = RAW / mad_debate.DEBATES
needs_mirror = pytest.mark.skipif(not RAW.is_dir(), reason=f"mirror not found at {RAW}")
AFF, NEG, MOD, JUDGE = "Affirmative side", "Negative side", "Moderator", "Judge"


def _settings(max_episodes: Any = None) -> Limit:
    """The reader's settings, checked from params as the normalize stage checks them."""
    return mad_debate.SOURCE.settings({"sources": {"mad_debate": {"max_episodes": max_episodes}}})


@pytest.fixture(scope="module")
def episodes() -> dict[str, Episode]:
    if not RAW.is_dir():
        pytest.skip(f"mirror not found at {RAW}")
    return {e.episode_id: e for e in mad_debate.read(RAW, _settings(), SkipLog("stop")).episodes}


@needs_mirror
def test_pins_are_the_mirrored_files() -> None:
    pins = read_pins(mad_debate.SOURCE.pin_file)
    manifest = read_pins(RAW / "MANIFEST.sha256")
    assert list(pins) == sorted(pins) and len(pins) == 201 and "LICENSE" in pins
    assert all(manifest[path] == digest for path, digest in pins.items())


@needs_mirror
def test_all_200_debates(episodes: dict[str, Episode]) -> None:
    assert len(episodes) == 200
    assert sum(len(e.messages) for e in episodes.values()) == 3327
    assert Counter(m.role for e in episodes.values() for m in e.messages) == {"agent": 2763, "user": 564}
    assert Counter(len(e.agents) for e in episodes.values()) == {4: 164, 3: 36}
    assert Counter(e.outcome.label for e in episodes.values()) == {"unknown": 193, "correct": 5, "incorrect": 2}
    assert {e.outcome.source for e in episodes.values()} == {"moderator_judge"}
    events = Counter((ev.kind, ev.agent, ev.value) for e in episodes.values() for ev in e.events)
    assert events == {("moderator_preference", None, 0.0): 709, ("moderator_preference", AFF, 1.0): 26,
                      ("moderator_preference", NEG, 1.0): 9, ("moderator_preference", None, 1.0): 1,
                      ("final_answer", JUDGE, None): 164, ("final_answer", MOD, None): 36}
    assert len({e.group_id for e in episodes.values()}) == 200
    for e in episodes.values():
        assert {a.model for a in e.agents} == {"gpt-3.5-turbo"}
        assert all(m.turn >= 1 and m.speaker for m in e.messages)
        assert [m.turn for m in e.messages] == sorted(m.turn for m in e.messages)


@needs_mirror
def test_every_turn_of_every_view_is_accounted_for(episodes: dict[str, Episode]) -> None:
    """Each reply appears once, by its player, in view order; every other prompt is a task prompt or a relay."""
    for n in range(200):
        players = json.loads((DEBATES / f"{n}.json").read_text())["players"]
        e = episodes[f"mad_debate/{n}"]
        said = [m.text for m in e.messages if m.role == "agent"]
        user = {m.text for m in e.messages if m.role == "user"}
        for name, chat in players.items():
            assert chat[0]["role"] == "system"  # the player's own instructions: not a message
            replies = [t["content"] for t in chat if t["role"] == "assistant"]
            assert replies == [m.text for m in e.messages if m.speaker == name]
            for t in chat[1:]:
                if t["role"] == "user" and t["content"] not in user:
                    others = [m.text for m in e.messages if m.role == "agent" and m.speaker != name]
                    assert any(u in t["content"] for u in others), (n, name, t["content"][:80])
        assert len(said) == sum(t["role"] == "assistant" for chat in players.values() for t in chat)


@needs_mirror
def test_debate_0_by_hand(episodes: dict[str, Episode]) -> None:
    e = episodes["mad_debate/0"]
    assert [a.name for a in e.agents] == [AFF, NEG, MOD, JUDGE]
    assert [(m.turn, m.speaker) for m in e.messages] == [
        (1, "user"), (1, AFF), (1, "user"), (1, AFF), (1, NEG), (1, MOD),
        (2, AFF), (2, NEG), (2, MOD), (3, AFF), (3, NEG), (3, MOD), (4, AFF), (4, NEG), (4, MOD),
        (5, JUDGE), (5, "user"), (5, JUDGE)]
    assert e.messages[0].text == ("Translate the following text from Chinese to English: "
                                  "他想拉同村的干部一起下水去贩毒。")
    assert e.messages[1].text == "He wanted to take fellow village officials with him to engage in drug trafficking."
    assert e.messages[2].text == "Restate the translation and provide your reasons."
    assert e.messages[4].text.startswith("I disagree with your translation. I believe the correct translation")
    assert e.messages[5].text.startswith("{'Whether there is a preference': 'No', 'Supported Side': ''")
    assert e.messages[15].text.startswith('Affirmative: "He wanted to take fellow village officials')
    assert [ev.value for ev in e.events if ev.kind == "moderator_preference"] == [0.0] * 4
    final = e.events[-1]
    assert (final.kind, final.agent, final.turn, final.position) == ("final_answer", JUDGE, 5, 17)
    assert final.detail == "He wanted to persuade fellow village officials to join him in drug trafficking."
    # The references say "take ... to sell drugs" / "pull ... to enter the water": neither is contained.
    assert e.outcome.label == "unknown" and "neither" in e.outcome.unknown_reason


@needs_mirror
def test_moderator_decides_and_labels_by_hand(episodes: dict[str, Episode]) -> None:
    e = episodes["mad_debate/122"]  # the moderator prefers the negative side in round 2: no judge
    assert [a.name for a in e.agents] == [AFF, NEG, MOD] and len(e.messages) == 9
    prefs = [(ev.turn, ev.position, ev.agent, ev.value) for ev in e.events if ev.kind == "moderator_preference"]
    assert prefs == [(1, 5, None, 0.0), (2, 8, NEG, 1.0)]
    assert (e.events[-1].agent, e.events[-1].detail) == (MOD, "This teacher is carefully nurturing his students.")
    assert episodes["mad_debate/17"].outcome.label == "correct"  # "This land is fertile." == correct reference
    assert episodes["mad_debate/35"].outcome.label == "incorrect"  # "Please string these two sentences together."


def test_reference_matching() -> None:
    match = mad_debate.match_reference
    assert match("This land is fertile.", "This land is fertile.", "This land is not thin.") == ("correct", None)
    assert match("Don't wrap two things.", "You mix two things.", "You dont WRAP two things")[0] == "incorrect"
    assert match("The land is rich.", "This land is fertile.", "This land is not thin.")[0] == "unknown"
    assert match("", "a b", "c d") == ("unknown", "no final translation")
    assert match("A year", "A year has days.", "A year has suns.")[1] == "final translation matches both references"
    assert match("fertile land", "Fertile", "thin")[0] == "correct"  # whole words: "fertile" inside, "thin" not


@needs_mirror
def test_max_episodes_keeps_the_first_in_numeric_order() -> None:
    data = mad_debate.read(RAW, _settings(3), SkipLog("stop"))
    assert [e.episode_id for e in data.episodes] == ["mad_debate/0", "mad_debate/1", "mad_debate/2"]
    with pytest.raises(ParamError, match="sources.mad_debate.max_episodes"):
        mad_debate.read(RAW, _settings(-1), SkipLog("stop"))


def _debate() -> dict[str, Any]:
    """A one-round debate the moderator settles, laid out as the upstream files are."""
    aff1, neg1 = "I say A.", "I disagree: B."
    verdict = "{'Whether there is a preference': 'Yes', 'Supported Side': 'Negative', 'Reason': 'B fits.', " \
              "'Correct Translation': 'This land is fertile.'}"
    return {
        "model_name": "gpt-3.5-turbo", "temperature": 0, "num_players": 3, "source": "这块地不薄。",
        "correct reference": "This land is fertile.", "incorrect reference": "This land is not thin.",
        "players": {
            AFF: [{"role": "system", "content": "You are a debater."},
                  {"role": "user", "content": "Translate the following text from Chinese to English: 这块地不薄。"},
                  {"role": "assistant", "content": "A"},
                  {"role": "user", "content": "Restate the translation and provide your reasons."},
                  {"role": "assistant", "content": aff1}],
            NEG: [{"role": "system", "content": "You are a debater."},
                  {"role": "user", "content": f"{aff1}\n\nYou disagree with my translation."},
                  {"role": "assistant", "content": neg1}],
            MOD: [{"role": "system", "content": "You are a moderator."},
                  {"role": "user", "content": f"Affirmative side arguing:\n{aff1}\n\nNegative side arguing: {neg1}"},
                  {"role": "assistant", "content": verdict}],
        },
    }


def _broken(change: str) -> Any:
    record = _debate()
    if change == "missing_field":
        del record["correct reference"]
    elif change == "inconsistent_views":
        record["players"][MOD][1]["content"] = "Negative side arguing: something else"
    elif change == "unparseable_verdict":
        record["players"][MOD][2]["content"] = "I prefer the negative side."
    elif change == "wrong_role":
        record["players"][NEG][2]["role"] = "user"
    elif change == "malformed_json":
        return '{"players": '
    return record


BAD = [("missing_field", "missing_field", "field 'correct reference'"),
       ("inconsistent_views", "inconsistent_views", "field 'players.Moderator'[1]"),
       ("unparseable_verdict", "unparseable_verdict", "field 'players.Moderator'[2]"),
       ("wrong_role", "inconsistent_views", "field 'players.Negative side'[2]"),
       ("malformed_json", "malformed_json", "MAD_Debate_Process/1.json")]


@needs_mirror
def test_normalize_with_mad_debate_switched_on(tmp_path: Path) -> None:
    """Off by default (GPL-3.0); named in ``sources.use`` it is fetched, normalized and counted: 200 episodes."""
    assert "mad_debate" not in repo_params()["sources"]["use"]
    params = repo_params(**{"sources.use": ["mad_debate"]})  # alone, to stay fast
    tables = normalize(params, fetch_raw(tmp_path / "raw", "mad_debate", params=params))
    for frame, schema in ((tables.episodes, EPISODES), (tables.messages, MESSAGES), (tables.outcomes, OUTCOMES),
                          (tables.turn_events, TURN_EVENTS)):
        check(frame, schema, schema.name)
    metrics = normalize_metrics(tables)
    assert metrics["by_source"] == {"mad_debate": {"episodes": 200, "messages": 3327, "skipped": 0}}
    assert metrics["episodes"] == 200 and metrics["skipped_total"] == 0
    assert tables.outcomes["outcome"].value_counts().to_dict() == {"unknown": 193, "correct": 5, "incorrect": 2}
    assert set(tables.episodes["billing"]) == {mad_debate.SOURCE.billing}


def _write(raw: Path, n: int, record: Any) -> None:
    path = raw / mad_debate.DEBATES / f"{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record if isinstance(record, str) else json.dumps(record, ensure_ascii=False))


def test_written_debate_shape(tmp_path: Path) -> None:
    _write(tmp_path, 0, _debate())
    (e,) = mad_debate.read(tmp_path, _settings(), SkipLog("stop")).episodes
    assert [(m.speaker, m.text) for m in e.messages] == [
        ("user", "Translate the following text from Chinese to English: 这块地不薄。"), (AFF, "A"),
        ("user", "Restate the translation and provide your reasons."), (AFF, "I say A."), (NEG, "I disagree: B."),
        (MOD, _debate()["players"][MOD][2]["content"])]
    assert e.outcome.label == "correct" and e.events[0].agent == NEG and e.events[0].detail == "B fits."


@pytest.mark.parametrize(("change", "reason", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_record_stops_or_is_counted(tmp_path: Path, change: str, reason: str, field: str) -> None:
    _write(tmp_path, 0, _debate())
    _write(tmp_path, 1, _broken(change))
    _write(tmp_path, 2, _debate())
    with pytest.raises(CoordsetError) as err:
        mad_debate.read(tmp_path, _settings(), SkipLog("stop"))
    assert "MAD_Debate_Process/1.json" in str(err.value) and field in str(err.value)
    skips = SkipLog("skip")
    data = mad_debate.read(tmp_path, _settings(), skips)
    assert [e.episode_id for e in data.episodes] == ["mad_debate/0", "mad_debate/2"]
    assert skips.counts == Counter({("mad_debate", reason): 1})
