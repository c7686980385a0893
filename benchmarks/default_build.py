"""The default build's end-to-end time, stage by stage, from one run.

``python -m benchmarks.default_build [PROJECT]`` runs every stage of ``dvc.yaml`` in order in PROJECT
(default: this repository), each as its own process (wall time, peak RSS), records the outputs in
``dvc.lock`` with ``dvc commit`` exactly as ``dvc repro`` would, and writes the figures to
``benchmarks/default_build.json`` and the "Default build" section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import yaml

from benchmarks.measure import run_measured, write_results
from testkit.pipeline import DVC_ENV, dvc

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- default-build:begin -->", "<!-- default-build:end -->"


def measure(project: Path) -> dict:
    params = yaml.safe_load((project / "params.yaml").read_text())
    stages = {}
    for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]:  # in pipeline order
        run = run_measured([sys.executable, "-m", f"stages.{stage}"], project, {**DVC_ENV, "PYTHONPATH": ""})
        if run.returncode != 0:
            raise SystemExit(f"stage {stage} failed:\n{run.output[-4000:]}")
        stages[stage] = {"wall_s": round(run.wall_s, 1), "peak_rss_mib": round(run.peak_rss_mib)}
        print(f"  {stage}: {run.wall_s:.1f} s, peak RSS {run.peak_rss_mib:.0f} MiB", flush=True)
    dvc(project, "commit", "--force")
    metrics = json.loads((project / "metrics/enrich.json").read_text())["overall"]
    return {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "sources": params["sources"]["use"], "numerics": params.get("numerics"),
            "episodes": metrics["episodes"], "messages": metrics["messages"], "stages": stages,
            "total_s": round(sum(s["wall_s"] for s in stages.values()), 1)}


def markdown(result: dict) -> str:
    rows = "\n".join(f"| {name} | {s['wall_s']} | {s['peak_rss_mib']} |" for name, s in result["stages"].items())
    minutes = result["total_s"] / 60
    return (f"{BEGIN}\n## Default build, end to end\n\n"
            f"`python -m benchmarks.default_build` on {result['machine']['cpus']} CPUs: sources "
            f"{', '.join(result['sources'])} ({result['episodes']:,} episodes, {result['messages']:,} messages), "
            f"`numerics: {result['numerics']}`. Every stage once, in order, from nothing: "
            f"**{result['total_s']} s ({minutes:.1f} min)**, target under 20 min: "
            f"{'met' if minutes < 20 else '**not met**'}.\n\n"
            f"| stage | wall (s) | peak RSS (MiB) |\n|---|---|---|\n{rows}\n{END}\n")



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=HERE.parent)
    parser.add_argument("--markdown", type=Path, default=HERE.parent / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not os.environ.get("COORDSET_MIRROR"):
        raise SystemExit("set COORDSET_MIRROR=<path to>/shared/mirror (the build runs offline)")
    os.environ.update(DVC_ENV)
    result = measure(args.project.resolve())
    write_results(HERE / "default_build.json", result, args.markdown, markdown(result), BEGIN, END)
    print(f"total {result['total_s']} s; wrote {HERE / 'default_build.json'} and {args.markdown}")


if __name__ == "__main__":
    main()
