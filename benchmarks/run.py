"""Run every benchmark and write benchmarks/results.json and BENCHMARKS.md.

    COORDSET_MIRROR=../shared/mirror python -m benchmarks.run            # the large set, ~25 min on 2 cores
    COORDSET_MIRROR=../shared/mirror python -m benchmarks.run --quick    # a small slice, about 7 min on 2 cores

Figures are ratios of two timings taken in the same run (a stage against the raw library doing the
same work), so they hold on a noisy machine. The large set is `fastchat_mt_bench`: 31 models, every
pair, 80 questions = 37,200 episodes.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from benchmarks import embed_backends, sections
from benchmarks.measure import run_measured
from benchmarks.report import write_report
from testkit.pipeline import DVC_ENV, copy_repo, dvc, git

HERE = Path(__file__).resolve().parent
# --quick: 2 models (1 pair x 80 questions = 80 episodes) instead of all 31.
QUICK_MODELS = ["gpt-4", "vicuna-13b-v1.3"]


def set_params(project: Path, quick: bool) -> dict[str, Any]:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["sources"]["use"] = ["fastchat_mt_bench"]
    params["sources"]["fastchat_mt_bench"]["models"] = QUICK_MODELS if quick else []
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def run_pipeline(project: Path) -> dict[str, Any]:
    """Each stage as its own process (wall time, peak RSS), then recorded in dvc.lock with `dvc commit`."""
    stages: dict[str, Any] = {}
    for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]:  # in pipeline order
        run = run_measured([sys.executable, "-m", f"stages.{stage}"], project, {**DVC_ENV, "PYTHONPATH": ""})
        if run.returncode != 0:
            raise SystemExit(f"stage {stage} failed:\n{run.output[-4000:]}")
        stages[stage] = {"wall_s": round(run.wall_s, 2), "peak_rss_mib": round(run.peak_rss_mib, 1)}
        print(f"  {stage}: {run.wall_s:.1f} s, peak RSS {run.peak_rss_mib:.0f} MiB", flush=True)
    # The outputs were made by the stages' own commands; `dvc commit` records them as `dvc repro` would.
    dvc(project, "commit", "--force")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "benchmark baseline")
    return stages


def rank_sweep(project: Path, pipeline: dict[str, Any]) -> dict[str, Any]:
    run = run_measured([sys.executable, "-m", "dvc", "exp", "run", "-S", "rank=16"], project, DVC_ENV)
    if run.returncode != 0:
        raise SystemExit(f"dvc exp run failed:\n{run.output[-4000:]}")
    reran = re.findall(r"Running stage '([^']+)'", run.output)
    full = sum(s["wall_s"] for s in pipeline.values())
    return {"stages_rerun": reran, "wall_s": round(run.wall_s, 2), "full_pipeline_s": round(full, 2),
            "fraction_of_full": round(run.wall_s / full, 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small slice, for a smoke test (about 7 min on 2 cores)")
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json goes (default benchmarks/)")
    parser.add_argument("--markdown", type=Path, default=HERE.parent / "BENCHMARKS.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = parser.parse_args(argv)
    if not os.environ.get("COORDSET_MIRROR"):
        raise SystemExit("set COORDSET_MIRROR=<path to>/shared/mirror (the benchmarks run offline)")
    os.environ.update(DVC_ENV)
    workdir = Path(tempfile.mkdtemp(prefix="coordset-bench-"))
    try:
        project = copy_repo(workdir / "project")
        params = set_params(project, args.quick)
        git(project, "commit", "-qam", "benchmark params")
        print("pipeline, stage by stage:", flush=True)
        pipeline = run_pipeline(project)
        episodes = pd.read_parquet(project / "data/normalized/episodes.parquet")
        messages = pd.read_parquet(project / "data/normalized/messages.parquet")
        results: dict[str, Any] = {
            "mode": "quick" if args.quick else "full",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system()},
            "dataset": {"source": "fastchat_mt_bench", "episodes": int(len(episodes)),
                        "messages": int(len(messages)), "distinct_texts": int(messages["text_sha256"].nunique())},
            "pipeline": pipeline,
        }
        print("enrich vs tiktoken:", flush=True)
        results["enrich"] = sections.enrich_vs_tiktoken(episodes, messages, params)
        print("embed vs sentence-transformers:", flush=True)
        results["embed"] = sections.embed_vs_sentence_transformers(messages, params, quick=args.quick)
        print("embed backends and numeric modes against the machine's limit:", flush=True)
        results["embed"]["backends"] = embed_backends.measure(project, n_texts=100 if args.quick else 400,
                                                              rounds=1 if args.quick else 2,
                                                              every_text=not args.quick)
        print("scaling:", flush=True)
        results["scaling"] = sections.scaling(episodes, messages, params, full_embed_s=results["embed"]["stage_s"])
        print("labels throughput:", flush=True)
        results["labels"] = sections.llm_throughput(episodes, messages, params, quick=args.quick)
        print("rank sweep:", flush=True)
        results["rank_sweep"] = rank_sweep(project, pipeline)
        results["memory"] = {stage: v["peak_rss_mib"] for stage, v in pipeline.items()}
        write_report(results, args.out / "results.json", args.markdown)
        print(f"wrote {args.out / 'results.json'} and {args.markdown}")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
