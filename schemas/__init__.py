"""Pandera schemas for every output table, and the one helper that applies them.

``check(frame, schema, where)`` validates lazily and, on failure, raises a SchemaViolation
whose message names the file, the first failing rows and the fields involved.
"""

from __future__ import annotations

import os

import pandas as pd
import pandera.errors
import pandera.pandas as pa


class SchemaViolation(Exception):
    """A table that breaks its schema (or is missing); the message names the file, rows and fields.

    Stage entry points treat it like coordset's own errors: one clear line and exit status 2.
    """

MAX_LINES = 10


def _describe(cases: pd.DataFrame) -> list[str]:
    """One line per failure: a missing/unexpected column, or a row with its field and value.

    Table-wide checks report every column of a failing row; those collapse to one line a row.
    """
    lines: list[str] = []
    seen: set[tuple[object, str]] = set()
    for case in cases.to_dict("records"):
        check_name, value, row = case.get("check"), case.get("failure_case"), case.get("index")
        if check_name == "column_in_schema":
            lines.append(f"unexpected column {value!r}")
        elif check_name == "column_in_dataframe":
            lines.append(f"missing column {value!r}")
        elif case.get("schema_context") == "DataFrameSchema":
            key = (row, str(check_name))
            if key not in seen:
                seen.add(key)
                lines.append(f"row {int(row)}: {check_name}" if pd.notna(row) else str(check_name))
        else:
            where = f"row {int(row)}, " if pd.notna(row) else ""
            lines.append(f"{where}field '{case.get('column')}': {check_name} (value: {value!r})")
    return lines


def check(frame: pd.DataFrame, schema: pa.DataFrameSchema, where: str) -> pd.DataFrame:
    """Validate ``frame`` against ``schema``; ``where`` names the file being written or read."""
    try:
        return schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        lines = _describe(exc.failure_cases)
        more = f"\n  … and {len(lines) - MAX_LINES} more" if len(lines) > MAX_LINES else ""
        raise SchemaViolation(
            f"{where}: {len(lines)} schema violation(s) in '{schema.name}':\n  "
            + "\n  ".join(lines[:MAX_LINES]) + more
        ) from None


def read_checked(path: str | os.PathLike[str], schema: pa.DataFrameSchema) -> pd.DataFrame:
    """Read a Parquet table and validate it: a stage checks its inputs as well as its outputs."""
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise SchemaViolation(f"{path}: not found; run the stage that writes it (`dvc repro`)") from None
    return check(frame, schema, str(path))
