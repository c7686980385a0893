"""A researcher's own conversations under data/local/, read in place (a DVC dependency of normalize)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coordset.params import require_str
from coordset.records import SkipLog
from coordset.sources.arena import read_arena
from coordset.sources.registry import Source, SourceData

NAME = "local"


def location(params: dict[str, Any]) -> Path:
    return Path(require_str(params, f"sources.{NAME}.path"))


def read(path: Path, params: dict[str, Any], skips: SkipLog) -> SourceData:
    return read_arena(path, NAME, skips)


SOURCE = Source(
    name=NAME,
    title="The researcher's own conversations in the arena record shape (data/local/)",
    licence="the researcher's own",
    homepage="data/local/README.md",
    location=location,
    read=read,
    billing="own_thread",
    parallel=True,
    native_labels=("human_vote",),
    card="Whoever builds with local data sets its licence; check it before publishing. The outcome is the vote "
         "recorded in each record.",
)
