"""Turn the measured figures into results.json and the BENCHMARKS.md table (figure, target, met)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import default_build, embed_backends, numerics
from benchmarks.measure import marked_section
from coordset import atomic

# Sections written by their own benchmark (or by hand, between markers): carried over from the old file.
KEPT_SECTIONS = ((default_build.BEGIN, default_build.END), (embed_backends.BEGIN, embed_backends.END),
                 ("<!-- embed-notes:begin -->", "<!-- embed-notes:end -->"), (numerics.BEGIN, numerics.END),
                 ("<!-- llm-server:begin -->", "<!-- llm-server:end -->"))
EMBED_RSS_TARGET_MIB = 2048  # the embed stage on the large set

# What was tried where a target is not met; shown next to the figure. Kept here, beside the targets.
NOTES = {
    "embed_int8_cosine": "dynamic int8 of every Linear layer: per-tensor activation scales over a whole batch, "
                         "and the feed-forward down-projections of layers 0-3 see activations with outlier "
                         "channels (up to 78x the median channel), so those layers alone lose 10-30% of their "
                         "output norm; per-channel weights halve that but every other layer still errs 4-10%. "
                         "Layer-by-layer figures in the notes below; `torch_bf16` is the faster path that meets "
                         "the bar.",
    "embed_ratio": "texts are de-duplicated by sha256 and sorted by length before batching, the same batch size "
                   "and settings as the raw call; the remainder is reading the model's tokenizer twice "
                   "(lengths for chunking) and building the output table.",
}


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """(figure, value, target, met) rows; ``met`` is None where the figure has no target."""
    rows: list[dict[str, Any]] = []

    def add(key: str, name: str, value: Any, target: str, met: bool | None) -> None:
        rows.append({"key": key, "figure": name, "value": value, "target": target, "met": met,
                     "note": NOTES.get(key, "") if met is False else ""})

    enrich = results["enrich"]
    # Retired as a target: the remaining gap is about 2 seconds on the large set (reported, not steered by).
    add("enrich_ratio", "enrich stage / tiktoken batch encoding", f"{enrich['ratio']}x "
        f"({enrich['stage_s']} s vs {enrich['tiktoken_batch_s']} s)", "report", None)
    embed = results["embed"]
    add("embed_ratio", "embed stage / SentenceTransformer.encode", f"{embed['ratio']}x", "<= 1.15x",
        embed["ratio"] <= 1.15)
    add("embed_dedup", "embed speed-up over encoding every message", f"{embed['dedup_speedup']}x", "> 10x",
        embed["dedup_speedup"] > 10)
    backends = embed.get("backends")
    if backends:
        limit = backends["limit"]
        add("embed_sgemm_limit", "machine limit: fp32 sgemm on all threads (bf16 gemm)",
            f"{limit['sgemm_gflops']} GFLOP/s ({limit['bf16_gemm_gflops'] or '–'})", "report", None)
        cosine = backends.get("cosine", {})
        for name, run in backends["runs"].items():
            add(f"embed_limit_{name}", f"embed, {name}: achieved GFLOP/s / sgemm limit",
                f"{run['achieved_gflops']} / {limit['sgemm_gflops']} = {run['of_sgemm_limit']:.0%}", "report", None)
            if name == embed_backends.DEFAULT:
                continue
            add(f"embed_speedup_{name}", f"embed, {name}: speed-up vs portable default / vs native fp32",
                f"{run['speedup_vs_default']}x / {run['speedup_vs_native']}x",
                ">= 1.5x native fp32" if name == embed_backends.FAST else "report",
                run["speedup_vs_native"] >= 1.5 if name == embed_backends.FAST else None)
            versus = cosine.get(name, {}).get("vs_default")
            if versus:
                bar = embed_backends.COSINE_BAR
                meets = versus["min"] >= bar["min"] and versus["mean"] >= bar["mean"]
                key = "embed_int8_cosine" if "int8" in name else f"embed_cosine_{name}"
                add(key, f"embed, {name}: cosine vs default, min / mean ({cosine['texts']} texts)",
                    f"{versus['min']} / {versus['mean']}", f">= {bar['min']} / >= {bar['mean']}",
                    meets if name != embed_backends.NATIVE else None)
    sweep = results["rank_sweep"]
    add("rank_sweep_stages", "`dvc exp run -S rank=16` re-ran", ", ".join(sweep["stages_rerun"]),
        "latent and what follows it only", "latent" in sweep["stages_rerun"]
        and set(sweep["stages_rerun"]) <= {"latent", "release"})
    add("rank_sweep_time", "rank sweep time / full pipeline",
        f"{sweep['wall_s']} s / {sweep['full_pipeline_s']} s", "report", None)
    labels = results["labels"]
    add("labels_speedup", "LLM labels, concurrency 16 vs sequential (200 ms a call)", f"{labels['speedup']}x",
        ">= 10x", labels["speedup"] >= 10)
    add("labels_warm", "LLM calls on a warm-cache re-run", labels["warm_cache_calls"], "0",
        labels["warm_cache_calls"] == 0)
    for stage, mib in results["memory"].items():
        target = EMBED_RSS_TARGET_MIB if stage == "embed" else 4096
        add(f"memory_{stage}", f"peak RSS, {stage}", f"{mib:.0f} MiB", f"< {target} MiB", mib < target)
    for row in results["scaling"]:
        add(f"scaling_{row['fraction']}", f"cost per unit at {row['fraction']:g} of the set, vs all",
            f"enrich {row['enrich_per_episode_vs_full']}, embed {row['embed_per_text_vs_full']}",
            "~1.0 = linear", None)
    return rows


def markdown(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    data = results["dataset"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `python -m benchmarks.run{' --quick' if results['mode'] == 'quick' else ''}` "
        f"on {results['machine']['cpus']} CPUs, Python {results['machine']['python']}: source "
        f"`{data['source']}`, {data['episodes']:,} episodes, {data['messages']:,} messages, "
        f"{data['distinct_texts']:,} distinct texts. Ratios compare two timings taken in the same run.",
        "",
        "| figure | value | target | met |",
        "|---|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
        lines.append(f"| {row['figure']} | {row['value']} | {row['target']} | {met} |")
    missed = [r for r in rows if r["met"] is False]
    if missed:
        lines += ["", "## Targets not met", ""]
        lines += [f"- **{r['figure']}** ({r['value']}, target {r['target']}): {r['note']}" for r in missed]
    lines += ["", "## Pipeline, stage by stage", "", "| stage | wall (s) | peak RSS (MiB) |", "|---|---|---|"]
    for stage, v in results["pipeline"].items():
        lines.append(f"| {stage} | {v['wall_s']} | {v['peak_rss_mib']} |")
    lines += ["", "## Scaling", "", "| fraction | episodes | distinct texts | enrich (s) | embed (s) |",
              "|---|---|---|---|---|"]
    for row in results["scaling"]:
        lines.append(f"| {row['fraction']} | {row['episodes']} | {row['distinct_texts']} | {row['enrich_s']} "
                     f"| {row['embed_s']} |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], json_path: Path, markdown_path: Path) -> None:
    rows = figures(results)
    atomic.write_json(json_path, {**results, "figures": rows})
    text = markdown(results, rows)
    # The default build's and the numerics sections come from their own benchmarks: keep them.
    old = markdown_path.read_text(encoding="utf-8") if markdown_path.exists() else ""
    for begin, end in KEPT_SECTIONS:
        section = marked_section(old, begin, end)
        if section is not None:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic.write_text(markdown_path, text)
