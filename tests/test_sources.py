"""Each source's parser: the real mirrored files, and arena-shaped files the tests write."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from coordset.errors import CoordsetError, ParamError
from coordset.normalize import normalize
from coordset.records import sha256_text
from coordset.verdicts import majority_verdict, pair_verdict
from schemas import check
from schemas.normalized import EPISODES, JUDGE_GRADES, JUDGE_VERDICTS, MESSAGES
from tests.helpers import MIRROR, arena_record, fetch_raw, repo_params, write_jsonl

MT_BENCH = repo_params(**{"sources.use": ["mt_bench_repro"]})
needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason=f"mirror not found at {MIRROR}")


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MIRROR.is_dir():
        pytest.skip(f"mirror not found at {MIRROR}")
    return fetch_raw(tmp_path_factory.mktemp("raw"), "mt_bench_repro", "fastchat_mt_bench")


def _outcome(tables: object) -> pd.Series:
    return tables.outcomes.set_index("episode_id")["outcome"]


@needs_mirror
def test_mt_bench_repro_gives_1200_two_turn_episodes(raw_dir: Path) -> None:
    tables = normalize(MT_BENCH, raw_dir)
    episodes, messages = tables.episodes, tables.messages
    check(episodes, EPISODES, "episodes")
    check(messages, MESSAGES, "messages")
    check(tables.judge_verdicts, JUDGE_VERDICTS, "judge_verdicts")
    check(tables.judge_grades, JUDGE_GRADES, "judge_grades")
    assert len(episodes) == 1200 and episodes["n_turns"].sum() == 2400
    assert episodes["group_id"].nunique() == 80
    assert episodes["agent_models"].map(tuple).nunique() == 15
    assert len(messages) == 1200 * 6
    # Every judge's file matched an episode, whichever order it listed the pair in.
    assert tables.judge_verdicts["judge_id"].nunique() == 6
    assert tables.judge_verdicts.groupby("judge_id").size().eq(1200).all()
    first = messages[messages["episode_id"] == episodes["episode_id"].iloc[0]]
    assert first["role"].tolist() == ["user", "agent", "agent", "user", "agent", "agent"]
    assert first["position"].tolist() == list(range(6))
    assert (messages["text"].map(sha256_text) == messages["text_sha256"]).all()


@needs_mirror
def test_mt_bench_repro_winner_is_majority_of_consistent_verdicts(raw_dir: Path) -> None:
    tables = normalize(MT_BENCH, raw_dir)
    verdicts = tables.judge_verdicts
    outcome = tables.outcomes.set_index("episode_id")
    for eid, rows in list(verdicts.groupby("episode_id"))[:200]:
        expected = majority_verdict(pair_verdict(r.winner_ab, r.winner_ba, r.model_a, r.model_b)
                                    for r in rows.itertuples())
        assert outcome.at[eid, "outcome"] == expected
        # The raw file's own `winner` field agrees with our reading of both orders.
        for r in rows.itertuples():
            ours = pair_verdict(r.winner_ab, r.winner_ba, r.model_a, r.model_b)
            assert ours == r.winner
    assert set(outcome["outcome_source"]) == {"judge_majority"}


def test_majority_rules() -> None:
    assert majority_verdict(["a", "a", "b", "inconsistent"]) == "a"
    assert majority_verdict(["a", "b", "inconsistent"]) == "tie"  # even split of consistent verdicts
    assert majority_verdict(["tie", "tie", "a"]) == "tie"
    assert majority_verdict(["inconsistent", "error"]) == "unknown"
    assert pair_verdict("A", "B", "x", "y") == "x"
    assert pair_verdict("B", "A", "x", "y") == "y"
    assert pair_verdict("A", "A", "x", "y") == "inconsistent"
    assert pair_verdict("tie", "error", "x", "y") == "error"


@needs_mirror
def test_fastchat_pairs_can_be_restricted(raw_dir: Path) -> None:
    params = repo_params(**{"sources.use": ["fastchat_mt_bench"],
                            "sources.fastchat_mt_bench.models": ["gpt-4", "vicuna-13b-v1.3", "llama-13b"]})
    tables = normalize(params, raw_dir)
    assert len(tables.episodes) == 3 * 80
    assert set(_outcome(tables)) == {"unknown"}
    assert tables.judge_verdicts.empty
    params["sources"]["fastchat_mt_bench"]["max_pairs"] = 1
    assert len(normalize(params, raw_dir).episodes) == 80


@needs_mirror
def test_fastchat_unknown_model_names_the_key(raw_dir: Path) -> None:
    params = repo_params(**{"sources.use": ["fastchat_mt_bench"], "sources.fastchat_mt_bench.models": ["gpt-5"]})
    with pytest.raises(ParamError, match=r"sources.fastchat_mt_bench.models.*gpt-5"):
        normalize(params, raw_dir)


@needs_mirror
def test_fastchat_full_set_is_37200_episodes(raw_dir: Path) -> None:
    tables = normalize(repo_params(**{"sources.use": ["fastchat_mt_bench"]}), raw_dir)
    assert len(tables.episodes) == 465 * 80 == 37200
    assert tables.episodes["agent_models"].map(len).eq(2).all()


def _local_params(path: Path) -> dict:
    return repo_params(**{"sources.use": ["local"], "sources.local.path": str(path)})


def test_arena_shaped_jsonl_and_parquet(tmp_path: Path) -> None:
    records = [
        arena_record("q1", winner="model_b"),
        arena_record("q2", model_a="zeta", model_b="alpha", winner="tie (bothbad)", users=("One turn",)),
        arena_record("q3", model_a="gpt", model_b="claude", winner="model_a", users=("a", "b", "c")),
    ]
    jsonl = write_jsonl(tmp_path / "conv.jsonl", records)
    from_jsonl = normalize(_local_params(jsonl), tmp_path / "raw")
    parquet = tmp_path / "pq" / "conv.parquet"
    parquet.parent.mkdir()
    pd.DataFrame(records).to_parquet(parquet)
    from_parquet = normalize(_local_params(parquet), tmp_path / "raw")
    for tables in (from_jsonl, from_parquet):
        episodes = check(tables.episodes, EPISODES, "episodes").set_index("episode_id")
        check(tables.messages, MESSAGES, "messages")
        outcome = _outcome(tables)
        assert outcome["local/q1"] == "beta"
        assert outcome["local/q2"] == "tie"
        assert list(episodes.at["local/q2", "agent_models"]) == ["alpha", "zeta"]
        assert episodes.at["local/q3", "n_turns"] == 3 and outcome["local/q3"] == "gpt"
        assert set(tables.outcomes["outcome_source"]) == {"human_vote"}
        assert episodes.at["local/q1", "tstamp_start"] == pytest.approx(1682351591.1322)
    pd.testing.assert_frame_equal(from_jsonl.messages, from_parquet.messages)


def test_chatbot_arena_parser_reads_the_hub_layout(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "chatbot_arena" / "data").mkdir(parents=True)
    pd.DataFrame([arena_record("abc"), arena_record("def", winner="tie")]).to_parquet(
        raw / "chatbot_arena" / "data" / "train-00000-of-00001.parquet")
    tables = normalize(repo_params(**{"sources.use": ["chatbot_arena"]}), raw)
    assert tables.episodes["episode_id"].tolist() == ["chatbot_arena/abc", "chatbot_arena/def"]
    assert _outcome(tables).tolist() == ["alpha", "tie"]


@pytest.mark.parametrize(("bad", "message", "reason"), [
    ('{"question_id": "x", "model_a": ', r"conv.jsonl, line 2: malformed JSON", "malformed_json"),
    ({"question_id": "x", "model_a": "a", "winner": "tie"}, r"line 2: missing field 'model_b'", "missing_field"),
    (arena_record("x", model_a=7), r"line 2: field 'model_a' must be str, got int", "wrong_type"),
    (arena_record("x", users=()), r"line 2: empty conversation", "empty_conversation"),
    (arena_record("x", replies_a=("only one",)), r"line 2: conversation_a: user turn 2 has no agent reply",
     "missing_reply"),
    (arena_record("q1"), r"line 2: duplicate episode id 'local/q1'", "duplicate_id"),
    (arena_record("x", winner="model_c"), r"line 2: field 'winner' must be one of", "bad_value"),
])
def test_bad_local_records_stop_or_are_skipped_and_counted(tmp_path: Path, bad: object, message: str,
                                                          reason: str) -> None:
    path = write_jsonl(tmp_path / "conv.jsonl", [arena_record("q1"), bad, arena_record("q9")])
    with pytest.raises(CoordsetError, match=message):
        normalize(_local_params(path), tmp_path / "raw")
    params = _local_params(path)
    params["normalize"]["on_bad_record"] = "skip"
    tables = normalize(params, tmp_path / "raw")
    assert tables.episodes["episode_id"].tolist() == ["local/q1", "local/q9"]
    assert dict(tables.skips.counts) == {("local", reason): 1}


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "conv.jsonl", [arena_record("q1")])
    with open(path, "ab") as fh:
        fh.write(b'{"question_id": "\xff\xfe"}\n')
    with pytest.raises(CoordsetError, match=r"conv.jsonl, line 2: not valid UTF-8"):
        normalize(_local_params(path), tmp_path / "raw")


def test_unknown_source_is_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match=r"'sources.use' names unknown source 'arena2'"):
        normalize(repo_params(**{"sources.use": ["arena2"]}), tmp_path)


def test_missing_local_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CoordsetError, match=r"nope.jsonl: file not found"):
        normalize(_local_params(tmp_path / "nope.jsonl"), tmp_path / "raw")


@needs_mirror
def test_mt_bench_answer_missing_a_turn_is_named(raw_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(raw_dir / "mt_bench_repro", raw / "mt_bench_repro")
    answers = raw / "mt_bench_repro/data/en/answers/gemma-2-9b-it.jsonl"
    lines = answers.read_text().splitlines()
    lines[0] = lines[0].replace('"turns": [', '"turns": [] , "x": [', 1)
    answers.write_text("\n".join(lines) + "\n")
    with pytest.raises(CoordsetError, match=r"agent 'gemma-2-9b-it' has 0 replies for 2 user turns"):
        normalize(MT_BENCH, raw)


def test_params_become_settings_once_before_any_file_is_read(tmp_path: Path) -> None:
    """normalize and fetch check every source's params into settings up front; readers never see raw params."""
    from coordset.normalize import normalize_settings
    from coordset.sources import local
    from coordset.sources.fetching import fetch_settings
    from coordset.sources.registry import Limit

    bad = repo_params(**{"sources.use": ["who_when", "fastchat_mt_bench"], "sources.fastchat_mt_bench.max_pairs": 0})
    for build in (normalize_settings, fetch_settings):
        with pytest.raises(ParamError, match=r"sources.fastchat_mt_bench.max_pairs"):
            build(bad)  # nothing exists under tmp_path: the error comes before any file is looked at
    path = write_jsonl(tmp_path / "logs.jsonl", [arena_record("q1")])
    params = repo_params(**{"sources.use": ["local", "chatdev"], "sources.local.path": str(path),
                            "sources.local.format": "arena", "normalize.on_bad_record": "stop"})
    settings = normalize_settings(params)
    assert settings.on_bad_record == "stop"
    assert [(u.source.name, u.settings, u.on_bad_record) for u in settings.sources] == [
        ("local", local.Settings(path, "arena"), None), ("chatdev", Limit(None), "skip")]
    # The settings alone drive the run: the params they came from no longer matter.
    params["sources"]["local"]["path"] = str(tmp_path / "elsewhere.jsonl")
    tables = normalize(replace(settings, sources=settings.sources[:1]), tmp_path / "raw")  # local only
    assert tables.episodes["episode_id"].tolist() == ["local/q1"]
