"""The fetch stage's work: every source in use into one raw folder, replaced whole only when all succeeded."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordset import fetch
from coordset.sources import sources_settings
from coordset.sources.registry import SourceUse


@dataclass(frozen=True)
class FetchSettings:
    sources: tuple[SourceUse, ...]  # sources.use, each with its checked settings
    mirror: Path | None  # COORDSET_MIRROR: read the pinned files from here instead of downloading them


def fetch_settings(params: dict[str, Any]) -> FetchSettings:
    """Check ``sources`` (and read ``COORDSET_MIRROR``) once, before anything is downloaded."""
    return FetchSettings(sources_settings(params), fetch.mirror_root())


def fetch_sources(settings: FetchSettings, raw_dir: Path, *, progress: bool = True) -> None:
    """Fetch every source into ``<raw_dir>/<source>``; ``raw_dir`` changes only once all of them are in."""
    tmp = raw_dir.with_name(f".{raw_dir.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for use in settings.sources:
            # Sources read in place (local) have nothing to fetch; their files are a DVC dependency instead.
            use.source.fetch_into(tmp / use.source.name, use.settings, mirror=settings.mirror, progress=progress)
        fetch.replace_dir(tmp, raw_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
