"""Answer cache of the LLM judge: one small JSON file per request, written atomically as answers arrive.

Layout: ``<cache_dir>/<key[:2]>/<key>.json`` where ``key`` is the sha256 of the canonical JSON of the
whole request that decides the answer (model, every prompt message, temperature, response format).
Each file is replaced atomically (temporary file, fsync, ``os.replace``) every time an answer arrives,
so a run killed at any point leaves each file either as it was or with the new answer: nothing received
and written is lost, and nothing half-written is ever read. A killed writer can leave a dot-named
temporary file behind; :meth:`AnswerCache.remove_stale_temporaries` deletes those before a run, so the
directory DVC tracks (``persist: true``) holds only whole entries. One run writes a cache directory at a
time (DVC locks the stage), which that clean-up relies on.

An entry holds only the model name, the key and the answers (content, finish reason, token usage and the
validation result); never the API key, the endpoint or any header.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordset import atomic
from coordset.errors import CoordsetError

CACHE_FORMAT = 1


def request_key(request: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request (sorted keys, no whitespace, UTF-8)."""
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Answer:
    """One answer received from the endpoint, with its validation result."""

    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    valid: bool
    problem: str | None

    def to_json(self) -> dict[str, Any]:
        return {"content": self.content, "finish_reason": self.finish_reason,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "valid": self.valid, "problem": self.problem}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Answer:
        return cls(content=obj["content"], finish_reason=obj["finish_reason"],
                   prompt_tokens=int(obj["prompt_tokens"]), completion_tokens=int(obj["completion_tokens"]),
                   valid=bool(obj["valid"]), problem=obj["problem"])


@dataclass
class CacheEntry:
    """Every answer received so far for one request key, oldest first."""

    key: str
    model: str
    answers: list[Answer] = field(default_factory=list)


class AnswerCache:
    """Directory of per-key JSON entries; safe for concurrent writers of *different* keys."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files a killed writer left behind; returns how many."""
        removed = 0
        for tmp in self.root.glob("*/.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed

    def load(self, key: str) -> CacheEntry | None:
        path = self.path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            obj = json.loads(text)
            if obj["format"] != CACHE_FORMAT or obj["key"] != key:
                raise ValueError(f"format {obj['format']!r} / key {obj['key']!r} do not match")
            answers = [Answer.from_json(a) for a in obj["answers"]]
            return CacheEntry(key=key, model=obj["model"], answers=answers)
        except (ValueError, KeyError, TypeError) as exc:
            raise CoordsetError(f"{path}: not a valid LLM cache entry ({exc}); delete the file to ask "
                                "the endpoint again") from None

    def store(self, entry: CacheEntry) -> None:
        atomic.write_json(self.path(entry.key), {
            "format": CACHE_FORMAT, "key": entry.key, "model": entry.model,
            "answers": [a.to_json() for a in entry.answers],
        })

    def keys(self) -> list[str]:
        """Every key with an entry on disk (sorted)."""
        return sorted(p.stem for p in self.root.glob("*/*.json") if not p.name.startswith("."))
