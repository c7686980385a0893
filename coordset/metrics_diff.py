"""Markdown summary of what a change does to DVC params and metrics, for pull-request comments.

Runs ``dvc params diff --json`` and ``dvc metrics diff --json`` (DVC's documented machine-readable output)
between a base revision and a revision or the workspace, and renders one comment with a heading and two
tables. Run it locally the same way CI does::

    python -m coordset.metrics_diff --base origin/main            # base vs. the workspace
    python -m coordset.metrics_diff --base main --rev HEAD --output diff.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordset.atomic import write_text
from coordset.errors import CoordsetError

# Lets the PR workflow find and update its own earlier comment instead of adding one per push.
COMMENT_MARKER = "<!-- coordset-metrics-diff -->"
WORKSPACE = "workspace"

Diff = dict[str, dict[str, dict[str, Any]]]  # {file: {dotted key: {"old": .., "new": .., "diff": ..}}}


def dvc_diff(kind: str, base: str, rev: str | None = None, *, repo: Path = Path("."),
             show_all: bool = False) -> tuple[Diff, str]:
    """``dvc <kind> diff --json base [rev]`` in ``repo``; returns the parsed diff and DVC's warnings."""
    if kind not in ("metrics", "params"):
        raise ValueError(f"kind must be 'metrics' or 'params', not {kind!r}")
    args = [kind, "diff", "--json", *(["--all"] if show_all else []), base, *([rev] if rev else [])]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise CoordsetError(f"`dvc {' '.join(args)}` in {repo} failed "
                            f"(exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    try:
        diff = json.loads(result.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise CoordsetError(f"`dvc {kind} diff --json` printed something that is not JSON: "
                            f"{result.stdout[:200]!r}") from exc
    return diff, result.stderr.strip()


def short_sha(rev: str, repo: Path = Path(".")) -> str | None:
    """The abbreviated commit a revision names, to show next to a branch name; None if git can't tell."""
    result = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=repo,
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_value(value: Any, precision: int = 5) -> str:
    """One table cell: floats rounded like ``dvc metrics diff`` (5 digits), '—' where a side has no value."""
    if value is None:
        return "—"
    if not _is_number(value):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    elif isinstance(value, float) and math.isfinite(value):
        text = repr(round(value, precision))
    else:
        text = repr(value)
    # A '|' would split the cell and a newline would end the row.
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def table(diff: Diff, what: str, old_label: str, new_label: str, precision: int = 5) -> str:
    """A Markdown table of one diff, rows sorted by file then key; a sentence when nothing changed."""
    rows = [(path, key, change) for path, changes in sorted(diff.items())
            for key, change in sorted(changes.items())]
    if not rows:
        return f"No {what.lower()} changed."
    lines = [f"| Path | {what} | {old_label} | {new_label} | Change |", "|---|---|---|---|---|"]
    for path, key, change in rows:
        delta = format_value(change.get("diff"), precision)
        if _is_number(change.get("diff")) and change["diff"] > 0:
            delta = "+" + delta  # reviewers read direction first
        cells = [format_value(path), format_value(key), format_value(change.get("old"), precision),
                 format_value(change.get("new"), precision), delta]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(params: Diff, metrics: Diff, base: str, rev: str | None = None, *,
                    base_sha: str | None = None, rev_sha: str | None = None, warnings: Sequence[str] = (),
                    precision: int = 5) -> str:
    """The whole comment: marker, heading, params table, metrics table, and any DVC warnings."""
    old_label = f"`{base}`"
    new_label = f"`{rev}`" if rev else WORKSPACE
    heading_old = old_label + (f" ({base_sha})" if base_sha else "")
    heading_new = new_label + (f" ({rev_sha})" if rev_sha else "")
    parts = [COMMENT_MARKER, f"## DVC params and metrics: {heading_old} → {heading_new}", "",
             "### Params", "", table(params, "Param", old_label, new_label, precision), "",
             "### Metrics", "", table(metrics, "Metric", old_label, new_label, precision), ""]
    for warning in warnings:
        if warning:
            parts += [f"> **dvc:** {' '.join(warning.split())}", ""]
    return "\n".join(parts)


def build_report(base: str, rev: str | None = None, *, repo: Path = Path("."), show_all: bool = False,
                 precision: int = 5) -> str:
    """Run both diffs in ``repo`` and render them."""
    params, params_warnings = dvc_diff("params", base, rev, repo=repo, show_all=show_all)
    metrics, metrics_warnings = dvc_diff("metrics", base, rev, repo=repo, show_all=show_all)
    return render_markdown(params, metrics, base, rev, base_sha=short_sha(base, repo),
                           rev_sha=short_sha(rev, repo) if rev else None,
                           warnings=[params_warnings, metrics_warnings], precision=precision)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m coordset.metrics_diff",
                                     description="Markdown of `dvc params diff` and `dvc metrics diff`.")
    parser.add_argument("--base", required=True, help="git revision to compare against, e.g. origin/main")
    parser.add_argument("--rev", default=None, help="git revision to compare (default: the workspace)")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown here (default: stdout)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="DVC project root (default: .)")
    parser.add_argument("--all", dest="show_all", action="store_true", help="list unchanged values too")
    parser.add_argument("--precision", type=int, default=5, help="round floats to this many digits")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    report = build_report(args.base, args.rev, repo=args.repo, show_all=args.show_all,
                          precision=args.precision)
    if args.output is None:
        sys.stdout.write(report)
    else:
        write_text(args.output, report)


if __name__ == "__main__":
    from coordset.errors import run_main

    run_main(main)
