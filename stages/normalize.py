"""normalize: data/raw/ -> data/normalized/*.parquet (episodes, messages, outcomes, turn events, judges)."""

from __future__ import annotations

from pathlib import Path

from coordset import atomic
from coordset.normalize import normalize, normalize_metrics, normalize_settings
from coordset.params import load_params
from stages._entry import run

OUT = Path("data/normalized")


def main() -> None:
    settings = normalize_settings(load_params())  # bad params fail before any file is read
    tables = normalize(settings)
    atomic.write_checked(tables.outputs(OUT))
    atomic.write_json("metrics/normalize.json", normalize_metrics(tables))
    for example in tables.skips.examples:
        print(f"skipped: {example}")


if __name__ == "__main__":
    run(main)
