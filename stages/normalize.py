"""normalize: data/raw/ -> data/normalized/*.parquet (episodes, messages, outcomes, turn events, judges)."""

from __future__ import annotations

from pathlib import Path

from coordset import atomic
from coordset.normalize import normalize, normalize_metrics
from coordset.params import load_params
from schemas.normalized import EPISODES, JUDGE_GRADES, JUDGE_VERDICTS, MESSAGES, OUTCOMES, TURN_EVENTS
from stages._entry import run

OUT = Path("data/normalized")


def main() -> None:
    tables = normalize(load_params())
    atomic.write_checked({
        OUT / "episodes.parquet": (tables.episodes, EPISODES),
        OUT / "messages.parquet": (tables.messages, MESSAGES),
        OUT / "outcomes.parquet": (tables.outcomes, OUTCOMES),
        OUT / "turn_events.parquet": (tables.turn_events, TURN_EVENTS),
        OUT / "judge_verdicts.parquet": (tables.judge_verdicts, JUDGE_VERDICTS),
        OUT / "judge_grades.parquet": (tables.judge_grades, JUDGE_GRADES),
    })
    atomic.write_json("metrics/normalize.json", normalize_metrics(tables))
    for example in tables.skips.examples:
        print(f"skipped: {example}")


if __name__ == "__main__":
    run(main)
