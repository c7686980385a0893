"""MT-Bench-shaped sources: questions plus per-model answer files (and, for mt_bench_repro, judges).

Every unordered pair of answering models on a question becomes one episode; both models answer
the same two user turns independently.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from coordset.records import BadRecord, SkipLog, read_jsonl, require
from coordset.sources.episode import Episode
from coordset.sources.parallel import Conversation, parallel_episode
from coordset.verdicts import UNKNOWN, majority_verdict, pair_verdict

VERDICT_LETTERS = ("A", "B", "tie", "error")


def each_record(paths: list[Path], skips: SkipLog, source: str, parse: Callable[[str, dict[str, Any]], None]
                ) -> None:
    """Call ``parse(where, record)`` on every record; a bad one stops the run or is skipped and counted."""
    for path in paths:
        for lineno, record in read_jsonl(path):
            try:
                if isinstance(record, BadRecord):
                    raise record
                parse(f"{path}, line {lineno}", record)
            except BadRecord as exc:
                skips.handle(source, exc)


def episode_id(source: str, language: str, question_id: str, models: list[str]) -> str:
    return f"{source}/{language}/{question_id}/" + "__".join(sorted(models))


def read_questions(path: Path, skips: SkipLog, source: str) -> dict[str, dict[str, Any]]:
    questions: dict[str, dict[str, Any]] = {}

    def parse(where: str, record: dict[str, Any]) -> None:
        qid = str(require(record, "question_id", (int, str), where))
        turns = require(record, "turns", list, where)
        if not turns:
            raise BadRecord(where, "empty conversation: 'turns' is empty", "empty_conversation")
        if qid in questions:
            raise BadRecord(where, f"duplicate question_id {qid}", "duplicate_id")
        category = record.get("category")
        questions[qid] = {"turns": turns, "category": category if isinstance(category, str) else None}

    each_record([path], skips, source, parse)
    return questions


def read_answers(paths: list[Path], skips: SkipLog, source: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{model: {question_id: {"turns": [...], "tstamp": float | None, "where": str}}}."""
    answers: dict[str, dict[str, dict[str, Any]]] = {}

    def parse(where: str, record: dict[str, Any]) -> None:
        qid = str(require(record, "question_id", (int, str), where))
        model = require(record, "model_id", str, where)
        choices = require(record, "choices", list, where)
        if not choices or not isinstance(choices[0], dict):
            raise BadRecord(where, "field 'choices' has no answer", "missing_reply")
        turns = require(choices[0], "turns", list, where + ", choices[0]")
        tstamp = record.get("tstamp")
        per_model = answers.setdefault(model, {})
        if qid in per_model:
            raise BadRecord(where, f"duplicate answer of {model!r} to question {qid}", "duplicate_id")
        per_model[qid] = {"turns": turns, "where": where,
                          "tstamp": float(tstamp) if isinstance(tstamp, (int, float)) else None}

    each_record(paths, skips, source, parse)
    return answers


def conversations(source: str, language: str, questions: dict[str, dict[str, Any]],
                  answers: dict[str, dict[str, dict[str, Any]]], pairs: list[tuple[str, str]],
                  winners: dict[str, str] | None = None) -> Iterator[tuple[Conversation | BadRecord, str]]:
    """One conversation per (question, model pair), with where it came from for error messages."""
    for qid in sorted(questions, key=_question_order):
        q = questions[qid]
        for a, b in pairs:
            eid = episode_id(source, language, qid, [a, b])
            missing = [m for m in (a, b) if qid not in answers.get(m, {})]
            if missing:
                yield BadRecord(f"{source}: question {qid}", f"no answer from {missing} for pair ({a}, {b})",
                                "missing_reply"), eid
                continue
            winner = (winners or {}).get(eid, UNKNOWN)
            conv = Conversation(
                episode_id=eid, source=source, question_id=qid, category=q["category"], language=language,
                user_turns=q["turns"], replies={m: answers[m][qid]["turns"] for m in (a, b)},
                winner=winner, winner_source="judge_majority" if winners is not None else "none",
                tstamps={m: answers[m][qid]["tstamp"] for m in (a, b)},
            )
            yield conv, answers[a][qid]["where"] + " / " + answers[b][qid]["where"]


def parallel_episodes(source: str, language: str, questions: dict[str, dict[str, Any]],
                      answers: dict[str, dict[str, dict[str, Any]]], pairs: list[tuple[str, str]], skips: SkipLog,
                      winners: dict[str, str] | None = None) -> list[Episode]:
    """Every (question, model pair) as an episode; a bad one stops the run or is skipped and counted."""
    episodes = []
    for conv, where in conversations(source, language, questions, answers, pairs, winners):
        try:
            if isinstance(conv, BadRecord):
                raise conv
            episodes.append(parallel_episode(conv, where))
        except BadRecord as exc:
            skips.handle(source, exc)
    return episodes


def _question_order(qid: str) -> tuple[int, str]:
    return (int(qid), qid) if qid.isdigit() else (1 << 62, qid)


def all_pairs(models: list[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(sorted(models), 2))


def read_pairwise_verdicts(paths: list[Path], skips: SkipLog, source: str, language: str,
                           episode_ids: set[str]) -> list[dict[str, Any]]:
    """Judge verdict rows keyed to episodes by the unordered model pair."""
    rows: list[dict[str, Any]] = []

    def parse(where: str, record: dict[str, Any]) -> None:
        qid = str(require(record, "question_id", (int, str), where))
        model_a = require(record, "model_a", str, where)
        model_b = require(record, "model_b", str, where)
        judge = require(record, "judge_id", str, where)
        ab = require(record, "winner_ab", str, where)
        ba = require(record, "winner_ba", str, where)
        for key, value in (("winner_ab", ab), ("winner_ba", ba)):
            if value not in VERDICT_LETTERS:
                raise BadRecord(where, f"field '{key}' must be one of {VERDICT_LETTERS}, got {value!r}", "bad_value")
        eid = episode_id(source, language, qid, [model_a, model_b])
        if eid not in episode_ids:
            raise BadRecord(where, f"verdict for question {qid} and pair ({model_a}, {model_b}) matches no episode",
                            "orphan_verdict")
        tstamp, turn = record.get("tstamp"), record.get("turn", 1)
        rows.append({
            "episode_id": eid, "judge_id": judge, "question_id": qid, "model_a": model_a, "model_b": model_b,
            "winner_ab": ab, "winner_ba": ba, "winner": str(record.get("winner", "")),
            "turn": int(turn) if isinstance(turn, int) else 1,
            "tstamp": float(tstamp) if isinstance(tstamp, (int, float)) else None,
        })

    each_record(paths, skips, source, parse)
    return rows


def judge_majority(verdict_rows: list[dict[str, Any]]) -> dict[str, str]:
    """Episode winner = majority of the judges' consistent verdicts on the full conversation.

    Each judge's verdict on the last judged turn counts (the one that saw every turn).
    """
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for row in verdict_rows:
        key = (row["episode_id"], row["judge_id"])
        if key not in last or row["turn"] > last[key]["turn"]:
            last[key] = row
    by_episode: dict[str, list[str]] = {}
    for (eid, _), row in sorted(last.items()):
        by_episode.setdefault(eid, []).append(
            pair_verdict(row["winner_ab"], row["winner_ba"], row["model_a"], row["model_b"]))
    return {eid: majority_verdict(v) for eid, v in by_episode.items()}


def read_grades(paths: list[tuple[Path, str]], skips: SkipLog, source: str) -> list[dict[str, Any]]:
    """Single-answer grades; MT-Bench writes -1 for a grade the judge's text did not yield."""
    rows: list[dict[str, Any]] = []
    for path, mode in paths:

        def parse(where: str, record: dict[str, Any], mode: str = mode) -> None:
            qid = str(require(record, "question_id", (int, str), where))
            model = require(record, "model_id", str, where)
            judge = require(record, "judge_id", str, where)
            turn, grades = 1, []
            while f"score_turn{turn}" in record:
                score = record[f"score_turn{turn}"]
                if score is not None and not isinstance(score, (int, float)):
                    raise BadRecord(where, f"field 'score_turn{turn}' must be a number", "wrong_type")
                valid = score is not None and 1 <= score <= 10
                grades.append({"question_id": qid, "model_id": model, "judge_id": judge, "mode": mode,
                               "turn": turn, "score": float(score) if valid else None})
                turn += 1
            rows.extend(grades)  # all of a record's grades or, if it is bad, none

        each_record([path], skips, source, parse)
    return rows
