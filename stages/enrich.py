"""enrich: data/normalized/ -> data/enriched/{messages,calls,episodes}.parquet + metrics/enrich.json."""

from __future__ import annotations

from pathlib import Path

from coordset import atomic
from coordset.enrich.usage import enrich, enrich_settings
from coordset.params import load_params
from schemas import read_checked
from schemas.enriched import CALL_USAGE, EPISODE_USAGE, MESSAGE_TOKENS
from schemas.normalized import EPISODES, MESSAGES
from stages._entry import run

IN = Path("data/normalized")
OUT = Path("data/enriched")


def main() -> None:
    settings = enrich_settings(load_params())  # bad params fail before any data is read
    usage = enrich(read_checked(IN / "episodes.parquet", EPISODES), read_checked(IN / "messages.parquet", MESSAGES),
                   settings)
    atomic.write_checked({
        OUT / "messages.parquet": (usage.messages, MESSAGE_TOKENS),
        OUT / "calls.parquet": (usage.calls, CALL_USAGE),
        OUT / "episodes.parquet": (usage.episodes, EPISODE_USAGE),
    })
    atomic.write_json("metrics/enrich.json", usage.metrics)


if __name__ == "__main__":
    run(main)
