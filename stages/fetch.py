"""fetch: download (or read from COORDSET_MIRROR) every source's pinned files into data/raw/, verified."""

from __future__ import annotations

import shutil
from pathlib import Path

from coordset import fetch
from coordset.params import load_params
from coordset.sources import sources_in_use
from stages._entry import run

RAW_DIR = Path("data/raw")


def main() -> None:
    params = load_params()
    used = sources_in_use(params)
    mirror = fetch.mirror_root()
    tmp = RAW_DIR.with_name(".raw.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for source in used:
            # Sources read in place (local) have nothing to fetch; their files are a DVC dependency instead.
            source.fetch_into(tmp / source.name, params, mirror=mirror, progress=True)
        fetch.replace_dir(tmp, RAW_DIR)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


if __name__ == "__main__":
    run(main)
