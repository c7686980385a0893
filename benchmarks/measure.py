"""Timing and memory measurement helpers."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[float, T]:
    """Best wall time of ``repeat`` runs (the least disturbed by other load) and the last result."""
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


@dataclass
class ProcessRun:
    command: list[str]
    wall_s: float
    peak_rss_mib: float
    returncode: int
    output: str


def run_measured(command: list[str], cwd: Path, env: dict[str, str]) -> ProcessRun:
    """Run a command; its wall time and the peak RSS of that process, read from wait4's rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux.
    return ProcessRun(command, wall, usage.ru_maxrss / 1024, proc.returncode, output)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), for the machine line of a benchmark's report."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def self_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def marked_section(text: str, begin: str, end: str) -> str | None:
    """The part of ``text`` from ``begin`` to ``end`` (markers included), or None."""
    if begin in text and end in text.split(begin, 1)[1]:
        return begin + text.split(begin, 1)[1].split(end, 1)[0] + end
    return None


def write_section(markdown_path: Path, section: str, begin: str, end: str) -> None:
    """Replace the ``begin``..``end`` section of ``markdown_path`` by ``section`` (or append it), atomically."""
    from coordset import atomic

    text = markdown_path.read_text(encoding="utf-8") if markdown_path.exists() else ""
    old = marked_section(text, begin, end)
    if old is not None:
        text = text.replace(old + "\n", section, 1) if old + "\n" in text else text.replace(old, section, 1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic.write_text(markdown_path, text)


def write_results(json_path: Path, result: dict[str, Any], markdown_path: Path, section: str, begin: str,
                  end: str) -> None:
    """A benchmark's results as JSON and its ``begin``..``end`` section of ``markdown_path``, each atomically."""
    from coordset import atomic

    atomic.write_json(json_path, result)
    write_section(markdown_path, section, begin, end)
