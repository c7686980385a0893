"""enrich: data/normalized/ -> data/enriched/{messages,turns,episodes}.parquet + metrics/enrich.json."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coordset import atomic
from coordset.enrich import enrich, enrich_settings
from coordset.params import load_params
from schemas import check
from schemas.enriched import EPISODE_USAGE, MESSAGE_TOKENS, TURN_USAGE
from schemas.normalized import EPISODES, MESSAGES
from stages._entry import run

IN = Path("data/normalized")
OUT = Path("data/enriched")


def main() -> None:
    params = load_params()
    enrich_settings(params)  # bad params fail before any data is read
    episodes = check(pd.read_parquet(IN / "episodes.parquet"), EPISODES, str(IN / "episodes.parquet"))
    messages = check(pd.read_parquet(IN / "messages.parquet"), MESSAGES, str(IN / "messages.parquet"))
    usage = enrich(episodes, messages, params)
    outputs = {"messages": (usage.messages, MESSAGE_TOKENS), "turns": (usage.turns, TURN_USAGE),
               "episodes": (usage.episodes, EPISODE_USAGE)}
    for name, (frame, schema) in outputs.items():
        check(frame, schema, str(OUT / f"{name}.parquet"))
    for name, (frame, _) in outputs.items():
        atomic.write_parquet(OUT / f"{name}.parquet", frame)
    atomic.write_json("metrics/enrich.json", usage.metrics)


if __name__ == "__main__":
    run(main)
