"""FastChat's MT-Bench data: the 80 questions and the published answers of 31 models, no verdicts.

Every pair of models on a question is one episode (465 pairs x 80 = 37,200): the unlabeled scale set
for benchmarks. ``models`` restricts the answer sets, ``max_pairs`` the number of model pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordset.errors import ParamError
from coordset.params import get
from coordset.records import SkipLog
from coordset.sources import mtbench_files as mtb
from coordset.sources.registry import Source, SourceData

NAME = "fastchat_mt_bench"
DATA_DIR = "fastchat/llm_judge/data/mt_bench"


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = ()  # empty: every published answer set
    max_pairs: int | None = None  # None: every pair of models


def source_settings(params: dict[str, Any]) -> Settings:
    wanted = get(params, f"sources.{NAME}.models") or []
    if not isinstance(wanted, list):
        raise ParamError(f"sources.{NAME}.models", "must be a list of model names (empty: all)")
    max_pairs = get(params, f"sources.{NAME}.max_pairs")
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1):
        raise ParamError(f"sources.{NAME}.max_pairs", f"must be null or >= 1, got {max_pairs!r}")
    return Settings(tuple(wanted), max_pairs)


def _pairs(models: list[str], settings: Settings) -> list[tuple[str, str]]:
    unknown = sorted(set(settings.models) - set(models))
    if unknown:
        raise ParamError(f"sources.{NAME}.models", f"names models with no answers: {unknown}")
    pairs = mtb.all_pairs(list(settings.models) or models)
    return pairs[:settings.max_pairs] if settings.max_pairs is not None else pairs


def read(raw: Path, settings: Settings, skips: SkipLog) -> SourceData:
    base = raw / DATA_DIR
    questions = mtb.read_questions(base / "question.jsonl", skips, NAME)
    answers = mtb.read_answers(sorted((base / "model_answer").glob("*.jsonl")), skips, NAME)
    return SourceData(mtb.parallel_episodes(NAME, "en", questions, answers, _pairs(list(answers), settings), skips))


SOURCE = Source(
    name=NAME,
    title="MT-Bench questions and the 31 published model answer sets of FastChat's llm_judge",
    licence="Apache-2.0",
    hf_license="apache-2.0",
    homepage="https://github.com/lm-sys/FastChat",
    base_url="https://raw.githubusercontent.com/enricai/FastChat/edacaa5bd955893e72a7e6f0899d8301fd5ae492/",
    settings=source_settings,
    read=read,
    billing="own_thread",
    parallel=True,
    card="The 31 answer sets published with FastChat's MT-Bench, every pair of models on a question as one "
         "episode (up to 37,200). There are no verdicts: the outcome is `unknown`. A mirror of the lm-sys/FastChat "
         "data (https://github.com/lm-sys/FastChat), Apache-2.0 like FastChat.",
)
