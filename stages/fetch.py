"""fetch: download (or read from COORDSET_MIRROR) every pinned source file into data/raw/, verified."""

from __future__ import annotations

import shutil
from pathlib import Path

from coordset import fetch
from coordset.hub import fetch_chatbot_arena
from coordset.params import load_params, require_str
from coordset.sources import sources_in_use
from stages._entry import run

RAW_DIR = Path("data/raw")


def main() -> None:
    params = load_params()
    used = sources_in_use(params)
    language = require_str(params, "sources.mt_bench_repro.language") if "mt_bench_repro" in used else None
    mirror = fetch.mirror_root()
    tmp = RAW_DIR.with_name(".raw.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for name in used:
            if name in fetch.PINNED_SOURCES:
                fetch.fetch_pinned(name, tmp / name, language=language, mirror=mirror, progress=True)
            elif name == "chatbot_arena":
                fetch_chatbot_arena(tmp / name, repo_id=require_str(params, "sources.chatbot_arena.repo_id"),
                                    revision=require_str(params, "sources.chatbot_arena.revision"))
            # "local" is read in place by normalize (a DVC dependency), nothing to fetch.
        fetch.replace_dir(tmp, RAW_DIR)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


if __name__ == "__main__":
    run(main)
