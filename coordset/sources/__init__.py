"""The source registry: one module per source, each defining ``SOURCE`` (see ``registry.Source``).

Adding a source means adding its module here, its pin file under ``coordset/pins/`` and its tests.
"""

from __future__ import annotations

from typing import Any

from coordset.errors import ParamError
from coordset.params import get
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
from coordset.sources.registry import Source

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
