"""The source registry: one module per source, each defining ``SOURCE`` (see ``registry.Source``).

Adding a source means adding its module here, its pin file under ``coordset/pins/`` and its tests.
"""

from __future__ import annotations

from typing import Any

from coordset.errors import ParamError
from coordset.params import get, has, require_choice
from coordset.sources import (
    chatbot_arena,
    chatdev,
    debate,
    fastchat_mt_bench,
    llm_deliberation,
    local,
    mad_debate,
    mt_bench_repro,
    who_when,
)
from coordset.sources.registry import Source, SourceUse

REGISTRY: dict[str, Source] = {m.SOURCE.name: m.SOURCE for m in (
    mt_bench_repro, who_when, llm_deliberation, chatdev, mad_debate, fastchat_mt_bench, chatbot_arena, local, debate,
)}


def sources_in_use(params: dict[str, Any]) -> list[Source]:
    """The sources ``sources.use`` names, checked before any work."""
    used = get(params, "sources.use")
    if not isinstance(used, list) or not used:
        raise ParamError("sources.use", f"must be a non-empty list of source names, got {used!r}")
    for name in used:
        if name not in REGISTRY:
            raise ParamError("sources.use", f"names unknown source {name!r}; known: {list(REGISTRY)}")
    if len(set(used)) != len(used):
        raise ParamError("sources.use", f"lists a source twice: {used}")
    return [REGISTRY[name] for name in used]


def source_use(source: Source, params: dict[str, Any]) -> SourceUse:
    """``source`` with its params checked into its settings, and its own bad-record policy if it sets one."""
    key = f"sources.{source.name}.on_bad_record"  # ChatDev: known-unparseable upstream logs are skipped
    policy = require_choice(params, key, ("stop", "skip")) if has(params, key) else None
    return SourceUse(source, source.settings(params), policy)


def sources_settings(params: dict[str, Any]) -> tuple[SourceUse, ...]:
    """Every source ``sources.use`` names, with its checked settings: built once, before any file is read."""
    return tuple(source_use(source, params) for source in sources_in_use(params))
