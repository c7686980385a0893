"""MT-Bench reproduction (kook222/mt_bench_repro): 6 open models' answers, judged by 6 LLM judges.

Every unordered pair of the 6 answering models on each of the 80 two-turn questions is one episode
(15 x 80 = 1,200). The outcome is the majority of the judges' consistent pairwise verdicts on the
full conversation; the verdicts and 1-10 grades are imported as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordset.errors import CoordsetError
from coordset.params import require_str
from coordset.records import SkipLog
from coordset.sources import mtbench_files as mtb
from coordset.sources.registry import Source, SourceData

NAME = "mt_bench_repro"


@dataclass(frozen=True)
class Settings:
    language: str  # the split: en, or ko (pinned upstream, not mirrored)


def source_settings(params: dict[str, Any]) -> Settings:
    return Settings(require_str(params, f"sources.{NAME}.language"))


def choose_files(pins: dict[str, str], settings: Settings) -> dict[str, str]:
    """Only the chosen language split (and the top-level files such as the licence)."""
    language = settings.language
    prefix = f"data/{language}/"
    chosen = {p: h for p, h in pins.items() if p.startswith(prefix) or "/" not in p}
    if not any(p.startswith(prefix) for p in chosen):
        langs = sorted({p.split("/")[1] for p in pins if p.startswith("data/")})
        raise CoordsetError(f"sources.{NAME}.language: no pinned files for {language!r}; pinned languages are {langs}")
    return chosen


def read(raw: Path, settings: Settings, skips: SkipLog) -> SourceData:
    language = settings.language
    base = raw / "data" / language
    questions = mtb.read_questions(base / "questions.jsonl", skips, NAME)
    answers = mtb.read_answers(sorted((base / "answers").glob("*.jsonl")), skips, NAME)
    pairs = mtb.all_pairs(list(answers))
    ids = {mtb.episode_id(NAME, language, q, list(p)) for q in questions for p in pairs}
    verdicts = mtb.read_pairwise_verdicts(sorted((base / "judgments").glob("*/*/pairwise/*.jsonl")),
                                          skips, NAME, language, ids)
    winners = mtb.judge_majority(verdicts)
    episodes = mtb.parallel_episodes(NAME, language, questions, answers, pairs, skips, winners)
    grade_files = [(p, p.parent.name) for mode in ("single_grade", "single_grade_ref")
                   for p in sorted((base / "judgments").glob(f"*/*/{mode}/*.jsonl"))]
    return SourceData(episodes, verdicts, mtb.read_grades(grade_files, skips, NAME))


SOURCE = Source(
    name=NAME,
    title="MT-Bench reproduction: 80 two-turn questions, answers of 6 open models, pairwise verdicts (both orders) "
          "and 1-10 grades of 6 LLM judges",
    licence="Apache-2.0",
    hf_license="apache-2.0",
    homepage="https://github.com/kook222/mt_bench_repro",
    base_url="https://raw.githubusercontent.com/kook222/mt_bench_repro/b3b827d39249feebeb859ddc1cb41a24ff2b92fe/",
    settings=source_settings,
    choose_files=choose_files,
    read=read,
    billing="own_thread",
    parallel=True,
    judges=True,
    grades=True,
    native_labels=("judge_majority",),
    card="Six open models answer the 80 two-turn MT-Bench questions; every pair of models on a question is one "
         "episode (1,200). Nothing one model says reaches the other: the agents answer in parallel. Six LLM judges "
         "compared every pair in both orders and graded every answer 1-10; the outcome is the majority of the "
         "judges' consistent verdicts (`tie` on an even split, `unknown` when no judge was consistent). Licence "
         "file `LICENSE` at the pinned commit.",
)
