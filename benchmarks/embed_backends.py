"""The embed stage against the machine's limit: every backend and numeric mode on the same texts, in one run.

``python -m benchmarks.embed_backends [PROJECT] [--texts N] [--rounds R]`` takes PROJECT's built
``data/normalized/messages.parquet`` (default: this repository's default build) and, for each setting below,
in a fresh process (the numeric code paths are fixed when torch loads):

- the machine's limit: the best fp32 matrix product (sgemm) GFLOP/s on all threads in that process, and the
  bfloat16 one where the CPU has bfloat16 instructions;
- the stage's own ``embed_texts`` on the same N distinct texts (spread over the hash order), best of R rounds
  run round-robin so that every setting sees the same background load; its achieved GFLOP/s from the
  model's FLOPs per token and the texts' real token counts (padding is work done but not counted);
- each setting's vectors of every distinct text of PROJECT, compared by cosine with the default vectors
  (``portable``, ``torch``): PROJECT's ``data/embeddings/embeddings.parquet`` when its params are the default
  ones, else computed here.

It writes ``benchmarks/embed_backends.json`` and the "Embedding at the hardware's limit" section of
``BENCHMARKS.md``, including the projected time to embed a million conversations. ``benchmarks.run`` calls
``measure`` on the large set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks.measure import cpu_name, write_results
from coordset.numerics import PORTABLE_ENV, PORTABLE_UNSET

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- embed-backends:begin -->", "<!-- embed-backends:end -->"
MESSAGES = "data/normalized/messages.parquet"
EMBEDDINGS = "data/embeddings/embeddings.parquet"
# name -> (numerics, embed.backend). The first is what `dvc repro` runs; the second the fastest exact path.
SETTINGS = {
    "portable torch (default)": ("portable", "torch"),
    "native torch": ("native", "torch"),
    "native torch_bf16": ("native", "torch_bf16"),
    "native torch_int8": ("native", "torch_int8"),
}
DEFAULT, NATIVE, FAST = "portable torch (default)", "native torch", "native torch_bf16"
COSINE_BAR = {"min": 0.99, "mean": 0.999}  # a faster backend's vectors against the default, every text
CONVERSATIONS = 1_000_000
# A GPU cannot be measured on this machine; its figure is projected from the model's FLOPs per text at this
# share of an H100's dense bfloat16 peak (989 TFLOP/s): a 384-wide model keeps its kernels small.
GPU_PEAK_TFLOPS, GPU_ASSUMED_SHARE = 989.0, 0.15
# A GPU run still tokenizes every text on its host's CPU (three passes in the stage, the first over the whole
# text); that rate is measured here per core and scaled to a GPU host of this many cores.
GPU_HOST_CORES = 16

CHILD = r"""
import json, sys, time
from coordset.numerics import pin
mode, backend, messages_path, n_texts, out_dir, every_text = sys.argv[1:7]
pin(mode)  # before torch loads
import numpy as np
import pandas as pd
import torch
from benchmarks.embed_backends import flops_per_text, gemm_gflops, sample
from coordset.embedding import EmbedSettings, _token_lengths, _windows, embed_texts, load_model
distinct = pd.read_parquet(messages_path, columns=["text", "text_sha256"]).drop_duplicates("text_sha256")
texts_all = distinct.sort_values("text_sha256")["text"].tolist()
texts = sample(texts_all, int(n_texts))
settings = EmbedSettings("sentence-transformers/all-MiniLM-L6-v2", 64, "cpu", "truncate", backend, mode)
result = {"threads": torch.get_num_threads(), "torch_kernels": torch.backends.cpu.get_cpu_capability(),
          "sgemm_gflops": gemm_gflops(torch.float32)}
caps = torch.cpu.get_capabilities()
if mode == "native" and (caps.get("amx_bf16") or caps.get("avx512_bf16")):
    result["bf16_gemm_gflops"] = gemm_gflops(torch.bfloat16)
model = load_model(settings)
embed_texts(model, texts[:16], settings, progress=False)  # warm-up: thread pools, allocator
start = time.perf_counter()
vectors, _, _ = embed_texts(model, texts, settings, progress=False)
result["seconds"] = time.perf_counter() - start
np.save(f"{out_dir}/sample.npy", vectors)
start = time.perf_counter()  # the CPU side alone (what a GPU run still does on the CPU): tokenizing, 3 passes
_windows(model, texts)
lengths = _token_lengths(model, texts)
model.preprocess(texts)
result["tokenize_seconds"] = time.perf_counter() - start
result.update(texts=len(texts), tokens=int(lengths.sum()), padded_tokens=int((-(-lengths // 16) * 16).sum()),
              gflop=float(flops_per_text(model, lengths).sum() / 1e9))
if every_text == "1":
    start = time.perf_counter()
    vectors, _, _ = embed_texts(model, texts_all, settings, progress=False)
    result["all_seconds"] = time.perf_counter() - start
    all_lengths = _token_lengths(model, texts_all)
    result.update(all_texts=len(texts_all), all_gflop=float(flops_per_text(model, all_lengths).sum() / 1e9))
    np.save(f"{out_dir}/all.npy", vectors)
print(json.dumps(result))
"""


def sample(texts: list[str], n: int) -> list[str]:
    """``n`` texts evenly spread over ``texts`` (sorted by hash: a mix of every source and length)."""
    if n >= len(texts):
        return texts
    return [texts[i] for i in np.linspace(0, len(texts) - 1, n).round().astype(int)]


def flops_per_text(model: Any, lengths: np.ndarray) -> np.ndarray:
    """FLOPs of a BERT encoder's forward pass per text of ``lengths`` tokens (no padding), 2 per multiply-add.

    Per layer and token: the Q, K, V and output projections (4 h^2 multiply-adds), the feed-forward block
    (2 h f) and attention's scores and weighted sum (2 n h for a text of n tokens).
    """
    config = model[0].auto_model.config
    h, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = np.asarray(lengths, dtype=np.float64)
    return 2.0 * layers * n * (4 * h * h + 2 * h * f + 2 * n * h)


def gemm_gflops(dtype: Any, size: int = 2048, seconds: float = 1.5) -> float:
    """Best GFLOP/s of a square matrix product on all threads: the practical limit of the machine."""
    import time

    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    best = 0.0
    for _ in range(3):
        a @ b  # the first call of a round may pay for packing and thread wake-up
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < seconds / 3:
            a @ b
            count += 1
        best = max(best, 2 * size**3 * count / (time.perf_counter() - start) / 1e9)
    return round(best, 1)


def _child(mode: str, backend: str, messages: Path, n_texts: int, out_dir: Path, every_text: bool
           ) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV and k not in PORTABLE_UNSET}
    env = {**clean, "PYTHONPATH": str(HERE.parent), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-c", CHILD, mode, backend, str(messages), str(n_texts), str(out_dir),
            "1" if every_text else "0"]
    result = subprocess.run(args, env=env, cwd=HERE.parent, capture_output=True, text=True, timeout=7200)
    if result.returncode != 0:
        raise SystemExit(f"{mode} {backend} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def reference_vectors(project: Path) -> tuple[pd.DataFrame | None, str]:
    """The default settings' vectors of PROJECT's texts, if they were built: the workspace file, or DVC's cache
    copy of the one ``dvc.lock`` records (when the lock's embed params are the defaults and its messages are
    the workspace's). None: the benchmark computes them."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    if _default_embed(params) and (project / EMBEDDINGS).is_file():
        return pd.read_parquet(project / EMBEDDINGS, columns=["text_sha256", "embedding"]), EMBEDDINGS
    lock_path = project / "dvc.lock"
    if not lock_path.is_file():
        return None, ""
    stage = yaml.safe_load(lock_path.read_text()).get("stages", {}).get("embed", {})
    locked = stage.get("params", {}).get("params.yaml", {})
    deps = {d["path"]: d.get("md5") for d in stage.get("deps", [])}
    outs = {o["path"]: o.get("md5") for o in stage.get("outs", [])}
    if not _default_embed(locked) or deps.get(MESSAGES) != _md5(project / MESSAGES) or not outs.get(EMBEDDINGS):
        return None, ""
    md5 = outs[EMBEDDINGS]
    cached = project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    if not cached.is_file():
        return None, ""
    return (pd.read_parquet(cached, columns=["text_sha256", "embedding"]),
            f"{EMBEDDINGS} as recorded in dvc.lock (md5 {md5}, read from the DVC cache)")


def _default_embed(params: dict[str, Any]) -> bool:
    embed = params.get("embed", {})
    return (params.get("numerics") == "portable" and embed.get("backend") == "torch"
            and embed.get("long_text") == "truncate" and embed.get("model") == "sentence-transformers/all-MiniLM-L6-v2")


def _md5(path: Path) -> str:
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()  # the hash dvc.lock records for an output


def _cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    c = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(c.min()), 5), "mean": round(float(c.mean()), 6),
            "p01": round(float(np.quantile(c, 0.01)), 5)}


def measure(project: Path, n_texts: int, rounds: int = 2, every_text: bool = True) -> dict[str, Any]:
    """Every setting round-robin on the same ``n_texts``; with ``every_text``, each then embeds every distinct
    text of PROJECT in its last round (cosines on all of them, and the throughput of a whole stage)."""
    messages = project / MESSAGES
    shas = pd.read_parquet(messages, columns=["text_sha256"])["text_sha256"].drop_duplicates().sort_values()
    reference, reference_name = reference_vectors(project)
    seen: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):  # round-robin: every setting sees the same background load
            last = round_ == rounds - 1
            for name, (mode, backend) in SETTINGS.items():
                wants_all = last and every_text and not (name == DEFAULT and reference is not None)
                run = _child(mode, backend, messages, n_texts, Path(tmp) / name, wants_all)
                seen[name].append(run)
                extra = f"; every text ({run['all_texts']}) in {run['all_seconds']:.0f} s" if wants_all else ""
                print(f"  round {round_ + 1}: {name}: {run['seconds']:.1f} s, sgemm {run['sgemm_gflops']} GFLOP/s"
                      f"{extra}", flush=True)
        runs = {name: _summary(runs_) for name, runs_ in seen.items()}
        which = "all" if every_text else "sample"
        vectors = {name: np.load(Path(tmp) / name / f"{which}.npy") for name in SETTINGS
                   if (Path(tmp) / name / f"{which}.npy").is_file()}
    texts = sample(shas.tolist(), n_texts) if which == "sample" else shas.tolist()
    if reference is not None:
        by_sha = reference.set_index("text_sha256")["embedding"]
        vectors[DEFAULT] = np.stack(by_sha.loc[texts].to_numpy())
    else:
        reference_name = "computed by the default settings in this run"
    limit = max(runs[name]["sgemm_gflops"] for name, (mode, _) in SETTINGS.items() if mode == "native")
    bf16_limit = max((r.get("bf16_gemm_gflops", 0.0) for r in runs.values()), default=0.0) or None
    for name, r in runs.items():
        r["texts_per_s"] = round(r["texts"] / r["seconds"], 1)
        r["achieved_gflops"] = round(r["gflop"] / r["seconds"], 1)
        r["of_sgemm_limit"] = round(r["achieved_gflops"] / limit, 3)
        if bf16_limit and SETTINGS[name][1] == "torch_bf16":
            r["of_bf16_limit"] = round(r["achieved_gflops"] / bf16_limit, 3)
        if "all_seconds" in r:
            r["all_texts_per_s"] = round(r["all_texts"] / r["all_seconds"], 1)
            r["all_achieved_gflops"] = round(r["all_gflop"] / r["all_seconds"], 1)
        r["speedup_vs_default"] = round(runs[DEFAULT]["seconds"] / r["seconds"], 2)
        r["speedup_vs_native"] = round(runs[NATIVE]["seconds"] / r["seconds"], 2)
        # Per round too: the two timings of such a ratio were taken minutes apart at most.
        r["round_speedups_vs_native"] = [round(a / b, 2) for a, b in
                                         zip(runs[NATIVE]["round_seconds"], r["round_seconds"], strict=True)]
        r["round_speedups_vs_default"] = [round(a / b, 2) for a, b in
                                          zip(runs[DEFAULT]["round_seconds"], r["round_seconds"], strict=True)]
    for r in runs.values():
        r["seconds"], r["gflop"] = round(r["seconds"], 2), round(r["gflop"], 1)
    cosine: dict[str, Any] = {"texts": len(texts), "which": "every distinct text" if every_text else "the sample",
                              "reference": reference_name}
    for name in SETTINGS:
        if name != DEFAULT and name in vectors:
            cosine[name] = {"vs_default": _cosines(vectors[name], vectors[DEFAULT]),
                            "vs_native": _cosines(vectors[name], vectors[NATIVE])}
            print(f"  {name}: cosine vs default min {cosine[name]['vs_default']['min']}, "
                  f"mean {cosine[name]['vs_default']['mean']}", flush=True)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu": cpu_name(),
                    "flags": _cpu_flags()},
        "texts": min(n_texts, len(shas)), "rounds": rounds, "distinct_texts": int(len(shas)),
        "episodes": _episodes(project),
        "limit": {"sgemm_gflops": limit, "bf16_gemm_gflops": bf16_limit,
                  "portable_sgemm_gflops": runs[DEFAULT]["sgemm_gflops"]},
        "runs": runs, "cosine": cosine,
    }
    result["projection"] = projection(result)
    return result


def _summary(seen: list[dict[str, Any]]) -> dict[str, Any]:
    """A setting's rounds: its best time (the least disturbed), the best limit its processes measured."""
    best = dict(min(seen, key=lambda run: run["seconds"]))
    best["round_seconds"] = [round(run["seconds"], 2) for run in seen]
    for key in ("sgemm_gflops", "bf16_gemm_gflops"):
        if key in best:
            best[key] = max(run[key] for run in seen)
    for run in seen:  # the every-text pass ran in one round only
        best.update({k: v for k, v in run.items() if k.startswith("all_")})
    return best


def _stage_rate(run: dict[str, Any]) -> float:
    """texts/s of a whole stage's worth of texts where measured (kernels for every shape amortized), else the
    sample's."""
    return run.get("all_texts_per_s") or run["texts_per_s"]


def projection(result: dict[str, Any]) -> dict[str, Any]:
    """Hours to embed a million conversations: texts/s measured here (CPU), projected for one GPU."""
    runs, episodes = result["runs"], result["episodes"]
    if not episodes:
        return {}
    texts_per_conversation = result["distinct_texts"] / episodes
    texts = CONVERSATIONS * texts_per_conversation
    native = runs[NATIVE]
    gflop_per_text = native.get("all_gflop", native["gflop"]) / native.get("all_texts", native["texts"])
    gpu_side = GPU_PEAK_TFLOPS * GPU_ASSUMED_SHARE * 1e3 / gflop_per_text
    tokenize_per_core = native["texts"] / native["tokenize_seconds"] / (result["machine"]["cpus"] or 1)
    host_side = tokenize_per_core * GPU_HOST_CORES
    gpu_texts_per_s = min(gpu_side, host_side)
    rates = {name: _stage_rate(r) for name, r in runs.items()}
    return {"conversations": CONVERSATIONS, "texts_per_conversation": round(texts_per_conversation, 2),
            "texts": int(texts), "gflop_per_text": round(gflop_per_text, 2), "cpu_texts_per_s": rates,
            "cpu_hours": {name: round(texts / rate / 3600, 1) for name, rate in rates.items()},
            "cpu_conversations_per_day": {name: int(86400 * rate / texts_per_conversation)
                                          for name, rate in rates.items()},
            "tokenize_texts_per_s_per_core": round(tokenize_per_core),
            "gpu": {"measured": False, "assumed_share_of_peak": GPU_ASSUMED_SHARE, "peak_tflops": GPU_PEAK_TFLOPS,
                    "gpu_side_texts_per_s": round(gpu_side), "host_cores": GPU_HOST_CORES,
                    "host_side_texts_per_s": round(host_side), "texts_per_s": round(gpu_texts_per_s),
                    "bound": "the host's tokenizing" if host_side < gpu_side else "the GPU",
                    # GPUs one host can keep busy before its tokenizing is the limit.
                    "gpus_one_host_feeds": round(host_side / gpu_side, 2),
                    "hours": round(texts / gpu_texts_per_s / 3600, 2),
                    "conversations_per_day": int(86400 * gpu_texts_per_s / texts_per_conversation)}}


def _episodes(project: Path) -> int | None:
    path = project / "data/normalized/episodes.parquet"
    return int(len(pd.read_parquet(path, columns=["episode_id"]))) if path.is_file() else None


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return [f for f in wanted if f in line.split(":", 1)[1].split()]
    except OSError:
        pass
    return []


def _fmt_cos(c: dict[str, float] | None) -> str:
    return f"{c['min']:.4f} / {c['mean']:.5f}" if c else "reference"


def markdown(result: dict[str, Any]) -> str:
    limit, runs, cosine = result["limit"], result["runs"], result["cosine"]
    bf16 = f"; bfloat16 {limit['bf16_gemm_gflops']} GFLOP/s" if limit.get("bf16_gemm_gflops") else ""
    lines = [
        BEGIN, "## Embedding at the hardware's limit", "",
        f"`python -m benchmarks.embed_backends` on {result['machine']['cpus']} CPUs ({result['machine']['cpu']}: "
        f"{', '.join(result['machine']['flags'])}), {result['distinct_texts']:,} distinct texts. **Limit**: the "
        f"best 2048x2048 matrix product on all threads, measured in each setting's own process: fp32 (sgemm) "
        f"**{limit['sgemm_gflops']} GFLOP/s** native, {limit['portable_sgemm_gflops']} GFLOP/s on portable's "
        f"pinned path{bf16}. **Achieved**: the model's FLOPs (2 per multiply-add: projections, feed-forward, "
        f"attention) for the real token counts of the texts, over the stage's `embed_texts` time on them "
        f"(padding is work done but not counted). Timed on {result['texts']} texts spread over the hash order, "
        f"best of {result['rounds']} rounds run round-robin, each setting in a fresh process; speed-ups against "
        f"the portable default (what `dvc repro` runs) and against native fp32 (the fastest exact path), each "
        f"round's ratio in brackets. Cosines on {cosine['which']} ({cosine['texts']:,}) against the default "
        f"vectors ({cosine['reference']}).", "",
        "| setting | texts/s | achieved GFLOP/s | of the sgemm limit | vs portable default (rounds) "
        "| vs native fp32 (rounds) | every text: texts/s, GFLOP/s | cosine vs default, min / mean "
        "| byte-reproducible |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SETTINGS:
        r = runs[name]
        versus = cosine.get(name, {}).get("vs_default") if name != DEFAULT else None
        bytes_ = ("yes, any x86-64 CPU with AVX2" if name == DEFAULT else
                  "no: per-batch scales" if "int8" in name else "no: this machine's kernels")
        extra = f" ({r['of_bf16_limit']:.0%} of bf16)" if "of_bf16_limit" in r else ""
        whole = f"{r['all_texts_per_s']}, {r['all_achieved_gflops']}" if "all_texts_per_s" in r else "–"
        lines.append(
            f"| {name} | {r['texts_per_s']} | {r['achieved_gflops']} | {r['of_sgemm_limit']:.0%}{extra} "
            f"| {r['speedup_vs_default']}x ({', '.join(map(str, r['round_speedups_vs_default']))}) "
            f"| {r['speedup_vs_native']}x ({', '.join(map(str, r['round_speedups_vs_native']))}) | {whole} "
            f"| {_fmt_cos(versus)} | {bytes_} |")
    lines.append("")
    for name in SETTINGS:
        c = cosine.get(name, {}).get("vs_default")
        if c and name not in (DEFAULT, NATIVE):
            ok = (c["min"] >= COSINE_BAR["min"] and c["mean"] >= COSINE_BAR["mean"]
                  and runs[name]["speedup_vs_native"] >= 1.5)
            lines.append(f"- `{name}`: {runs[name]['speedup_vs_native']}x native fp32 and "
                         f"{runs[name]['speedup_vs_default']}x the portable default, cosine min {c['min']}, mean "
                         f"{c['mean']}: {'meets' if ok else '**misses**'} the bar (>= 1.5x native fp32, cosine "
                         f"min >= {COSINE_BAR['min']} and mean >= {COSINE_BAR['mean']}).")
    proj = result.get("projection")
    if proj:
        gpu = proj["gpu"]
        lines += [
            "", "### A million conversations", "",
            f"At this build's {proj['texts_per_conversation']} distinct texts per conversation "
            f"({proj['gflop_per_text']} GFLOP a text on average): {proj['texts']:,} texts. CPU rates are the "
            f"whole-build ones (every text) where measured.", "",
            "| where | texts/s | hours for 1M conversations | conversations a day | how |", "|---|---|---|---|---|",
        ]
        for name in SETTINGS:
            lines.append(f"| this CPU, {name} | {proj['cpu_texts_per_s'][name]} | {proj['cpu_hours'][name]} "
                         f"| {proj['cpu_conversations_per_day'][name]:,} | measured |")
        lines.append(f"| one H100 on a {gpu['host_cores']}-core host, torch_bf16 | {gpu['texts_per_s']:,} "
                     f"| {gpu['hours']} | {gpu['conversations_per_day']:,} | **projected**, no GPU here |")
        best = max(proj["cpu_conversations_per_day"], key=proj["cpu_conversations_per_day"].get)
        lines += [
            "",
            f"The GPU row is projected, not measured: {gpu['assumed_share_of_peak']:.0%} of the H100's "
            f"{gpu['peak_tflops']:.0f} TFLOP/s dense bfloat16 peak would embed {gpu['gpu_side_texts_per_s']:,} "
            f"texts/s, but a GPU run still tokenizes every text on its host (three passes, the first over the whole "
            f"text), measured here at {proj['tokenize_texts_per_s_per_core']:,} texts/s a core: "
            f"{gpu['host_side_texts_per_s']:,} texts/s on {gpu['host_cores']} cores, so the bound is "
            f"{gpu['bound']} (it could feed {gpu['gpus_one_host_feeds']} of such a GPU). Where one machine stops "
            f"being enough: this 2-core CPU manages {proj['cpu_conversations_per_day'][best]:,} conversations a "
            f"day (`{best}`), so a million take {proj['cpu_hours'][best]} h; one GPU host about "
            f"{gpu['conversations_per_day']:,} a day. Beyond that the distinct texts have to be split over "
            f"machines (by `text_sha256`, each shard its own embed run), which the stage does not do.",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=HERE.parent)
    parser.add_argument("--texts", type=int, default=400, help="distinct texts timed per setting (default 400)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sample-only", action="store_true",
                        help="cosines on the timed texts only, not every distinct text (much faster)")
    parser.add_argument("--markdown", type=Path, default=HERE.parent / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not (args.project / MESSAGES).is_file():
        raise SystemExit(f"{args.project / MESSAGES} is missing: run `dvc repro normalize` (or `dvc pull`) first")
    result = measure(args.project.resolve(), args.texts, args.rounds, every_text=not args.sample_only)
    write_results(HERE / "embed_backends.json", result, args.markdown, markdown(result), BEGIN, END)
    print(f"wrote {HERE / 'embed_backends.json'} and {args.markdown}")


if __name__ == "__main__":
    main()
