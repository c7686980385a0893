"""Arena-shaped records read as head-to-head episodes (the Hub's Chatbot Arena and a researcher's files)."""

from __future__ import annotations

from pathlib import Path

from coordset.records import BadRecord, SkipLog
from coordset.sources.arena_records import arena_conversation, read_arena_records
from coordset.sources.parallel import parallel_episode
from coordset.sources.registry import SourceData


def read_arena(path: Path, source: str, skips: SkipLog) -> SourceData:
    episodes = []
    for where, record in read_arena_records(path):
        try:
            if isinstance(record, BadRecord):
                raise record
            episodes.append(parallel_episode(arena_conversation(record, where, source), where))
        except BadRecord as exc:
            skips.handle(source, exc)
    return SourceData(episodes)
