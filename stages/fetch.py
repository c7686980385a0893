"""fetch: download (or read from COORDSET_MIRROR) every source's pinned files into data/raw/, verified."""

from __future__ import annotations

from pathlib import Path

from coordset.params import load_params
from coordset.sources.fetching import fetch_settings, fetch_sources
from stages._entry import run

RAW_DIR = Path("data/raw")


def main() -> None:
    settings = fetch_settings(load_params())  # bad params fail before anything is downloaded
    fetch_sources(settings, RAW_DIR)


if __name__ == "__main__":
    run(main)
