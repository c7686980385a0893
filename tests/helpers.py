"""Small builders shared by tests: params, arena-shaped records, repo paths."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from testkit.pipeline import MIRROR, REPO  # noqa: F401  (re-exported for the tests)

# The key the LLM tests' endpoint accepts; secret scans look for it in every output.
LLM_API_KEY = "sk-test-coordset-0123456789abcdef-SECRET"


def repo_params(**overrides: Any) -> dict[str, Any]:
    """The repo's params.yaml with dotted-key overrides, e.g. ``{"sources.use": ["local"]}``."""
    params = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    for dotted, value in overrides.items():
        node = params
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return params


def arena_record(qid: str = "q1", *, model_a: str = "alpha", model_b: str = "beta", winner: str = "model_a",
                 users: tuple[str, ...] = ("Hi there", "And then?"), replies_a: tuple[str, ...] | None = None,
                 replies_b: tuple[str, ...] | None = None, **extra: Any) -> dict[str, Any]:
    replies_a = replies_a if replies_a is not None else tuple(f"A says {i}" for i in range(len(users)))
    replies_b = replies_b if replies_b is not None else tuple(f"B says {i}" for i in range(len(users)))

    def conv(replies: tuple[str, ...]) -> list[dict[str, str]]:
        out = []
        for i, user in enumerate(users):
            out.append({"role": "user", "content": user})
            if i < len(replies):
                out.append({"role": "assistant", "content": replies[i]})
        return out

    record = {"question_id": qid, "model_a": model_a, "model_b": model_b, "winner": winner, "judge": "arena_user",
              "conversation_a": conv(replies_a), "conversation_b": conv(replies_b), "turn": len(users),
              "anony": True, "language": "English", "tstamp": 1682351591.1322, "openai_moderation": {"flagged": False},
              "toxic_chat_tag": {"roberta-large": {"flagged": False}}}
    record.update(extra)
    return record


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def fetch_raw(raw: Path, *names: str, params: dict[str, Any] | None = None) -> Path:
    """Fetch sources' pinned files from the mirror into ``raw/<name>`` as the fetch stage does; return ``raw``."""
    from coordset.sources import REGISTRY

    for name in names:
        REGISTRY[name].fetch_into(raw / name, params or repo_params(), mirror=MIRROR)
    return raw
