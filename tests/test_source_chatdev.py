"""ChatDev 1.0 WareHouse logs: the real mirrored runs, and small logs the tests write."""

from __future__ import annotations

import calendar
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from coordset.enrich.tokens import load_encoding
from coordset.errors import CoordsetError, ParamError
from coordset.normalize import check_episode
from coordset.records import SkipLog
from coordset.sources import chatdev
from coordset.sources.episode import Episode
from coordset.sources.registry import Limit
from tests.helpers import MIRROR

RAW = MIRROR / "chatdev"
needs_mirror = pytest.mark.skipif(not RAW.is_dir(), reason=f"mirror not found at {RAW}")
SETTINGS = chatdev.SOURCE.settings({"sources": {"chatdev": {"max_episodes": None}}})
BMI = "BMI Calculator_DefaultOrganization_20230918110521"


@pytest.fixture(scope="module")
def mirrored() -> tuple[list[Episode], SkipLog]:
    if not RAW.is_dir():
        pytest.skip(f"mirror not found at {RAW}")
    skips = SkipLog(policy="skip")
    return chatdev.read(RAW, SETTINGS, skips).episodes, skips


def _by_group(episodes: list[Episode], group: str) -> Episode:
    (episode,) = [e for e in episodes if e.group_id == group]
    return episode


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return float(calendar.timegm(dt.datetime(year, month, day, hour, minute, second).timetuple()))


@needs_mirror
def test_mirror_counts(mirrored: tuple[list[Episode], SkipLog]) -> None:
    episodes, skips = mirrored
    assert len(episodes) == 56
    messages = [m for e in episodes for m in e.messages]
    assert len(messages) == 1452
    assert Counter(m.role for m in messages) == {"agent": 1366, "user": 86}
    # Every usage block of the kept logs went to a reply; only the 5 replies of the one run that logged
    # HTTP lines instead of usage (car_THUNLPDemo_2024) have none.
    assert sum(m.logged_prompt_tokens is not None for m in messages) == 1361
    assert sum(m.role == "agent" and m.logged_completion_tokens is None for m in messages) == 5
    assert dict(skips.counts) == {("chatdev", "no_messages"): 1, ("chatdev", "legacy_format"): 3,
                                  ("chatdev", "duplicate_log"): 1, ("chatdev", "missing_log"): 1}
    assert Counter(e.category for e in episodes) == {"gpt-3.5-turbo-16k-0613": 45, None: 6, "gpt-4": 4,
                                                     "gpt-3.5-turbo-16k": 1}
    assert {e.outcome.label for e in episodes} == {"unknown"}
    # GPT-4 runs call gpt-3.5 for TestErrorSummary only: their agents are still gpt-4 (musicplayer's tester: a 5-5 tie).
    assert {a.model for e in episodes if e.category == "gpt-4" for a in e.agents} == {"gpt-4"}
    assert len({e.episode_id for e in episodes}) == 56
    for episode in episodes:
        check_episode(episode)  # what normalize requires of every source
        assert episode.messages[0].role == "user" and episode.messages[0].turn == 1


@needs_mirror
def test_mirror_stops_on_first_bad_log() -> None:
    with pytest.raises(CoordsetError, match=r"Calculator_THUNLP_20230628184918/20230628184918\.log, message header"):
        chatdev.read(RAW, SETTINGS, SkipLog(policy="stop"))


@needs_mirror
def test_bmi_calculator_by_hand(mirrored: tuple[list[Episode], SkipLog]) -> None:
    episode = _by_group(mirrored[0], BMI)
    assert episode.episode_id == f"chatdev/{BMI}/{BMI}"
    assert [(a.name, a.model) for a in episode.agents] == [
        (name, "gpt-3.5-turbo-16k-0613") for name in ("Chief Product Officer", "Chief Technology Officer",
                                                     "Programmer", "Code Reviewer", "Chief Executive Officer")]
    speakers = [m.speaker for m in episode.messages]
    assert speakers == ["user", "Chief Product Officer", "Chief Technology Officer"] + [
        "Programmer", "Code Reviewer"] * 3 + ["Programmer", "Programmer", "Chief Executive Officer",
                                             "Chief Product Officer"]
    assert [m.turn for m in episode.messages] == [1, *range(1, 13)]
    first, last = episode.messages[0], episode.messages[-1]
    assert first.text == "Build a BMI calculator application that will take necessary inputs and then will out the BMI"
    assert first.tstamp == _utc(2023, 9, 18, 11, 5, 21)  # "[2023-18-09 11:05:21 INFO] **[Preprocessing]**"
    # Line 274: "[2023-18-09 11:06:37 INFO] Programmer: **Programmer<->Chief Technology Officer on : Coding,
    # turn 0**", after the usage block of lines 267-270 (prompt 567, completion 500).
    coding = episode.messages[3]
    assert coding.text.startswith("main.py\n\n```python") and "[ChatDev is" not in coding.text
    assert (coding.logged_prompt_tokens, coding.logged_completion_tokens) == (567, 500)
    assert coding.tstamp == _utc(2023, 9, 18, 11, 6, 37)
    assert (episode.messages[1].text, episode.messages[1].logged_prompt_tokens) == ("<INFO> Application", 440)
    assert last.text.startswith("# BMI Calculator Application User Manual\n\n## Introduction")
    assert last.text.endswith("track your BMI and monitor your health.")
    assert (last.logged_prompt_tokens, last.logged_completion_tokens) == (989, 398)
    assert last.tstamp == _utc(2023, 9, 18, 11, 12, 20)
    assert [(e.kind, e.turn, e.value) for e in episode.events] == [("test_report", 9, 1.0)]
    assert episode.outcome.source == "none" and episode.outcome.unknown_reason == "no outcome in source"


@needs_mirror
def test_paired_replies_prompt_engineer_and_human_comments(mirrored: tuple[list[Episode], SkipLog]) -> None:
    episode = _by_group(mirrored[0], "2048_THUNLP_20230822144615")
    task, rewrite, *_ = episode.messages
    assert task.text == "Design a simple 2048 game with 10*10 grids"  # the log's original, not meta.txt's rewrite
    assert (rewrite.speaker, rewrite.logged_prompt_tokens, rewrite.logged_completion_tokens) == (
        "Prompt Engineer", 172, 198)
    # One ChatDev turn with two calls: usage blocks 2064/238 then 2332/5, replies reviewer then programmer.
    review, answer = episode.messages[5], episode.messages[6]
    assert (review.speaker, review.logged_prompt_tokens, review.logged_completion_tokens) == (
        "Code Reviewer", 2064, 238)
    assert (answer.speaker, answer.text, answer.logged_completion_tokens) == ("Programmer", "<INFO> Finished.", 5)
    assert review.turn == answer.turn == 5

    gomoku = _by_group(mirrored[0], "Gomoku_HumanAgentInteraction_20230920135038")
    comments = [(m.text, m.turn) for m in gomoku.messages[1:] if m.role == "user"]
    assert comments == [("Please add a restart button.", 10),
                        ("Please add a current status bar showing whose turn it is.", 11), ("End", 12)]


@needs_mirror
def test_rebuilt_prompt_is_what_the_call_sent(mirrored: tuple[list[Episode], SkipLog]) -> None:
    # 2048, lines 1007-1267: the Programmer answers the Code Reviewer (user role of CodeReviewComment, turn 0).
    # Its call sent the Programmer's system prompt (printed in brackets before the reviewer's reply, line 1235),
    # the phase prompt (line 1007's [Start Chat] text after the reviewer's bracketed system prompt, kept by the
    # Programmer as its own message) and the reviewer's comment; the usage block of line 1223 logs 2332 prompt tokens.
    episode = _by_group(mirrored[0], "2048_THUNLP_20230822144615")
    answer = episode.messages[6]
    assert (answer.speaker, answer.logged_prompt_tokens) == ("Programmer", 2332)
    prompt = answer.prompt
    assert prompt is not None
    system, phase, review = prompt.split("\n\n[")
    assert system.startswith("[system]\nChatDev is a software company") and "\nYou are Programmer. " in system
    assert phase.startswith("assistant]\nAccording to the new user's task and our software designs: \nTask: ")
    assert phase.endswith('return only one line like "<INFO> Finished".')
    assert review == "user]\n" + episode.messages[5].text  # the reviewer's reply, the turn before
    assert "You are Code Reviewer." not in prompt  # the other role's system prompt is not sent
    # The reviewer's own call (assistant role) sent its system prompt and the phase prompt only.
    assert episode.messages[5].prompt.count("\n\n[") == 1 and "You are Code Reviewer." in episode.messages[5].prompt
    # Counted as enrich does (one user message: 3 + 1 role token, 3 for the reply) it is within 5 tokens of the
    # logged count; the chat format's 3 messages at 3 tokens + role each would be paid by the role lines.
    encoding = load_encoding("cl100k_base", mirror=MIRROR)
    assert abs(len(encoding.encode_ordinary(prompt)) + 3 + 1 + 3 - 2332) <= 5


@needs_mirror
def test_rebuilt_prompts_match_the_logged_usage(mirrored: tuple[list[Episode], SkipLog]) -> None:
    encoding = load_encoding("cl100k_base", mirror=MIRROR)
    calls = [m for e in mirrored[0] for m in e.messages if m.role == "agent"]
    assert all(m.prompt for m in calls)
    assert chatdev.SOURCE.billing == "logged_prompt"
    logged = [m for m in calls if m.logged_prompt_tokens]
    ours = [len(t) + 3 + 1 + 3 for t in encoding.encode_ordinary_batch([m.prompt for m in logged])]
    diffs = [n - m.logged_prompt_tokens for n, m in zip(ours, logged, strict=True)]
    # Within 6 tokens (the role lines against the chat format's 4 tokens a message) but for 8 calls: retried calls in
    # logs without Send blocks (Poker1, RPG_V1 x4, LifeSimulator_v2, tiny_rogue_like, musicplayer), whose logged
    # prompts hold 1-4 more copies of the input than the log shows.
    assert len(logged) == 1361 and sum(abs(d) <= 6 for d in diffs) == 1353
    relative = sorted(abs(d) / m.logged_prompt_tokens for d, m in zip(diffs, logged, strict=True))
    assert relative[len(relative) // 2] < 0.001


@needs_mirror
def test_max_episodes_keeps_the_first_in_file_order() -> None:
    data = chatdev.read(RAW, Limit(max_episodes=2), SkipLog(policy="stop"))
    assert [e.group_id for e in data.episodes] == ["2048_THUNLP_20230822144615", "ArtCanvas_THUNLP_20230825093558"]


def test_max_episodes_must_be_a_positive_int(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="sources.chatdev.max_episodes"):
        chatdev.SOURCE.settings({"sources": {"chatdev": {"max_episodes": "all"}}})


# --- small logs written by the tests -------------------------------------------------------------------

def _log(*records: str) -> str:
    return "\n".join(records) + "\n"


START = "[2023-18-09 11:05:27 INFO] Chief Executive Officer: **[Start Chat]**\n\n[You are CPO.]\n\nPick a modality."
TABLE = "[2023-18-09 11:05:25 INFO] System: **[RolePlaying]**\n\n| **model_type** | ModelType.GPT_4 |\n"
GOOD = _log(
    "[2023-18-09 11:05:21 INFO] **[Preprocessing]**\n\n**task_prompt**: Build a calculator\n",
    TABLE, START,
    "[2023-18-09 11:05:33 INFO] **[OpenAI_Usage_Info Receive]**\nprompt_tokens: 440\ncompletion_tokens: 4\n"
    "total_tokens: 444\n",
    "[2023-18-09 11:05:34 INFO] **[OpenAI_Usage_Info Receive]**\nprompt_tokens: 460\ncompletion_tokens: 7\n"
    "total_tokens: 467\n",
    "[2023-18-09 11:05:35 INFO] Chief Product Officer: **Chief Product Officer<->Chief Executive Officer on : "
    "DemandAnalysis, turn 0**\n\n[You are CEO.\n]\n\nI suggest an app.\n",
    "[2023-18-09 11:05:35 INFO] Chief Executive Officer: **Chief Product Officer<->Chief Executive Officer on : "
    "DemandAnalysis, turn 0**\n\n[You are CPO.]\n\n<INFO> Application\n",
    "[2023-18-09 11:05:37 INFO] **[Seminar Conclusion]**:\n\n <INFO> Application\n",
    "[2023-18-09 11:06:00 INFO] **[User Provided Comments]**\n\n In the #1 of total 5 comments: \n\nAdd a button.\n",
    "[2023-18-09 11:06:02 INFO] **[Test Reports]**:\n\nThe software run successfully without errors.\n",
)


def _project(root: Path, name: str, files: dict[str, str]) -> Path:
    folder = root / "WareHouse" / name
    folder.mkdir(parents=True)
    for filename, text in files.items():
        (folder / filename).write_text(text, encoding="utf-8")
    return folder


def test_small_log_pairs_usage_in_order_and_counts_steps(tmp_path: Path) -> None:
    _project(tmp_path, "Calc_Org_20230918110521", {"run.log": GOOD.replace("\n", "\r\n"), "meta.txt": "Task:\nx\n"})
    (episode,) = chatdev.read(tmp_path, SETTINGS, SkipLog()).episodes
    check_episode(episode)
    assert episode.episode_id == "chatdev/Calc_Org_20230918110521/run" and episode.category == "gpt-4"
    rows = [(m.speaker, m.role, m.text, m.turn, m.logged_prompt_tokens, m.logged_completion_tokens)
            for m in episode.messages]
    assert rows == [
        ("user", "user", "Build a calculator", 1, None, None),
        ("Chief Product Officer", "agent", "I suggest an app.", 1, 440, 4),
        ("Chief Executive Officer", "agent", "<INFO> Application", 1, 460, 7),
        ("user", "user", "Add a button.", 2, None, None),
    ]
    assert episode.messages[1].tstamp == _utc(2023, 9, 18, 11, 5, 35)
    assert [(e.kind, e.value) for e in episode.events] == [("test_report", 1.0)]


def test_small_log_prompts_follow_each_agents_memory(tmp_path: Path) -> None:
    # Two requests for the first reply (a retried call): ChatDev stored the phase prompt twice.
    log = GOOD.replace("[2023-18-09 11:05:33 INFO] **[OpenAI",
                       "[2023-18-09 11:05:30 INFO] **[OpenAI_Usage_Info Send]**\nnum_tokens: 1\n\n"
                       "[2023-18-09 11:05:31 INFO] **[OpenAI_Usage_Info Send]**\nnum_tokens: 1\n\n"
                       "[2023-18-09 11:05:33 INFO] **[OpenAI", 1)
    _project(tmp_path, "Calc", {"run.log": log})
    (episode,) = chatdev.read(tmp_path, SETTINGS, SkipLog()).episodes
    cpo, ceo = episode.messages[1], episode.messages[2]
    assert cpo.prompt == "[system]\nYou are CPO.\n\n[user]\nPick a modality.\n\n[user]\nPick a modality."
    assert ceo.prompt == "[system]\nYou are CEO.\n\n\n[assistant]\nPick a modality.\n\n[user]\nI suggest an app."
    assert episode.messages[0].prompt is None and episode.messages[3].prompt is None


def test_task_falls_back_to_meta_txt(tmp_path: Path) -> None:
    log = GOOD.split("[2023-18-09 11:05:25 INFO]", 1)[1]  # no [Preprocessing] record
    _project(tmp_path, "P", {"p.log": "[2023-18-09 11:05:25 INFO]" + log,
                             "meta.txt": "Task:\nBuild a\ncalculator\n\nConfig:\nx\n"})
    (episode,) = chatdev.read(tmp_path, SETTINGS, SkipLog()).episodes
    assert episode.messages[0].text == "Build a\ncalculator"


BAD_CASES = {
    "no_messages": ("[2023-28-06 18:49:18 INFO] AgentTech Starts (20230628184918)\n\n"
                    "[2023-28-06 18:49:33 INFO] AgentTech Ends (20230628184933)\n", r"bad\.log, message header"),
    "bad_usage": (GOOD.replace("prompt_tokens: 460", "prompt_tokens: 4.6e2"),
                  r"bad\.log, line \d+, usage block field 'prompt_tokens'"),
    "empty_log": ("", r"bad\.log: empty log"),
    "bad_timestamp": (GOOD.replace("[2023-18-09 11:05:35 INFO] Chief Exec", "[2023-18-13 11:05:35 INFO] Chief Exec"),
                      r"bad\.log, line \d+, timestamp"),
    "legacy_format": ("[2023-26-07 12:11:51 INFO] \x1b[32m[0] AI Assistant (Chief Product Officer):\n\nHi\n",
                      r"bad\.log, message header: pre-release AgentTech"),
}


@pytest.mark.parametrize("reason", sorted(BAD_CASES))
def test_bad_log_stops_or_is_counted(tmp_path: Path, reason: str) -> None:
    text, pattern = BAD_CASES[reason]
    _project(tmp_path, "A_good", {"good.log": GOOD})
    _project(tmp_path, "B_bad", {"bad.log": text})
    _project(tmp_path, "C_good", {"good.log": GOOD})
    with pytest.raises(CoordsetError, match=r"WareHouse/B_bad/" + pattern):
        chatdev.read(tmp_path, SETTINGS, SkipLog(policy="stop"))
    skips = SkipLog(policy="skip")
    episodes = chatdev.read(tmp_path, SETTINGS, skips).episodes
    assert [e.group_id for e in episodes] == ["A_good", "C_good"]
    assert dict(skips.counts) == {("chatdev", reason): 1}


def test_missing_and_duplicate_logs_are_counted(tmp_path: Path) -> None:
    _project(tmp_path, "A_nolog", {"meta.txt": "Task:\nx\n"})
    _project(tmp_path, "B_copy", {"run.log": GOOD, "run 2.log": GOOD.replace("Build a calculator", "Build it")})
    with pytest.raises(CoordsetError, match=r"WareHouse/A_nolog, log: project folder has no \.log file"):
        chatdev.read(tmp_path, SETTINGS, SkipLog(policy="stop"))
    skips = SkipLog(policy="skip")
    (episode,) = chatdev.read(tmp_path, SETTINGS, skips).episodes
    assert episode.episode_id == "chatdev/B_copy/run"
    assert dict(skips.counts) == {("chatdev", "missing_log"): 1, ("chatdev", "duplicate_log"): 1}
    assert any("B_copy/run 2.log: repeats every reply of 'run.log'" in e for e in skips.examples)
