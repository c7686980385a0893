"""Record files for the ``local`` and ``debate`` sources: which files, their records, and each file's format.

A path is a file or a folder (every ``.jsonl``, ``.json`` and ``.parquet`` file under it, sorted, except
hidden files and ``*.schema.json``). A file holds records:

- ``.jsonl``: one JSON object per line (``<file>, line N``);
- ``.json``: one object (``<file>``), a list of objects (``<file>, record K (line N)``: MALLM writes its
  whole output as one list), or JSON Lines written under a ``.json`` name;
- ``.parquet``: one record per row (``<file>, row K``).

A record that cannot be read is a :class:`~coordset.records.BadRecord` in its place, so the reader stops
or skips and counts it like any other bad record. ``detect_format`` names a file's format from the keys of
its first readable record (see ``FORMAT_RULES``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordset.records import BadRecord, read_jsonl

SUFFIXES = (".jsonl", ".json", ".parquet")
SCHEMA_SUFFIX = ".schema.json"  # a JSON Schema kept beside the data (data/local/n_speaker.schema.json) is not data

# How `auto` tells a file's format from the keys of its first record; exactly one rule must match.
FORMAT_RULES: dict[str, str] = {
    "arena": "has model_a, model_b, conversation_a or conversation_b",
    "n_speaker": "has both agents and messages",
    "autogen": "has history, or has messages without agents",
    "mallm": "has globalMemory or decisionSuccess, or both personas and exampleId",
}


@dataclass(frozen=True)
class Record:
    """One record of a file: where it is (for error messages), a key naming it, and its data."""

    where: str  # "<file>, line 3", "<file>, record 2 (line 1)", "<file>, row 0" or "<file>"
    key: str  # the file's path under the root without its suffix, plus "/<index>" when the file holds several
    file_key: str  # the file's path under the root without its suffix
    index: int  # 0-based position in the file
    data: dict[str, Any] | BadRecord


def record_files(root: Path) -> list[Path]:
    """``root`` itself if it is a file, else the record files under it in sorted order."""
    if not root.is_dir():
        return [root]
    return [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in SUFFIXES
            and not p.name.startswith(".") and not p.name.endswith(SCHEMA_SUFFIX)]


def file_key(root: Path, path: Path) -> str:
    """The path of ``path`` under ``root`` (a folder) without its suffix; a file's own stem when root is the file."""
    rel = path.relative_to(root) if root.is_dir() else Path(path.name)
    return rel.with_suffix("").as_posix()


def read_records(path: Path, key: str) -> list[Record]:
    """Every record of one file, in order; unreadable ones as BadRecords naming the file and line, record or row."""
    items = list(_items(path))
    many = len(items) > 1
    return [Record(where, f"{key}/{index}" if many else key, key, index, data)
            for index, (where, data) in enumerate(items)]


def _items(path: Path) -> list[tuple[str, dict[str, Any] | BadRecord]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [(f"{path}, row {i}", row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    if path.suffix == ".jsonl":
        return [(f"{path}, line {lineno}", record) for lineno, record in read_jsonl(path)]
    return _json_items(path)


def _json_items(path: Path) -> list[tuple[str, dict[str, Any] | BadRecord]]:
    where = str(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [(where, BadRecord(where, f"not valid UTF-8 at byte {exc.start}", "invalid_utf8"))]
    if not text.strip():
        return []
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines under a .json name (MALLM's own input files are written so)
            return [(f"{path}, line {lineno}", record) for lineno, record in read_jsonl(path)]
        return [(where, BadRecord(where, f"malformed JSON ({exc.msg}, line {exc.lineno} column {exc.colno})",
                                  "malformed_json"))]
    if isinstance(document, dict):
        return [(where, document)]
    if not isinstance(document, list):
        return [(where, BadRecord(where, f"expected a JSON object or a list of objects, got "
                                         f"{type(document).__name__}", "malformed_json"))]
    out: list[tuple[str, dict[str, Any] | BadRecord]] = []
    for index, (line, item) in enumerate(zip(_element_lines(text), document, strict=True)):
        here = f"{path}, record {index} (line {line})"
        out.append((here, item if isinstance(item, dict) else BadRecord(
            here, f"expected a JSON object, got {type(item).__name__}", "malformed_json")))
    return out


def _element_lines(text: str) -> list[int]:
    """The 1-based line on which each element of a (valid) top-level JSON array starts."""
    decoder = json.JSONDecoder()
    pos, line, lines = text.index("[") + 1, 1, []
    counted = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return lines
        line += text.count("\n", counted, pos)
        counted = pos
        lines.append(line)
        _, pos = decoder.raw_decode(text, pos)


def detect_format(records: list[Record], path: Path) -> str | None:
    """The format of a file from the keys of its first readable record; None when it has none.

    Raises a BadRecord naming the file when no rule, or more than one, matches.
    """
    first = next((r.data for r in records if isinstance(r.data, dict)), None)
    if first is None:
        return None
    keys = set(first)
    matches = [name for name, ok in (
        ("arena", bool(keys & {"model_a", "model_b", "conversation_a", "conversation_b"})),
        ("n_speaker", {"agents", "messages"} <= keys),
        ("autogen", "history" in keys or ("messages" in keys and "agents" not in keys)),
        ("mallm", bool(keys & {"globalMemory", "decisionSuccess"}) or {"personas", "exampleId"} <= keys),
    ) if ok]
    if len(matches) == 1:
        return matches[0]
    rules = "; ".join(f"{name}: {rule}" for name, rule in FORMAT_RULES.items())
    found = "matches " + " and ".join(matches) if matches else "matches no format"
    raise BadRecord(str(path), f"cannot tell the format of this file: its first record {found} (keys: "
                    f"{sorted(keys)[:12]}). Rules: {rules}. Set sources.local.format to the file's format "
                    "(or keep files of one format in the folder sources.local.path names)", "unknown_format")
