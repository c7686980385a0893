"""normalize: data/raw/ -> data/normalized/{episodes,messages,judge_verdicts,judge_grades}.parquet."""

from __future__ import annotations

from pathlib import Path

from coordset import atomic
from coordset.normalize import normalize
from coordset.params import load_params
from schemas import check
from schemas.normalized import EPISODES, JUDGE_GRADES, JUDGE_VERDICTS, MESSAGES
from stages._entry import run

OUT = Path("data/normalized")


def main() -> None:
    tables = normalize(load_params())
    outputs = {
        "episodes": (tables.episodes, EPISODES),
        "messages": (tables.messages, MESSAGES),
        "judge_verdicts": (tables.judge_verdicts, JUDGE_VERDICTS),
        "judge_grades": (tables.judge_grades, JUDGE_GRADES),
    }
    # Validate everything before writing anything, so a bad table leaves every old output whole.
    for name, (frame, schema) in outputs.items():
        check(frame, schema, str(OUT / f"{name}.parquet"))
    for name, (frame, _) in outputs.items():
        atomic.write_parquet(OUT / f"{name}.parquet", frame)
    skipped: dict[str, dict[str, int]] = {}
    for (source, reason), count in sorted(tables.skips.counts.items()):
        skipped.setdefault(source, {})[reason] = count
    atomic.write_json("metrics/normalize.json", {
        "on_bad_record": tables.skips.policy,
        "episodes": int(len(tables.episodes)),
        "skipped_records": skipped,
        "skipped_total": int(sum(tables.skips.counts.values())),
    })
    for example in tables.skips.examples:
        print(f"skipped: {example}")


if __name__ == "__main__":
    run(main)
