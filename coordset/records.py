"""Reading source records and turning one conversation into canonical episode and message rows."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordset.errors import CoordsetError


class BadRecord(CoordsetError):
    """One source record that cannot become an episode; names file, line and field."""

    def __init__(self, where: str, problem: str, reason: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.reason = reason  # short category, counted in metrics when skipped


@dataclass
class SkipLog:
    """Records skipped under ``normalize.on_bad_record: skip``; never silent, always counted."""

    policy: str = "stop"
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    by_source: dict[str, str] = field(default_factory=dict)  # a source's own policy, where it has one

    def handle(self, source: str, exc: BadRecord) -> None:
        if self.by_source.get(source, self.policy) == "stop":
            raise exc
        self.counts[(source, exc.reason)] += 1
        if len(self.examples) < 20:
            self.examples.append(str(exc))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRecord]]:
    """Yield (line number, record) per non-empty line; a bad line yields a BadRecord instead."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path}, line {lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, BadRecord(where, f"not valid UTF-8 at byte {exc.start}", "invalid_utf8")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, BadRecord(where, f"malformed JSON ({exc.msg}, column {exc.colno})", "malformed_json")
                continue
            if not isinstance(record, dict):
                yield lineno, BadRecord(where, "expected a JSON object", "malformed_json")
                continue
            yield lineno, record


def require(record: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in record:
        raise BadRecord(where, f"missing field '{key}'", "missing_field")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadRecord(where, f"field '{key}' must be {names}, got {type(value).__name__}", "wrong_type")
    return value


def json_object(data: bytes, where: str) -> dict[str, Any]:
    """Parse one JSON document that must be an object; a BadRecord names ``where`` and what is wrong."""
    try:
        record = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRecord(where, f"not valid UTF-8 at byte {exc.start}", "invalid_utf8") from None
    except json.JSONDecodeError as exc:
        raise BadRecord(where, f"malformed JSON ({exc.msg}, line {exc.lineno} column {exc.colno})",
                        "malformed_json") from None
    if not isinstance(record, dict):
        raise BadRecord(where, "expected a JSON object", "malformed_json")
    return record


def numeric_order(paths: Iterable[Path]) -> list[Path]:
    """``<n>.json`` files in numeric order (1, 2, ..., 10, then any other name), so ids and limits are stable."""
    return sorted(paths, key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name))
