"""Which sources a build uses, checked before any work."""

from __future__ import annotations

from typing import Any

from coordset.errors import ParamError
from coordset.params import get

KNOWN_SOURCES = ("mt_bench_repro", "fastchat_mt_bench", "chatbot_arena", "local")


def sources_in_use(params: dict[str, Any]) -> list[str]:
    used = get(params, "sources.use")
    if not isinstance(used, list) or not used:
        raise ParamError("sources.use", f"must be a non-empty list of source names, got {used!r}")
    for name in used:
        if name not in KNOWN_SOURCES:
            raise ParamError("sources.use", f"names unknown source {name!r}; known: {list(KNOWN_SOURCES)}")
    if len(set(used)) != len(used):
        raise ParamError("sources.use", f"lists a source twice: {used}")
    return list(used)
