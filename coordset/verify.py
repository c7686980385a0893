"""Compare two builds table by table, for machines whose floats cannot match the committed bytes.

``python -m coordset.verify A B`` takes two project folders (or two ``data/`` folders, or two Parquet
files) and compares every Parquet table present in both: the same rows and columns, exact equality of
every column that is not a float (ids, keys, texts, counts, labels), and for float columns and vectors
(embeddings, latent states) the largest absolute deviation and the smallest cosine similarity. A table
passes when its exact columns are equal and its floats stay within ``--abs`` (largest absolute difference)
and ``--cosine`` (smallest cosine of any vector pair). Exit status 0 when every table passes, 1 when one
does not, 2 for a usage error.

Floats made by a model that is *trained* (latent states, the latent metrics, probe results) can move more
than an embedding does on another CPU or a GPU, because a small difference early in training grows; the
report shows by how much, so a reader can tell a numeric-path difference from a real one.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coordset.errors import CoordsetError

DEFAULT_ABS = 1e-4
DEFAULT_COSINE = 0.9999


@dataclass
class TableReport:
    name: str
    rows: tuple[int, int]
    exact_mismatches: dict[str, int] = field(default_factory=dict)  # column -> rows that differ
    max_abs: dict[str, float] = field(default_factory=dict)  # float column -> largest |a - b|
    min_cosine: dict[str, float] = field(default_factory=dict)  # vector column -> smallest cosine

    def passed(self, abs_tol: float, cosine_tol: float) -> bool:
        return (self.rows[0] == self.rows[1] and not any(self.exact_mismatches.values())
                and all(v <= abs_tol for v in self.max_abs.values())
                and all(v >= cosine_tol for v in self.min_cosine.values()))


def _tables(root: Path) -> dict[str, Path]:
    if root.is_file():
        return {root.name: root}
    base = root / "data" if (root / "data").is_dir() else root
    if not base.is_dir():
        raise CoordsetError(f"{root}: neither a Parquet file nor a folder with Parquet tables")
    return {str(p.relative_to(base)): p for p in sorted(base.rglob("*.parquet")) if not p.name.startswith(".")}


def _is_vector(value: Any) -> bool:
    return isinstance(value, np.ndarray | list) and len(value) > 0 and all(
        isinstance(x, float | np.floating) for x in value)


class _Deviation:
    """Walks two values side by side: counts exact mismatches, tracks float and vector deviations."""

    def __init__(self) -> None:
        self.exact = 0
        self.max_abs = 0.0
        self.min_cosine = 1.0
        self.vectors = False

    def compare(self, a: Any, b: Any) -> None:
        if _is_vector(a) and _is_vector(b) and len(a) == len(b):
            x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            self.vectors = True
            self.max_abs = max(self.max_abs, float(np.max(np.abs(x - y))))
            norm = float(np.linalg.norm(x) * np.linalg.norm(y))
            self.min_cosine = min(self.min_cosine, float(x @ y / norm) if norm else float(np.array_equal(x, y)))
        elif isinstance(a, dict) and isinstance(b, dict):
            if set(a) != set(b):
                self.exact += 1
            for key in set(a) & set(b):
                self.compare(a[key], b[key])
        elif isinstance(a, np.ndarray | list) and isinstance(b, np.ndarray | list):
            if len(a) != len(b):
                self.exact += 1
            for x, y in zip(a, b, strict=False):
                self.compare(x, y)
        elif isinstance(a, float | np.floating) and isinstance(b, float | np.floating):
            if math.isnan(a) or math.isnan(b):
                self.exact += int(math.isnan(a) != math.isnan(b))
            else:
                self.max_abs = max(self.max_abs, abs(float(a) - float(b)))
        elif not (_missing(a) and _missing(b)) and a != b:
            self.exact += 1


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, np.ndarray | list | dict | str) and bool(pd.isna(value)))


def compare_tables(name: str, a: pd.DataFrame, b: pd.DataFrame) -> TableReport:
    report = TableReport(name, (len(a), len(b)))
    for column in sorted(set(a.columns) | set(b.columns)):
        if column not in a or column not in b:
            report.exact_mismatches[f"{column} (in one build only)"] = max(len(a), len(b))
            continue
        if len(a) != len(b):
            continue
        deviation = _Deviation()
        if pd.api.types.is_float_dtype(a[column]) and pd.api.types.is_float_dtype(b[column]):
            x, y = a[column].to_numpy(dtype=np.float64), b[column].to_numpy(dtype=np.float64)
            nan = np.isnan(x) | np.isnan(y)
            deviation.exact = int((np.isnan(x) != np.isnan(y)).sum())
            deviation.max_abs = float(np.max(np.abs(x[~nan] - y[~nan]))) if (~nan).any() else 0.0
            floats = True
        else:
            for x, y in zip(a[column].tolist(), b[column].tolist(), strict=True):
                deviation.compare(x, y)
            floats = deviation.max_abs > 0 or deviation.vectors
        report.exact_mismatches[column] = deviation.exact
        if floats:
            report.max_abs[column] = deviation.max_abs
        if deviation.vectors:
            report.min_cosine[column] = deviation.min_cosine
    return report


def verify(a: Path, b: Path) -> list[TableReport]:
    left, right = _tables(a), _tables(b)
    names = sorted(set(left) | set(right))
    reports = []
    for name in names:
        if name not in left or name not in right:
            reports.append(TableReport(name, (int(name in left), int(name in right)),
                                       {"(table in one build only)": 1}))
            continue
        reports.append(compare_tables(name, pd.read_parquet(left[name]), pd.read_parquet(right[name])))
    return reports


def render(reports: list[TableReport], abs_tol: float, cosine_tol: float) -> str:
    lines = []
    for r in reports:
        status = "ok  " if r.passed(abs_tol, cosine_tol) else "FAIL"
        lines.append(f"{status} {r.name}: rows {r.rows[0]} vs {r.rows[1]}")
        lines += [f"       {column}: {n} row(s) differ" for column, n in r.exact_mismatches.items() if n]
        lines += [f"       {column}: max |a - b| = {v:.3g}" for column, v in r.max_abs.items()]
        lines += [f"       {column}: min cosine = {v:.9f}" for column, v in r.min_cosine.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="a project folder, a data/ folder or a Parquet file")
    parser.add_argument("b", type=Path, help="the build to compare it with")
    parser.add_argument("--abs", type=float, default=DEFAULT_ABS, help=f"float tolerance (default {DEFAULT_ABS})")
    parser.add_argument("--cosine", type=float, default=DEFAULT_COSINE,
                        help=f"smallest cosine of two vectors (default {DEFAULT_COSINE})")
    args = parser.parse_args(argv)
    reports = verify(args.a, args.b)
    sys.stdout.write(render(reports, args.abs, args.cosine))
    return 0 if all(r.passed(args.abs, args.cosine) for r in reports) else 1


if __name__ == "__main__":
    from coordset.errors import run_main

    run_main(main)
