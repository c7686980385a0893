"""What `numerics: portable` costs: the same texts embedded under portable and native code paths, in one run.

``python -m benchmarks.numerics [PROJECT] [--texts N]`` embeds the first N distinct message texts (by sha256)
of PROJECT's built ``data/normalized/messages.parquet`` once per setting, each in a fresh process (the code
paths are fixed when torch loads), with the stage's own batching, and writes ``benchmarks/numerics.json`` and
the "Numerics" section of ``BENCHMARKS.md``. Settings: ``portable`` (what the stages run by default), MKL's
Intel-only AVX2 branch with the rest of portable (the previous default: reproducible on Intel CPUs only) and
``native``. Each also reports the md5 of its vectors, so two machines can compare bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from benchmarks.measure import cpu_name, write_results
from coordset.numerics import PORTABLE_ENV, PORTABLE_UNSET

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- numerics:begin -->", "<!-- numerics:end -->"
MESSAGES = "data/normalized/messages.parquet"

ENCODE = """
import hashlib, json, sys, time
from coordset.numerics import pin
pin(sys.argv[1])
import pandas as pd
import torch
from coordset.embedding import EmbedSettings, embed_texts, load_model
messages = pd.read_parquet(sys.argv[2], columns=["text", "text_sha256"])
texts = messages.drop_duplicates("text_sha256").sort_values("text_sha256")["text"].head(int(sys.argv[3])).tolist()
settings = EmbedSettings("sentence-transformers/all-MiniLM-L6-v2", 64, "cpu", "truncate", "torch", sys.argv[1])
model = load_model(settings)
embed_texts(model, texts[:16], settings, progress=False)  # warm-up
start = time.perf_counter()
vectors, _, _ = embed_texts(model, texts, settings, progress=False)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "texts": len(texts), "threads": torch.get_num_threads(),
                  "torch_kernels": torch.backends.cpu.get_cpu_capability(),
                  "md5": hashlib.md5(vectors.tobytes()).hexdigest()}))
"""

# name -> (the mode pin() is given, environment on top of a clean one)
SETTINGS = {
    "portable": ("portable", {}),
    "portable, MKL AVX2 branch (Intel only)": ("native", {**PORTABLE_ENV, "MKL_CBWR": "AVX2,STRICT",
                                                          "MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    "native": ("native", {}),
}


def measure(project: Path, n_texts: int) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE_ENV and k not in PORTABLE_UNSET}
    runs = {}
    for name, (mode, extra) in SETTINGS.items():
        env = {**clean, **extra, "PYTHONPATH": str(HERE.parent), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
        result = subprocess.run([sys.executable, "-c", ENCODE, mode, str(project / MESSAGES), str(n_texts)],
                                env=env, cwd=HERE.parent, capture_output=True, text=True, timeout=3600)
        if result.returncode != 0:
            raise SystemExit(f"{name} failed:\n{result.stderr[-4000:]}")
        runs[name] = json.loads(result.stdout.splitlines()[-1])
        print(f"  {name}: {runs[name]['seconds']:.1f} s", flush=True)
    native = runs["native"]["seconds"]
    for run in runs.values():
        run["texts_per_s"] = round(run["texts"] / run["seconds"], 1)
        run["vs_native"] = round(run["seconds"] / native, 2)
        run["seconds"] = round(run["seconds"], 1)
    return {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu": cpu_name()},
            "texts": n_texts, "runs": runs}


def markdown(result: dict) -> str:
    rows = "\n".join(f"| {name} | {r['torch_kernels']} | {r['seconds']} | {r['texts_per_s']} | {r['vs_native']}x "
                     f"| `{r['md5'][:12]}` |" for name, r in result["runs"].items())
    return (f"{BEGIN}\n## Numerics: the price of portable bytes\n\n"
            f"`python -m benchmarks.numerics` on {result['machine']['cpus']} CPUs ({result['machine']['cpu']}): "
            f"the first {result['texts']} distinct texts of the default build, embedded once per setting in a "
            f"fresh process, batch 64, the stage's own batching. `portable` holds MKL to the one code path it "
            f"documents as identical on Intel and non-Intel CPUs (`MKL_CBWR=COMPATIBLE`); MKL's AVX2 branch is "
            f"reproducible on Intel CPUs only, and on an AMD CPU MKL ignores it.\n\n"
            f"| setting | torch kernels | seconds | texts/s | time vs native | md5 of the vectors |\n"
            f"|---|---|---|---|---|---|\n{rows}\n{END}\n")



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=HERE.parent)
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument("--markdown", type=Path, default=HERE.parent / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not (args.project / MESSAGES).is_file():
        raise SystemExit(f"{args.project / MESSAGES} is missing: run `dvc repro normalize` (or `dvc pull`) first")
    result = measure(args.project.resolve(), args.texts)
    write_results(HERE / "numerics.json", result, args.markdown, markdown(result), BEGIN, END)
    print(f"wrote {HERE / 'numerics.json'} and {args.markdown}")


if __name__ == "__main__":
    main()
