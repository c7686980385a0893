"""LLM-Deliberation negotiation games: the game rule, deal parsing, the mirrored runs and bad records."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from coordset.errors import CoordsetError, ParamError
from coordset.normalize import check_episode
from coordset.records import SkipLog
from coordset.sources import llm_deliberation as ld
from coordset.sources.llm_deliberation import Sheet, evaluate, parse_deal
from tests.helpers import MIRROR

RAW = MIRROR / "llm_deliberation"
needs_mirror = pytest.mark.skipif(not RAW.is_dir(), reason=f"mirror not found at {RAW}")
BASE = (3, 3, 4, 4, 5)  # options per issue of the base game


def params(max_episodes: int | None = None, **extra: object) -> ld.Settings:
    """The reader's settings, checked from params as the normalize stage checks them."""
    return ld.source_settings({"sources": {"llm_deliberation": {"max_episodes": max_episodes, **extra}}})


# ---------------------------------------------------------------- the game rule on a hand-made game

def one_issue(p1: int, p2: int, x: int, y: int, p1_threshold: int = 10) -> dict[str, Sheet]:
    """Four parties, one issue with one option whose score is given; thresholds 10 unless said."""
    return {"P1": Sheet(((p1,),), p1_threshold), "P2": Sheet(((p2,),), 10), "X": Sheet(((x,),), 10),
            "Y": Sheet(((y,),), 10)}


def judge(sheets: dict[str, Sheet]) -> tuple[tuple[str, ...], bool]:
    verdict = evaluate(sheets, "P1", "P2", (1,))
    return verdict.accepting, verdict.passes


def test_every_party_accepting_passes() -> None:
    assert judge(one_issue(11, 11, 11, 11)) == (("P1", "P2", "X", "Y"), True)


def test_acceptance_is_strictly_above_the_threshold() -> None:
    accepting, _ = judge(one_issue(11, 11, 10, 11))
    assert accepting == ("P1", "P2", "Y")  # X scores exactly its threshold: it does not accept


def test_p1_bonus_clause() -> None:
    # All but p1 accept: passes when p1's score + 10 reaches (>=) its threshold.
    assert judge(one_issue(15, 11, 11, 11, p1_threshold=25)) == (("P2", "X", "Y"), True)
    assert judge(one_issue(14, 11, 11, 11, p1_threshold=25)) == (("P2", "X", "Y"), False)
    # p1 at exactly its threshold does not accept, but the bonus carries it.
    assert judge(one_issue(10, 11, 11, 11)) == (("P2", "X", "Y"), True)


def test_veto_clause_needs_both_veto_parties() -> None:
    assert judge(one_issue(11, 11, 0, 11)) == (("P1", "P2", "Y"), True)  # all but X, p1 and p2 among them
    assert judge(one_issue(11, 10, 11, 11)) == (("P1", "X", "Y"), False)  # all but p2
    assert judge(one_issue(11, 11, 0, 0))[1] is False  # two refuse
    assert judge(one_issue(0, 0, 11, 11))[1] is False
    assert evaluate(one_issue(11, 11, 0, 11), "P1", None, (1,)).passes is False  # a game without p2


def test_deal_score_sums_the_chosen_options() -> None:
    sheet = Sheet(((14, 8, 0), (11, 7, 0), (0, 5, 10, 17), (35, 29, 20, 0), (0, 5, 10, 15, 23)), 55)
    assert ld.deal_score(sheet, (1, 1, 4, 1, 5)) == 100  # SportCo's opening deal in the base game
    assert ld.format_deal((1, 1, 4, 1, 5)) == "A1,B1,C4,D1,E5"


# ---------------------------------------------------------------- deal parsing

@pytest.mark.parametrize("text, deal", [
    ("<DEAL> A1, B1, C4, D1, E5 </DEAL>", (1, 1, 4, 1, 5)),
    ("I propose <DEAL>A2,B2,C3,D1,E3</DEAL>.", (2, 2, 3, 1, 3)),
    ("<DEAL> A2, B2, C2, D2, and E3 </DEAL>", (2, 2, 2, 2, 3)),
    ("<deal>water-based (A1), some damage (B1), C4, D1 and no compensation, E5.</deal>", (1, 1, 4, 1, 5)),
    ("<DEAL>A2, B2, C2, D3, E2</DEAL>. Or else <DEAL>A2, B2, C2, D3, E3</DEAL>", (2, 2, 2, 3, 2)),
    ("<DEAL> A2 </DEAL> and <DEAL>A3, B3, C1, D2, E3</DEAL>", (3, 3, 1, 2, 3)),
    ("<DEAL> A1, B1, C4, D1, E5.", (1, 1, 4, 1, 5)),  # never closed
    ("I support the deal that includes A2, B2, C1, D1 and E3.", (2, 2, 1, 1, 3)),  # untagged, complete
])
def test_parse_deal_reads_the_proposal(text: str, deal: tuple[int, ...]) -> None:
    assert parse_deal(text, BASE) == (deal, None)


@pytest.mark.parametrize("text, problem", [
    ("<DEAL> A2, B2, C2 or C3, D2, E3 </DEAL>", "several options for issue C"),
    ("<DEAL> A3, C1, D3, E2 </DEAL>", "no option for issue B"),
    ("<DEAL>A2,B2,C3,D2.5,E2</DEAL>", "no option D2.5 in this game"),
    ("<DEAL> A1, B1, C4, D1, E5, F4 </DEAL>", "no option F4 in this game"),
    ("<DEAL> A4, B1, C4, D1, E5 </DEAL>", "no option A4 in this game"),
])
def test_parse_deal_reports_unreadable_proposals(text: str, problem: str) -> None:
    assert parse_deal(text, BASE) == (None, problem)


def test_a_message_without_a_deal_proposes_nothing() -> None:
    assert parse_deal("I agree with A2 and B2, but C4 is a problem for us.", BASE) == (None, None)
    assert parse_deal("A2 or A3, B2, C1, D1, E3", BASE) == (None, None)  # untagged and ambiguous


# ---------------------------------------------------------------- the mirrored runs

@pytest.fixture(scope="module")
def episodes() -> dict[str, ld.Episode]:
    if not RAW.is_dir():
        pytest.skip(f"mirror not found at {RAW}")
    data = ld.read(RAW, params(), SkipLog(policy="stop"))
    return {e.episode_id: e for e in data.episodes}


@needs_mirror
def test_reads_all_134_new_schema_runs(episodes: dict[str, ld.Episode]) -> None:
    assert len(episodes) == 134
    for ep in episodes.values():
        check_episode(ep)
    assert sum(len(e.messages) for e in episodes.values()) == 3451
    assert Counter(e.group_id for e in episodes.values()) == {
        "all_coop_base_7player_gpt4/all_coop_7players": 90, "all_coop_temp1_base_gpt4": 33, "all_greedy_base_gpt4": 11}
    assert Counter((e.outcome.label, e.outcome.unknown_reason) for e in episodes.values()) == {
        ("pass", None): 73, ("fail", None): 39, ("unknown", "run_stopped_early"): 21, ("unknown", "no_final_deal"): 1}
    kinds = Counter(ev.kind for e in episodes.values() for ev in e.events)
    assert kinds == {"deal_proposed": 3400, "deal_unparsed": 49}
    assert all(e.outcome.source == "game_rule" and e.subset == "history" for e in episodes.values())
    # The greedy runs' folder has no config.txt: agents and sheets come from games_descriptions/base.
    greedy = [e for e in episodes.values() if e.group_id == "all_greedy_base_gpt4"]
    assert {e.category for e in greedy} == {"base"} and len(greedy[0].agents) == 6


@needs_mirror
def test_hand_checked_seven_party_run(episodes: dict[str, ld.Episode]) -> None:
    # logs/all_coop_base_7player_gpt4/all_coop_7players/history18_36_22.json, read by hand: 30 rounds (opening
    # deal, 28 slots, final deal), SportCo (p1) last with <DEAL> A2, B2, C2, D2, E4, F1 </DEAL>. Scores from the
    # folder's scores_files: SportCo 7+5+5+22+15+0 = 54, not above its 54; DoT 74 > 56, Environmental League
    # 62 > 55, Heritage 79 > 50, Mayor 62 > 41, Other cities 40 > 34, Union 80 > 48: six accept, and p1's
    # 54 + 10 reaches 54, so the final deal passes by the bonus clause.
    ep = episodes["llm_deliberation/all_coop_base_7player_gpt4/all_coop_7players/history18_36_22"]
    assert [a.name for a in ep.agents] == ["Mayor", "Other cities", "Local Labour Union", "SportCo",
                                           "Department of Tourism", "Environmental League",
                                           "National Heritage Committee"]
    assert {a.model for a in ep.agents} == {"gpt-4-low"}
    assert ep.group_id == "all_coop_base_7player_gpt4/all_coop_7players"
    assert ep.category == "base_7players/cooperative"
    assert len(ep.messages) == 30 and [m.turn for m in ep.messages] == list(range(1, 31))
    assert [m.speaker for m in ep.messages[:4]] == ["SportCo", "Department of Tourism", "Mayor",
                                                    "Local Labour Union"]
    first, second, last = ep.messages[0], ep.messages[1], ep.messages[-1]
    assert first.text == "<DEAL> A1, B1, C4, D1, E5, F4 </DEAL>" and first.reasoning is None
    assert first.prompt.startswith(" The negotiation now begins. As a representative of SportCo")
    assert second.text.startswith("\nI propose a balanced deal that considers environmental concerns")
    assert second.reasoning.startswith("<SCRATCHPAD>\nFirst, let's calculate the score")
    assert "<ANSWER>" not in second.reasoning and second.text.strip() not in second.reasoning
    assert last.speaker == "SportCo" and "<DEAL> A2, B2, C2, D2, E4, F1 </DEAL>" in last.text
    final = [ev for ev in ep.events if ev.position == 29]
    assert final == [ld.TurnEvent("deal_proposed", 30, 29, "SportCo", 6.0, "A2,B2,C2,D2,E4,F1 pass")]
    # The opening deal: only SportCo (100 > 54) and the Mayor (12+10+0+36+8+0 = 66 > 41) accept.
    assert ep.events[0] == ld.TurnEvent("deal_proposed", 1, 0, "SportCo", 2.0, "A1,B1,C4,D1,E5,F4 fail")
    assert ep.outcome == ld.Outcome("pass", "game_rule", any_deal_passed=True)


@needs_mirror
def test_hand_checked_failing_six_party_run(episodes: dict[str, ld.Episode]) -> None:
    # logs/all_coop_temp1_base_gpt4/history10_14_00.json: SportCo's final <DEAL>A2, B2, C3, D1, E3</DEAL>.
    # SportCo 8+7+10+35+10 = 70 > 55, Mayor 72 > 30, Other cities 40 > 31, Union 81 > 50, but the Department of
    # Tourism 11+20+4+10+15 = 60 (threshold 65) and the Environmental League 22+25 = 47 (55) refuse: fail.
    ep = episodes["llm_deliberation/all_coop_temp1_base_gpt4/history10_14_00"]
    assert len(ep.agents) == 6 and len(ep.messages) == 26
    assert ep.events[-1].detail == "A2,B2,C3,D1,E3 fail" and ep.events[-1].value == 4.0
    assert ep.outcome.label == "fail" and ep.outcome.any_deal_passed is True


@needs_mirror
def test_runs_that_stopped_early_have_unknown_outcomes(episodes: dict[str, ld.Episode]) -> None:
    ep = episodes["llm_deliberation/all_coop_temp1_base_gpt4/history17_35_29"]  # 2 of 26 rounds logged
    assert len(ep.messages) == 2
    assert ep.outcome.label == "unknown" and ep.outcome.unknown_reason == "run_stopped_early"


@needs_mirror
def test_max_episodes_keeps_the_first_runs_in_file_order() -> None:
    data = ld.read(RAW, params(3), SkipLog())
    assert [e.episode_id.rsplit("/", 1)[1] for e in data.episodes] == ["history00_00_14", "history00_04_45",
                                                                       "history00_09_17"]


@needs_mirror
def test_archives_are_read_when_asked() -> None:
    data = ld.read(RAW, params(archives=True), SkipLog(policy="stop"))
    archived = [e for e in data.episodes if e.subset == "archive"]
    assert len(archived) == 513 and len(data.episodes) == 647
    for ep in archived:
        check_episode(ep)
    unknown = Counter(e.outcome.unknown_reason for e in archived if e.outcome.label == "unknown")
    assert unknown["game_scores_unknown"] == 61  # the two harder base variants and the older game3
    three = [e for e in archived if e.group_id == "mixtralThreePlayers_base_all_coop"]
    assert {len(e.agents) for e in three} == {3} and {a.model for e in three for a in e.agents} == {"mixtral"}
    # Models from the archive's own initial_prompts.txt: p1 on GPT-3.5, the rest on GPT-4.
    leading = next(e for e in archived if e.group_id == "output_base_leading_gpt3_rest_gpt4_allcoop")
    models = {a.name: a.model for a in leading.agents}
    assert models["SportCo"] == "gpt-3.5-turbo-16k-0613" and models["The Mayor"] == "gpt-4-0613"


def test_params() -> None:
    pins = {"LICENSE": "0" * 64, "logs/a.zip": "1" * 64, "logs/all_x/history1.json": "2" * 64}
    assert set(ld.SOURCE.pinned_files(pins, params())) == {"LICENSE", "logs/all_x/history1.json"}
    assert set(ld.SOURCE.pinned_files(pins, params(archives=True))) == set(pins)
    with pytest.raises(ParamError, match="archives"):
        params(archives="yes")
    with pytest.raises(ParamError, match="max_episodes"):
        params(0)


# ---------------------------------------------------------------- bad records on small written files

def write_game(folder: Path) -> None:
    """A three-party game with two issues: P1 (p1), P2 (p2) and X."""
    (folder / "scores_files").mkdir(parents=True)
    (folder / "config.txt").write_text("P1,p1,p1,cooperative,m1\nP2,p2,p2,cooperative,m2\nX,x,player,greedy,m3\n")
    for stem in ("p1", "p2", "x"):
        (folder / "scores_files" / f"{stem}.txt").write_text("10, 0\n0, 10\n5\n")


def round_(agent: str, text: str) -> dict[str, str]:
    return {"agent": agent, "prompt": "p", "full_answer": f"<SCRATCHPAD>s</SCRATCHPAD><ANSWER>{text}</ANSWER>",
            "public_answer": text}


def write_run(folder: Path, name: str, rounds: list[dict[str, str]] | None = None, raw: str | None = None) -> None:
    rounds = rounds if rounds is not None else [
        round_("P1", "<DEAL> A1, B1 </DEAL>"), round_("X", "ok"), round_("P2", "fine"),
        round_("P1", "<DEAL> A1, B2 </DEAL>")]
    record = {"rounds": rounds, "plan": {}, "slot_assignment": ["X", "P2"], "finished_rounds": len(rounds) - 1}
    (folder / name).write_text(raw if raw is not None else json.dumps(record))


@pytest.fixture()
def game(tmp_path: Path) -> Path:
    folder = tmp_path / "logs" / "all_tiny"
    write_game(folder)
    write_run(folder, "history01.json")
    return tmp_path


def test_small_game_reads_and_judges(game: Path) -> None:
    data = ld.read(game, params(), SkipLog(policy="stop"))
    (ep,) = data.episodes
    assert ep.episode_id == "llm_deliberation/all_tiny/history01" and ep.group_id == "all_tiny"
    assert ep.category == "all_tiny/cooperative+greedy"
    assert [(a.name, a.model) for a in ep.agents] == [("P1", "m1"), ("P2", "m2"), ("X", "m3")]
    assert ep.messages[1].reasoning == "<SCRATCHPAD>s</SCRATCHPAD>"
    # Every sheet is the same: A1,B1 scores 10 and A1,B2 scores 20, both above the threshold 5.
    assert [ev.detail for ev in ep.events] == ["A1,B1 pass", "A1,B2 pass"]
    assert ep.outcome.label == "pass"


@pytest.mark.parametrize("name, kwargs, field", [
    ("history02.json", {"raw": '{"rounds": [{"agent": "P1", '}, "malformed JSON"),
    ("history02.json", {"rounds": [round_("P1", "<DEAL> A1, B1 </DEAL>"), round_("Stranger", "hi")]},
     "round 1, field 'agent'"),
    ("history02.json", {"rounds": []}, "field 'rounds'"),
    ("history02.json", {"rounds": [{"agent": "P1", "prompt": "p", "full_answer": "x"}]}, "public_answer"),
])
def test_bad_history_records(game: Path, name: str, kwargs: dict, field: str) -> None:
    write_run(game / "logs" / "all_tiny", name, **kwargs)
    with pytest.raises(CoordsetError) as err:
        ld.read(game, params(), SkipLog(policy="stop"))
    assert "logs/all_tiny/history02.json" in str(err.value) and field in str(err.value)
    skips = SkipLog(policy="skip")
    data = ld.read(game, params(), skips)
    assert [e.episode_id for e in data.episodes] == ["llm_deliberation/all_tiny/history01"]
    assert sum(skips.counts.values()) == 1


def test_a_run_folder_with_a_broken_config_skips_its_runs(game: Path) -> None:
    (game / "logs" / "all_tiny" / "config.txt").write_text("P1,p1\n")
    with pytest.raises(CoordsetError, match=r"logs/all_tiny/config.txt, line 1"):
        ld.read(game, params(), SkipLog(policy="stop"))
    skips = SkipLog(policy="skip")
    assert ld.read(game, params(), skips).episodes == []
    assert skips.counts == {("llm_deliberation", "bad_config"): 1}


def test_archive_entry_that_is_not_json(game: Path) -> None:
    good = {"rounds": [["SportCo", "<DEAL> A1, B1, C4, D1, E5 </DEAL>"], ["The Mayor", "hello"]],
            "plan": {}, "voting_sessions": {"0": {"deal_suggestion": "<DEAL> A2, B2, C2, D2, E3 </DEAL>"}},
            "finished_rounds": 1}
    (game / "games_descriptions").mkdir()
    base = game / "games_descriptions" / "base"
    (base / "scores_files").mkdir(parents=True)
    (base / "config.txt").write_text("Mayor,mayor,player,cooperative,g\nSportCo,SportCo,p1,cooperative,g\n")
    (base / "scores_files" / "mayor.txt").write_text("14, 8, 0\n12, 8, 0\n24, 18, 12, 0\n40, 30, 23, 0\n"
                                                      "0, 2, 4, 7, 10\n30\n")
    (base / "scores_files" / "SportCo.txt").write_text("14, 8, 0\n11, 7, 0\n0, 5, 10, 17\n35, 29, 20, 0\n"
                                                        "0, 5, 10, 15, 23\n55\n")
    with zipfile.ZipFile(game / "logs" / "llama3_70b.zip", "w") as zf:
        zf.writestr("run/answers01.json", json.dumps(good))
        zf.writestr("run/answers02.json", '{"rounds": [["SportCo", ')
    with pytest.raises(CoordsetError) as err:
        ld.read(game, params(archives=True), SkipLog(policy="stop"))
    assert "logs/llama3_70b.zip: run/answers02.json" in str(err.value) and "malformed JSON" in str(err.value)
    skips = SkipLog(policy="skip")
    data = ld.read(game, params(archives=True), skips)
    archived = [e for e in data.episodes if e.subset == "archive"]
    assert [e.episode_id for e in archived] == ["llm_deliberation/llama3_70b/run/answers01"]
    # SportCo 8+7+5+29+10 = 59 > 55 and the Mayor 8+8+18+30+4 = 68 > 30: both accept the final deal.
    assert archived[0].outcome.label == "pass" and len(archived[0].messages) == 3
    assert skips.counts == {("llm_deliberation", "malformed_json"): 1}
