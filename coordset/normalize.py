"""normalize: every source's raw files -> the canonical ``episodes`` and ``messages`` tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from coordset import sources_mtbench as mtb
from coordset.errors import ParamError
from coordset.params import get, require_choice, require_str
from coordset.records import BadRecord, Conversation, SkipLog, episode_rows
from coordset.sources import sources_in_use
from coordset.sources_arena import arena_conversation, read_arena_records

FASTCHAT_DIR = "fastchat/llm_judge/data/mt_bench"


@dataclass
class NormalizedTables:
    episodes: pd.DataFrame
    messages: pd.DataFrame
    judge_verdicts: pd.DataFrame
    judge_grades: pd.DataFrame
    skips: SkipLog


class _Builder:
    """Accumulates rows; refuses (or skips and counts) duplicate episode ids."""

    def __init__(self, skips: SkipLog) -> None:
        self.skips = skips
        self.episodes: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.ids: set[str] = set()

    def add(self, item: Conversation | BadRecord, where: str) -> None:
        try:
            if isinstance(item, BadRecord):
                raise item
            if item.episode_id in self.ids:
                raise BadRecord(where, f"duplicate episode id {item.episode_id!r}", "duplicate_id")
            episode, messages = episode_rows(item, where)
        except BadRecord as exc:
            self.skips.handle(item.source if isinstance(item, Conversation) else where.split(":")[0], exc)
            return
        self.ids.add(item.episode_id)
        self.episodes.append(episode)
        self.messages.extend(messages)


def _mt_bench_repro(raw: Path, language: str, builder: _Builder) -> tuple[list[dict], list[dict]]:
    source = "mt_bench_repro"
    base = raw / source / "data" / language
    questions = mtb.read_questions(base / "questions.jsonl", builder.skips, source)
    answers = mtb.read_answers(sorted((base / "answers").glob("*.jsonl")), builder.skips, source)
    pairs = mtb.all_pairs(list(answers))
    ids = {mtb.episode_id(source, language, q, list(p)) for q in questions for p in pairs}
    verdicts = mtb.read_pairwise_verdicts(sorted((base / "judgments").glob("*/*/pairwise/*.jsonl")),
                                          builder.skips, source, language, ids)
    winners = mtb.judge_majority(verdicts)
    for conv, where in mtb.conversations(source, language, questions, answers, pairs, winners):
        builder.add(conv, where)
    grade_files = [(p, p.parent.name) for mode in ("single_grade", "single_grade_ref")
                   for p in sorted((base / "judgments").glob(f"*/*/{mode}/*.jsonl"))]
    grades = mtb.read_grades(grade_files, builder.skips, source)
    return verdicts, grades


def _fastchat_pairs(models: list[str], params: dict[str, Any]) -> list[tuple[str, str]]:
    wanted = get(params, "sources.fastchat_mt_bench.models") or []
    if not isinstance(wanted, list):
        raise ParamError("sources.fastchat_mt_bench.models", "must be a list of model names (empty: all)")
    unknown = sorted(set(wanted) - set(models))
    if unknown:
        raise ParamError("sources.fastchat_mt_bench.models", f"names models with no answers: {unknown}")
    pairs = mtb.all_pairs(wanted or models)
    max_pairs = get(params, "sources.fastchat_mt_bench.max_pairs")
    if max_pairs is not None:
        if isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1:
            raise ParamError("sources.fastchat_mt_bench.max_pairs", f"must be null or >= 1, got {max_pairs!r}")
        pairs = pairs[:max_pairs]
    return pairs


def _fastchat(raw: Path, params: dict[str, Any], builder: _Builder) -> None:
    source = "fastchat_mt_bench"
    base = raw / source / FASTCHAT_DIR
    questions = mtb.read_questions(base / "question.jsonl", builder.skips, source)
    answers = mtb.read_answers(sorted((base / "model_answer").glob("*.jsonl")), builder.skips, source)
    for conv, where in mtb.conversations(source, "en", questions, answers, _fastchat_pairs(list(answers), params)):
        builder.add(conv, where)


def _arena_like(path: Path, source: str, builder: _Builder) -> None:
    for where, record in read_arena_records(path):
        try:
            if isinstance(record, BadRecord):
                raise record
            conv = arena_conversation(record, where, source)
        except BadRecord as exc:
            builder.skips.handle(source, exc)
            continue
        builder.add(conv, where)


def normalize(params: dict[str, Any], raw: Path = Path("data/raw")) -> NormalizedTables:
    used = sources_in_use(params)
    policy = require_choice(params, "normalize.on_bad_record", ("stop", "skip"))
    builder = _Builder(SkipLog(policy=policy))
    verdicts: list[dict] = []
    grades: list[dict] = []
    for name in used:
        if name == "mt_bench_repro":
            v, g = _mt_bench_repro(raw, require_str(params, "sources.mt_bench_repro.language"), builder)
            verdicts += v
            grades += g
        elif name == "fastchat_mt_bench":
            _fastchat(raw, params, builder)
        elif name == "chatbot_arena":
            _arena_like(raw / "chatbot_arena", name, builder)
        elif name == "local":
            _arena_like(Path(require_str(params, "sources.local.path")), name, builder)
    return NormalizedTables(
        episodes=_frame(builder.episodes, EPISODE_COLUMNS, ["episode_id"]),
        messages=_frame(builder.messages, MESSAGE_COLUMNS, ["episode_id", "position"]),
        judge_verdicts=_frame(verdicts, VERDICT_COLUMNS, ["episode_id", "judge_id", "turn"]),
        judge_grades=_frame(grades, GRADE_COLUMNS, ["question_id", "model_id", "judge_id", "mode", "turn"]),
        skips=builder.skips,
    )


EPISODE_COLUMNS = {
    "episode_id": str, "source": str, "question_id": str, "category": object, "language": str,
    "agent_models": object, "n_agents": "int64", "n_turns": "int64", "winner": str, "winner_source": str,
    "tstamp_start": "float64", "tstamp_end": "float64",
}
MESSAGE_COLUMNS = {
    "episode_id": str, "turn": "int64", "position": "int64", "role": str, "agent_model": object, "text": str,
    "text_sha256": str, "n_chars": "int64", "tstamp": "float64",
}
VERDICT_COLUMNS = {
    "episode_id": str, "judge_id": str, "question_id": str, "model_a": str, "model_b": str, "winner_ab": str,
    "winner_ba": str, "winner": str, "turn": "int64", "tstamp": "float64",
}
GRADE_COLUMNS = {
    "question_id": str, "model_id": str, "judge_id": str, "mode": str, "turn": "int64", "score": "float64",
}


def _frame(rows: list[dict[str, Any]], columns: dict[str, Any], sort_by: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    for column, dtype in columns.items():
        if dtype is not object:
            frame[column] = frame[column].astype(dtype)
    return frame.sort_values(sort_by, kind="stable").reset_index(drop=True)
